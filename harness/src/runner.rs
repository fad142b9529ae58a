//! Runs one probe at one parameter point and turns what it returns into a summary row and
//! a histogram. Nothing a probe does (error, unsupported, panic) escapes as a crash.

use std::panic::{catch_unwind, AssertUnwindSafe};

use hdrhistogram::Histogram;
use probe_api::{Budget, Method, Methods, Point, Probe, ProbeError, Samples, Support};

use crate::stats::{self, CycleStats};
use crate::store::{Status, SummaryRow};

pub struct Outcome {
    pub row: SummaryRow,
    pub histogram: Option<Histogram<u64>>,
}

/// Why a method cannot be used with a probe, if it cannot.
pub fn method_refusal(probe: &dyn Probe, method: Method) -> Option<String> {
    match (probe.methods(), method) {
        (Methods::PerOpOnly, Method::Batched { .. }) => {
            Some("batched timing not available: this probe is timed per operation only".into())
        }
        _ => None,
    }
}

pub fn run_point(probe: &dyn Probe, point: &Point, budget: &Budget, host_tsc_khz: u64) -> Outcome {
    let params = point.to_string();
    let method = budget.method.label();
    let bare =
        |status| Outcome { row: SummaryRow::without_samples(probe.name(), &params, status, &method), histogram: None };
    if let Support::Unsupported(reason) = probe.support() {
        return bare(Status::Unsupported(reason));
    }
    if let Some(reason) = method_refusal(probe, budget.method) {
        return bare(Status::Unsupported(reason));
    }
    let result = catch_unwind(AssertUnwindSafe(|| probe.run(point, budget)));
    match result {
        Ok(Ok(samples)) => summarize(probe.name(), &params, samples, host_tsc_khz),
        Ok(Err(ProbeError::Unsupported(reason))) => bare(Status::Unsupported(reason)),
        Ok(Err(e)) => bare(Status::Failed(e.to_string())),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            bare(Status::Failed(format!("probe panicked: {msg}")))
        }
    }
}

/// Samples -> histogram (overhead subtracted once) -> summary row.
pub fn summarize(probe: &str, params: &str, samples: Samples, host_tsc_khz: u64) -> Outcome {
    let method = samples.method.label();
    if samples.cycles.is_empty() {
        return Outcome {
            row: SummaryRow::without_samples(
                probe,
                params,
                Status::Failed("probe returned no samples".into()),
                &method,
            ),
            histogram: None,
        };
    }
    let histogram = stats::record(&samples);
    let cycles = CycleStats::from_histogram(&histogram);
    let tsc_khz = samples.tsc_khz.unwrap_or(host_tsc_khz);
    let mut row = SummaryRow::without_samples(probe, params, Status::Ok, &method).with_stats(&cycles, tsc_khz);
    row.overhead_cycles = samples.overhead_cycles;
    row.clock = samples.clock.clone();
    row.metrics = samples
        .metrics
        .iter()
        .map(|m| format!("{}={} {}", m.name, fmt_value(m.value), m.unit))
        .collect::<Vec<_>>()
        .join("; ");
    row.notes = samples.notes.join("; ");
    row.partial = samples.partial.unwrap_or_default();
    Outcome { row, histogram: Some(histogram) }
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_api::Metric;

    struct Fake(fn(&Budget) -> Result<Samples, ProbeError>, Support, Methods);
    impl Probe for Fake {
        fn name(&self) -> &'static str {
            "test.fake.probe"
        }
        fn description(&self) -> &'static str {
            "fake"
        }
        fn group(&self) -> &'static str {
            "test"
        }
        fn support(&self) -> Support {
            self.1.clone()
        }
        fn methods(&self) -> Methods {
            self.2
        }
        fn run(&self, _: &Point, b: &Budget) -> Result<Samples, ProbeError> {
            (self.0)(b)
        }
    }

    fn ok(b: &Budget) -> Result<Samples, ProbeError> {
        let mut s = Samples::new(vec![2100; b.iterations as usize], b.method, 100, "fake clock");
        s.metrics.push(Metric::new("one_way", 1000.0, "cycles"));
        s.notes.push("a note".into());
        Ok(s)
    }

    #[test]
    fn ok_samples_become_a_row_with_overhead_subtracted() {
        let o = run_point(&Fake(ok, Support::Supported, Methods::Both), &Point::none(), &Budget::quick(100), 2_000_000);
        assert_eq!(o.row.status, Status::Ok);
        assert_eq!(o.row.count, 100);
        // HdrHistogram reports the highest value equivalent at 3 significant digits.
        assert!((o.row.p50_cycles.unwrap() - 2000.0).abs() <= 2.0, "{:?}", o.row.p50_cycles);
        assert!((o.row.p50_ns.unwrap() - 1000.0).abs() <= 1.0, "{:?}", o.row.p50_ns);
        assert_eq!(o.row.overhead_cycles, 100);
        assert_eq!(o.row.metrics, "one_way=1000 cycles");
        assert!(o.histogram.is_some());
    }

    #[test]
    fn unsupported_failed_and_panicking_probes_become_rows() {
        let unsup = Fake(ok, Support::Unsupported("no MONITOR".into()), Methods::Both);
        let o = run_point(&unsup, &Point::none(), &Budget::quick(10), 1);
        assert_eq!(o.row.status.to_string(), "unsupported: no MONITOR");
        let fail = Fake(
            |_| Err(ProbeError::Failed("KVM_EXIT_SHUTDOWN at rip 0x10000".into())),
            Support::Supported,
            Methods::Both,
        );
        assert_eq!(
            run_point(&fail, &Point::none(), &Budget::quick(10), 1).row.status.to_string(),
            "failed: KVM_EXIT_SHUTDOWN at rip 0x10000"
        );
        let late = Fake(|_| Err(ProbeError::Unsupported("KVM refused".into())), Support::Supported, Methods::Both);
        assert!(matches!(run_point(&late, &Point::none(), &Budget::quick(10), 1).row.status, Status::Unsupported(_)));
        let boom = Fake(|_| panic!("boom"), Support::Supported, Methods::Both);
        let o = run_point(&boom, &Point::none(), &Budget::quick(10), 1);
        assert!(o.row.status.to_string().contains("panicked: boom"), "{}", o.row.status);
        let empty = Fake(|b| Ok(Samples::new(vec![], b.method, 0, "x")), Support::Supported, Methods::Both);
        assert!(matches!(run_point(&empty, &Point::none(), &Budget::quick(10), 1).row.status, Status::Failed(_)));
    }

    #[test]
    fn partial_samples_keep_their_figures_and_say_why() {
        let cut = Fake(
            |b| {
                let mut s = Samples::new(vec![500; 7], b.method, 0, "x");
                s.partial = Some(probe_api::Stop::Interrupted.describe(7, b.iterations));
                Ok(s)
            },
            Support::Supported,
            Methods::Both,
        );
        let o = run_point(&cut, &Point::none(), &Budget::quick(100), 1_000_000);
        assert_eq!(o.row.status, Status::Ok);
        assert_eq!(o.row.count, 7);
        assert_eq!(o.row.partial, "interrupted after 7 of 100 samples");
        let none = Fake(
            |_| Err(ProbeError::Interrupted("interrupted before its first sample".into())),
            Support::Supported,
            Methods::Both,
        );
        assert_eq!(
            run_point(&none, &Point::none(), &Budget::quick(1), 1).row.status.to_string(),
            "failed: interrupted before its first sample"
        );
    }

    #[test]
    fn batched_request_on_per_op_only_probe_is_unsupported_not_run() {
        let mut b = Budget::quick(10);
        b.method = Method::Batched { batch: 10 };
        let p = Fake(|_| panic!("must not run"), Support::Supported, Methods::PerOpOnly);
        let o = run_point(&p, &Point::none(), &b, 1);
        assert!(o.row.status.to_string().starts_with("unsupported: batched"), "{}", o.row.status);
        assert_eq!(o.row.method, "batched/10");
    }
}
