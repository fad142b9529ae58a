//! Payload `hypercall` (probe `vm.hypercall.null`).
//!
//! Times one null hypercall per operation: guest CPL0 -> KVM (in-kernel handler, no exit
//! to the VMM) -> back, with a hypercall number KVM does not know. The instruction is a
//! placeholder patched per backend (`int $0x1b` on kvm_pvm, `vmcall`, `vmmcall`).
//!
//! In: rdi = sample buffer, rsi = samples, r8 = calls per sample, r9 = result words,
//!     r10 = hypercall number, rbp = the expected return value (-ENOSYS / -KVM_ENOSYS).
//! Out: res[0] = RAX of one untimed call before the loop,
//!      res[1] += timed calls whose RAX differed from rbp.

use super::{asm_postlude, asm_prelude, entry, guest_payload, sym_addr, Payload};

guest_payload!(
    r#"
.globl ivb_hypercall_start
.globl ivb_hypercall_end
.globl ivb_hypercall
ivb_hypercall_start:
ivb_hypercall:
    mov %r10, %rax
    IVB_HYPERCALL ivb_hc_site_first
    mov %rax, (%r9)
    IVB_LOOP_BEGIN
    mov %r10, %rax
    IVB_HYPERCALL ivb_hc_site_loop
    cmp %rbp, %rax
    je 1f
    incq 8(%r9)
1:
    IVB_LOOP_END
    IVB_DONE
ivb_hypercall_end:
"#
);

pub fn payload() -> Payload {
    Payload {
        name: "hypercall",
        start: sym_addr!(ivb_hypercall_start),
        end: sym_addr!(ivb_hypercall_end),
        entries: vec![(entry::HYPERCALL, sym_addr!(ivb_hypercall))],
        hypercall_sites: vec![sym_addr!(ivb_hc_site_first), sym_addr!(ivb_hc_site_loop)],
    }
}
