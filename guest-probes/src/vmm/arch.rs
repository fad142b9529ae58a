//! x86-64 set-up of a guest as pure functions: identity page tables, long-mode segments
//! and control registers, entry registers, the CPUID APIC id and the SYSCALL MSRs. The VMM
//! writes what these return; the unit tests check them without KVM.

use kvm_bindings::{kvm_cpuid_entry2, kvm_regs, kvm_segment, kvm_sregs};

use super::layout;

/// Present | writable | user: U/S at every level, because kvm_pvm runs guest CPL0 in
/// hardware ring 3, and the syscall probe's user mode needs it on every backend.
pub const PTE_TABLE: u64 = 0x7;
/// `PTE_TABLE` | PS: a 2 MiB leaf.
pub const PTE_LEAF_2M: u64 = 0x87;

pub const CR0_LONG_MODE: u64 = 0x8005_0033; // PG | AM | WP | NE | ET | MP | PE
pub const CR4_LONG_MODE: u64 = 0x620; // PAE | OSFXSR | OSXMMEXCPT (no SMEP/SMAP)
pub const EFER_LONG_MODE: u64 = 0xd01; // NX | LMA | LME | SCE
pub const CODE_SELECTOR: u16 = 0x10;
pub const DATA_SELECTOR: u16 = 0x18;

pub const MSR_STAR: u32 = 0xc000_0081;
pub const MSR_LSTAR: u32 = 0xc000_0082;
pub const MSR_SFMASK: u32 = 0xc000_0084;
/// SYSRET to CS 0x23 / SS 0x1b (user), SYSCALL to CS 0x10 / SS 0x18.
pub const STAR: u64 = 0x0023_0010_0000_0000;
/// SYSCALL clears IF, TF and DF.
pub const SFMASK: u64 = 0x700;

/// The page-table writes of the identity map of the first GiB (2 MiB pages) plus the PDPT
/// entry of GiB 3 (its page directory, for the xAPIC page, starts empty): `(gpa, bytes)`.
pub fn identity_page_tables() -> Vec<(u64, Vec<u8>)> {
    let pd: Vec<u8> = (0..512u64).flat_map(|i| ((i << 21) | PTE_LEAF_2M).to_le_bytes()).collect();
    vec![
        (layout::PML4, (layout::PDPT | PTE_TABLE).to_le_bytes().to_vec()),
        (layout::PDPT, (layout::PD0 | PTE_TABLE).to_le_bytes().to_vec()),
        (layout::PDPT + 3 * 8, (layout::PD3 | PTE_TABLE).to_le_bytes().to_vec()),
        (layout::PD0, pd),
    ]
}

/// The 64-bit code segment (selector 0x10, DPL 0, L = 1).
pub fn code_segment() -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: CODE_SELECTOR,
        type_: 11,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    }
}

/// The data segment every other segment register gets (selector 0x18, D/B = 1).
pub fn data_segment() -> kvm_segment {
    kvm_segment { selector: DATA_SELECTOR, type_: 3, db: 1, l: 0, ..code_segment() }
}

/// `s` (as KVM_GET_SREGS returned it) switched to 64-bit long mode on the identity map.
pub fn long_mode_sregs(mut s: kvm_sregs) -> kvm_sregs {
    s.cr3 = layout::PML4;
    s.cr4 = CR4_LONG_MODE;
    s.cr0 = CR0_LONG_MODE;
    s.efer = EFER_LONG_MODE;
    s.cs = code_segment();
    let data = data_segment();
    s.ss = data;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s
}

/// Registers of vCPU `id` entering at `rip`: its own stack, RFLAGS = 2 (reserved bit).
pub fn entry_regs(id: u32, rip: u64) -> kvm_regs {
    kvm_regs { rip, rflags: 2, rsp: layout::stack_top(id), ..Default::default() }
}

/// Puts APIC id `id` into CPUID leaf 1 (EBX bits 31:24).
pub fn set_apic_id(entries: &mut [kvm_cpuid_entry2], id: u32) {
    for e in entries.iter_mut().filter(|e| e.function == 1) {
        e.ebx = (e.ebx & 0x00ff_ffff) | (id << 24);
    }
}

/// Sets feature bit `bit` in EAX of CPUID leaf `leaf` (KVM's feature leaf 0x40000001 for
/// paravirtual features). Returns false when the table has no such leaf.
pub fn set_feature_eax(entries: &mut [kvm_cpuid_entry2], leaf: u32, bit: u32) -> bool {
    let mut found = false;
    for e in entries.iter_mut().filter(|e| e.function == leaf) {
        e.eax |= 1 << bit;
        found = true;
    }
    found
}

/// The SYSCALL MSRs every vCPU gets (LSTAR is the syscall probe's).
pub fn syscall_msrs() -> [(u32, u64); 2] {
    [(MSR_STAR, STAR), (MSR_SFMASK, SFMASK)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u64_at(tables: &[(u64, Vec<u8>)], gpa: u64) -> u64 {
        for (base, bytes) in tables {
            if gpa >= *base && gpa + 8 <= base + bytes.len() as u64 {
                let o = (gpa - base) as usize;
                return u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
            }
        }
        0
    }

    /// A 4-level walk of the tables for `va`: (physical address, U/S at every level).
    fn walk(tables: &[(u64, Vec<u8>)], va: u64) -> Option<(u64, bool)> {
        let pml4e = u64_at(tables, layout::PML4 + ((va >> 39) & 511) * 8);
        let pdpte = u64_at(tables, (pml4e & !0xfff) + ((va >> 30) & 511) * 8);
        let pde = u64_at(tables, (pdpte & !0xfff) + ((va >> 21) & 511) * 8);
        if pml4e & 1 == 0 || pdpte & 1 == 0 || pde & 1 == 0 || pde & 0x80 == 0 {
            return None;
        }
        let user = pml4e & pdpte & pde & 4 != 0;
        Some(((pde & !0x1f_ffff) | (va & 0x1f_ffff), user))
    }

    #[test]
    fn the_first_gib_is_identity_mapped_with_user_bits() {
        let t = identity_page_tables();
        for va in [
            0,
            0x1000,
            layout::IMAGE,
            layout::SHARED_GPA + 0x40,
            layout::PROTECTED_GPA,
            layout::MMIO_GPA,
            (1 << 30) - 8,
        ] {
            assert_eq!(walk(&t, va), Some((va, true)), "{va:#x}");
        }
        assert_eq!(walk(&t, 1 << 30), None, "GiB 1 is not mapped");
        assert_eq!(walk(&t, 0xfee0_0000), None, "the xAPIC page directory starts empty");
        assert_eq!(u64_at(&t, layout::PDPT + 24), layout::PD3 | PTE_TABLE);
    }

    #[test]
    fn long_mode_sregs_match_what_kvm_pvm_needs() {
        let s = long_mode_sregs(kvm_sregs::default());
        assert_eq!((s.cr0, s.cr4, s.efer, s.cr3), (0x8005_0033, 0x620, 0xd01, layout::PML4));
        assert_eq!((s.cs.selector, s.cs.type_, s.cs.l, s.cs.db, s.cs.dpl, s.cs.present), (0x10, 11, 1, 0, 0, 1));
        for d in [s.ss, s.ds, s.es, s.fs, s.gs] {
            assert_eq!((d.selector, d.type_, d.db, d.l, d.s, d.present), (0x18, 3, 1, 0, 1, 1));
        }
        // STAR's SYSCALL CS/SS are the segments above
        assert_eq!((STAR >> 32) & 0xffff, u64::from(CODE_SELECTOR));
        assert_eq!(((STAR >> 32) & 0xffff) + 8, u64::from(DATA_SELECTOR));
    }

    #[test]
    fn entry_registers_and_apic_id() {
        let r = entry_regs(1, 0x10040);
        assert_eq!((r.rip, r.rflags, r.rsp), (0x10040, 2, layout::stack_top(1)));
        let mut e = [
            kvm_cpuid_entry2 { function: 1, ebx: 0xab12_3456, ..Default::default() },
            kvm_cpuid_entry2 { function: 0, ebx: 0xffff_ffff, ..Default::default() },
        ];
        set_apic_id(&mut e, 3);
        assert_eq!(e[0].ebx, 0x0312_3456);
        assert_eq!(e[1].ebx, 0xffff_ffff);
    }

    #[test]
    fn feature_bit_goes_to_eax_of_its_leaf_only() {
        let mut e = [
            kvm_cpuid_entry2 { function: 0x4000_0001, eax: 0x1, ..Default::default() },
            kvm_cpuid_entry2 { function: 1, eax: 0x10, ..Default::default() },
        ];
        assert!(set_feature_eax(&mut e, 0x4000_0001, 28));
        assert_eq!((e[0].eax, e[1].eax), (0x1000_0001, 0x10));
        assert!(!set_feature_eax(&mut e[1..], 0x4000_0001, 28));
    }
}
