//! Runs one probe at one parameter point and turns what it returns into a summary row and
//! a histogram. Nothing a probe does (error, unsupported, panic) escapes as a crash.

use std::panic::{catch_unwind, AssertUnwindSafe};

use hdrhistogram::Histogram;
use probe_api::{Budget, Method, Methods, Metric, Point, Probe, ProbeError, Samples, Support, Throughput};

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
    let failed = |why: String| Outcome {
        row: SummaryRow::without_samples(probe, params, Status::Failed(why), &method),
        histogram: None,
    };
    if samples.cycles.is_empty() && samples.throughput.is_none() {
        return failed("probe returned no samples".into());
    }
    if let Some(why) = samples.throughput.as_ref().and_then(|t| t.violation()) {
        return failed(why);
    }
    let tsc_khz = samples.tsc_khz.unwrap_or(host_tsc_khz);
    let mut row = SummaryRow::without_samples(probe, params, Status::Ok, &method);
    let histogram = (!samples.cycles.is_empty()).then(|| stats::record(&samples));
    if let Some(h) = &histogram {
        row = row.with_stats(&CycleStats::from_histogram(h), tsc_khz);
    }
    row.tsc_khz = tsc_khz;
    row.overhead_cycles = samples.overhead_cycles;
    row.clock = samples.clock.clone();
    let mut metrics = samples.metrics.clone();
    if let Some(t) = &samples.throughput {
        (row.mpps, row.gbit_s) = (Some(t.mpps()), Some(t.gbit_s()));
        (row.sent, row.received, row.dropped) = (Some(t.sent), Some(t.received), Some(t.dropped));
        metrics.extend(throughput_metrics(t));
    }
    row.metrics =
        metrics.iter().map(|m| format!("{}={} {}", m.name, fmt_value(m.value), m.unit)).collect::<Vec<_>>().join("; ");
    row.notes = samples.notes.join("; ");
    row.partial = samples.partial.unwrap_or_default();
    Outcome { row, histogram }
}

/// The side figures of a throughput trial, in the `metrics` column: everything the five
/// throughput columns do not carry.
pub fn throughput_metrics(t: &Throughput) -> Vec<Metric> {
    let mut m = Vec::new();
    if let Some(r) = t.offered_mpps {
        m.push(Metric::new("offered_mpps", r, "Mpps"));
    }
    m.push(Metric::new("achieved_offered_mpps", t.achieved_offered_mpps(), "Mpps"));
    m.push(Metric::new("gbit_s_wire", t.gbit_s_wire(), "Gbit/s"));
    for g in probe_api::throughput::LINE_RATES_GBPS {
        m.push(Metric::new(&format!("line_{g}g_pct"), t.line_rate_percent(g), "%"));
    }
    m.push(Metric::new("loss_ratio", t.loss_ratio(), "ratio"));
    for (name, v) in
        [("lost", t.lost), ("duplicated", t.duplicated), ("reordered", t.reordered), ("corrupted", t.corrupted)]
    {
        m.push(Metric::new(name, v as f64, "packets"));
    }
    m.push(Metric::new("duration_s", t.duration_s, "s"));
    m.push(Metric::new("frame_bytes", t.frame_bytes, "B"));
    if let Some(c) = t.tx_cycles_per_packet {
        m.push(Metric::new("tx_cycles_per_packet", c, "cycles"));
    }
    if let Some(c) = t.rx_cycles_per_packet {
        m.push(Metric::new("rx_cycles_per_packet", c, "cycles"));
    }
    if let Some(e) = t.empty_poll_share {
        m.push(Metric::new("empty_poll_share", e, "ratio"));
    }
    if let Some(s) = t.interval_spread() {
        m.push(Metric::new("mpps_spread", s, "x (p75/p25 of interval rates)"));
    }
    m
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
    fn throughput_rows_carry_counters_and_a_broken_identity_fails_them() {
        fn tp(b: &Budget, received: u64) -> Result<Samples, ProbeError> {
            let mut s = Samples::new(vec![], b.method, 0, "x");
            s.throughput = Some(Throughput {
                sent: 1000,
                received,
                dropped: 10,
                duration_s: 0.001,
                frame_bytes: 64.0,
                interval_mpps: vec![1.0; 4],
                ..Default::default()
            });
            Ok(s)
        }
        let fine = Fake(|b| tp(b, 990), Support::Supported, Methods::Both);
        let o = run_point(&fine, &Point::none(), &Budget::quick(1), 1_000_000);
        assert_eq!(o.row.status, Status::Ok);
        assert!(o.histogram.is_none() && o.row.p50_ns.is_none(), "no latency samples, no latency figures");
        assert_eq!((o.row.sent, o.row.received, o.row.dropped), (Some(1000), Some(990), Some(10)));
        assert!((o.row.mpps.unwrap() - 0.99).abs() < 1e-9);
        assert!((o.row.metric("loss_ratio").unwrap() - 0.01).abs() < 1e-9);
        assert!((o.row.metric("mpps_spread").unwrap() - 1.0).abs() < 1e-9);
        assert!(o.row.metric("line_10g_pct").is_some() && o.row.metric("gbit_s_wire").is_some());
        let broken = Fake(|b| tp(b, 989), Support::Supported, Methods::Both);
        let o = run_point(&broken, &Point::none(), &Budget::quick(1), 1_000_000);
        assert_eq!(o.row.status.to_string(), "failed: accounting broken: sent 1000 != received 989 + dropped 10");
        assert_eq!(o.row.sent, None);
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
