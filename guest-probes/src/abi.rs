//! The guest ABI: every number that both the VMM (Rust) and the guest payloads (assembly)
//! rely on, defined once.
//!
//! Each group below is written once in a [`guest_abi!`] table. The macro emits, for every
//! entry, a Rust `const` in the group's module and a `.set IVB_<PREFIX><NAME>, <value>`
//! line for the assembly; [`asm_symbols!`] concatenates all groups' `.set` lines and is
//! the first thing of every payload's prelude. A payload therefore writes
//! `cmpq $0, IVB_ST_STOP(%r15)` where Rust writes `abi::status::STOP`, and the two cannot
//! drift apart. Values must be plain integer literals without `_` separators (the
//! assembler reads them too; a unit test checks every `.set` line against its constant).

/// `guest_abi! { mod_name, asm_macro_name, "IVB_PREFIX_" { NAME: type = literal; ... } }`
macro_rules! guest_abi {
    ($(#[$mdoc:meta])* $module:ident, $asm:ident, $prefix:literal { $( $(#[$doc:meta])* $name:ident : $ty:ty = $val:literal; )* }) => {
        $(#[$mdoc])*
        pub mod $module {
            $( $(#[$doc])* pub const $name: $ty = $val; )*
            /// `(assembler symbol, value)` of every constant of this group (for tests).
            pub const ASM: &[(&str, u64)] = &[$( (concat!($prefix, stringify!($name)), $val as u64), )*];
        }
        macro_rules! $asm {
            () => { concat!($( ".set ", $prefix, stringify!($name), ", ", stringify!($val), "\n", )*) };
        }
    };
}

guest_abi! {
    /// The guest physical memory map (see `vmm::layout` for the per-vCPU areas and the
    /// assertions that keep them apart).
    mem, mem_asm, "IVB_" {
        /// GDT (interrupt probes: 0x10 code, 0x18 data).
        GDT: u64 = 0x500;
        PML4: u64 = 0x1000;
        PDPT: u64 = 0x2000;
        /// Page directory of GiB 0 (2 MiB pages).
        PD0: u64 = 0x3000;
        /// Page directory of GiB 3 (the xAPIC page).
        PD3: u64 = 0x4000;
        /// IDT (interrupt probes, 256 x 16 bytes).
        IDT: u64 = 0x5000;
        /// Per-vCPU status areas, [`PARAMS_STRIDE`] bytes each.
        PARAMS: u64 = 0x6000;
        PARAMS_STRIDE: u64 = 0x100;
        /// Guest "kernel" data (the SYSCALL handler's answer).
        KDATA: u64 = 0x7000;
        /// kvm_pvm VIF pages, one 4 KiB page per vCPU.
        VIF_BASE: u64 = 0x8000;
        /// The guest image (all payloads).
        IMAGE: u64 = 0x10000;
        IMAGE_MAX: u64 = 0xf0000;
        /// Supervisor stack top of vCPU 0; vCPU k's is [`STACK_STRIDE`] * k lower.
        STACKS_TOP: u64 = 0x200000;
        STACK_STRIDE: u64 = 0x20000;
        /// The user-mode stack top sits this far below the supervisor stack top.
        USER_STACK_GAP: u64 = 0x10000;
        /// Per-vCPU result words, [`RESULTS_STRIDE`] bytes each.
        RESULTS: u64 = 0x300000;
        RESULTS_STRIDE: u64 = 0x1000;
        /// Per-vCPU sample buffers, [`SAMPLES_PER_VCPU`] bytes each.
        SAMPLES: u64 = 0x400000;
        /// 12 MiB = 1.5 M samples per vCPU.
        SAMPLES_PER_VCPU: u64 = 0xc00000;
        /// First shared region (memfd); region k is [`SHARED_STRIDE`] * k higher.
        SHARED_GPA: u64 = 0x10000000;
        SHARED_STRIDE: u64 = 0x1000000;
        /// The "protected" memslot of the view probes.
        PROTECTED_GPA: u64 = 0x20000000;
        /// Never backed: stores here exit as KVM_EXIT_MMIO.
        MMIO_GPA: u64 = 0x30000000;
    }
}

guest_abi! {
    /// I/O ports the run loop handles itself.
    port, port_asm, "IVB_PORT_" {
        /// A payload is done (`out %al, $IVB_PORT_DONE`).
        DONE: u16 = 0xf0;
        /// A payload reports an error code (the run loop turns it into an error).
        ERROR: u16 = 0xf1;
        /// The error code `irq_unexpected` writes to [`ERROR`] (an unexpected vector).
        UNEXPECTED_VECTOR: u8 = 0xfe;
    }
}

guest_abi! {
    /// A vCPU's status area at `vmm::layout::params(id)`: u64 words written by the guest
    /// (and STOP by the host). Documented per word in `payloads::irq`.
    status, status_asm, "IVB_ST_" {
        /// lfence;rdtsc at the entry of the vector-0x40 handler (0 = none yet).
        STAMP: u64 = 0x00;
        /// Vector-0x40 handler entries; echoes (poll_pong); token passes (token_ring).
        COUNT: u64 = 0x08;
        /// Set by a receiver when it starts waiting; cleared by the sender.
        READY: u64 = 0x10;
        /// The sender's stamp.
        SRC: u64 = 0x18;
        /// Set by the host to abort: every wait loop checks it.
        STOP: u64 = 0x20;
        /// HLTs / MWAITs that returned with nothing delivered.
        EARLY: u64 = 0x28;
        /// HLT instructions executed.
        HLTS: u64 = 0x30;
        /// Interrupts taken right before a HLT (the handler stepped over it).
        FIXUPS: u64 = 0x38;
        /// Vector-0x41 entries (host kicks; abort paths only).
        KICKS: u64 = 0x40;
        /// Vector-0xff entries.
        SPURIOUS: u64 = 0x48;
        /// MWAITs executed.
        MWAITS: u64 = 0x50;
        /// IPIs sent.
        SENT: u64 = 0x58;
        /// Bytes of the status area the probes clear before a run.
        SIZE: u64 = 0x60;
    }
}

guest_abi! {
    /// The ping-pong lines of the notify payloads, relative to their base (`r10`).
    lines, lines_asm, "IVB_LINE_" {
        /// Written only by the initiator.
        PING: u64 = 0;
        /// Written only by the responder (its own cache line).
        PONG: u64 = 64;
        /// Bytes of the two lines.
        SIZE: u64 = 128;
    }
}

guest_abi! {
    /// x2APIC MSRs the interrupt payloads and the VMM use.
    x2apic, x2apic_asm, "IVB_X2APIC_" {
        EOI: u32 = 0x80b;
        ICR: u32 = 0x830;
    }
}

/// The `.set` lines of every group, for the payload prelude.
macro_rules! asm_symbols {
    () => {
        concat!(mem_asm!(), port_asm!(), status_asm!(), lines_asm!(), x2apic_asm!())
    };
}

/// Every group's `(assembler symbol, value)` pairs.
pub fn all_asm_symbols() -> Vec<(&'static str, u64)> {
    [mem::ASM, port::ASM, status::ASM, lines::ASM, x2apic::ASM].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> u64 {
        match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).unwrap(),
            None => v.parse().unwrap(),
        }
    }

    #[test]
    fn every_set_line_matches_its_constant() {
        let text = asm_symbols!();
        let lines: Vec<&str> = text.lines().collect();
        let symbols = all_asm_symbols();
        assert_eq!(lines.len(), symbols.len());
        for (line, (sym, value)) in lines.iter().zip(&symbols) {
            let rest = line.strip_prefix(".set ").unwrap_or_else(|| panic!("{line}"));
            let (name, v) = rest.split_once(", ").unwrap();
            assert_eq!(name, *sym);
            assert_eq!(parse(v), *value, "{line}");
        }
    }

    #[test]
    fn symbols_are_unique() {
        let mut names: Vec<&str> = all_asm_symbols().iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
