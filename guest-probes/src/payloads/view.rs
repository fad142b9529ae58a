//! Payload `view_switch` (probe `vm.view.hypercall`).
//!
//! Times one round trip into the alternate memory view and back, done in software: the
//! guest asks the VMM with an `out` to the view port (r10; al = 1: alternate view, al = 0:
//! default view) and the VMM maps or unmaps the protected memslot at r15 with
//! KVM_SET_USER_MEMORY_REGION before re-entering. One operation = enter the alternate view,
//! read one protected word (checked against rbp), return to the default view.
//!
//! Before the loop, untimed, it shows the views really differ: it reads the protected GPA
//! in the default view (no memslot: KVM_EXIT_MMIO, the VMM answers with a poison value),
//! in the alternate view (the secret), and in the default view again.
//!
//! In: rdi = sample buffer, rsi = samples, r8 = round trips per sample, r9 = result words,
//!     r10 = view port, r15 = protected GPA, rbp = the secret stored there.
//! Out: res[0] = default-view read before, res[1] = alternate-view read,
//!      res[2] = default-view read after, res[3] += timed alternate-view reads != rbp.

use super::{asm_postlude, asm_prelude, entry, guest_payload, sym_addr, Payload};

guest_payload!(
    r#"
.globl ivb_view_start
.globl ivb_view_end
.globl ivb_view_switch
ivb_view_start:
ivb_view_switch:
    mov (%r15), %rax
    mov %rax, 0(%r9)
    mov %r10d, %edx
    mov $1, %eax
    out %al, (%dx)
    mov (%r15), %rax
    mov %rax, 8(%r9)
    mov %r10d, %edx
    xor %eax, %eax
    out %al, (%dx)
    mov (%r15), %rax
    mov %rax, 16(%r9)
    IVB_LOOP_BEGIN
    mov %r10d, %edx
    mov $1, %eax
    out %al, (%dx)
    cmp (%r15), %rbp
    je 1f
    incq 24(%r9)
1:
    mov %r10d, %edx
    xor %eax, %eax
    out %al, (%dx)
    IVB_LOOP_END
    IVB_DONE
ivb_view_end:
"#
);

pub fn payload() -> Payload {
    Payload {
        name: "view_switch",
        start: sym_addr!(ivb_view_start),
        end: sym_addr!(ivb_view_end),
        entries: vec![(entry::VIEW_SWITCH, sym_addr!(ivb_view_switch))],
        hypercall_sites: vec![],
    }
}
