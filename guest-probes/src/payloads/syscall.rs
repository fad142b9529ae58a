//! Payload `syscall` (probe `vm.syscall.getppid`).
//!
//! Times one system call made from guest user mode (CPL3): `SYSCALL` -> the guest
//! supervisor's LSTAR entry (`ivb_sys_entry`, a minimal getppid that returns the word at
//! KDATA) -> `SYSRETQ` back to user mode. No exit to the VMM is involved.
//!
//! The payload starts at CPL0, saves its stack, drops to user mode with SYSRETQ
//! (RCX = user RIP, R11 = RFLAGS with IF), makes one untimed call, runs the sample loop in
//! user mode, then asks the supervisor (RAX = 0xffff) to return to CPL0 and finish.
//!
//! In: rdi = sample buffer, rsi = samples, r8 = syscalls per sample, r9 = result words,
//!     rbx = user stack top, rbp = the value the handler returns (the VMM also writes it at
//!     KDATA). MSRs (set by the VMM): LSTAR = ivb_sys_entry, STAR = 0x0023_0010_0000_0000,
//!     SFMASK = 0x700.
//! Out: res[0] = RAX of the first, untimed call (in user mode), res[1] += timed calls whose
//!      RAX differed from rbp, res[2] = RAX of the last call, res[3] = CS read in user mode,
//!      res[4] = CS read at CPL0 before SYSRETQ.

use super::{asm_postlude, asm_prelude, entry, guest_payload, sym_addr, Payload};

guest_payload!(
    r#"
.globl ivb_syscall_start
.globl ivb_syscall_end
.globl ivb_syscall
.globl ivb_sys_entry
ivb_syscall_start:
ivb_syscall:
    mov %cs, %eax
    mov %rax, 32(%r9)
    mov %rsp, ivb_sys_kstack(%rip)
    mov %rbx, %rsp
    lea ivb_sys_user(%rip), %rcx
    mov $0x202, %r11
    sysretq
ivb_sys_user:
    mov %cs, %eax
    mov %rax, 24(%r9)
    mov $39, %eax
    syscall
    mov %rax, 0(%r9)
    IVB_LOOP_BEGIN
    mov $39, %eax
    syscall
    mov %rax, 16(%r9)
    cmp %rbp, %rax
    je 1f
    incq 8(%r9)
1:
    IVB_LOOP_END
    mov $0xffff, %eax
    syscall
ivb_sys_back:
    mov ivb_sys_kstack(%rip), %rsp
    IVB_DONE

.p2align 6
ivb_sys_entry:
    cmp $0xffff, %eax
    je ivb_sys_back
    cmp $39, %eax
    jne 2f
    mov IVB_KDATA, %rax
    sysretq
2:
    mov $-38, %rax
    sysretq

.p2align 3
ivb_sys_kstack:
    .quad 0
ivb_syscall_end:
"#
);

pub fn payload() -> Payload {
    Payload {
        name: "syscall",
        start: sym_addr!(ivb_syscall_start),
        end: sym_addr!(ivb_syscall_end),
        entries: vec![(entry::SYSCALL, sym_addr!(ivb_syscall)), (entry::SYS_ENTRY, sym_addr!(ivb_sys_entry))],
        hypercall_sites: vec![],
    }
}
