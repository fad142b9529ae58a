//! Payload `cpuid` (probe `vm.exit.cpuid`).
//!
//! Times one `cpuid` (leaf r15, subleaf 0) per operation. CPUID always traps to KVM, which
//! answers from the table the VMM set with KVM_SET_CPUID2 (no exit to the VMM).
//!
//! In: rdi = sample buffer, rsi = samples, r8 = cpuids per sample, r9 = result words,
//!     r15 = leaf.
//! Out: res[0..16] = eax, ebx, ecx, edx of one untimed cpuid (the VMM compares them with
//!      its CPUID table).

use super::{asm_postlude, asm_prelude, entry, guest_payload, sym_addr, Payload};

guest_payload!(
    r#"
.globl ivb_cpuid_start
.globl ivb_cpuid_end
.globl ivb_cpuid
ivb_cpuid_start:
ivb_cpuid:
    mov %r15d, %eax
    xor %ecx, %ecx
    cpuid
    mov %eax, 0(%r9)
    mov %ebx, 4(%r9)
    mov %ecx, 8(%r9)
    mov %edx, 12(%r9)
    IVB_LOOP_BEGIN
    mov %r15d, %eax
    xor %ecx, %ecx
    cpuid
    IVB_LOOP_END
    IVB_DONE
ivb_cpuid_end:
"#
);

pub fn payload() -> Payload {
    Payload {
        name: "cpuid",
        start: sym_addr!(ivb_cpuid_start),
        end: sym_addr!(ivb_cpuid_end),
        entries: vec![(entry::CPUID, sym_addr!(ivb_cpuid))],
        hypercall_sites: vec![],
    }
}
