//! The run loop: [`Vcpu::run`] enters the guest under the watchdog, hands exits to the
//! probe's handler ([`Exit`] -> [`Handled`]), handles the done and error ports and fatal
//! exits in one place, and counts exits ([`ExitStats`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use kvm_ioctls::VcpuExit;

use super::error::VmmError;
use super::layout;
use super::vcpu::Vcpu;
use super::watchdog;

/// Exit counters of one vCPU (cumulative until [`ExitStats::reset`]).
#[derive(Clone, Debug, Default)]
pub struct ExitStats {
    pub io_out: BTreeMap<u16, u64>,
    pub io_in: BTreeMap<u16, u64>,
    pub mmio_read: u64,
    pub mmio_write: u64,
    pub hlt: u64,
    pub irq_window: u64,
    /// KVM_RUN returned EINTR (signals, watchdog kicks) or KVM_EXIT_INTR.
    pub intr: u64,
    pub total: u64,
}

impl ExitStats {
    pub fn reset(&mut self) {
        *self = ExitStats::default();
    }
    pub fn io_out_on(&self, port: u16) -> u64 {
        self.io_out.get(&port).copied().unwrap_or(0)
    }
    pub fn io_out_total(&self) -> u64 {
        self.io_out.values().sum()
    }
    /// Exits that reached the VMM with work to do (PIO incl. the done port, MMIO, HLT, IRQ
    /// window); signals and KVM_EXIT_INTR are not counted.
    pub fn userspace_exits(&self) -> u64 {
        self.io_out_total()
            + self.io_in.values().sum::<u64>()
            + self.mmio_read
            + self.mmio_write
            + self.hlt
            + self.irq_window
    }
}

/// The last exit of a vCPU, kept cheaply (no allocation per exit) for error messages.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LastExit {
    None,
    IoOut(u16),
    IoIn(u16),
    MmioRead(u64),
    MmioWrite(u64),
    Hlt,
    IrqWindowOpen,
    Intr,
    Shutdown,
    InternalError,
    FailEntry(u64, u32),
    /// Any other KVM exit reason (number).
    Other(u32),
}

impl fmt::Display for LastExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LastExit::None => f.write_str("none yet"),
            LastExit::IoOut(p) => write!(f, "KVM_EXIT_IO out port {p:#x}"),
            LastExit::IoIn(p) => write!(f, "KVM_EXIT_IO in port {p:#x}"),
            LastExit::MmioRead(a) => write!(f, "KVM_EXIT_MMIO read {a:#x}"),
            LastExit::MmioWrite(a) => write!(f, "KVM_EXIT_MMIO write {a:#x}"),
            LastExit::Hlt => f.write_str("KVM_EXIT_HLT"),
            LastExit::IrqWindowOpen => f.write_str("KVM_EXIT_IRQ_WINDOW_OPEN"),
            LastExit::Intr => f.write_str("KVM_EXIT_INTR"),
            LastExit::Shutdown => f.write_str("KVM_EXIT_SHUTDOWN (triple fault)"),
            LastExit::InternalError => f.write_str("KVM_EXIT_INTERNAL_ERROR"),
            LastExit::FailEntry(r, cpu) => write!(f, "KVM_EXIT_FAIL_ENTRY reason {r:#x} on host CPU {cpu}"),
            LastExit::Other(n) => write!(f, "KVM exit reason {n}"),
        }
    }
}

/// An exit handed to a probe's handler. Exits not listed here are always errors.
#[derive(Debug)]
pub enum Exit<'a> {
    IoOut { port: u16, data: &'a [u8] },
    IoIn { port: u16, data: &'a mut [u8] },
    MmioRead { addr: u64, data: &'a mut [u8] },
    MmioWrite { addr: u64, data: &'a [u8] },
    Hlt,
    IrqWindowOpen,
}

/// What a handler did with an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Re-enter the guest.
    Continue,
    /// Stop the run loop successfully (like the done port).
    Stop,
    /// Not expected here: the run loop fails with the exit, RIP and probe name.
    No,
}

impl Vcpu {
    /// Runs the guest until it writes to [`layout::PORT_DONE`] (or `handler` returns
    /// [`Handled::Stop`]), guarded by the watchdog: past `deadline` KVM_RUN is interrupted
    /// and the run fails with `VmmError::Timeout` naming the probe, RIP and last exit.
    /// Exits the handler does not take (`Handled::No`), KVM_EXIT_SHUTDOWN,
    /// KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_FAIL_ENTRY and unknown exits fail with
    /// `VmmError::GuestExit` naming the probe, exit and RIP.
    pub fn run(&mut self, deadline: Instant, handler: &mut dyn FnMut(Exit<'_>) -> Handled) -> Result<(), VmmError> {
        let imm = &mut self.fd.get_kvm_run().immediate_exit as *mut u8;
        let guard = watchdog::Guard::arm(deadline, imm);
        let result = self.run_loop(&guard, handler);
        drop(guard);
        self.fd.set_kvm_immediate_exit(0);
        result
    }

    fn run_loop(
        &mut self,
        guard: &watchdog::Guard,
        handler: &mut dyn FnMut(Exit<'_>) -> Handled,
    ) -> Result<(), VmmError> {
        enum Next {
            Continue,
            Stop,
            Error(String),
        }
        loop {
            if guard.fired() {
                return Err(self.timeout(guard));
            }
            let next = match self.fd.run() {
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.stats.intr += 1;
                    Next::Continue
                }
                Err(e) => Next::Error(format!("KVM_RUN failed: {e}")),
                Ok(exit) => {
                    self.stats.total += 1;
                    let (last, exit) = match exit {
                        VcpuExit::IoOut(port, data) => {
                            *self.stats.io_out.entry(port).or_default() += 1;
                            (LastExit::IoOut(port), Some(Exit::IoOut { port, data }))
                        }
                        VcpuExit::IoIn(port, data) => {
                            *self.stats.io_in.entry(port).or_default() += 1;
                            (LastExit::IoIn(port), Some(Exit::IoIn { port, data }))
                        }
                        VcpuExit::MmioRead(addr, data) => {
                            self.stats.mmio_read += 1;
                            (LastExit::MmioRead(addr), Some(Exit::MmioRead { addr, data }))
                        }
                        VcpuExit::MmioWrite(addr, data) => {
                            self.stats.mmio_write += 1;
                            (LastExit::MmioWrite(addr), Some(Exit::MmioWrite { addr, data }))
                        }
                        VcpuExit::Hlt => {
                            self.stats.hlt += 1;
                            (LastExit::Hlt, Some(Exit::Hlt))
                        }
                        VcpuExit::IrqWindowOpen => {
                            self.stats.irq_window += 1;
                            (LastExit::IrqWindowOpen, Some(Exit::IrqWindowOpen))
                        }
                        VcpuExit::Intr => {
                            self.stats.intr += 1;
                            (LastExit::Intr, None)
                        }
                        VcpuExit::Shutdown => (LastExit::Shutdown, None),
                        VcpuExit::InternalError => (LastExit::InternalError, None),
                        VcpuExit::FailEntry(reason, cpu) => (LastExit::FailEntry(reason, cpu), None),
                        _ => (LastExit::Other(0), None),
                    };
                    let next = match exit {
                        Some(Exit::IoOut { port: layout::PORT_DONE, .. }) => Next::Stop,
                        Some(Exit::IoOut { port: layout::PORT_ERROR, data }) => {
                            Next::Error(format!("guest reported error {:?} on port {:#x}", data, layout::PORT_ERROR))
                        }
                        Some(e) => match handler(e) {
                            Handled::Continue => Next::Continue,
                            Handled::Stop => Next::Stop,
                            Handled::No => Next::Error(format!("unexpected exit {last}")),
                        },
                        None if matches!(last, LastExit::Intr) => Next::Continue,
                        None => Next::Error(String::new()),
                    };
                    self.last_exit = match last {
                        LastExit::Other(_) => LastExit::Other(self.fd.get_kvm_run().exit_reason),
                        l => l,
                    };
                    match next {
                        Next::Error(e) if e.is_empty() => {
                            Next::Error(format!("fatal exit {}", self.describe_last_exit()))
                        }
                        n => n,
                    }
                }
            };
            match next {
                Next::Continue => {}
                Next::Stop => return Ok(()),
                Next::Error(what) => {
                    if guard.fired() {
                        return Err(self.timeout(guard));
                    }
                    return Err(self.fail(&what));
                }
            }
        }
    }

    fn timeout(&self, guard: &watchdog::Guard) -> VmmError {
        VmmError::Timeout {
            vm: self.label().to_string(),
            at: Box::new(self.state()),
            after: guard.elapsed(),
            exits: self.stats.total,
            since_created: self.created.elapsed(),
        }
    }
}
