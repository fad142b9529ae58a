//! Kernel perf counters around a measured loop, so a figure can be read beside what the
//! CPU (or, without a PMU, the scheduler) saw while it was taken.
//!
//! Hardware counters (cycles, instructions) are tried first. In a VM without a virtual
//! PMU they fail (usually ENOENT), and the software events task-clock and
//! context-switches are all that is left; the samples say which kind they got.
//!
//! Counters observe only the calling thread (the measuring thread): in the two-thread
//! probes the partner is not counted.

use std::io;

use perf_event::events::{Hardware, Software};
use perf_event::{Builder, Counter, Group};
use probe_api::{Metric, Samples};

/// Cycles + instructions in one group, so that both cover exactly the same interval.
struct HardwareCounters {
    group: Group,
    cycles: Counter,
    instructions: Counter,
    /// False when the kernel refused ring-0 counting and we fell back to user only.
    includes_kernel: bool,
}

struct SoftwareCounters {
    group: Group,
    task_clock: Counter,
    context_switches: Counter,
}

/// The counters opened on the measuring thread for one run.
pub struct PerfCounters {
    hardware: Result<HardwareCounters, String>,
    software: Result<SoftwareCounters, String>,
}

/// Counter totals over the measured loop.
#[derive(Clone, Debug, Default)]
pub struct PerfReading {
    pub hw_cycles: Option<u64>,
    pub hw_instructions: Option<u64>,
    pub hw_includes_kernel: bool,
    pub hw_error: Option<String>,
    pub task_clock_ns: Option<u64>,
    pub context_switches: Option<u64>,
    pub sw_error: Option<String>,
    /// Set when the kernel multiplexed a group (time running < time enabled); the
    /// totals are then scaled estimates.
    pub multiplexed: bool,
}

fn open_hardware(include_kernel: bool) -> io::Result<HardwareCounters> {
    let mut group = Group::new()?;
    let mut cycles_b = Builder::new(Hardware::CPU_CYCLES);
    let mut instr_b = Builder::new(Hardware::INSTRUCTIONS);
    if include_kernel {
        cycles_b.include_kernel();
        instr_b.include_kernel();
    }
    let cycles = group.add(&cycles_b)?;
    let instructions = group.add(&instr_b)?;
    Ok(HardwareCounters { group, cycles, instructions, includes_kernel: include_kernel })
}

fn open_hardware_best() -> Result<HardwareCounters, String> {
    // Syscall probes spend most of their time in the kernel, so ring 0 is wanted; an
    // unprivileged run may only be allowed user-mode counting.
    match open_hardware(true) {
        Ok(c) => Ok(c),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
            open_hardware(false).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn open_software() -> Result<SoftwareCounters, String> {
    let open = || -> io::Result<SoftwareCounters> {
        let mut group = Group::new()?;
        let task_clock = group.add(Builder::new(Software::TASK_CLOCK).include_kernel())?;
        let context_switches = group.add(Builder::new(Software::CONTEXT_SWITCHES).include_kernel())?;
        Ok(SoftwareCounters { group, task_clock, context_switches })
    };
    open().map_err(|e| e.to_string())
}

impl PerfCounters {
    /// Opens the counters for the calling thread, disabled. Never fails: what could not
    /// be opened is remembered and reported.
    pub fn open() -> Self {
        PerfCounters { hardware: open_hardware_best(), software: open_software() }
    }

    /// Resets and enables; call right before the measured loop.
    pub fn start(&mut self) {
        // An ioctl failure here only loses the counters, never the measurement.
        if let Ok(hw) = &mut self.hardware {
            let _ = hw.group.reset();
            let _ = hw.group.enable();
        }
        if let Ok(sw) = &mut self.software {
            let _ = sw.group.reset();
            let _ = sw.group.enable();
        }
    }

    /// Disables and reads; call right after the measured loop.
    pub fn stop(&mut self) -> PerfReading {
        let mut r = PerfReading::default();
        match &mut self.hardware {
            Ok(hw) => {
                let _ = hw.group.disable();
                match hw.group.read() {
                    Ok(data) => {
                        r.multiplexed |= is_multiplexed(data.time_enabled(), data.time_running());
                        r.hw_cycles = data.get(&hw.cycles).map(|v| v.value());
                        r.hw_instructions = data.get(&hw.instructions).map(|v| v.value());
                        r.hw_includes_kernel = hw.includes_kernel;
                    }
                    Err(e) => r.hw_error = Some(format!("reading hardware counters: {e}")),
                }
            }
            Err(e) => r.hw_error = Some(e.clone()),
        }
        match &mut self.software {
            Ok(sw) => {
                let _ = sw.group.disable();
                match sw.group.read() {
                    Ok(data) => {
                        r.multiplexed |= is_multiplexed(data.time_enabled(), data.time_running());
                        r.task_clock_ns = data.get(&sw.task_clock).map(|v| v.value());
                        r.context_switches = data.get(&sw.context_switches).map(|v| v.value());
                    }
                    Err(e) => r.sw_error = Some(format!("reading software counters: {e}")),
                }
            }
            Err(e) => r.sw_error = Some(e.clone()),
        }
        r
    }
}

fn is_multiplexed(enabled: Option<std::time::Duration>, running: Option<std::time::Duration>) -> bool {
    matches!((enabled, running), (Some(e), Some(r)) if r < e)
}

impl PerfReading {
    /// Adds the counters as metrics and one note saying which kind was available.
    /// `ops` is the number of measured operations (samples × batch), for per-op ratios.
    pub fn attach(&self, samples: &mut Samples, ops: u64) {
        let ops_f = ops.max(1) as f64;
        if let (Some(c), Some(i)) = (self.hw_cycles, self.hw_instructions) {
            samples.metrics.push(Metric::new("perf.hw_cycles_per_op", c as f64 / ops_f, "cycles"));
            samples.metrics.push(Metric::new("perf.hw_instructions_per_op", i as f64 / ops_f, "instructions"));
            if c > 0 {
                samples.metrics.push(Metric::new("perf.hw_ipc", i as f64 / c as f64, "instr/cycle"));
            }
        }
        if let Some(t) = self.task_clock_ns {
            samples.metrics.push(Metric::new("perf.task_clock_ns", t as f64, "ns"));
        }
        if let Some(cs) = self.context_switches {
            samples.metrics.push(Metric::new("perf.context_switches", cs as f64, "count"));
            samples.metrics.push(Metric::new("perf.context_switches_per_op", cs as f64 / ops_f, "count"));
        }
        samples.notes.push(self.describe());
    }

    fn describe(&self) -> String {
        let scope = "measuring thread only";
        let hw = match (&self.hw_error, self.hw_cycles.is_some()) {
            (None, true) if self.hw_includes_kernel => "perf: hardware cycles+instructions (user+kernel)".to_string(),
            (None, true) => "perf: hardware cycles+instructions (user only)".to_string(),
            (Some(e), _) => format!("perf: hardware counters unavailable: {e}"),
            (None, false) => "perf: hardware counters returned no values".to_string(),
        };
        let sw = match &self.sw_error {
            None if self.hw_cycles.is_some() => "; plus software task-clock, context-switches".to_string(),
            None => "; software events only (task-clock, context-switches)".to_string(),
            Some(e) => format!("; software events unavailable too: {e}"),
        };
        let mux = if self.multiplexed { "; counters multiplexed (totals cover only part of the loop)" } else { "" };
        format!("{hw}{sw}{mux}; {scope}")
    }
}

/// One line for the environment fingerprint: which perf counters this host offers.
pub fn perf_availability() -> String {
    let hw = match open_hardware_best() {
        Ok(c) if c.includes_kernel => "hardware cycles+instructions available (user+kernel)".to_string(),
        Ok(_) => "hardware cycles+instructions available (user only)".to_string(),
        Err(e) => format!("hardware counters unavailable: {e}"),
    };
    let sw = match open_software() {
        Ok(_) => "software task-clock, context-switches available".to_string(),
        Err(e) => format!("software events unavailable: {e}"),
    };
    format!("{hw}; {sw}")
}
