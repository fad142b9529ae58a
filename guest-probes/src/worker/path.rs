//! The worker side of a packet-path role (`Role::PathGen` / `Role::PathSink`): the
//! notification wiring of its VM, the path block, the run and what it reads back.
//!
//! Wiring by mode (the eventfd is the job's first extra fd, the same one in both VMs):
//! - poll: nothing; the vCPUs never leave the guest for the path.
//! - hybrid, halt: the sink's VM gets an in-kernel irqchip, the IDT and x2APIC, an MSI
//!   route to vector 0x40 and an irqfd on the eventfd; the generator's VM an ioeventfd on
//!   the kick port: a kick goes guest -> KVM -> eventfd -> KVM -> guest, no userspace.
//! - exit: the sink as above; the generator's kick port has no ioeventfd, so every kick
//!   exits to this VMM, which reads the sink's SLEEP word in shared memory and signals the
//!   eventfd when it is set (clearing it), the mediated path.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use kvm_ioctls::{IoEventAddress, NoDatamatch};
use vmm_sys_util::eventfd::EventFd;

use super::path_block::{self, Notify, PathEnd};
use super::proto::{Role, SharedSpec};
use crate::abi::{ctrl, path as p};
use crate::payloads::args::{PathGen, PathSink};
use crate::vmm::{irqchip, layout, Exit, Handled, SharedMemory, Vcpu, Vm, VmmError};

/// The GSI of the sink's irqfd.
const SINK_GSI: u32 = 1;

/// What a role's VM was wired with.
pub(super) struct Wiring {
    notify: Option<Notify>,
    sink: bool,
    kick_port: u16,
    eventfd: Option<EventFd>,
}

impl Wiring {
    /// Before the vCPU exists: the sink's irqchip and tables, the generator's ioeventfd.
    pub fn before_vcpu(vm: &Vm, role: &Role, extra: Vec<OwnedFd>) -> Result<Wiring, VmmError> {
        let (end, sink) = match role {
            Role::PathGen(e) => (e, false),
            Role::PathSink(e) => (e, true),
            _ => return Ok(Wiring { notify: None, sink: false, kick_port: 0, eventfd: None }),
        };
        // SAFETY: the fd came over the control socket (SCM_RIGHTS) and is owned by
        // nothing else; EventFd takes it over.
        let eventfd = extra.into_iter().next().map(|fd| unsafe { EventFd::from_raw_fd(fd.into_raw_fd()) });
        if end.notify.sink_sleeps() && eventfd.is_none() {
            return Err(VmmError::setup(vm.label(), format!("notify={} needs an eventfd", end.notify.label())));
        }
        if sink && end.notify.sink_sleeps() {
            irqchip::create_irqchip(vm)?;
            irqchip::write_tables(vm)?;
        }
        if !sink && matches!(end.notify, Notify::Hybrid | Notify::Halt) {
            let evt = eventfd.as_ref().expect("checked above");
            vm.fd().register_ioevent(evt, &IoEventAddress::Pio(u64::from(end.kick_port)), NoDatamatch).map_err(
                |e| VmmError::Unsupported(format!("KVM_IOEVENTFD on PIO port {:#x} refused: {e}", end.kick_port)),
            )?;
        }
        Ok(Wiring { notify: Some(end.notify), sink, kick_port: end.kick_port, eventfd })
    }

    /// After the vCPU exists: the sink's tables, x2APIC, MSI route and irqfd.
    pub fn after_vcpu(&self, vcpu: &Vcpu) -> Result<(), VmmError> {
        if !(self.sink && self.notify.is_some_and(Notify::sink_sleeps)) {
            return Ok(());
        }
        irqchip::install_tables(vcpu)?;
        irqchip::enable_x2apic(vcpu)?;
        irqchip::route_msi(vcpu.vm(), SINK_GSI, 0, irqchip::VEC_IRQ)?;
        let evt = self.eventfd.as_ref().expect("a sleeping sink has its eventfd");
        vcpu.vm()
            .fd()
            .register_irqfd(evt, SINK_GSI)
            .map_err(|e| VmmError::Unsupported(format!("KVM_IRQFD (GSI {SINK_GSI}) refused: {e}")))
    }
}

/// Writes the path block of `end` into the VM.
pub(super) fn write_block(vcpu: &Vcpu, end: &PathEnd, tsc_khz: u64) -> Result<(), VmmError> {
    let block = path_block::build(end, tsc_khz, irqchip::irq_flag_addr(vcpu))
        .map_err(|e| VmmError::setup(vcpu.label(), format!("path block: {e}")))?;
    vcpu.vm().write_bytes(layout::PATH_BLOCK, &block)
}

/// The host view of the SLEEP control word (for the exit mode's VMM).
pub(super) fn ctrl_word<'a>(
    regions: &'a [SharedMemory],
    specs: &[SharedSpec],
    end: &PathEnd,
) -> Result<&'a AtomicU64, VmmError> {
    for (r, s) in regions.iter().zip(specs) {
        if (s.gpa..s.gpa + s.size).contains(&end.ctrl_gpa) {
            let off = (end.ctrl_gpa - s.gpa + ctrl::SLEEP) as usize;
            if off + 8 > r.size() || !off.is_multiple_of(8) {
                break;
            }
            return Ok(r.atomic(off));
        }
    }
    Err(VmmError::setup("path", format!("control lines at {:#x} lie in no shared region", end.ctrl_gpa)))
}

/// What a path role's run gave.
pub(super) struct PathRun {
    pub samples: Vec<u64>,
    pub counters: BTreeMap<String, u64>,
    pub marks: Vec<u64>,
}

/// Runs the role's payload to its end and reads back counters, marks and samples.
pub(super) fn run(
    vcpu: &mut Vcpu,
    role: &Role,
    wiring: &Wiring,
    sleep: &AtomicU64,
    deadline: Instant,
) -> Result<PathRun, VmmError> {
    let status = layout::params(0);
    let mut signals = 0u64;
    let mut signal_errors = 0u64;
    match role {
        Role::PathGen(_) => {
            vcpu.enter(&PathGen { block: layout::PATH_BLOCK, status })?;
            let mediated = wiring.notify == Some(Notify::Exit);
            let port = wiring.kick_port;
            let evt = wiring.eventfd.as_ref();
            vcpu.run(deadline, &mut |exit| match exit {
                Exit::IoOut { port: p, .. } if mediated && p == port => {
                    // The mediated path: this VMM decides whether the peer needs a wake-up.
                    if sleep.swap(0, Ordering::SeqCst) != 0 {
                        match evt.map(|e| e.write(1)) {
                            Some(Ok(())) => signals += 1,
                            _ => signal_errors += 1,
                        }
                    }
                    Handled::Continue
                }
                _ => Handled::No,
            })?;
        }
        Role::PathSink(_) => {
            vcpu.enter(&PathSink { block: layout::PATH_BLOCK, status, samples: layout::samples(0).0 })?;
            vcpu.run(deadline, &mut |_| Handled::No)?;
        }
        _ => return Err(VmmError::setup(vcpu.label(), "not a path role")),
    }
    if signal_errors > 0 {
        return Err(VmmError::setup(vcpu.label(), format!("{signal_errors} eventfd writes to the sink failed")));
    }
    let vm = vcpu.vm();
    let words = vm.read_u64s(layout::PATH_BLOCK, path_block::COUNTER_WORDS)?;
    let mut counters = path_block::counters(&words);
    counters.insert("VMM_SIGNALS".into(), signals);
    let nmarks = counters.get("NMARKS").copied().unwrap_or(0).min(p::MAX_MARKS);
    let marks = vm.read_u64s(layout::PATH_BLOCK + p::MARKS, nmarks as usize)?;
    let (buf, cap) = layout::samples(0);
    let n = counters.get("NSAMPLES").copied().unwrap_or(0).min(cap);
    let samples = if matches!(role, Role::PathSink(_)) { vm.read_u64s(buf, n as usize)? } else { Vec::new() };
    Ok(PathRun { samples, counters, marks })
}
