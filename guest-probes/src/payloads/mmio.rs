//! Payload `mmio_write` (probe `vm.exit.mmio`).
//!
//! Times one 4-byte store to an unbacked GPA (r15, no memslot there) per operation: KVM
//! finds no memslot, leaves with KVM_EXIT_MMIO, the VMM completes the write and re-enters.
//!
//! In: rdi = sample buffer, rsi = samples, r8 = stores per sample, r15 = MMIO GPA.

use super::{asm_postlude, asm_prelude, entry, guest_payload, sym_addr, Payload};

guest_payload!(
    r#"
.globl ivb_mmio_start
.globl ivb_mmio_end
.globl ivb_mmio_write
ivb_mmio_start:
ivb_mmio_write:
    IVB_LOOP_BEGIN
    movl $1, (%r15)
    IVB_LOOP_END
    IVB_DONE
ivb_mmio_end:
"#
);

pub fn payload() -> Payload {
    Payload {
        name: "mmio_write",
        start: sym_addr!(ivb_mmio_start),
        end: sym_addr!(ivb_mmio_end),
        entries: vec![(entry::MMIO_WRITE, sym_addr!(ivb_mmio_write))],
        hypercall_sites: vec![],
    }
}
