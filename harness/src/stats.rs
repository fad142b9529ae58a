//! From samples to a histogram and a summary: the one place where timer overhead is
//! subtracted and the one place where cycles become nanoseconds.

use hdrhistogram::Histogram;
use probe_api::Samples;
use serde::{Deserialize, Serialize};

/// Histogram values are hundredths of a TSC cycle, for every probe and method, so that
/// batched figures below a few cycles keep two decimals while per-op figures of millions
/// of cycles still fit. Every reader divides by this one constant.
pub const HIST_UNITS_PER_CYCLE: u64 = 100;

/// Significant digits kept by every histogram (1 part in 1000).
pub const HIST_SIGFIG: u8 = 3;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new(HIST_SIGFIG).expect("3 significant digits is a valid precision")
}

/// Records samples with the timer overhead removed once.
///
/// Per-op samples lose one full timestamp pair; a batched sample is a per-op average over
/// `batch` operations that shared one pair, so it loses `overhead / batch`.
pub fn record(samples: &Samples) -> Histogram<u64> {
    let mut h = new_histogram();
    let scale = samples.scale.max(1);
    let overhead_units = samples.overhead_cycles.saturating_mul(scale) / u64::from(samples.method.batch());
    for &raw in &samples.cycles {
        let net = raw.saturating_sub(overhead_units);
        let v = if scale == 1 {
            net.saturating_mul(HIST_UNITS_PER_CYCLE)
        } else {
            // Widen before scaling: a scaled-up sample of a slow op must not overflow.
            (u128::from(net) * u128::from(HIST_UNITS_PER_CYCLE) / u128::from(scale)) as u64
        };
        // Auto-resizing histogram: recording only fails for values beyond u64 range.
        h.record(v).expect("auto-resizing histogram accepts any u64");
    }
    h
}

/// What one probe at one parameter point measured, in cycles. ns figures are derived.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CycleStats {
    pub count: u64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    pub stddev: f64,
}

impl CycleStats {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let c = |units: u64| units as f64 / HIST_UNITS_PER_CYCLE as f64;
        let q = |p: f64| c(h.value_at_quantile(p));
        CycleStats {
            count: h.len(),
            min: c(h.min()),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: c(h.max()),
            mean: h.mean() / HIST_UNITS_PER_CYCLE as f64,
            stddev: h.stdev() / HIST_UNITS_PER_CYCLE as f64,
        }
    }

    /// The same figures in ns at `tsc_khz`.
    pub fn to_ns(&self, tsc_khz: u64) -> CycleStats {
        let f = |x: f64| cycles_to_ns(x, tsc_khz);
        CycleStats {
            count: self.count,
            min: f(self.min),
            p50: f(self.p50),
            p90: f(self.p90),
            p99: f(self.p99),
            p999: f(self.p999),
            max: f(self.max),
            mean: f(self.mean),
            stddev: f(self.stddev),
        }
    }
}

/// The single cycles -> ns conversion of the project.
pub fn cycles_to_ns(cycles: f64, tsc_khz: u64) -> f64 {
    if tsc_khz == 0 {
        return f64::NAN;
    }
    cycles * 1_000_000.0 / tsc_khz as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_api::Method;

    fn samples(v: Vec<u64>, method: Method, overhead: u64) -> Samples {
        Samples::new(v, method, overhead, "test")
    }

    #[test]
    fn per_op_subtracts_full_overhead_once() {
        let s = samples(vec![150; 1000], Method::PerOp, 50);
        let st = CycleStats::from_histogram(&record(&s));
        assert_eq!(st.count, 1000);
        assert!((st.p50 - 100.0).abs() < 0.2, "p50 {}", st.p50);
        assert!((st.mean - 100.0).abs() < 0.2);
    }

    #[test]
    fn batched_subtracts_overhead_divided_by_batch() {
        let s = samples(vec![100; 10], Method::Batched { batch: 10 }, 50);
        let st = CycleStats::from_histogram(&record(&s));
        assert!((st.p50 - 95.0).abs() < 0.2, "p50 {}", st.p50);
    }

    #[test]
    fn scaled_samples_keep_fractions() {
        // 1.25 cycles per op expressed in thousandths.
        let mut s = samples(vec![1250; 100], Method::Batched { batch: 1_000_000 }, 0);
        s.scale = 1000;
        let st = CycleStats::from_histogram(&record(&s));
        assert!((st.p50 - 1.25).abs() < 0.01, "p50 {}", st.p50);
    }

    #[test]
    fn overhead_larger_than_sample_saturates_at_zero() {
        let s = samples(vec![10, 20], Method::PerOp, 50);
        let st = CycleStats::from_histogram(&record(&s));
        assert_eq!(st.max, 0.0);
    }

    #[test]
    fn percentiles_are_ordered_and_match_a_known_distribution() {
        let v: Vec<u64> = (1..=10_000).collect();
        let st = CycleStats::from_histogram(&record(&samples(v, Method::PerOp, 0)));
        assert!(st.min <= st.p50 && st.p50 <= st.p90 && st.p90 <= st.p99 && st.p99 <= st.p999 && st.p999 <= st.max);
        // 3 significant digits: within 0.1% of the exact order statistics.
        assert!((st.p50 - 5000.0).abs() / 5000.0 < 0.002, "p50 {}", st.p50);
        assert!((st.p99 - 9900.0).abs() / 9900.0 < 0.002, "p99 {}", st.p99);
        assert!((st.mean - 5000.5).abs() / 5000.5 < 0.002);
        assert!((st.stddev - 2886.75).abs() / 2886.75 < 0.01, "stddev {}", st.stddev);
    }

    #[test]
    fn ns_conversion_uses_tsc_khz() {
        assert_eq!(cycles_to_ns(2000.0, 2_000_000), 1000.0);
        assert!(cycles_to_ns(1.0, 0).is_nan());
    }

    #[test]
    fn cycles_to_ns_scales_by_rate() {
        assert_eq!(cycles_to_ns(2_000_000.0, 2_000_000), 1_000_000.0);
        assert_eq!(cycles_to_ns(3.0, 3_000_000), 1.0);
        assert!(cycles_to_ns(10.0, 0).is_nan());
    }
}
