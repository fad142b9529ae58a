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
        /// The packet-path block of `path_gen` / `path_sink` (one per VM: the path probes
        /// run one vCPU per VM): parameters, counters and tables, words in [`super::path`].
        PATH_BLOCK: u64 = 0x320000;
        PATH_BLOCK_SIZE: u64 = 0x10000;
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

guest_abi! {
    /// The packet-path block at [`mem::PATH_BLOCK`] (`payloads::path`): the VMM writes the
    /// parameters (up to `MARK_CYCLES`) and the tables before the run, the guest the
    /// counters; scratch words are the guest's own. One VM runs one end of the path.
    path, path_asm, "IVB_PATH_" {
        /// GPA of the ring region (`packet_ring::layout`).
        RING: u64 = 0x00;
        /// GPA of the control lines ([`super::ctrl`]) the two ends share.
        CTRL: u64 = 0x08;
        /// Ring slots - 1.
        MASK: u64 = 0x10;
        /// Packets per index publication (generator) / per poll (sink).
        BATCH: u64 = 0x18;
        /// Generator: the packet budget (offered at a paced rate; entered the ring at max).
        LIMIT: u64 = 0x20;
        /// Generator: TSC cycles between packets x 65536; 0 offers as fast as it can.
        INTERVAL: u64 = 0x28;
        /// Generator: TSC cycles to offer for (0: until LIMIT).
        DURATION: u64 = 0x30;
        /// Notification mode: [`NOTIFY_POLL`], [`NOTIFY_HYBRID`], [`NOTIFY_HALT`], [`NOTIFY_EXIT`].
        NOTIFY: u64 = 0x38;
        /// Generator: the port its kicks write to (an ioeventfd, or a userspace exit).
        KICK_PORT: u64 = 0x40;
        /// Sink (hybrid): TSC cycles it keeps polling an empty ring before it arms the
        /// wake-up and halts.
        POLL_CYCLES: u64 = 0x48;
        /// Generator: entries of the length cycle at [`CYCLE`].
        NCYCLE: u64 = 0x50;
        /// Sink: a frame's latency is sampled when `packet_ring::traffic::sampled(seq,
        /// STRIDE_MASK)`.
        STRIDE_MASK: u64 = 0x58;
        /// Sink: latency samples at most (the sample buffer is `rdi`).
        MAX_SAMPLES: u64 = 0x60;
        /// Sink: 0 copies each frame out before verifying it, 1 verifies it in place.
        ZERO_COPY: u64 = 0x68;
        /// Sink: the VIF page (kvm_pvm) or 0 (`sti` / `cli`).
        VIF: u64 = 0x70;
        /// Sink: a descriptor's frame must lie in `[BUF_LO, BUF_HI)` of the ring region.
        BUF_LO: u64 = 0x78;
        BUF_HI: u64 = 0x80;
        /// Sink: entries of the template table at [`KINDS`].
        NKINDS: u64 = 0x88;
        /// Sink: TSC cycles per received-count mark (the trial's own rate spread).
        MARK_CYCLES: u64 = 0x90;
        /// Sink: TSC cycles it spins after each poll that found frames (0: none); a
        /// deliberately slow sink for the tests.
        SINK_DELAY: u64 = 0x98;
        /// Generator: the VMFUNC view (kvm-patch) that maps the ring and its control
        /// lines, entered around every step that touches them; 0: the ring is a memslot.
        VIEW: u64 = 0xa0;
        /// Packets offered (generator).
        SENT: u64 = 0x100;
        /// Offered packets that found the ring full (generator).
        DROPPED: u64 = 0x108;
        /// Index stores (generator: head publications; sink: tail releases).
        PUBLICATIONS: u64 = 0x110;
        /// TSC cycles without work: pacing waits (generator), empty polls and halts (sink).
        IDLE: u64 = 0x118;
        /// TSC at the first step and after the last one.
        T_FIRST: u64 = 0x120;
        T_LAST: u64 = 0x128;
        /// Wake-ups sent (generator).
        KICKS: u64 = 0x130;
        /// Frames taken out of the ring, good or not (sink).
        RECEIVED: u64 = 0x138;
        CORRUPTED: u64 = 0x140;
        POLLS: u64 = 0x148;
        EMPTY_POLLS: u64 = 0x150;
        /// Generator: VMFUNC entries into VIEW (each one with its return).
        VIEW_ENTRIES: u64 = 0x158;
        /// Generator scratch: non-zero while it is inside VIEW.
        S_IN_VIEW: u64 = 0x160;
        LOST: u64 = 0x168;
        DUPLICATED: u64 = 0x170;
        REORDERED: u64 = 0x178;
        /// The sequence number the sink expects next.
        NEXT_SEQ: u64 = 0x180;
        /// Latency samples stored.
        NSAMPLES: u64 = 0x188;
        /// Halts the sink entered with its wake-up armed, and interrupts that woke it.
        SLEEPS: u64 = 0x190;
        WAKES: u64 = 0x198;
        /// Non-zero: the peer broke the ring protocol (the sink saw an overrun).
        ERROR: u64 = 0x1a0;
        /// Missing-sequence marks outstanding in [`SEQ_BITMAP`].
        OUTSTANDING: u64 = 0x1a8;
        /// Received-count marks stored at [`MARKS`].
        NMARKS: u64 = 0x1b0;
        /// Sink: TSC cycles spent in HLT (what its vCPU left to the host).
        HALTED: u64 = 0x1b8;
        /// Scratch words of the guest.
        S_PREV: u64 = 0x1c0;
        S_CYCLE: u64 = 0x1c8;
        S_EMPTY_RUN: u64 = 0x1d0;
        S_NEXT_MARK: u64 = 0x1d8;
        S_ELAPSED: u64 = 0x1e0;
        S_NOW: u64 = 0x1e8;
        S_SAMPLES: u64 = 0x1f0;
        S_HLT_T: u64 = 0x1f8;
        /// Generator: the length cycle, NCYCLE entries of (template GPA, length, checksum
        /// base), [`ENTRY_SIZE`] bytes each.
        CYCLE: u64 = 0x200;
        /// Sink: the templates by length, NKINDS entries of the same shape.
        KINDS: u64 = 0x400;
        ENTRY_SIZE: u64 = 24;
        ENTRY_TEMPLATE: u64 = 0;
        ENTRY_LEN: u64 = 8;
        ENTRY_BASE: u64 = 16;
        /// Sink: one bit per sequence number in a window of 65536: set while missing.
        SEQ_BITMAP: u64 = 0x1000;
        SEQ_WINDOW: u64 = 65536;
        /// Sink: where a copying sink copies a frame to.
        COPY_BUF: u64 = 0x3000;
        /// Templates (frames with sequence, stamp and checksum 0), 2 KiB each.
        TEMPLATES: u64 = 0x4000;
        TEMPLATE_STRIDE: u64 = 0x800;
        MAX_TEMPLATES: u64 = 4;
        /// Sink: received count at each mark, up to MAX_MARKS u64s.
        MARKS: u64 = 0x6000;
        MAX_MARKS: u64 = 4096;
        /// Values of [`NOTIFY`].
        NOTIFY_POLL: u64 = 0;
        NOTIFY_HYBRID: u64 = 1;
        NOTIFY_HALT: u64 = 2;
        NOTIFY_EXIT: u64 = 3;
    }
}

guest_abi! {
    /// The control lines the two ends of a path share (in shared memory, beside the ring).
    ctrl, ctrl_asm, "IVB_CTRL_" {
        /// The sink sets it when it is about to halt; a sender that finds it set clears it
        /// and kicks. Written by both ends, rarely.
        SLEEP: u64 = 0;
        /// The generator sets it after its last publication.
        DONE: u64 = 64;
        SIZE: u64 = 128;
    }
}

guest_abi! {
    /// The forwarder block at [`mem::PATH_BLOCK`] of a middle-box VM (`path_fwd`: the
    /// switch VM0 of `path.b`, each middle box of `path.chain`): global words, then up
    /// to [`MAX_PORTS`] port records of [`PORT_SIZE`] bytes at [`PORTS`] (words `P_*`).
    fwd, fwd_asm, "IVB_FWD_" {
        NPORTS: u64 = 0x00;
        /// Frames per input poll.
        BATCH: u64 = 0x08;
        /// As [`super::path::NOTIFY`].
        NOTIFY: u64 = 0x10;
        POLL_CYCLES: u64 = 0x18;
        /// The VIF page (kvm_pvm) or 0.
        VIF: u64 = 0x20;
        /// Latency samples (cumulative one-way, generator -> this hop) as the sink takes them.
        STRIDE_MASK: u64 = 0x28;
        MAX_SAMPLES: u64 = 0x30;
        /// The source MAC this box writes into every frame it forwards (its header touch).
        SRC_MAC: u64 = 0x38;
        /// Counters.
        POLLS: u64 = 0x80;
        EMPTY_POLLS: u64 = 0x88;
        IDLE: u64 = 0x90;
        T_FIRST: u64 = 0x98;
        T_LAST: u64 = 0xa0;
        SLEEPS: u64 = 0xa8;
        WAKES: u64 = 0xb0;
        KICKS: u64 = 0xb8;
        NSAMPLES: u64 = 0xc0;
        HALTED: u64 = 0xc8;
        /// Non-zero: an input's producer index ran more than a ring ahead.
        ERROR: u64 = 0xd8;
        /// Scratch words.
        S_PREV: u64 = 0xe0;
        S_EMPTY_RUN: u64 = 0xe8;
        S_SAMPLES: u64 = 0xf0;
        S_ALL_DONE: u64 = 0xf8;
        S_WORK: u64 = 0x100;
        S_HLT_T: u64 = 0x108;
        PORTS: u64 = 0x200;
        PORT_SIZE: u64 = 0x100;
        MAX_PORTS: u64 = 4;
        /// Port words: its input ring (0: none) with its control lines and bounds...
        P_IN_RING: u64 = 0x00;
        P_IN_CTRL: u64 = 0x08;
        P_IN_MASK: u64 = 0x10;
        P_IN_BUF_LO: u64 = 0x18;
        P_IN_BUF_HI: u64 = 0x20;
        /// ... its output ring (0: none), control lines, buffer offset and kick port ...
        P_OUT_RING: u64 = 0x28;
        P_OUT_CTRL: u64 = 0x30;
        P_OUT_MASK: u64 = 0x38;
        P_OUT_BUF_LO: u64 = 0x40;
        P_KICK_PORT: u64 = 0x48;
        /// ... the MAC of the VM behind it (the static forwarding table) ...
        P_MAC: u64 = 0x50;
        /// ... the box's private ring indices ...
        P_IN_TAIL: u64 = 0x60;
        P_IN_HEAD: u64 = 0x68;
        P_OUT_HEAD: u64 = 0x70;
        P_OUT_TAIL: u64 = 0x78;
        P_OUT_PUBLISHED: u64 = 0x80;
        /// ... and its counters: frames taken in, frames sent out, frames dropped
        /// because its output ring was full, frames in with no port for their destination,
        /// descriptors out of bounds, and whether its input is done and drained.
        P_RX: u64 = 0xa0;
        P_TX: u64 = 0xa8;
        P_DROP_FULL: u64 = 0xb0;
        P_DROP_UNKNOWN: u64 = 0xb8;
        P_CORRUPT: u64 = 0xc0;
        P_IN_DONE: u64 = 0xc8;
    }
}

/// The `.set` lines of every group, for the payload prelude.
macro_rules! asm_symbols {
    () => {
        concat!(
            mem_asm!(),
            port_asm!(),
            status_asm!(),
            lines_asm!(),
            x2apic_asm!(),
            path_asm!(),
            ctrl_asm!(),
            fwd_asm!()
        )
    };
}

/// Every group's `(assembler symbol, value)` pairs.
pub fn all_asm_symbols() -> Vec<(&'static str, u64)> {
    [mem::ASM, port::ASM, status::ASM, lines::ASM, x2apic::ASM, path::ASM, ctrl::ASM, fwd::ASM].concat()
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
