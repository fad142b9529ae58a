//! The timed loop every host probe shares: warm-up, timer overhead, perf counters, and
//! per-op or batched timestamp pairs, with the budget's limits honoured in one place.

use std::time::Instant;

use probe_api::tsc::{rdtsc_serialized, serialized_pair_overhead};
use probe_api::{Budget, Method, Methods, ProbeError, Samples};

use crate::perf::{PerfCounters, PerfReading};

/// How every host per-op sample is bracketed.
pub const HOST_CLOCK: &str = "host lfence;rdtsc";

/// Rounds of back-to-back pairs behind the overhead figure.
const OVERHEAD_ROUNDS: usize = 2_000;
/// The deadline and duration cap are checked once per this many samples, so that the
/// check (a vDSO clock read) stays out of almost every timed interval.
const CHECK_EVERY: usize = 64;
const _: () = assert!(CHECK_EVERY.is_power_of_two());

/// What the timed loop produced, before it becomes [`Samples`].
pub struct Recorded {
    /// Cycles between each timestamp pair: one op (per-op) or `batch` ops (batched),
    /// timer overhead included.
    pub totals: Vec<u64>,
    pub method: Method,
    pub overhead: u64,
    pub perf: PerfReading,
    /// Samples wanted, when the duration cap stopped the loop before that.
    pub cut_short_of: Option<u64>,
}

/// The batch size the budget asks for, or an error if this probe cannot honour it.
pub fn batch_for(budget: &Budget, methods: Methods, probe: &str) -> Result<u32, ProbeError> {
    match (budget.method, methods) {
        (Method::PerOp, _) => Ok(1),
        (Method::Batched { .. }, Methods::PerOpOnly) => Err(ProbeError::Failed(format!(
            "{probe} measures per operation only; {} was asked for",
            budget.method.label()
        ))),
        (Method::Batched { batch: 0 }, Methods::Both) => Err(ProbeError::Failed(format!(
            "{probe}: batch size 0 is meaningless"
        ))),
        (Method::Batched { batch }, Methods::Both) => Ok(batch),
    }
}

/// Warm-up operations before anything is recorded: enough to fault in buffers, train
/// branches and get both threads of a pair running, few enough to stay cheap when each
/// op is a blocking wake-up.
fn warmup_ops(samples: u64, batch: u32) -> u64 {
    (samples.saturating_mul(u64::from(batch)) / 10).clamp(64, 2_000)
}

/// Runs `op` under the budget on the calling thread (already pinned by the caller).
///
/// `op` returns an error when the operation could not complete (a partner was released
/// by the watchdog); the loop stops at the first one.
pub fn record<F>(
    budget: &Budget,
    methods: Methods,
    probe: &str,
    mut op: F,
) -> Result<Recorded, ProbeError>
where
    F: FnMut() -> Result<(), ProbeError>,
{
    let batch = batch_for(budget, methods, probe)?;
    if budget.iterations == 0 {
        return Err(ProbeError::Failed(format!(
            "{probe}: zero iterations asked for"
        )));
    }
    let wanted = usize::try_from(budget.iterations).map_err(|_| {
        ProbeError::Failed(format!(
            "{probe}: {} iterations do not fit in memory",
            budget.iterations
        ))
    })?;
    let started = Instant::now();
    let timed_out = || ProbeError::Timeout(budget.timeout, format!("{probe} did not finish"));

    for _ in 0..warmup_ops(budget.iterations, batch) {
        op()?;
    }
    if started.elapsed() > budget.timeout {
        return Err(timed_out());
    }

    let mut totals = prefaulted(wanted);
    let mut perf = PerfCounters::open();
    let overhead = serialized_pair_overhead(OVERHEAD_ROUNDS);
    let mut taken = 0usize;
    let mut cut_short = false;

    perf.start();
    while taken < wanted {
        if taken & (CHECK_EVERY - 1) == 0 {
            let elapsed = started.elapsed();
            if elapsed > budget.timeout {
                perf.stop();
                return Err(timed_out());
            }
            if budget.duration.is_some_and(|d| elapsed > d) && taken > 0 {
                cut_short = true;
                break;
            }
        }
        let t0 = rdtsc_serialized();
        let result = if batch == 1 {
            op()
        } else {
            (0..batch).try_for_each(|_| op())
        };
        let t1 = rdtsc_serialized();
        if let Err(e) = result {
            perf.stop();
            return Err(e);
        }
        totals[taken] = t1.wrapping_sub(t0);
        taken += 1;
    }
    let perf = perf.stop();
    totals.truncate(taken);

    Ok(Recorded {
        totals,
        method: budget.method,
        overhead,
        perf,
        cut_short_of: cut_short.then_some(budget.iterations),
    })
}

impl Recorded {
    pub fn batch(&self) -> u32 {
        self.method.batch()
    }

    /// Median cycles of one operation with the timer pair taken out, as the harness will
    /// see it: per-op `median - overhead`, batched `(median total - overhead) / batch`.
    /// `None` when the median does not rise above the overhead.
    pub fn net_median_per_op(&self) -> Option<f64> {
        let m = median(&self.totals)?;
        (m > self.overhead).then(|| (m - self.overhead) as f64 / f64::from(self.batch()))
    }

    /// The samples as the contract wants them: per-op raw cycles; batched divided by the
    /// batch in thousandths of a cycle (`scale` 1000), so that a 6.5-cycle copy is not
    /// rounded to 7. Perf metrics and notes attached.
    pub fn into_samples(self, clock: &str) -> Samples {
        const BATCHED_SCALE: u64 = 1000;
        let batch = u64::from(self.batch());
        let ops = self.totals.len() as u64 * batch;
        let (cycles, scale) = if batch == 1 {
            (self.totals, 1)
        } else {
            let scaled = self
                .totals
                .iter()
                .map(|&t| ((u128::from(t) * u128::from(BATCHED_SCALE) + u128::from(batch / 2)) / u128::from(batch)) as u64)
                .collect();
            (scaled, BATCHED_SCALE)
        };
        let mut s = Samples::new(cycles, self.method, self.overhead, clock);
        s.scale = scale;
        if let Some(wanted) = self.cut_short_of {
            s.notes.push(format!(
                "stopped by the duration cap after {} of {wanted} samples",
                s.cycles.len()
            ));
        }
        self.perf.attach(&mut s, ops);
        s
    }
}

pub fn median(v: &[u64]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut sorted = v.to_vec();
    sorted.sort_unstable();
    Some(sorted[sorted.len() / 2])
}

/// A sample buffer whose pages are already faulted in: a first touch inside the timed
/// loop would land a page fault in some sample. (`vec![0; n]` is not enough: zeroed
/// allocations come from untouched, lazily mapped pages.)
pub fn prefaulted(len: usize) -> Vec<u64> {
    let mut v = vec![0u64; len];
    for x in v.iter_mut().step_by(512) {
        // A volatile write cannot be dropped as "storing zero into zeroed memory".
        // SAFETY: x is a valid, aligned &mut u64 of the vector.
        unsafe { std::ptr::write_volatile(x, 0) };
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_follow_method_and_capability() {
        let mut b = Budget::quick(10);
        assert_eq!(batch_for(&b, Methods::PerOpOnly, "t").unwrap(), 1);
        b.method = Method::Batched { batch: 32 };
        assert_eq!(batch_for(&b, Methods::Both, "t").unwrap(), 32);
        assert!(batch_for(&b, Methods::PerOpOnly, "t").is_err());
        b.method = Method::Batched { batch: 0 };
        assert!(batch_for(&b, Methods::Both, "t").is_err());
    }

    fn recorded(totals: Vec<u64>, method: Method, overhead: u64) -> Recorded {
        Recorded {
            totals,
            method,
            overhead,
            perf: PerfReading::default(),
            cut_short_of: None,
        }
    }

    #[test]
    fn batched_samples_are_per_op_values_in_thousandths() {
        let s = recorded(vec![100, 103, 96], Method::Batched { batch: 4 }, 40).into_samples("t");
        assert_eq!(s.scale, 1000);
        assert_eq!(s.cycles, vec![25_000, 25_750, 24_000]);
        assert_eq!(s.overhead_cycles, 40);
    }

    #[test]
    fn net_median_takes_the_overhead_out_once() {
        assert_eq!(
            recorded(vec![50, 70, 60], Method::PerOp, 40).net_median_per_op(),
            Some(20.0)
        );
        let batched = recorded(vec![140, 140, 140], Method::Batched { batch: 10 }, 40);
        assert_eq!(batched.net_median_per_op(), Some(10.0));
        assert_eq!(
            recorded(vec![30, 40], Method::PerOp, 40).net_median_per_op(),
            None
        );
    }

    #[test]
    fn zero_iterations_is_an_error() {
        let b = Budget::quick(0);
        assert!(record(&b, Methods::Both, "t", || Ok(())).is_err());
    }

    #[test]
    fn op_errors_stop_the_loop() {
        let b = Budget::quick(1_000);
        let mut calls = 0;
        let r = record(&b, Methods::Both, "t", || {
            calls += 1;
            if calls > 100 {
                Err(ProbeError::Failed("stop".into()))
            } else {
                Ok(())
            }
        });
        assert!(matches!(r, Err(ProbeError::Failed(_))));
        assert_eq!(calls, 101);
    }
}
