//! Payload `token_ring` (the worker tests: several VMs in several processes pass a token
//! through one shared memfd).
//!
//! The token word at `r10` counts passes. Participant `r11` of `r9` waits (PAUSE loop)
//! until the word equals `r11 + j * r9` (j = 0, 1, ...), writes that value + 1 and counts
//! the pass in COUNT of its status area, `rsi` times. STOP ends the loop early.
//!
//! In: rsi = passes, r9 = participants, r10 = token word, r11 = own index,
//!     r15 = status area.

use super::{asm_postlude, asm_prelude, entry, guest_payload, sym_addr, Payload};

guest_payload!(
    r#"
.globl ivb_ring_start
.globl ivb_ring_end
.globl ivb_token_ring
ivb_ring_start:
ivb_token_ring:
    mov %r11, %rcx
    mov %rsi, %r14
1:
    cmp %rcx, (%r10)
    je 2f
    cmpq $0, IVB_ST_STOP(%r15)
    jne 3f
    pause
    jmp 1b
2:
    lea 1(%rcx), %rax
    mov %rax, (%r10)
    incq IVB_ST_COUNT(%r15)
    add %r9, %rcx
    dec %r14
    jnz 1b
3:
    IVB_DONE
ivb_ring_end:
"#
);

pub fn payload() -> Payload {
    Payload {
        name: "token_ring",
        start: sym_addr!(ivb_ring_start),
        end: sym_addr!(ivb_ring_end),
        entries: vec![(entry::TOKEN_RING, sym_addr!(ivb_token_ring))],
        hypercall_sites: vec![],
    }
}
