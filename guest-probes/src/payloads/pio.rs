//! Payload `pio_out` (probes `vm.exit.pio` and `vm.exit.pio-kernel`).
//!
//! Times one `out %al, (%dx)` to port r15 per operation. For `vm.exit.pio` nothing in KVM
//! claims the port, so every `out` is a KVM_EXIT_IO to the VMM and back; for
//! `vm.exit.pio-kernel` an ioeventfd on the port completes it inside KVM.
//!
//! In: rdi = sample buffer, rsi = samples, r8 = outs per sample, r15 = port.

use super::{asm_postlude, asm_prelude, entry, guest_payload, sym_addr, Payload};

guest_payload!(
    r#"
.globl ivb_pio_start
.globl ivb_pio_end
.globl ivb_pio_out
ivb_pio_start:
ivb_pio_out:
    IVB_LOOP_BEGIN
    mov %r15d, %edx
    out %al, (%dx)
    IVB_LOOP_END
    IVB_DONE
ivb_pio_end:
"#
);

pub fn payload() -> Payload {
    Payload {
        name: "pio_out",
        start: sym_addr!(ivb_pio_start),
        end: sym_addr!(ivb_pio_end),
        entries: vec![(entry::PIO_OUT, sym_addr!(ivb_pio_out))],
        hypercall_sites: vec![],
    }
}
