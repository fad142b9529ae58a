//! The timed loop every host probe shares: warm-up, timer overhead, perf counters, and
//! per-op or batched timestamp pairs, with the budget's limits honoured in one place.

use std::time::{Duration, Instant};

use probe_api::tsc::{rdtsc_serialized, serialized_pair_overhead};
use probe_api::{limits, Budget, Method, Methods, ProbeError, Samples, Stop};

use crate::perf::{PerfCounters, PerfReading};

/// How every host per-op sample is bracketed.
pub const HOST_CLOCK: &str = "host lfence;rdtsc";

/// Rounds of back-to-back pairs behind the overhead figure.
const OVERHEAD_ROUNDS: usize = 2_000;
/// The deadline, the interrupt and the duration cap are checked once per this many
/// samples, so that the check (a vDSO clock read) stays out of almost every timed interval.
const CHECK_EVERY: usize = 64;
const _: () = assert!(CHECK_EVERY.is_power_of_two());
/// A batch expected to run longer than this is checked for the deadline and the
/// interrupt inside, every this long; shorter batches (all ordinary ones) never are, so
/// the check costs their timed intervals nothing.
const INNER_CHECK: Duration = Duration::from_millis(10);
/// Samples added to the buffer at a time (512 KiB), faulted in before they are timed.
const GROW_BY: usize = 1 << 16;

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
    /// Why the loop stopped before it had every sample (interrupt, timeout), if it did.
    pub partial: Option<String>,
}

/// The batch size the budget asks for, or an error if this probe cannot honour it.
pub fn batch_for(budget: &Budget, methods: Methods, probe: &str) -> Result<u32, ProbeError> {
    match (budget.method, methods) {
        (Method::PerOp, _) => Ok(1),
        (Method::Batched { .. }, Methods::PerOpOnly) => Err(ProbeError::Failed(format!(
            "{probe} measures per operation only; {} was asked for",
            budget.method.label()
        ))),
        (Method::Batched { batch: 0 }, Methods::Both) => {
            Err(ProbeError::Failed(format!("{probe}: batch size 0 is meaningless")))
        }
        (Method::Batched { batch }, Methods::Both) => Ok(batch),
    }
}

/// Warm-up operations before anything is recorded: enough to fault in buffers, train
/// branches and get both threads of a pair running, few enough to stay cheap when each
/// op is a blocking wake-up.
fn warmup_ops(samples: u64, batch: u32) -> u64 {
    (samples.saturating_mul(u64::from(batch)) / 10).clamp(64, 2_000)
}

/// The error for a loop that must stop before its first sample.
pub fn stopped_before_any(stop: Stop, probe: &str) -> ProbeError {
    match stop {
        Stop::Interrupted => ProbeError::Interrupted(format!("{probe}: interrupted before its first sample")),
        Stop::TimedOut(t) => ProbeError::Timeout(t, format!("{probe} did not finish its first sample")),
    }
}

/// Ops between two checks inside a batch, from the warm-up's cost per op; `None` when a
/// whole batch is expected to take less than [`INNER_CHECK`].
fn inner_check_every(per_op: Duration, batch: u32) -> Option<u32> {
    let every = (INNER_CHECK.as_nanos() / per_op.as_nanos().max(1)).clamp(1, u128::from(u32::MAX)) as u32;
    (batch > every).then_some(every)
}

/// Runs `op` under the budget on the calling thread (already pinned by the caller).
///
/// `op` returns an error when the operation could not complete (a partner was released
/// by the watchdog); the loop stops at the first one. An interrupt or the timeout stops
/// the loop at its next check: the samples taken so far come back marked partial.
pub fn record<F>(budget: &Budget, methods: Methods, probe: &str, mut op: F) -> Result<Recorded, ProbeError>
where
    F: FnMut() -> Result<(), ProbeError>,
{
    let batch = batch_for(budget, methods, probe)?;
    if budget.iterations == 0 {
        return Err(ProbeError::Failed(format!("{probe}: zero iterations asked for")));
    }
    let wanted = usize::try_from(budget.iterations.min(limits::MAX_ITERATIONS))
        .map_err(|_| ProbeError::Failed(format!("{probe}: {} iterations do not fit in memory", budget.iterations)))?;
    let started = Instant::now();

    let warmup = warmup_ops(budget.iterations, batch);
    for _ in 0..warmup {
        op()?;
    }
    if let Some(stop) = budget.should_stop(started) {
        return Err(stopped_before_any(stop, probe));
    }
    let inner = inner_check_every(started.elapsed() / warmup as u32, batch);

    let mut totals = SampleBuf::new(wanted);
    let mut perf = PerfCounters::open();
    let overhead = serialized_pair_overhead(OVERHEAD_ROUNDS);
    let mut cut_short = false;
    let mut stopped = None;

    perf.start();
    while totals.len() < wanted {
        let taken = totals.len();
        if taken & (CHECK_EVERY - 1) == 0 {
            if let Some(stop) = budget.should_stop(started) {
                stopped = Some(stop);
                break;
            }
            if budget.duration.is_some_and(|d| started.elapsed() > d) && taken > 0 {
                cut_short = true;
                break;
            }
            totals.make_room(GROW_BY);
        }
        let t0 = rdtsc_serialized();
        let result = match (batch, inner) {
            (1, _) => op(),
            (_, None) => (0..batch).try_for_each(|_| op()),
            (_, Some(every)) => {
                // A batch long enough to run past the deadline: checked inside, and an
                // unfinished batch is no sample.
                let mut r = Ok(());
                for i in 0..batch {
                    if i % every == every - 1 {
                        if let Some(stop) = budget.should_stop(started) {
                            stopped = Some(stop);
                            break;
                        }
                    }
                    if let Err(e) = op() {
                        r = Err(e);
                        break;
                    }
                }
                r
            }
        };
        let t1 = rdtsc_serialized();
        if let Err(e) = result {
            perf.stop();
            return Err(e);
        }
        if stopped.is_some() {
            break;
        }
        totals.push(t1.wrapping_sub(t0));
    }
    let perf = perf.stop();
    let totals = totals.into_vec();
    if totals.is_empty() {
        if let Some(stop) = stopped {
            return Err(stopped_before_any(stop, probe));
        }
    }

    Ok(Recorded {
        partial: stopped.map(|s| s.describe(totals.len() as u64, budget.iterations)),
        totals,
        method: budget.method,
        overhead,
        perf,
        cut_short_of: cut_short.then_some(budget.iterations),
    })
}

/// A sample buffer that grows with what is measured, never more than `GROW_BY` samples
/// ahead, and whose new room is faulted in before it is used: a first touch inside the
/// timed loop would land a page fault in some sample. Asking for a billion samples costs
/// memory only as they are taken.
pub struct SampleBuf {
    v: Vec<u64>,
    cap: usize,
    /// Elements below this index of the allocation have been touched.
    faulted: usize,
}

impl SampleBuf {
    pub fn new(cap: usize) -> Self {
        let mut b = SampleBuf { v: Vec::new(), cap, faulted: 0 };
        b.make_room(GROW_BY);
        b
    }
    pub fn len(&self) -> usize {
        self.v.len()
    }
    pub fn is_empty(&self) -> bool {
        self.v.is_empty()
    }
    /// Makes sure the next `ahead` samples (up to the cap) can be pushed without an
    /// allocation or a page fault. Called outside the timed intervals. Only those are
    /// touched: the rest of a doubled allocation stays unmapped until it is needed.
    pub fn make_room(&mut self, ahead: usize) {
        let target = (self.v.len() + ahead).min(self.cap);
        if target > self.v.capacity() {
            // Doubling (capped) keeps the copies few; they happen between samples.
            let new_cap = target.max(2 * self.v.len()).min(self.cap);
            self.v.reserve_exact(new_cap - self.v.len());
            // The allocation may have moved: only what was copied is known to be touched.
            self.faulted = self.v.len();
        }
        let len = self.v.len();
        let from = self.faulted.max(len) - len;
        let spare = self.v.spare_capacity_mut();
        let to = (target - len).min(spare.len());
        for slot in spare[from.min(to)..to].iter_mut().step_by(512) {
            // A volatile write cannot be dropped as "storing into unused memory".
            // SAFETY: `slot` is a valid, aligned, exclusively borrowed element of the
            // vector's spare capacity; writing a u64 into it initializes it.
            unsafe { std::ptr::write_volatile(slot.as_mut_ptr(), 0) };
        }
        self.faulted = self.faulted.max(target);
    }
    #[inline(always)]
    pub fn push(&mut self, v: u64) {
        self.v.push(v);
    }
    pub fn into_vec(self) -> Vec<u64> {
        self.v
    }
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
                .map(|&t| {
                    ((u128::from(t) * u128::from(BATCHED_SCALE) + u128::from(batch / 2)) / u128::from(batch)) as u64
                })
                .collect();
            (scaled, BATCHED_SCALE)
        };
        let mut s = Samples::new(cycles, self.method, self.overhead, clock);
        s.scale = scale;
        s.partial = self.partial;
        if let Some(wanted) = self.cut_short_of {
            s.notes.push(format!("stopped by the duration cap after {} of {wanted} samples", s.cycles.len()));
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
        Recorded { totals, method, overhead, perf: PerfReading::default(), cut_short_of: None, partial: None }
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
        assert_eq!(recorded(vec![50, 70, 60], Method::PerOp, 40).net_median_per_op(), Some(20.0));
        let batched = recorded(vec![140, 140, 140], Method::Batched { batch: 10 }, 40);
        assert_eq!(batched.net_median_per_op(), Some(10.0));
        assert_eq!(recorded(vec![30, 40], Method::PerOp, 40).net_median_per_op(), None);
    }

    #[test]
    fn sample_buffers_grow_up_to_their_cap_only() {
        let mut b = SampleBuf::new(100_000);
        assert!(b.v.capacity() <= GROW_BY, "allocated {} up front", b.v.capacity());
        for i in 0..100_000u64 {
            if b.len().is_multiple_of(CHECK_EVERY) {
                b.make_room(GROW_BY);
            }
            b.push(i);
        }
        assert!(b.v.capacity() <= 100_000);
        let v = b.into_vec();
        assert_eq!(v.len(), 100_000);
        assert_eq!(v[99_999], 99_999);
    }

    #[test]
    fn an_interrupt_keeps_the_samples_taken_so_far() {
        let b = Budget::quick(1_000_000);
        let flag = b.stop.clone();
        let mut calls = 0u64;
        let r = record(&b, Methods::Both, "t", || {
            calls += 1;
            if calls == 5_000 {
                flag.request();
            }
            Ok(())
        })
        .unwrap();
        assert!(!r.totals.is_empty() && r.totals.len() < 1_000_000);
        let p = r.partial.clone().unwrap();
        assert!(p.starts_with(&format!("interrupted after {} of 1000000", r.totals.len())), "{p}");
        assert_eq!(r.into_samples("t").partial.as_deref(), Some(p.as_str()));
    }

    #[test]
    fn a_timeout_inside_a_long_batch_ends_it() {
        let mut b = Budget::quick(10);
        b.method = Method::Batched { batch: limits::MAX_BATCH };
        b.timeout = Duration::from_millis(300);
        let t0 = Instant::now();
        // Each op sleeps 10 µs: one batch would take 10 s.
        let r = record(&b, Methods::Both, "t", || {
            std::thread::sleep(Duration::from_micros(10));
            Ok(())
        });
        assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
        assert!(
            matches!(r, Err(ProbeError::Timeout(..))),
            "no batch could finish: {:?}",
            r.map(|r| r.totals.len()).err()
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
