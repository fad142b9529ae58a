//! Payload `tsc_overhead`: times nothing.
//!
//! Runs the common sample loop with an empty body and one operation per sample, so each
//! sample is the cost of the serialized `lfence; rdtsc` pair plus the loop's `dec; jnz`:
//! exactly what every per-op sample of the other payloads carries on top of its operation.
//! The probes report its median as `overhead_cycles`.
//!
//! In: rdi = sample buffer, rsi = samples.

use super::{asm_postlude, asm_prelude, entry, guest_payload, sym_addr, Payload};

guest_payload!(
    r#"
.globl ivb_tsc_start
.globl ivb_tsc_end
.globl ivb_tsc_overhead
ivb_tsc_start:
ivb_tsc_overhead:
    mov $1, %r8
    IVB_LOOP_BEGIN
    IVB_LOOP_END
    IVB_DONE
ivb_tsc_end:
"#
);

pub fn payload() -> Payload {
    Payload {
        name: "tsc_overhead",
        start: sym_addr!(ivb_tsc_start),
        end: sym_addr!(ivb_tsc_end),
        entries: vec![(entry::TSC_OVERHEAD, sym_addr!(ivb_tsc_overhead))],
        hypercall_sites: vec![],
    }
}
