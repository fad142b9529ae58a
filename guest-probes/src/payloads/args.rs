//! Typed arguments of the payload entries: one struct per entry, whose fields name the
//! registers the entry reads (documented in the payload's header), so that a call site
//! says `PioOut { port }` instead of setting `r15` with a comment.
//!
//! Sampling entries (run through `Vcpu::run_sampling*`) leave out `rdi`, `rsi`, `r8` and
//! `r9`: the sample loop's buffer, count, batch and result words are set by the VMM. The
//! other entries name every register they read.

use kvm_bindings::kvm_regs;

use super::{entry, Entry};

/// The arguments of one payload entry.
pub trait Args {
    /// The entry these arguments are for.
    fn entry(&self) -> Entry;
    /// Writes the arguments into the registers the entry reads.
    fn set(&self, r: &mut kvm_regs);
}

/// `Name => ENTRY { field: register, ... }`: a struct of u64 fields and its [`Args`].
macro_rules! payload_args {
    ($( $(#[$doc:meta])* $name:ident => $entry:ident { $( $(#[$fdoc:meta])* $field:ident : $reg:ident ),* $(,)? } )*) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
            pub struct $name {
                $( $(#[$fdoc])* pub $field: u64, )*
            }
            impl Args for $name {
                fn entry(&self) -> Entry {
                    entry::$entry
                }
                #[allow(unused_variables)]
                fn set(&self, r: &mut kvm_regs) {
                    $( r.$reg = self.$field; )*
                }
            }
        )*
    };
}

payload_args! {
    /// `tsc_overhead` (sampling): the sample loop with an empty body.
    TscOverhead => TSC_OVERHEAD {}
    /// `native_loop` (sampling): `dec; jnz` iterations.
    NativeLoop => NATIVE_LOOP {}
    /// `hypercall` (sampling).
    Hypercall => HYPERCALL {
        /// The hypercall number.
        nr: r10,
        /// What the hypercall must return (the payload counts other answers).
        expected: rbp,
    }
    /// `pio_out` (sampling): `out` to a port.
    PioOut => PIO_OUT { port: r15 }
    /// `mmio_write` (sampling): a store to an unbacked GPA.
    MmioWrite => MMIO_WRITE { gpa: r15 }
    /// `cpuid` (sampling).
    Cpuid => CPUID { leaf: r15 }
    /// `syscall` (sampling): user-mode SYSCALL round trips.
    Syscall => SYSCALL {
        user_stack: rbx,
        /// What the SYSCALL handler returns.
        expected: rbp,
    }
    /// `view_switch` (sampling): hypercall-driven memory view switches.
    ViewSwitch => VIEW_SWITCH {
        /// The port the guest asks for a view on.
        port: r10,
        protected: r15,
        /// The word stored at `protected`.
        secret: rbp,
    }
    /// `vmfunc_discover`: finds the view by tag, reads the protected GPA in both views.
    VmfuncDiscover => VMFUNC_DISCOVER {
        results: r9,
        tag: r10,
        /// `KVM_HC_VMFUNC_VIEW_QUERY`.
        hypercall: r11,
        protected: r15,
        /// The view the VMM published: the guest enters only the index the hypercall
        /// answered, and only when it is this one.
        expected_view: rbp,
    }
    /// `vmfunc_switch` (sampling): VMFUNC round trips into a view.
    VmfuncSwitch => VMFUNC_SWITCH {
        view: r10,
        protected: r15,
        /// The word the protected page holds.
        secret: rbp,
    }
    /// `poll_ping` (sampling): the timed side of the ping-pong.
    PollPing => POLL_PING {
        lines: r10,
        status: r15,
    }
    /// `poll_pong`: echoes pings until STOP.
    PollPong => POLL_PONG {
        lines: r10,
        status: r15,
    }
    /// `mwait_recv`: MONITOR/MWAIT wake-ups.
    MwaitRecv => MWAIT_RECV {
        buffer: rdi,
        samples: rsi,
        line: r11,
        status: r15,
    }
    /// `notify_store`: the sender for `mwait_recv`.
    NotifyStore => NOTIFY_STORE {
        samples: rsi,
        delay: r9,
        peer_status: r10,
        line: r11,
        status: r15,
    }
    /// `irq_recv`: waits for interrupts (spin or HLT) and stamps them.
    IrqRecv => IRQ_RECV {
        buffer: rdi,
        samples: rsi,
        status: r15,
        /// The VIF page (kvm_pvm) or 0 (sti/cli).
        vif: rbx,
        /// 0 spin, 1 HLT.
        wait: r8,
        /// ICR value of the reply IPI, or 0 for none.
        reply_icr: r11,
    }
    /// `ipi_send`: sends IPIs (and waits for replies).
    IpiSend => IPI_SEND {
        buffer: rdi,
        samples: rsi,
        status: r15,
        peer_status: r10,
        icr: r11,
        vif: rbx,
        /// 0 spin for the reply, 1 HLT for it, 2 no reply.
        mode: r8,
        delay: r9,
    }
    /// `token_ring`: passes a token through a shared word.
    TokenRing => TOKEN_RING {
        passes: rsi,
        participants: r9,
        token: r10,
        index: r11,
        status: r15,
    }
    /// `path_gen`: the open-loop generator of a packet path.
    PathGen => PATH_GEN {
        block: r9,
        status: r15,
    }
    /// `path_sink`: the verifying sink of a packet path.
    PathSink => PATH_SINK {
        block: r9,
        status: r15,
        /// Where the latency samples go.
        samples: rdi,
    }
    /// `path_fwd`: a middle box (switch or chain element) of a packet path.
    PathFwd => PATH_FWD {
        block: r9,
        status: r15,
        /// Where the latency samples go.
        samples: rdi,
    }
    /// `hang_loop`: `jmp .` forever (watchdog tests).
    HangLoop => HANG_LOOP {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_land_in_their_registers() {
        let mut r = kvm_regs::default();
        IpiSend { buffer: 1, samples: 2, status: 3, peer_status: 4, icr: 5, vif: 6, mode: 7, delay: 8 }.set(&mut r);
        assert_eq!((r.rdi, r.rsi, r.r15, r.r10, r.r11, r.rbx, r.r8, r.r9), (1, 2, 3, 4, 5, 6, 7, 8));
        let mut r = kvm_regs { rdi: 9, ..Default::default() };
        PollPing { lines: 0x1000_0000, status: 0x6000 }.set(&mut r);
        assert_eq!((r.r10, r.r15, r.rdi), (0x1000_0000, 0x6000, 9), "sampling registers are left alone");
        assert_eq!(PollPing::default().entry(), entry::POLL_PING);
    }
}
