//! `host.timer.overhead`: what reading each clock costs, back to back. This is the
//! floor every other figure sits on, so it is reported raw (`overhead_cycles = 0`).

use std::hint::black_box;
use std::time::Instant;

use probe_api::tsc::{rdtsc, rdtsc_serialized, rdtscp, serialized_pair_overhead};
use probe_api::{limits, Budget, Method, Metric, Point, Probe, ProbeError, Samples, Support};

use crate::perf::PerfCounters;
use crate::pinning::PinnedHere;
use crate::sampling::SampleBuf;

pub struct TimerOverhead;

const NAME: &str = "host.timer.overhead";
pub const CLOCKS: [&str; 4] = ["rdtsc", "rdtscp", "lfence-rdtsc", "instant"];

#[derive(Clone, Copy)]
enum Clock {
    Rdtsc,
    Rdtscp,
    LfenceRdtsc,
    Instant,
}

impl Clock {
    fn parse(point: &Point) -> Result<Self, ProbeError> {
        match point.get("clock") {
            Some("rdtsc") => Ok(Clock::Rdtsc),
            Some("rdtscp") => Ok(Clock::Rdtscp),
            Some("lfence-rdtsc") => Ok(Clock::LfenceRdtsc),
            Some("instant") => Ok(Clock::Instant),
            _ => Err(ProbeError::Failed(format!("{NAME} needs clock=<{}>, got `{point}`", CLOCKS.join("|")))),
        }
    }

    /// Cycles between two back-to-back reads (for `Instant`, one `Instant::now()` with a
    /// serialized TSC pair around it).
    #[inline(always)]
    fn one_sample(self) -> u64 {
        match self {
            Clock::Rdtsc => {
                let a = rdtsc();
                let b = rdtsc();
                b.wrapping_sub(a)
            }
            Clock::Rdtscp => {
                let (a, _) = rdtscp();
                let (b, _) = rdtscp();
                b.wrapping_sub(a)
            }
            Clock::LfenceRdtsc => {
                let a = rdtsc_serialized();
                let b = rdtsc_serialized();
                b.wrapping_sub(a)
            }
            Clock::Instant => {
                let a = rdtsc_serialized();
                black_box(Instant::now());
                let b = rdtsc_serialized();
                b.wrapping_sub(a)
            }
        }
    }

    fn description(self) -> &'static str {
        match self {
            Clock::Rdtsc => "host rdtsc; rdtsc (unserialized: may overlap, can read near 0)",
            Clock::Rdtscp => "host rdtscp; rdtscp",
            Clock::LfenceRdtsc => "host lfence;rdtsc; lfence;rdtsc",
            Clock::Instant => "host lfence;rdtsc around std::time::Instant::now() (includes one lfence;rdtsc pair)",
        }
    }
}

#[allow(unused_unsafe)] // __cpuid became safe in newer Rust; 1.80 still needs it
fn has_rdtscp() -> bool {
    // SAFETY: cpuid is always available on x86-64.
    let max_ext = unsafe { std::arch::x86_64::__cpuid(0x8000_0000) }.eax;
    max_ext >= 0x8000_0001
        // SAFETY: leaf 0x8000_0001 exists (max_ext checked above); cpuid has no side effects.
        && unsafe { std::arch::x86_64::__cpuid(0x8000_0001) }.edx & (1 << 27) != 0
}

fn clocksource() -> String {
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

impl Probe for TimerOverhead {
    fn name(&self) -> &'static str {
        NAME
    }
    fn description(&self) -> &'static str {
        "cost of two back-to-back clock reads (rdtsc, rdtscp, lfence;rdtsc, Instant::now)"
    }
    fn group(&self) -> &'static str {
        "timer"
    }
    fn support(&self) -> Support {
        // rdtsc itself is the premise of every probe; rdtscp is checked per point.
        Support::Supported
    }
    fn points(&self) -> Vec<Point> {
        CLOCKS.iter().map(|c| Point::none().with("clock", c)).collect()
    }
    fn run(&self, point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
        let clock = Clock::parse(point)?;
        if matches!(clock, Clock::Rdtscp) && !has_rdtscp() {
            return Err(ProbeError::Unsupported("CPUID 0x80000001 EDX[27]: this CPU has no rdtscp".into()));
        }
        if budget.method != Method::PerOp {
            return Err(ProbeError::Failed(format!(
                "{NAME} is itself a timestamp pair; only per-op makes sense, {} was asked for",
                budget.method.label()
            )));
        }
        if budget.iterations == 0 {
            return Err(ProbeError::Failed(format!("{NAME}: zero iterations asked for")));
        }
        let _pin = PinnedHere::measuring_thread(budget)?;
        let wanted = budget.iterations.min(limits::MAX_ITERATIONS) as usize;
        let started = Instant::now();
        for _ in 0..wanted.clamp(64, 2_000) {
            black_box(clock.one_sample());
        }
        let mut cycles = SampleBuf::new(wanted);
        let mut perf = PerfCounters::open();
        perf.start();
        // One sample is a few dozen cycles: a stop check per 4096 costs nothing.
        let mut stopped = None;
        while cycles.len() < wanted {
            if let Some(stop) = budget.should_stop(started) {
                stopped = Some(stop);
                break;
            }
            if !cycles.is_empty() && budget.duration.is_some_and(|d| started.elapsed() > d) {
                break;
            }
            let chunk = 4096.min(wanted - cycles.len());
            cycles.make_room(chunk);
            for _ in 0..chunk {
                cycles.push(clock.one_sample());
            }
        }
        let reading = perf.stop();
        let cycles = cycles.into_vec();
        let taken = cycles.len();
        if taken == 0 {
            if let Some(stop) = stopped {
                return Err(crate::sampling::stopped_before_any(stop, NAME));
            }
        }
        let cut_short = taken < wanted && stopped.is_none();

        let mut s = Samples::new(cycles, Method::PerOp, 0, clock.description());
        s.partial = stopped.map(|st| st.describe(taken as u64, budget.iterations));
        s.notes.push("overhead_cycles = 0: these samples are the timer overhead itself".into());
        if cut_short {
            s.notes.push(format!("stopped by the duration cap after {taken} of {wanted} samples"));
        }
        if let Clock::Instant = clock {
            let pair = serialized_pair_overhead(2_000);
            s.metrics.push(Metric::new("lfence_rdtsc_pair_cycles", pair as f64, "cycles"));
            s.notes.push(format!(
                "samples include one lfence;rdtsc pair ({pair} cycles, metric lfence_rdtsc_pair_cycles); kernel clocksource: {}",
                clocksource()
            ));
        }
        reading.attach(&mut s, taken as u64);
        Ok(s)
    }
}
