//! Payload `vmfunc` (probe `vm.view.vmfunc`): hardware view switches with VMFUNC leaf 0.
//!
//! Needs a VM whose VMM enabled the kvm-patch's views (`vmm::views`) and published a view
//! that maps, at the same guest-physical addresses as the default view, this payload's
//! code (read+execute), the guest page tables (read/write: the CPU may set their accessed
//! and dirty bits) and one protected page (read-only) that the default view lacks.
//! Between the two VMFUNCs the code touches nothing else: registers only, no stack, and
//! interrupts off (the view has no IDT; KVM returns the vCPU to the default view before
//! it injects anything).
//!
//! `vmfunc_discover` (run once): the guest finds the view the way any guest would.
//! In: r9 = result words, r10 = the view's tag, r11 = the query hypercall's number,
//!     r15 = the protected GPA, rbp = the view the VMM published.
//! Out: res[0] = EAX of CPUID 0x40000001 (the VMM sets the views bit),
//!      res[1] = the hypercall's answer for the tag (the view index),
//!      res[2] = its answer for tag + 1 (no such view: -KVM_ENOENT_VIEW),
//!      res[3] = a read of the protected GPA in the default view (no memslot: an MMIO exit
//!               the VMM answers with poison),
//!      res[4] = the same read inside the view (the protected page's word),
//!      res[5] = the read in the default view again.
//! It enters the view only when res[1] is rbp: a wrong answer is left for the VMM to report
//! (a VMFUNC to an empty index would raise #UD, and this guest has no IDT).
//!
//! `vmfunc_switch` (sampling): one operation = VMFUNC into view r10, a load of the
//! protected word (compared with rbp), VMFUNC back to view 0.
//! In: rdi = sample buffer, rsi = samples, r8 = round trips per sample, r9 = result words,
//!     r10 = view index, r15 = protected GPA, rbp = the protected word.
//! Out: res[6] += timed in-view loads that did not read rbp.

use super::{asm_postlude, asm_prelude, entry, guest_payload, sym_addr, Payload};

guest_payload!(
    r#"
.globl ivb_vmfunc_start
.globl ivb_vmfunc_end
.globl ivb_vmfunc_discover
.globl ivb_vmfunc_switch
ivb_vmfunc_start:
ivb_vmfunc_discover:
    cli
    mov $0x40000001, %eax
    xor %ecx, %ecx
    cpuid
    mov %rax, 0(%r9)
    mov %r11, %rax
    mov %r10, %rbx
    IVB_HYPERCALL ivb_vmfunc_site_query
    mov %rax, 8(%r9)
    mov %r11, %rax
    lea 1(%r10), %rbx
    IVB_HYPERCALL ivb_vmfunc_site_unknown
    mov %rax, 16(%r9)
    mov (%r15), %rax
    mov %rax, 24(%r9)
    mov 8(%r9), %rcx
    cmp %rbp, %rcx
    jne 1f
    xor %eax, %eax
    vmfunc
    mov (%r15), %rdx
    xor %eax, %eax
    xor %ecx, %ecx
    vmfunc
    mov %rdx, 32(%r9)
    mov (%r15), %rax
    mov %rax, 40(%r9)
1:
    IVB_DONE

ivb_vmfunc_switch:
    cli
    xor %r11, %r11
    IVB_LOOP_BEGIN
    xor %eax, %eax
    mov %r10d, %ecx
    vmfunc
    cmp (%r15), %rbp
    je 2f
    inc %r11
2:
    xor %eax, %eax
    xor %ecx, %ecx
    vmfunc
    IVB_LOOP_END
    add %r11, 48(%r9)
    IVB_DONE
ivb_vmfunc_end:
"#
);

pub fn payload() -> Payload {
    Payload {
        name: "vmfunc",
        start: sym_addr!(ivb_vmfunc_start),
        end: sym_addr!(ivb_vmfunc_end),
        entries: vec![
            (entry::VMFUNC_DISCOVER, sym_addr!(ivb_vmfunc_discover)),
            (entry::VMFUNC_SWITCH, sym_addr!(ivb_vmfunc_switch)),
        ],
        hypercall_sites: vec![sym_addr!(ivb_vmfunc_site_query), sym_addr!(ivb_vmfunc_site_unknown)],
    }
}
