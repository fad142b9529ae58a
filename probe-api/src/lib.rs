//! The contract between probes and the harness.
//!
//! A probe crate (host-probes, guest-probes) implements [`Probe`] and hands raw TSC-cycle
//! samples back in [`Samples`]; it never converts to ns, never builds histograms and never
//! writes files. The harness owns everything downstream (histogram, overhead subtraction,
//! store, report), so each of those steps lives in exactly one place.

pub mod cpu;
pub mod limits;
pub mod stop;
pub mod throughput;
pub mod tsc;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use stop::{Stop, StopFlag};
pub use throughput::Throughput;

/// One parameter point of a probe, e.g. `size=64`. Empty for probes without parameters.
/// Ordered so that its text form (`size=64,mode=spin`) is stable across runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Point(pub BTreeMap<String, String>);

impl Point {
    pub fn none() -> Self {
        Point(BTreeMap::new())
    }
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.0.insert(key.to_string(), value.to_string());
        self
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    /// The value of `key` as an integer; None when absent or not a number.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.parse().ok())
    }
    /// `key=value,key=value`, or the empty string. A key given twice is an error: which
    /// of the two values was meant cannot be guessed.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) =
                part.split_once('=').ok_or_else(|| format!("parameter `{part}` is not of the form key=value"))?;
            if k.trim().is_empty() {
                return Err(format!("parameter `{part}` has an empty key"));
            }
            if let Some(old) = map.insert(k.trim().to_string(), v.trim().to_string()) {
                return Err(format!("parameter `{}` is given twice (`{}={old}` and `{part}`)", k.trim(), k.trim()));
            }
        }
        Ok(Point(map))
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
            first = false;
        }
        Ok(())
    }
}

/// How each sample was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// A serialized timestamp pair around every single operation. Gives the real
    /// distribution; the timer's own cost is subtracted (and reported) by the harness.
    PerOp,
    /// `batch` operations between one timestamp pair; the sample is the total divided by
    /// `batch`. Hides the timer cost and the tail; shows steady-state throughput cost.
    Batched { batch: u32 },
}

impl Method {
    pub fn label(&self) -> String {
        match self {
            Method::PerOp => "per-op".into(),
            Method::Batched { batch } => format!("batched/{batch}"),
        }
    }
    pub fn batch(&self) -> u32 {
        match self {
            Method::PerOp => 1,
            Method::Batched { batch } => *batch,
        }
    }
}

/// Which methods a probe can honour. Some operations (a blocking wake-up, an interrupt
/// delivery) only make sense per operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Methods {
    PerOpOnly,
    Both,
}

/// How much work to do. The runner fills this from the CLI or the sweep config.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Samples wanted (per-op: operations; batched: batches).
    pub iterations: u64,
    /// Optional wall-clock cap; a probe that honours it stops early and says so.
    pub duration: Option<Duration>,
    /// CPUs to pin to, in order of use (first: the measuring thread).
    pub cpus: Vec<usize>,
    pub method: Method,
    /// A point stops at this much wall time: with the samples it has, marked partial
    /// (`ProbeError::Timeout` only when it has none).
    pub timeout: Duration,
    /// Raised when the user interrupts the run: a point stops at its next check and
    /// keeps what it measured, marked partial.
    pub stop: StopFlag,
}

impl Budget {
    pub fn quick(iterations: u64) -> Self {
        Budget {
            iterations,
            duration: None,
            cpus: vec![0, 1],
            method: Method::PerOp,
            timeout: Duration::from_secs(60),
            stop: StopFlag::new(),
        }
    }
    /// Whether a point started at `started` must stop now, and why.
    #[inline]
    pub fn should_stop(&self, started: Instant) -> Option<Stop> {
        if self.stop.is_requested() {
            Some(Stop::Interrupted)
        } else if started.elapsed() >= self.timeout {
            Some(Stop::TimedOut(self.timeout))
        } else {
            None
        }
    }
    /// When a point started at `started` times out.
    pub fn deadline(&self, started: Instant) -> Instant {
        stop::deadline(started, self.timeout)
    }
    /// The CPU for the n-th thread of a probe, wrapping around the configured list.
    pub fn cpu(&self, n: usize) -> Option<usize> {
        if self.cpus.is_empty() {
            None
        } else {
            Some(self.cpus[n % self.cpus.len()])
        }
    }
}

/// A value measured beside the latency samples: throughput, bytes per cycle, counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

impl Metric {
    pub fn new(name: &str, value: f64, unit: &str) -> Self {
        Metric { name: name.into(), value, unit: unit.into() }
    }
}

/// What a probe returns for one parameter point.
#[derive(Clone, Debug)]
pub struct Samples {
    /// Raw TSC cycles per operation, *including* the timer overhead (per-op) or already
    /// divided by the batch size (batched). May be empty only when `throughput` is set (a
    /// trial whose path gives no per-packet stamps). The harness subtracts `overhead_cycles` once.
    /// In units of 1/`scale` cycle, so that batched figures below a few cycles keep their
    /// fraction (a batched probe may report `total * 1000 / batch` with `scale = 1000`).
    pub cycles: Vec<u64>,
    /// Sample units per TSC cycle; 1 for plain cycles.
    pub scale: u64,
    pub method: Method,
    /// Cost of one serialized timestamp pair as measured on the side that took the
    /// samples (host thread or guest vCPU); per-op samples have it subtracted.
    pub overhead_cycles: u64,
    /// TSC rate the cycles were counted at, when the probe knows better than the host
    /// default (a guest TSC read through KVM_GET_TSC_KHZ).
    pub tsc_khz: Option<u64>,
    /// How the timestamps were taken, e.g. "host lfence;rdtsc" or "guest lfence;rdtsc".
    pub clock: String,
    pub metrics: Vec<Metric>,
    /// Facts the reader needs to interpret the figure ("APICv off", "1.2% early HLT wakes").
    pub notes: Vec<String>,
    /// Why the point stopped before it had every sample it was asked for (interrupted,
    /// timed out), when it did. The samples are real but fewer; the row says so.
    pub partial: Option<String>,
    /// Counters and rates of a throughput trial (path.* probes); the harness checks
    /// `sent = received + dropped` and fails the row when it does not hold.
    pub throughput: Option<Throughput>,
}

impl Samples {
    pub fn new(cycles: Vec<u64>, method: Method, overhead_cycles: u64, clock: &str) -> Self {
        Samples {
            cycles,
            scale: 1,
            method,
            overhead_cycles,
            tsc_khz: None,
            clock: clock.into(),
            metrics: Vec::new(),
            notes: Vec::new(),
            partial: None,
            throughput: None,
        }
    }
}

/// Whether this host can run a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    Supported,
    Unsupported(String),
}

impl Support {
    pub fn is_supported(&self) -> bool {
        matches!(self, Support::Supported)
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Support::Supported => f.write_str("supported"),
            Support::Unsupported(r) => write!(f, "unsupported: {r}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Discovered only at run time (e.g. KVM refused a capability): reported as
    /// `unsupported: <reason>`, never as a failure.
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("timed out after {0:?}: {1}")]
    Timeout(Duration, String),
    /// The user stopped the run before this point had a single sample.
    #[error("{0}")]
    Interrupted(String),
    #[error("{0}")]
    Failed(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ProbeError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ProbeError::Io { context: context.into(), source }
    }
    pub fn last_os(context: impl Into<String>) -> Self {
        Self::io(context, std::io::Error::last_os_error())
    }
}

/// One measurement, named by its contract (`host.syscall.getppid`).
///
/// Probes are stateless values in a static table; everything a run needs comes in through
/// `point` and `budget`.
pub trait Probe: Send + Sync {
    /// Dotted name; the first component is the group's domain (`host`, `vm`, `path`).
    fn name(&self) -> &'static str;
    /// One line: what is timed, from where to where.
    fn description(&self) -> &'static str;
    /// Group shown by `ivbench list` (e.g. "syscall", "exit", "notify").
    fn group(&self) -> &'static str;
    /// Evaluated on this host without side effects worth mentioning.
    fn support(&self) -> Support;
    /// The parameter points a default sweep covers. At least one (possibly empty) point.
    fn points(&self) -> Vec<Point> {
        vec![Point::none()]
    }
    fn methods(&self) -> Methods {
        Methods::PerOpOnly
    }
    /// The parameter keys this probe reads; a point with any other key is refused before
    /// it runs (a misspelt key must not be recorded as if it had been applied). By
    /// default the keys of its own points.
    fn param_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.points().into_iter().flat_map(|p| p.0.into_keys()).collect();
        keys.sort();
        keys.dedup();
        keys
    }
    /// Runs one parameter point.
    fn run(&self, point: &Point, budget: &Budget) -> Result<Samples, ProbeError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_parameter_key_is_refused() {
        let e = Point::parse("size=64,size=128").unwrap_err();
        assert!(e.contains("`size` is given twice"), "{e}");
        assert_eq!(Point::parse("size=64, wait=spin").unwrap().to_string(), "size=64,wait=spin");
    }

    struct Keys;
    impl Probe for Keys {
        fn name(&self) -> &'static str {
            "test.keys"
        }
        fn description(&self) -> &'static str {
            ""
        }
        fn group(&self) -> &'static str {
            ""
        }
        fn support(&self) -> Support {
            Support::Supported
        }
        fn points(&self) -> Vec<Point> {
            vec![Point::none().with("wait", "spin"), Point::none().with("wait", "hlt").with("halt_poll_ns", 0)]
        }
        fn run(&self, _: &Point, _: &Budget) -> Result<Samples, ProbeError> {
            Err(ProbeError::Failed("not run".into()))
        }
    }

    #[test]
    fn declared_keys_default_to_the_keys_of_the_points() {
        assert_eq!(Keys.param_keys(), vec!["halt_poll_ns".to_string(), "wait".to_string()]);
    }

    #[test]
    fn should_stop_reports_interrupt_before_timeout() {
        let mut b = Budget::quick(1);
        let t0 = Instant::now();
        assert_eq!(b.should_stop(t0), None);
        b.stop.request();
        assert_eq!(b.should_stop(t0), Some(Stop::Interrupted));
        b.stop.clear();
        b.timeout = Duration::ZERO;
        assert_eq!(b.should_stop(t0), Some(Stop::TimedOut(Duration::ZERO)));
        // A timeout too large for Instant arithmetic does not panic.
        b.timeout = Duration::from_secs(u64::MAX);
        assert!(b.deadline(t0) > t0);
    }
}
