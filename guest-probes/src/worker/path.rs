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
//!
//! Transport: the ring is a memslot of both VMs, or (transport=vmfunc, [`build_view`]) the
//! generator's VM has no memslot for it and reaches it only inside a VMFUNC view.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use kvm_ioctls::{IoEventAddress, NoDatamatch};
use vmm_sys_util::eventfd::EventFd;

use super::path_block::{self, Notify};
use super::proto::{Role, SharedSpec};
use crate::abi::{ctrl, path as p};
use crate::payloads::args::{PathFwd, PathGen, PathSink};
use crate::vmm::views::uapi::{PERM_R, PERM_W};
use crate::vmm::{irqchip, layout, Exit, Handled, SharedMemory, Vcpu, Vm, VmmError};

/// The first GSI of the irqfds (one per ring the VM takes frames from).
const FIRST_GSI: u32 = 1;

/// A ring this VM produces into: its kick port, its consumer's eventfd (index), and its
/// control lines (the exit mode's VMM reads SLEEP there).
#[derive(Clone, Copy, Debug)]
struct Kick {
    port: u16,
    eventfd: usize,
    ctrl_gpa: u64,
}

/// What a role's VM was wired with.
pub(super) struct Wiring {
    notify: Option<Notify>,
    /// Eventfds (indices) that wake this VM: one irqfd each.
    wakes: Vec<usize>,
    kicks: Vec<Kick>,
    eventfds: Vec<EventFd>,
}

fn role_wiring(role: &Role) -> Option<(Notify, Vec<usize>, Vec<Kick>)> {
    match role {
        Role::PathGen(e) => {
            Some((e.notify, vec![], vec![Kick { port: e.kick_port, eventfd: e.eventfd, ctrl_gpa: e.ctrl_gpa }]))
        }
        Role::PathSink(e) => Some((e.notify, vec![e.eventfd], vec![])),
        Role::PathFwd(f) => Some((
            f.notify,
            f.ports.iter().filter_map(|p| p.input.map(|i| i.2)).collect(),
            f.ports
                .iter()
                .filter_map(|p| p.output.map(|(_, ctrl_gpa, port, eventfd)| Kick { port, eventfd, ctrl_gpa }))
                .collect(),
        )),
        _ => None,
    }
}

impl Wiring {
    /// Before the vCPU exists: the irqchip and tables of a VM that sleeps, the
    /// ioeventfds of the kick ports (hybrid, halt).
    pub fn before_vcpu(vm: &Vm, role: &Role, extra: Vec<OwnedFd>) -> Result<Wiring, VmmError> {
        // SAFETY: each fd came over the control socket (SCM_RIGHTS) and is owned by
        // nothing else; EventFd takes it over.
        let eventfds: Vec<EventFd> =
            extra.into_iter().map(|fd| unsafe { EventFd::from_raw_fd(fd.into_raw_fd()) }).collect();
        let Some((notify, wakes, kicks)) = role_wiring(role) else {
            return Ok(Wiring { notify: None, wakes: vec![], kicks: vec![], eventfds });
        };
        let missing = wakes.iter().chain(kicks.iter().map(|k| &k.eventfd)).find(|&&i| i >= eventfds.len());
        if notify.sink_sleeps() {
            if let Some(i) = missing {
                return Err(VmmError::setup(
                    vm.label(),
                    format!("notify={} needs eventfd {i}; the job carries {}", notify.label(), eventfds.len()),
                ));
            }
            if !wakes.is_empty() {
                irqchip::create_irqchip(vm)?;
                irqchip::write_tables(vm)?;
            }
        }
        if matches!(notify, Notify::Hybrid | Notify::Halt) {
            for k in &kicks {
                vm.fd()
                    .register_ioevent(&eventfds[k.eventfd], &IoEventAddress::Pio(u64::from(k.port)), NoDatamatch)
                    .map_err(|e| {
                        VmmError::Unsupported(format!("KVM_IOEVENTFD on PIO port {:#x} refused: {e}", k.port))
                    })?;
            }
        }
        Ok(Wiring { notify: Some(notify), wakes, kicks, eventfds })
    }

    /// After the vCPU exists: a sleeping VM's tables, x2APIC, MSI routes and irqfds.
    pub fn after_vcpu(&self, vcpu: &Vcpu) -> Result<(), VmmError> {
        if !self.notify.is_some_and(Notify::sink_sleeps) || self.wakes.is_empty() {
            return Ok(());
        }
        irqchip::install_tables(vcpu)?;
        irqchip::enable_x2apic(vcpu)?;
        let gsis: Vec<u32> = (0..self.wakes.len() as u32).map(|i| FIRST_GSI + i).collect();
        irqchip::route_msis(vcpu.vm(), &gsis, 0, irqchip::VEC_IRQ)?;
        for (gsi, &i) in gsis.iter().zip(&self.wakes) {
            vcpu.vm()
                .fd()
                .register_irqfd(&self.eventfds[i], *gsi)
                .map_err(|e| VmmError::Unsupported(format!("KVM_IRQFD (GSI {gsi}) refused: {e}")))?;
        }
        Ok(())
    }
}

/// The tag of the generator's view (the guest gets the index in its path block).
const GEN_VIEW_TAG: u64 = 0x6976_6267_656e_0001;

/// Whether the role reaches the shared regions through a VMFUNC view instead of memslots.
pub(super) fn view_of(role: &Role) -> Option<u32> {
    match role {
        Role::PathGen(e) if e.view != 0 => Some(e.view),
        _ => None,
    }
}

/// transport=vmfunc, before the vCPU exists: views on for this VM and view `view` with
/// what `path_gen` touches between its VMFUNCs, at the same addresses as in the default
/// view: the path payload's code (R+X) and the page tables, the path block and the stack
/// page (R+W; the VM's own memory), and every shared region (R+W; the ring and its control
/// lines, which this VM has no memslot for).
pub(super) fn build_view(vm: &Vm, view: u32, regions: &[SharedMemory], specs: &[SharedSpec]) -> Result<(), VmmError> {
    const PAGE: u64 = 0x1000;
    vm.enable_views()?;
    vm.view_create(view, GEN_VIEW_TAG)?;
    vm.view_map_trampoline(view, "path")?;
    vm.view_map_main(view, layout::PATH_BLOCK, layout::PATH_BLOCK_SIZE, PERM_R | PERM_W)?;
    vm.view_map_main(view, layout::stack_top(0) - PAGE, PAGE, PERM_R | PERM_W)?;
    for (r, s) in regions.iter().zip(specs) {
        vm.view_map_shared(view, r, 0, s.size, s.gpa, PERM_R | PERM_W)?;
    }
    vm.view_publish(view)
}

/// Writes the path (or forwarder) block of the role into the VM.
pub(super) fn write_block(vcpu: &Vcpu, role: &Role, tsc_khz: u64) -> Result<(), VmmError> {
    let vif = irqchip::irq_flag_addr(vcpu);
    let block = match role {
        Role::PathGen(end) | Role::PathSink(end) => path_block::build(end, tsc_khz, vif),
        Role::PathFwd(spec) => path_block::build_fwd(spec, tsc_khz, vif),
        _ => Err("not a path role".to_string()),
    }
    .map_err(|e| VmmError::setup(vcpu.label(), format!("path block: {e}")))?;
    vcpu.vm().write_bytes(layout::PATH_BLOCK, &block)
}

/// The host view of the SLEEP control word at `ctrl_gpa` (for the exit mode's VMM).
fn sleep_word<'a>(regions: &'a [SharedMemory], specs: &[SharedSpec], ctrl_gpa: u64) -> Result<&'a AtomicU64, VmmError> {
    for (r, s) in regions.iter().zip(specs) {
        if (s.gpa..s.gpa + s.size).contains(&ctrl_gpa) {
            let off = (ctrl_gpa - s.gpa + ctrl::SLEEP) as usize;
            if off + 8 > r.size() || !off.is_multiple_of(8) {
                break;
            }
            return Ok(r.atomic(off));
        }
    }
    Err(VmmError::setup("path", format!("control lines at {ctrl_gpa:#x} lie in no shared region")))
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
    regions: &[SharedMemory],
    specs: &[SharedSpec],
    deadline: Instant,
) -> Result<PathRun, VmmError> {
    let status = layout::params(0);
    // The mediated path: each kick port's exit reaches this VMM, which wakes a sleeping
    // consumer through its eventfd.
    let mediated = wiring.notify == Some(Notify::Exit);
    let mut routes = Vec::new();
    if mediated {
        for k in &wiring.kicks {
            routes.push((k.port, sleep_word(regions, specs, k.ctrl_gpa)?, &wiring.eventfds[k.eventfd]));
        }
    }
    let mut signals = 0u64;
    let mut signal_errors = 0u64;
    // transport=vmfunc: the ring has no memslot in this VM; an access outside the view
    // exits as MMIO (KVM returned the vCPU to the default view inside the step).
    let in_view_only = view_of(role).is_some();
    let mut escaped: Option<u64> = None;
    let mut handler = |exit: Exit<'_>| match exit {
        Exit::MmioRead { addr, .. } | Exit::MmioWrite { addr, .. }
            if in_view_only && specs.iter().any(|s| (s.gpa..s.gpa + s.size).contains(&addr)) =>
        {
            escaped = Some(addr);
            Handled::No
        }
        Exit::IoOut { port, .. } => match routes.iter().find(|r| r.0 == port) {
            Some((_, sleep, evt)) => {
                if sleep.swap(0, Ordering::SeqCst) != 0 {
                    match evt.write(1) {
                        Ok(()) => signals += 1,
                        Err(_) => signal_errors += 1,
                    }
                }
                Handled::Continue
            }
            None => Handled::No,
        },
        _ => Handled::No,
    };
    let samples_at = layout::samples(0).0;
    match role {
        Role::PathGen(_) => vcpu.enter(&PathGen { block: layout::PATH_BLOCK, status })?,
        Role::PathSink(_) => vcpu.enter(&PathSink { block: layout::PATH_BLOCK, status, samples: samples_at })?,
        Role::PathFwd(_) => vcpu.enter(&PathFwd { block: layout::PATH_BLOCK, status, samples: samples_at })?,
        _ => return Err(VmmError::setup(vcpu.label(), "not a path role")),
    }
    let ran = vcpu.run(deadline, &mut handler);
    if let (Err(e), Some(addr)) = (&ran, escaped) {
        let forced =
            vcpu.vm().view_stats(vcpu.id()).map(|s| s.forced_default.to_string()).unwrap_or_else(|e| e.to_string());
        return Err(VmmError::setup(
            vcpu.label(),
            format!(
                "the generator touched shared memory at {addr:#x} outside its VMFUNC view, where it has no memslot \
                 (KVM had returned the vCPU to the default view {forced} times in this run: an exit inside the \
                 view other than an external interrupt or the preemption timer): {e}"
            ),
        ));
    }
    ran?;
    if signal_errors > 0 {
        return Err(VmmError::setup(vcpu.label(), format!("{signal_errors} eventfd writes to a consumer failed")));
    }
    let vm = vcpu.vm();
    let (mut counters, marks) = match role {
        Role::PathFwd(f) => {
            let words = vm.read_u64s(layout::PATH_BLOCK, path_block::fwd_words(f.ports.len()))?;
            (path_block::fwd_counters(&words, f.ports.len()), Vec::new())
        }
        _ => {
            let words = vm.read_u64s(layout::PATH_BLOCK, path_block::COUNTER_WORDS)?;
            let counters = path_block::counters(&words);
            let nmarks = counters.get("NMARKS").copied().unwrap_or(0).min(p::MAX_MARKS);
            (counters, vm.read_u64s(layout::PATH_BLOCK + p::MARKS, nmarks as usize)?)
        }
    };
    counters.insert("VMM_SIGNALS".into(), signals);
    if view_of(role).is_some() {
        // What KVM saw of the view: #UDs and faults must be 0; forced returns explain
        // nothing here (an access after one would have failed the run above).
        let v = vm.view_stats(vcpu.id())?;
        counters.insert("VIEW_UD".into(), v.vmfunc_ud);
        counters.insert("VIEW_FAULTS".into(), v.view_faults);
        counters.insert("VIEW_FORCED_DEFAULT".into(), v.forced_default);
    }
    let (buf, cap) = layout::samples(0);
    let n = counters.get("NSAMPLES").copied().unwrap_or(0).min(cap);
    let samples = if matches!(role, Role::PathGen(_)) { Vec::new() } else { vm.read_u64s(buf, n as usize)? };
    Ok(PathRun { samples, counters, marks })
}
