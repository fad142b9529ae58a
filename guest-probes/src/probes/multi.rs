//! What the multi-vCPU probes (`probes::irq`, `probes::notify`) share: the start of a run
//! ([`Run::start`]: the checks their probe-table rows leave to them, parameter points,
//! iterations, CPUs), VM and vCPU set-up (`irq_vm`, `vcpu_pair`), two pinned vCPU threads
//! that always both end (`run_pair`), a vCPU thread's payload run (`run_entry`, with vCPU
//! preparation: native check, timer cost), guest-status access, result checks and sample
//! assembly.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Instant;

use kvm_ioctls::Cap;
use probe_api::{Budget, Method, Methods, Point, ProbeError, Samples, Support};
use vm_memory::{GuestAddress, GuestMemoryBackend};

use super::{pin_current_thread, vm_support, VmProbe, CLOCK};
use crate::payloads::args::{Args, IpiSend, IrqRecv};
use crate::vmm::irqchip::{self, st};
use crate::vmm::{self, layout, Handled, NativeCheck, Vcpu, Vm};

/// The checks the probe table leaves to the multi-vCPU probes: the host must support the
/// probe, and a per-op-only probe (one delivery per sample) refuses batched budgets.
fn check_runnable(p: &VmProbe, budget: &Budget) -> Result<(), ProbeError> {
    if let Support::Unsupported(r) = (p.support)() {
        return Err(ProbeError::Unsupported(r));
    }
    if p.methods == Methods::PerOpOnly && budget.method != Method::PerOp {
        return Err(ProbeError::Failed(format!(
            "{}: only per-op samples make sense for one delivery; {} requested",
            p.name,
            budget.method.label()
        )));
    }
    Ok(())
}

/// How a receiver waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Spins with interrupts enabled.
    Spin,
    /// Halts (HLT with interrupts enabled; the interrupt wakes it).
    Hlt,
}

impl Wait {
    pub fn reg(self) -> u64 {
        match self {
            Wait::Spin => 0,
            Wait::Hlt => 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Wait::Spin => "spin",
            Wait::Hlt => "hlt",
        }
    }
}

/// `wait=spin`, `wait=hlt` (KVM halt polling as the host has it) and
/// `wait=hlt,halt_poll_ns=0` (halt polling off for the VM: a halted vCPU thread sleeps).
pub(crate) fn wait_points() -> Vec<Point> {
    vec![
        Point::none().with("wait", "spin"),
        Point::none().with("wait", "hlt"),
        Point::none().with("wait", "hlt").with("halt_poll_ns", 0),
    ]
}

/// The default and the halt-polling-off point of a probe whose receiver always halts.
pub(crate) fn halt_points() -> Vec<Point> {
    vec![Point::none(), Point::none().with("halt_poll_ns", 0)]
}

/// `halt_poll_ns=<ns>`: the VM's maximum halt-polling time (KVM_CAP_HALT_POLL); absent:
/// the host's default (module parameter kvm.halt_poll_ns).
fn halt_poll_of(name: &str, point: &Point) -> Result<Option<u64>, ProbeError> {
    match point.get("halt_poll_ns") {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ProbeError::Failed(format!("{name}: halt_poll_ns={v}: expected a number of nanoseconds"))),
    }
}

/// Applies `halt_poll_of` to the VM; returns the note that says which halt polling ran.
fn apply_halt_poll(vm: &Vm, ns: Option<u64>) -> Result<String, ProbeError> {
    let module = std::fs::read_to_string("/sys/module/kvm/parameters/halt_poll_ns")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    match ns {
        None => Ok(format!(
            "KVM halt polling as the host has it (kvm.halt_poll_ns = {module}): a vCPU that halts may be woken while KVM \
             still polls for it, before its thread sleeps"
        )),
        Some(ns) => {
            let cap = kvm_bindings::kvm_enable_cap {
                cap: kvm_bindings::KVM_CAP_HALT_POLL,
                args: [ns, 0, 0, 0],
                ..Default::default()
            };
            vm.fd().enable_cap(&cap).map_err(|e| {
                ProbeError::Unsupported(format!("KVM_ENABLE_CAP(KVM_CAP_HALT_POLL, {ns}) refused: {e}"))
            })?;
            Ok(format!(
                "KVM_CAP_HALT_POLL = {ns} ns for this VM (host default kvm.halt_poll_ns = {module}){}",
                if ns == 0 { ": no halt polling, a halted vCPU thread sleeps until the interrupt wakes it" } else { "" }
            ))
        }
    }
}

/// KVM's statistics of one vCPU (None when KVM_GET_STATS_FD is unavailable).
pub(crate) type KvmStats = Option<std::collections::BTreeMap<String, u64>>;
/// KVM's statistics of a vCPU before and after a loop.
pub(crate) type Around = (KvmStats, KvmStats);

/// KVM's halt counters of `v` now (None when the stats fd is unavailable).
pub(crate) fn halt_stats(v: &Vcpu) -> KvmStats {
    vmm::kvmstats::vcpu_stats(v.fd()).ok()
}

/// KVM's exit counters that tell whether a loop really ran without exits: all exits to
/// KVM, those caused by host interrupts, I/O, HLT, injected interrupts, emulation.
pub(crate) const EXIT_COUNTERS: [&str; 6] =
    ["exits", "irq_exits", "io_exits", "halt_exits", "irq_injections", "insn_emulation"];

/// Notes and metrics from KVM's exit counters taken before and after a loop on `who`
/// (metric `kvm_exits_<tag>`: every exit to KVM, not only those to userspace).
pub(crate) fn push_exit_stats(s: &mut Samples, who: &str, tag: &str, (before, after): &Around) {
    match (before, after) {
        (Some(b), Some(a)) => {
            let d = vmm::kvmstats::delta(b, a, &EXIT_COUNTERS);
            let text: Vec<String> = d.iter().map(|(k, v)| format!("{k} {v}")).collect();
            s.notes.push(format!(
                "KVM exit counters of {who} during the loop (KVM_GET_STATS_FD; exits to KVM, not to userspace): {}",
                text.join(", ")
            ));
            if let Some((_, v)) = d.iter().find(|(k, _)| k == "exits") {
                s.metrics.push(probe_api::Metric::new(&format!("kvm_exits_{tag}"), *v as f64, "exits"));
            }
        }
        _ => s.notes.push(format!("KVM exit counters of {who}: not available (KVM_GET_STATS_FD)")),
    }
}

/// Notes and metrics from halt counters taken before and after a loop on vCPU `who`.
pub(crate) fn push_halt_stats(s: &mut Samples, who: &str, (before, after): &Around) {
    match (before, after) {
        (Some(b), Some(a)) => {
            let d = vmm::kvmstats::halt_delta(b, a);
            s.notes.push(format!(
                "KVM halt statistics of {who} during the loop (KVM_GET_STATS_FD): {}",
                vmm::kvmstats::halt_summary(&d)
            ));
            let tag = who
                .split_whitespace()
                .next_back()
                .unwrap_or(who)
                .trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase();
            for k in ["halt_successful_poll", "halt_wakeup"] {
                if let Some(v) = d.get(k) {
                    s.metrics.push(probe_api::Metric::new(&format!("{k}_{tag}"), *v as f64, "halts"));
                }
            }
        }
        _ => s.notes.push(format!("KVM halt statistics of {who}: not available (KVM_GET_STATS_FD)")),
    }
}

/// `wait=spin|hlt` (absent: spin).
pub(crate) fn wait_of(name: &str, point: &Point) -> Result<Wait, ProbeError> {
    match point.get("wait") {
        None | Some("spin") => Ok(Wait::Spin),
        Some("hlt") => Ok(Wait::Hlt),
        Some(w) => Err(ProbeError::Failed(format!("{name}: wait={w}: expected wait=spin or wait=hlt"))),
    }
}

/// The CPUs of the two threads: `budget.cpu(0)` and `budget.cpu(1)`, which must differ
/// (two spinning threads on one CPU would measure the scheduler).
fn two_cpus(name: &str, budget: &Budget) -> Result<[Option<usize>; 2], ProbeError> {
    let c = [budget.cpu(0), budget.cpu(1)];
    if let [Some(a), Some(b)] = c {
        if a == b {
            return Err(ProbeError::Failed(format!(
                "{name}: needs two distinct CPUs for its two spinning threads; budget.cpus = {:?}",
                budget.cpus
            )));
        }
    }
    Ok(c)
}

/// Iteration count check: the whole run's samples must fit one vCPU sample buffer.
fn check_iterations(name: &str, n: u64) -> Result<(), ProbeError> {
    let cap = layout::samples(0).1;
    if n == 0 || n > cap {
        return Err(ProbeError::Failed(format!(
            "{name}: {n} iterations requested; 1..={cap} fit the guest sample buffer"
        )));
    }
    Ok(())
}

/// What every two-vCPU run starts from once its budget passed the checks.
pub(crate) struct Run {
    pub name: &'static str,
    /// Samples requested (`budget.iterations`).
    pub n: u64,
    /// The CPUs of the two threads (`two_cpus`).
    pub cpus: [Option<usize>; 2],
    /// Every KVM_RUN of the run ends by then (`budget.timeout` from the start).
    pub deadline: Instant,
}

impl Run {
    /// `check_runnable`, `check_iterations` and `two_cpus`, in this order; then the deadline
    /// starts.
    pub fn start(p: &VmProbe, budget: &Budget) -> Result<Run, ProbeError> {
        Run::start_with(p, budget, || Ok(())).map(|(run, ())| run)
    }

    /// `start`, with the probe's own point parameters parsed by `params` after
    /// `check_runnable` and before the iteration check.
    pub fn start_with<T>(
        p: &VmProbe,
        budget: &Budget,
        params: impl FnOnce() -> Result<T, ProbeError>,
    ) -> Result<(Run, T), ProbeError> {
        check_runnable(p, budget)?;
        let t = params()?;
        let n = budget.iterations;
        check_iterations(p.name, n)?;
        let cpus = two_cpus(p.name, budget)?;
        Ok((Run { name: p.name, n, cpus, deadline: Instant::now() + budget.timeout }, t))
    }
}

/// The pinning note labels of a run whose threads are vCPU A (0) and vCPU B (1).
pub(crate) fn pins_ab(cpus: [Option<usize>; 2]) -> [(&'static str, Option<usize>); 2] {
    [("vCPU A (0)", cpus[0]), ("vCPU B (1)", cpus[1])]
}

fn host_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Support of every probe with two vCPUs (or two VMs): a VM probe host with 2 CPUs and
/// KVM allowing 2 vCPUs.
pub(crate) fn two_vcpu_support() -> Support {
    match vm_support() {
        Support::Supported => {}
        u => return u,
    }
    let cpus = host_cpus();
    if cpus < 2 {
        return Support::Unsupported(format!(
            "needs 2 host CPUs for two pinned vCPU threads; this process may use {cpus}"
        ));
    }
    match vmm::host().kvm() {
        Ok(k) if k.get_max_vcpus() < 2 => Support::Unsupported(format!("KVM allows {} vCPU per VM", k.get_max_vcpus())),
        Ok(_) => Support::Supported,
        Err(e) => Support::Unsupported(e.to_string()),
    }
}

/// `two_vcpu_support` plus the in-kernel irqchip, irqfd and MSI routing.
pub(crate) fn irqchip_support() -> Support {
    match two_vcpu_support() {
        Support::Supported => {}
        u => return u,
    }
    let k = match vmm::host().kvm() {
        Ok(k) => k,
        Err(e) => return Support::Unsupported(e.to_string()),
    };
    let missing: Vec<&str> = [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::IrqRouting, "KVM_CAP_IRQ_ROUTING"),
        (Cap::SignalMsi, "KVM_CAP_SIGNAL_MSI"),
    ]
    .into_iter()
    .filter(|(c, _)| !k.check_extension(*c))
    .map(|(_, n)| n)
    .collect();
    if missing.is_empty() {
        Support::Supported
    } else {
        Support::Unsupported(format!("KVM lacks {}", missing.join(", ")))
    }
}

/// Host view of a u64 in a VM's main memory, for spinning on it from a host thread.
pub(crate) fn guest_atomic(vm: &Vm, gpa: u64) -> Result<&AtomicU64, ProbeError> {
    if gpa & 7 != 0 || gpa + 8 > layout::MEM_SIZE as u64 {
        return Err(ProbeError::Failed(format!("{}: {gpa:#x} is not an aligned u64 of main memory", vm.label())));
    }
    let p = vm
        .memory()
        .get_host_address(GuestAddress(gpa))
        .map_err(|e| ProbeError::Failed(format!("{}: host address of {gpa:#x}: {e}", vm.label())))?;
    // SAFETY: p is an 8-aligned address inside guest memory, which lives as long as `vm`;
    // the guest and host only access it with naturally aligned 8-byte loads and stores.
    Ok(unsafe { &*(p as *const AtomicU64) })
}

/// Zeroes vCPU `id`'s status area.
pub(crate) fn clear_status(vm: &Vm, id: u32) -> Result<(), ProbeError> {
    Ok(vm.write_bytes(layout::params(id), &[0u8; st::SIZE as usize])?)
}

/// One status word of vCPU `id`.
pub(crate) fn status(vm: &Vm, id: u32, off: u64) -> Result<u64, ProbeError> {
    Ok(vm.read_u64(layout::params(id) + off)?)
}

/// What a vCPU thread measured before its payload ran.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    pub native: NativeCheck,
    pub overhead: u64,
    pub tsc_khz: u64,
    pub setup: String,
}

/// Verifies that `vcpu` runs natively and measures its timer cost and TSC rate (on the
/// thread that will run it).
pub(crate) fn prepare(vcpu: &mut Vcpu, deadline: Instant) -> Result<Prepared, ProbeError> {
    let native = vmm::native::verify(vcpu, deadline)?;
    let overhead = vcpu.timer_overhead(deadline)?;
    let tsc_khz = vcpu.tsc_khz()?;
    Ok(Prepared { native, overhead, tsc_khz, setup: vcpu.setup().to_string() })
}

/// One vCPU thread's payload run: `prepare` (on this thread), exit counts reset, `entry`
/// with the registers of `args`, run until the payload's done exit. Returns what
/// `prepare` measured.
pub(crate) fn run_entry(v: &mut Vcpu, args: &dyn Args, deadline: Instant) -> Result<Prepared, ProbeError> {
    run_entry_around(v, args, deadline, |_| ()).map(|(prep, _)| prep)
}

/// `run_entry`, with KVM's statistics of the vCPU taken right before and after the run.
pub(crate) fn run_entry_counted(
    v: &mut Vcpu,
    args: &dyn Args,
    deadline: Instant,
) -> Result<(Prepared, Around), ProbeError> {
    run_entry_around(v, args, deadline, halt_stats)
}

fn run_entry_around<T>(
    v: &mut Vcpu,
    args: &dyn Args,
    deadline: Instant,
    around: impl Fn(&Vcpu) -> T,
) -> Result<(Prepared, (T, T)), ProbeError> {
    let prep = prepare(v, deadline)?;
    v.stats.reset();
    v.enter(args)?;
    let before = around(v);
    v.run(deadline, &mut |_| Handled::No)?;
    let after = around(v);
    Ok((prep, (before, after)))
}

fn panic_msg(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

/// Runs `a` and `b` on two threads pinned to `cpus`. When either fails, `abort` runs at
/// once (it sets the guest stop flags and kicks halted vCPUs) so that the other one ends
/// too; both threads are always joined. Every KVM_RUN inside is guarded by the watchdog.
pub(crate) fn run_pair<A: Send, B: Send>(
    name: &str,
    cpus: [Option<usize>; 2],
    a: impl FnOnce() -> Result<A, ProbeError> + Send,
    b: impl FnOnce() -> Result<B, ProbeError> + Send,
    abort: &(dyn Fn() + Sync),
) -> Result<(A, B), ProbeError> {
    // Each side aborts the other itself when it fails (or panics), so neither waits for a
    // peer that is gone; joining both is then bounded by the watchdog deadline.
    fn side<T>(
        name: &str,
        who: u8,
        cpu: Option<usize>,
        f: impl FnOnce() -> Result<T, ProbeError>,
        abort: &(dyn Fn() + Sync),
        first: &AtomicU8,
    ) -> Result<T, ProbeError> {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Some(c) = cpu {
                pin_current_thread(c)?;
            }
            f()
        }))
        .unwrap_or_else(|p| {
            Err(ProbeError::Failed(format!("{name}: thread {} panicked: {}", who as char, panic_msg(p))))
        });
        if r.is_err() {
            let _ = first.compare_exchange(0, who, Ordering::SeqCst, Ordering::SeqCst);
            abort();
        }
        r
    }
    let first = AtomicU8::new(0);
    let first = &first;
    let (ra, rb) = std::thread::scope(|s| {
        let ha = std::thread::Builder::new()
            .name(format!("{name}:a"))
            .spawn_scoped(s, move || side(name, b'a', cpus[0], a, abort, first));
        let hb = std::thread::Builder::new()
            .name(format!("{name}:b"))
            .spawn_scoped(s, move || side(name, b'b', cpus[1], b, abort, first));
        let join = |who: &str, p: Box<dyn std::any::Any + Send>| {
            ProbeError::Failed(format!("{name}: thread {who} panicked: {}", panic_msg(p)))
        };
        let ra = match ha {
            Ok(h) => h.join().unwrap_or_else(|p| Err(join("a", p))),
            Err(e) => {
                abort();
                Err(ProbeError::io(format!("{name}: spawn thread a"), e))
            }
        };
        let rb = match hb {
            Ok(h) => h.join().unwrap_or_else(|p| Err(join("b", p))),
            Err(e) => {
                abort();
                Err(ProbeError::io(format!("{name}: spawn thread b"), e))
            }
        };
        (ra, rb)
    });
    match (ra, rb) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(ea), Err(eb)) => {
            // Report the cause, not the consequence: the side that failed first, then the
            // other (usually a short sample count or "stopped" after the abort).
            let (cause, other) = if first.load(Ordering::SeqCst) == b'b' { (eb, ea) } else { (ea, eb) };
            match cause {
                ProbeError::Unsupported(r) => Err(ProbeError::Unsupported(r)),
                ProbeError::Timeout(d, m) => {
                    Err(ProbeError::Timeout(d, format!("{m}; then the other thread: {other}")))
                }
                c => Err(ProbeError::Failed(format!("{c}; then the other thread: {other}"))),
            }
        }
    }
}

/// Reads vCPU `id`'s sample buffer after a payload that was to write `n` samples and
/// checks that it wrote exactly `n` (final rdi).
pub(crate) fn read_samples(vcpu: &Vcpu, n: u64, entry: &str) -> Result<Vec<u64>, ProbeError> {
    let (buf, _) = layout::samples(vcpu.id());
    let end = vcpu.regs()?.rdi;
    if end != buf + 8 * n {
        return Err(ProbeError::Failed(format!(
            "{}: payload {entry} on vCPU {} wrote {} samples, expected {n}",
            vcpu.label(),
            vcpu.id(),
            end.wrapping_sub(buf) as i64 / 8
        )));
    }
    Ok(vcpu.vm().read_u64s(buf, n as usize)?)
}

/// Fails when a one-way sample is "negative" (the two clocks are not comparable).
pub(crate) fn check_one_way(name: &str, s: &[u64]) -> Result<(), ProbeError> {
    if let Some(i) = s.iter().position(|&c| c > 1 << 62) {
        return Err(super::invalid(
            name,
            format!("sample {i} is negative ({} cycles): sender and receiver TSCs are not comparable", s[i] as i64),
        ));
    }
    Ok(())
}

pub(crate) fn median(v: &[u64]) -> u64 {
    let mut c = v.to_vec();
    c.sort_unstable();
    c.get(c.len() / 2).copied().unwrap_or(0)
}

/// Samples with the facts every multi-vCPU probe reports.
pub(crate) fn samples(
    cycles: Vec<u64>,
    method: Method,
    prep: &Prepared,
    others: &[(&str, &Prepared)],
    cpus: &[(&str, Option<usize>)],
    backend: &str,
) -> Samples {
    let mut s = Samples::new(cycles, method, prep.overhead, CLOCK);
    s.tsc_khz = Some(prep.tsc_khz);
    s.metrics.push(probe_api::Metric::new("native_cycles_per_iteration", prep.native.cycles_per_iter, "cycles"));
    let mut native = format!(
        "backend {backend}; native execution verified on the timing vCPU: {:.2} cycles per dec;jnz iteration ({})",
        prep.native.cycles_per_iter, prep.setup
    );
    for (who, p) in others {
        let _ = write!(native, "; {who}: {:.2} cycles per iteration ({})", p.native.cycles_per_iter, p.setup);
    }
    s.notes.push(native);
    let pins: Vec<String> = cpus
        .iter()
        .map(|(who, c)| match c {
            Some(c) => format!("{who} on CPU {c}"),
            None => format!("{who} unpinned"),
        })
        .collect();
    s.notes.push(format!("threads pinned: {}", pins.join(", ")));
    s
}

/// vCPUs 0 and 1 of `vm` (vCPU A and B), with their status areas cleared.
pub(crate) fn vcpu_pair(vm: &Vm) -> Result<(Vcpu, Vcpu), ProbeError> {
    let va = vm.create_vcpu(0)?;
    let vb = vm.create_vcpu(1)?;
    clear_status(vm, 0)?;
    clear_status(vm, 1)?;
    Ok((va, vb))
}

/// One VM for interrupt probes, built by `irq_vm`.
pub(crate) struct IrqVm {
    pub vm: Vm,
    pub vcpus: Vec<Vcpu>,
    /// What `enable_x2apic` says about each vCPU.
    pub setup: Vec<String>,
    /// Which halt polling the VM runs with (`apply_halt_poll`).
    pub poll_note: String,
}

/// Builds one VM for interrupt probes: in-kernel irqchip, GDT + IDT, `n` vCPUs with the
/// tables installed, x2APIC enabled and (secondaries) runnable, status areas cleared; the
/// point's `halt_poll_ns` (`halt_poll_of`) applied.
pub(crate) fn irq_vm(name: &str, point: &Point, n: u32) -> Result<IrqVm, ProbeError> {
    let halt_poll = halt_poll_of(name, point)?;
    let vm = Vm::new(name)?;
    irqchip::create_irqchip(&vm)?;
    irqchip::write_tables(&vm)?;
    let mut vcpus = Vec::new();
    let mut setup = Vec::new();
    for id in 0..n {
        let v = vm.create_vcpu(id)?;
        irqchip::install_tables(&v)?;
        setup.push(irqchip::enable_x2apic(&v)?);
        clear_status(&vm, id)?;
        vcpus.push(v);
    }
    let poll_note = apply_halt_poll(&vm, halt_poll)?;
    Ok(IrqVm { vm, vcpus, setup, poll_note })
}

/// Writes STOP into vCPU `id`'s status area (ignoring errors: used on abort paths).
pub(crate) fn set_stop(vm: &Vm, id: u32) {
    let _ = vm.write_u64(layout::params(id) + st::STOP, 1);
}

/// Writes STOP into the status areas of vCPUs `ids` (abort paths).
pub(crate) fn set_stops(vm: &Vm, ids: &[u32]) {
    for &id in ids {
        set_stop(vm, id);
    }
}

/// Abort for interrupt probes: STOP every vCPU and kick it out of HLT.
pub(crate) fn stop_and_kick(vm: &Vm, ids: &[u32]) {
    set_stops(vm, ids);
    for &id in ids {
        let _ = irqchip::signal_msi(vm, id, irqchip::VEC_KICK);
    }
}

/// Wait-loop counters of one vCPU for notes and validation.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub handler: u64,
    pub hlts: u64,
    pub early: u64,
    pub fixups: u64,
    pub kicks: u64,
    pub spurious: u64,
    pub sent: u64,
}

/// The counters of vCPUs A (0) and B (1), checked for host kicks (`check_no_kicks`).
pub(crate) fn counters_ab(name: &str, vm: &Vm) -> Result<(Counters, Counters), ProbeError> {
    let (ca, cb) = (counters(vm, 0)?, counters(vm, 1)?);
    ca.check_no_kicks(name, "A")?;
    cb.check_no_kicks(name, "B")?;
    Ok((ca, cb))
}

pub(crate) fn counters(vm: &Vm, id: u32) -> Result<Counters, ProbeError> {
    Ok(Counters {
        handler: status(vm, id, st::COUNT)?,
        hlts: status(vm, id, st::HLTS)?,
        early: status(vm, id, st::EARLY)?,
        fixups: status(vm, id, st::FIXUPS)?,
        kicks: status(vm, id, st::KICKS)?,
        spurious: status(vm, id, st::SPURIOUS)?,
        sent: status(vm, id, st::SENT)?,
    })
}

impl Counters {
    /// Fails when the host had to kick this vCPU (only abort paths do).
    pub fn check_no_kicks(&self, name: &str, who: &str) -> Result<(), ProbeError> {
        if self.kicks != 0 {
            return Err(super::invalid(
                name,
                format!("{who} took {} host kicks (vector 0x41) in a run that was not aborted", self.kicks),
            ));
        }
        Ok(())
    }
    /// Metrics `handler_entries`, `early_hlt_wakes` and `hlts` of the one receiving vCPU.
    pub fn push_metrics(&self, s: &mut Samples) {
        s.metrics.push(probe_api::Metric::new("handler_entries", self.handler as f64, "interrupts"));
        s.metrics.push(probe_api::Metric::new("early_hlt_wakes", self.early as f64, "wakes"));
        s.metrics.push(probe_api::Metric::new("hlts", self.hlts as f64, "hlt"));
    }
    /// "guest: 12 early HLT wakes (1.20% of 1000 HLTs; ...), 3 interrupts arrived between ..."
    pub fn hlt_note(&self, who: &str) -> String {
        let pct = if self.hlts > 0 { 100.0 * self.early as f64 / self.hlts as f64 } else { 0.0 };
        format!(
            "{who}: {} early HLT wakes ({pct:.2}% of {} HLTs; the wait loops on its condition), \
             {} interrupts arrived between enabling interrupts and HLT (handler stepped over the HLT)",
            self.early, self.hlts, self.fixups
        )
    }
}

/// Userspace exits of a run beyond the expected `done` exits, as text; None when clean
/// (signals and KVM_EXIT_INTR excluded).
fn unexpected_exits(v: &Vcpu, done_exits: u64) -> Option<String> {
    let s = &v.stats;
    let done = s.io_out_on(layout::PORT_DONE);
    // signals / KVM_EXIT_INTR are not exits the guest caused: not counted
    let exits = s.userspace_exits();
    if exits == done_exits && done == done_exits {
        None
    } else {
        Some(format!("vCPU {}: {} userspace exits ({} done): {:?}", v.id(), exits, done, s))
    }
}

/// Fails with `<what>: <exits>` when one of the vCPUs had userspace exits beyond its
/// expected done exits (`unexpected_exits`; the first such vCPU is reported).
pub(crate) fn check_exits(name: &str, what: &str, vcpus: &[(&Vcpu, u64)]) -> Result<(), ProbeError> {
    match vcpus.iter().find_map(|&(v, done_exits)| unexpected_exits(v, done_exits)) {
        Some(e) => Err(super::invalid(name, format!("{what}: {e}"))),
        None => Ok(()),
    }
}

/// `irq_recv` on vCPU `id` (its own sample buffer and status area) for `n` samples.
pub(crate) fn irq_recv(id: u32, n: u64, vif: u64, wait: u64, reply_icr: u64) -> IrqRecv {
    IrqRecv { buffer: layout::samples(id).0, samples: n, status: layout::params(id), vif, wait, reply_icr }
}

/// `ipi_send` on vCPU A (0) to vCPU B (1), vector [`irqchip::VEC_IRQ`], for `n` samples.
pub(crate) fn ipi_send_a_to_b(n: u64, vif: u64, mode: u64, delay: u64) -> IpiSend {
    IpiSend {
        buffer: layout::samples(0).0,
        samples: n,
        status: layout::params(0),
        peer_status: layout::params(1),
        icr: irqchip::x2apic_icr(1, irqchip::VEC_IRQ),
        vif,
        mode,
        delay,
    }
}
