//! Payload `native_loop` (probe `vm.native.loop`, and the backend's native check).
//!
//! Times `r8` iterations of a `dec %r12; jnz` loop per sample: the loop's own inner
//! `dec; jnz` is the measured instruction pair. Natively this is ~1 cycle per iteration;
//! an emulated guest (kvm_pvm without a VIF page) takes thousands.
//!
//! In: rdi = sample buffer, rsi = samples, r8 = iterations per sample.

use super::{asm_postlude, asm_prelude, entry, guest_payload, sym_addr, Payload};

guest_payload!(
    r#"
.globl ivb_native_start
.globl ivb_native_end
.globl ivb_native_loop
ivb_native_start:
ivb_native_loop:
    IVB_LOOP_BEGIN
    IVB_LOOP_END
    IVB_DONE
ivb_native_end:
"#
);

pub fn payload() -> Payload {
    Payload {
        name: "native_loop",
        start: sym_addr!(ivb_native_start),
        end: sym_addr!(ivb_native_end),
        entries: vec![(entry::NATIVE_LOOP, sym_addr!(ivb_native_loop))],
        hypercall_sites: vec![],
    }
}
