//! Test payloads that must NOT finish normally (they exercise the watchdog and the
//! error paths), plus the smallest possible guest.
//!
//! - `done`: reports done at once (VM create/destroy robustness test).
//! - `hang_vmcall`: a raw `vmcall`, deliberately not patched: on kvm_pvm the emulator
//!   retries it forever and KVM_RUN never returns on its own.
//! - `hang_loop`: `jmp .` forever, natively.
//! - `crash_ud2`: `ud2` with no IDT: ends in KVM_EXIT_SHUTDOWN (or another fatal exit).
//! - `peek`: res[0] = the word at r15, then stores rbp at r15 + 8 (shared-memory test:
//!   in: r9 = result words, r15 = a GPA, rbp = a value).

use super::{asm_postlude, asm_prelude, entry, guest_payload, sym_addr, Payload};

guest_payload!(
    r#"
.globl ivb_hang_start
.globl ivb_hang_end
.globl ivb_done
.globl ivb_hang_vmcall
.globl ivb_hang_loop
.globl ivb_crash_ud2
.globl ivb_peek
ivb_hang_start:
ivb_done:
    IVB_DONE
ivb_hang_vmcall:
    mov $0x7ff, %eax
    vmcall
    IVB_DONE
ivb_hang_loop:
1:
    jmp 1b
ivb_crash_ud2:
    ud2
    IVB_DONE
ivb_peek:
    mov (%r15), %rax
    mov %rax, (%r9)
    mov %rbp, 8(%r15)
    IVB_DONE
ivb_hang_end:
"#
);

pub fn payload() -> Payload {
    Payload {
        name: "hang",
        start: sym_addr!(ivb_hang_start),
        end: sym_addr!(ivb_hang_end),
        entries: vec![
            (entry::DONE, sym_addr!(ivb_done)),
            (entry::HANG_VMCALL, sym_addr!(ivb_hang_vmcall)),
            (entry::HANG_LOOP, sym_addr!(ivb_hang_loop)),
            (entry::CRASH_UD2, sym_addr!(ivb_crash_ud2)),
            (entry::PEEK, sym_addr!(ivb_peek)),
        ],
        hypercall_sites: vec![],
    }
}
