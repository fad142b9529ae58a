//! The VM probes and what they share: the probe table, running one probe point inside a
//! fresh VM on a pinned thread, and the backend report.

mod exits;
mod hypercall;
mod irq;
mod multi;
mod native;
mod notify;
mod path;
mod syscall;
mod view;

use std::fmt;
use std::time::Instant;

use probe_api::{Budget, Method, Methods, Metric, Point, Probe, ProbeError, Samples, Support};

use crate::vmm::{self, NativeCheck, Vcpu, Vm};

/// The clock every VM probe uses.
pub const CLOCK: &str = "guest lfence;rdtsc";

/// One row of the probe table (single- and multi-vCPU probes alike).
pub(crate) struct VmProbe {
    pub name: &'static str,
    pub description: &'static str,
    pub group: &'static str,
    pub methods: Methods,
    pub support: fn() -> Support,
    /// The parameter points a default sweep covers ([`no_points`]: the one empty point).
    pub points: fn() -> Vec<Point>,
    pub run: fn(&VmProbe, &Point, &Budget) -> Result<Samples, ProbeError>,
    /// Parameter keys the probe reads beyond those of its points.
    pub extra_keys: &'static [&'static str],
}

impl Probe for VmProbe {
    fn name(&self) -> &'static str {
        self.name
    }
    fn description(&self) -> &'static str {
        self.description
    }
    fn group(&self) -> &'static str {
        self.group
    }
    fn support(&self) -> Support {
        (self.support)()
    }
    fn points(&self) -> Vec<Point> {
        (self.points)()
    }
    fn methods(&self) -> Methods {
        self.methods
    }
    fn param_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.points().into_iter().flat_map(|p| p.0.into_keys()).collect();
        keys.extend(self.extra_keys.iter().map(|k| k.to_string()));
        keys.sort();
        keys.dedup();
        keys
    }
    fn run(&self, point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
        (self.run)(self, point, budget)
    }
}

/// The points of a probe without parameters: the one empty point.
pub(crate) fn no_points() -> Vec<Point> {
    vec![Point::none()]
}

/// Every VM probe, in the order `ivbench list` shows them.
pub fn probes() -> Vec<Box<dyn Probe>> {
    vec![
        Box::new(native::LOOP),
        Box::new(hypercall::NULL),
        Box::new(exits::PIO),
        Box::new(exits::PIO_KERNEL),
        Box::new(exits::MMIO),
        Box::new(exits::CPUID),
        Box::new(syscall::GETPPID),
        Box::new(view::VMFUNC),
        Box::new(view::HYPERCALL),
        Box::new(irq::INJECT),
        Box::new(irq::IPI_ROUNDTRIP),
        Box::new(notify::POLL),
        Box::new(notify::POLL_INTERVM),
        Box::new(notify::MWAIT),
        Box::new(notify::HALT),
        Box::new(path::PATH_A),
        Box::new(path::PATH_B),
        Box::new(path::PATH_CHAIN),
    ]
}

/// Support shared by every VM probe: a usable `/dev/kvm` with a known backend.
pub(crate) fn vm_support() -> Support {
    if let Err(e) = vmm::host().kvm() {
        return Support::Unsupported(e.to_string().trim_start_matches("unsupported: ").to_string());
    }
    match vmm::host().backend() {
        Ok(_) => Support::Supported,
        Err(e) => Support::Unsupported(e.to_string().trim_start_matches("unsupported: ").to_string()),
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> Result<(), ProbeError> {
    crate::worker::pin_current_thread(cpu).map_err(ProbeError::Failed)
}

/// Everything a probe body gets: a fresh VM with vCPU 0, verified native, with the guest's
/// timer overhead and TSC rate measured.
pub(crate) struct Ctx {
    pub vm: Vm,
    pub vcpu: Vcpu,
    pub deadline: Instant,
    pub overhead: u64,
    pub native: NativeCheck,
    pub tsc_khz: u64,
    pub cpu: Option<usize>,
    /// When sampling stops short: the budget's duration (set after calibration), its
    /// timeout and the interrupt flag.
    pub stop: vmm::SampleStop,
    /// Why the last sampling run stopped short of its samples, if it did.
    pub stopped: Option<probe_api::Stop>,
    /// Samples requested.
    pub requested: u64,
}

impl Ctx {
    /// Runs a sampling payload for the budget: `requested` samples, or fewer when the
    /// duration ends, the timeout passes or the run is interrupted (between chunks).
    pub fn sample(
        &mut self,
        args: &dyn crate::payloads::args::Args,
        batch: u64,
        handler: &mut dyn FnMut(vmm::Exit<'_>) -> vmm::Handled,
    ) -> Result<vmm::Sampled, ProbeError> {
        let got = self.vcpu.run_sampling_until(args, self.requested, batch, self.deadline, &self.stop, handler)?;
        if got.cycles.is_empty() {
            if let Some(s) = got.stopped {
                return Err(match s {
                    probe_api::Stop::Interrupted => {
                        ProbeError::Interrupted("interrupted before the first sample".into())
                    }
                    probe_api::Stop::TimedOut(t) => ProbeError::Timeout(t, "no sample before the timeout".into()),
                });
            }
        }
        self.stopped = got.stopped;
        Ok(got)
    }

    /// Samples from raw per-sample cycles (`batch` operations each). Measures the timer
    /// overhead once more after the run and keeps the lower of the two calibrations (a
    /// calibration that shared its CPU with a busy host thread reads high).
    pub fn samples(&mut self, raw: Vec<u64>, batch: u64, method: Method) -> Samples {
        if let Ok(after) = self.vcpu.timer_overhead(self.deadline) {
            self.overhead = self.overhead.min(after);
        }
        // Batched samples in thousandths of a cycle (Samples.scale), so that a loop of
        // 0.7 cycles per iteration is not reported as 1.
        const BATCHED_SCALE: u64 = 1000;
        let (cycles, scale) = if batch > 1 {
            (
                raw.iter()
                    .map(|&c| {
                        ((u128::from(c) * u128::from(BATCHED_SCALE) + u128::from(batch / 2)) / u128::from(batch)) as u64
                    })
                    .collect(),
                BATCHED_SCALE,
            )
        } else {
            (raw, 1)
        };
        let mut s = Samples::new(cycles, method, self.overhead, CLOCK);
        s.scale = scale;
        s.tsc_khz = Some(self.tsc_khz);
        s.metrics.push(Metric::new("native_cycles_per_iteration", self.native.cycles_per_iter, "cycles"));
        s.notes.push(format!(
            "backend {} (hypercall {}); native execution verified: {:.2} cycles per dec;jnz iteration; {}",
            self.vm.backend().name(),
            self.vm.backend().hypercall_name(),
            self.native.cycles_per_iter,
            self.vcpu.setup()
        ));
        if let Some(cpu) = self.cpu {
            s.notes.push(format!("vCPU thread pinned to CPU {cpu}"));
        }
        match self.stopped {
            Some(stop) => s.partial = Some(stop.describe(s.cycles.len() as u64, self.requested)),
            None if (s.cycles.len() as u64) < self.requested => s.notes.push(format!(
                "stopped at the budget's duration: {} of {} samples",
                s.cycles.len(),
                self.requested
            )),
            None => {}
        }
        s
    }
}

/// Operations per sample for the budget's method.
pub(crate) fn batch_of(budget: &Budget) -> u64 {
    u64::from(budget.method.batch().max(1))
}

/// How far past a point's timeout the watchdog ends a guest run that never returns (the
/// timeout itself stops sampling between chunks, keeping the samples).
const HARD_DEADLINE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `body` in a fresh VM on a thread pinned to `budget.cpu(0)`. `prepare` runs on the
/// VM before the vCPU is created (irqchip, memslots, ioeventfds).
pub(crate) fn in_vm<T: Send>(
    name: &'static str,
    budget: &Budget,
    prepare: impl FnOnce(&Vm) -> Result<(), ProbeError> + Send,
    body: impl FnOnce(&mut Ctx) -> Result<T, ProbeError> + Send,
) -> Result<T, ProbeError> {
    if budget.iterations == 0 {
        return Err(ProbeError::Failed(format!("{name}: zero iterations requested")));
    }
    let started = Instant::now();
    // Sampling stops at the timeout between chunks and keeps its samples; the watchdog's
    // hard deadline, for a guest that never returns, lies a grace period beyond it.
    let soft = budget.deadline(started);
    let deadline = soft.checked_add(HARD_DEADLINE_GRACE).unwrap_or(soft);
    let (timeout, flag) = (budget.timeout, budget.stop.clone());
    let cpu = budget.cpu(0);
    let duration = budget.duration;
    let requested = budget.iterations;
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name(format!("vcpu:{name}"))
            .spawn_scoped(s, move || {
                if let Some(c) = cpu {
                    pin_current_thread(c)?;
                }
                let vm = Vm::new(name)?;
                prepare(&vm)?;
                let mut vcpu = vm.create_vcpu(0)?;
                let native = vmm::native::verify(&mut vcpu, deadline)?;
                let overhead = vcpu.timer_overhead(deadline)?;
                let tsc_khz = vcpu.tsc_khz()?;
                let stop = vmm::SampleStop {
                    at: duration.map(|d| Instant::now() + d),
                    timeout_at: Some((soft, timeout)),
                    flag: Some(flag),
                };
                let mut ctx =
                    Ctx { vm, vcpu, deadline, overhead, native, tsc_khz, cpu, stop, stopped: None, requested };
                body(&mut ctx)
            })
            .map_err(|e| ProbeError::io(format!("{name}: spawn the vCPU thread"), e))?;
        h.join().unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(ProbeError::Failed(format!("{name}: the vCPU thread panicked: {msg}")))
        })
    })
}

/// A failed validation of a probe's results.
pub(crate) fn invalid(name: &str, what: impl fmt::Display) -> ProbeError {
    ProbeError::Failed(format!("{name}: invalid result: {what}"))
}

/// Which backend serves `/dev/kvm` and how native guest execution was verified.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendReport {
    /// `kvm_pvm`, `kvm_intel`, `kvm_amd`, or `none` when there is no usable /dev/kvm.
    pub backend: String,
    /// The native-loop check passed in a real guest on this host.
    pub native_verified: bool,
    /// Best TSC cycles per `dec; jnz` iteration measured by the check.
    pub cycles_per_iter: Option<f64>,
    /// The hypercall instruction the payloads use.
    pub hypercall: String,
    /// KVM_GET_TSC_KHZ of the checking vCPU.
    pub tsc_khz: Option<u64>,
    /// How native execution was reached and verified, modules loaded, errors.
    pub details: Vec<String>,
}

impl fmt::Display for BackendReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend {}: ", self.backend)?;
        match (self.native_verified, self.cycles_per_iter) {
            (true, Some(c)) => write!(f, "native execution verified ({c:.2} cycles per dec;jnz iteration)")?,
            (_, Some(c)) => write!(f, "NOT native ({c:.1} cycles per dec;jnz iteration)")?,
            _ => write!(f, "native execution not verified")?,
        }
        if !self.hypercall.is_empty() {
            write!(f, ", hypercall {}", self.hypercall)?;
        }
        if let Some(k) = self.tsc_khz {
            write!(f, ", guest TSC {k} kHz")?;
        }
        for d in &self.details {
            write!(f, "; {d}")?;
        }
        Ok(())
    }
}

/// Detects the backend and verifies native execution in a real guest (creates a VM; takes
/// a few milliseconds).
pub fn backend_report() -> BackendReport {
    let mut r = BackendReport {
        backend: "none".into(),
        native_verified: false,
        cycles_per_iter: None,
        hypercall: String::new(),
        tsc_khz: None,
        details: Vec::new(),
    };
    r.details.push(format!("backend modules present: {}", vmm::host().modules().join(", ")));
    if let Some(note) = vmm::host().backend_note() {
        r.details.push(note.to_string());
    }
    if vmm::backend::host_is_guest() {
        r.details.push("the host itself runs under a hypervisor (CPUID hypervisor bit)".into());
    }
    let b = match vmm::host().backend() {
        Ok(b) => b,
        Err(e) => {
            r.details.push(e.to_string());
            return r;
        }
    };
    r.backend = b.name().into();
    r.hypercall = b.hypercall_name().into();
    let check = (|| -> Result<(NativeCheck, u64, String), ProbeError> {
        let vm = Vm::new("backend-report")?;
        let mut vcpu = vm.create_vcpu(0)?;
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let tsc = vcpu.tsc_khz()?;
        let setup = vcpu.setup().to_string();
        match vmm::native::verify(&mut vcpu, deadline) {
            Ok(c) => Ok((c, tsc, setup)),
            Err(e) => {
                // report the measured figure even when it is too slow
                let raw = vcpu.run_batched_payload(&crate::payloads::args::NativeLoop {}, 1, 20_000, deadline).ok();
                Err(ProbeError::Failed(format!(
                    "{e}{}",
                    raw.map(|s| format!(" [{} cycles for 20000 iterations]", s[0])).unwrap_or_default()
                )))
            }
        }
    })();
    match check {
        Ok((c, tsc, setup)) => {
            r.native_verified = true;
            r.cycles_per_iter = Some(c.cycles_per_iter);
            r.tsc_khz = Some(tsc);
            r.details.push(format!(
                "verified by running {} dec;jnz iterations per sample in a guest at CPL0 (limit {} cycles/iteration); {setup}",
                c.iterations,
                vmm::native::MAX_NATIVE_CYCLES_PER_ITER
            ));
        }
        Err(e) => r.details.push(format!("native check failed: {e}")),
    }
    r
}
