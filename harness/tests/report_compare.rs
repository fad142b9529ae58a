//! `ivbench report` and `ivbench compare` on synthetic runs written through the store API,
//! so that every expectation holds on any machine, fast or slow.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use hdrhistogram::Histogram;
use ivbench::stats::{new_histogram, CycleStats, HIST_UNITS_PER_CYCLE};
use ivbench::store::run_dir::utc_now;
use ivbench::store::{RunDir, Status, SummaryRow};
use serde_json::Value;

const TSC_KHZ: u64 = 2_000_000;
const EVIL_REASON: &str = "no VMFUNC here: <script>alert(\"x\")</script> & co";

/// One point of a synthetic run: samples in cycles (None: a row without samples).
struct Point {
    probe: &'static str,
    params: &'static str,
    method: &'static str,
    status: Status,
    cycles: Option<Vec<u64>>,
}

fn ok(probe: &'static str, params: &'static str, method: &'static str, cycles: Vec<u64>) -> Point {
    Point { probe, params, method, status: Status::Ok, cycles: Some(cycles) }
}

fn not_ok(probe: &'static str, status: Status) -> Point {
    Point { probe, params: "", method: "per-op", status, cycles: None }
}

fn histogram(cycles: &[u64]) -> Histogram<u64> {
    let mut h = new_histogram();
    for c in cycles {
        h.record(c * HIST_UNITS_PER_CYCLE).unwrap();
    }
    h
}

fn write_run(out: &Path, points: Vec<Point>, interrupted: Option<&str>) -> PathBuf {
    let fp = serde_json::json!({
        "cpu": {"brand": "Synthetic CPU", "flags": {"vmx": true, "monitor_mwait": false}},
        "kvm": {"backend": "synthetic", "backends_present": ["a", "b"]},
    });
    let mut run = RunDir::create(out, "sweep", "# synthetic", fp).unwrap();
    run.discovered("vmm", serde_json::json!({"native_verified": "by test"})).unwrap();
    for p in points {
        let started = Instant::now();
        match p.cycles {
            Some(c) => {
                let h = histogram(&c);
                let mut row = SummaryRow::without_samples(p.probe, p.params, p.status, p.method)
                    .with_stats(&CycleStats::from_histogram(&h), TSC_KHZ);
                row.overhead_cycles = 48;
                row.clock = "host lfence;rdtsc".into();
                run.record(row, Some(h), started, utc_now()).unwrap();
            }
            None => run
                .record(SummaryRow::without_samples(p.probe, p.params, p.status, p.method), None, started, utc_now())
                .unwrap(),
        }
    }
    run.finish(interrupted.map(str::to_string)).unwrap();
    run.path.clone()
}

/// `center` cycles with a +-1% spread: a tight distribution.
fn tight(center: u64) -> Vec<u64> {
    (0..2000i64).map(|i| (center as i64 + (i % 21 - 10) * center as i64 / 1000) as u64).collect()
}

/// Log-uniform over four decades from `lo`: a very wide distribution.
fn wide(lo: u64) -> Vec<u64> {
    (0..2000).map(|i| (lo as f64 * 10f64.powf(4.0 * (i as f64 + 0.5) / 2000.0)) as u64).collect()
}

fn ivbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ivbench")).args(args).output().expect("running ivbench")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn compare_json(base: &Path, new: &Path) -> (i32, Value) {
    let o = ivbench(&["compare", p(base), p(new), "--format", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("compare json: {e}: {}", String::from_utf8_lossy(&o.stdout)));
    (o.status.code().unwrap(), v)
}

fn verdict_of<'a>(v: &'a Value, key_prefix: &str) -> &'a str {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"].as_str().unwrap().starts_with(key_prefix))
        .unwrap_or_else(|| panic!("no row {key_prefix}"))["verdict"]
        .as_str()
        .unwrap()
}

fn sample_points() -> Vec<Point> {
    vec![
        ok("host.syscall.getppid", "", "per-op", tight(230)),
        ok("vm.syscall.getppid", "", "per-op", tight(2600)),
        ok("vm.hypercall.null", "", "per-op", wide(1000)),
        ok("host.memcpy", "size=64", "per-op", tight(50)),
        ok("host.memcpy", "size=64", "batched/100", tight(30)),
        not_ok("vm.view.vmfunc", Status::Unsupported(EVIL_REASON.into())),
        not_ok("vm.notify.mwait", Status::Failed("KVM_RUN: EINTR".into())),
    ]
}

#[test]
fn report_is_one_self_contained_page_with_every_probe() {
    let d = tempfile::tempdir().unwrap();
    let run = write_run(d.path(), sample_points(), None);
    let o = ivbench(&["report", p(&run)]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(run.join("report.html")).unwrap();
    for probe in [
        "host.syscall.getppid",
        "vm.syscall.getppid",
        "vm.hypercall.null",
        "host.memcpy",
        "vm.view.vmfunc",
        "vm.notify.mwait",
    ] {
        assert!(page.contains(probe), "report lacks {probe}");
    }
    // A histogram and a percentile plot per stored histogram, plus the budget chart.
    assert_eq!(page.matches("<svg").count(), 2 * 5 + 1);
    assert!(!page.contains("http://") && !page.contains("https://"), "page references the network");
    assert!(!page.contains("<script") && !page.contains("src="), "page loads something");
    assert!(page.contains("67.2") && page.contains("16.8"));
    assert!(
        page.contains("no VMFUNC here: &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co"),
        "reason not shown escaped"
    );
    assert!(page.contains("failed: KVM_RUN: EINTR"));
    assert!(page.contains("not in this run"), "seed table must say which probes the run lacks");
    // Every figure names its unit, method and the subtracted overhead.
    assert_eq!(page.matches("<b>timer overhead subtracted</b>: 48 cycles").count(), 5);
    assert!(page.contains("batched/100 (100 operations"));
    // The seed table sets the 2014 getppid figure beside this run's: 2600/1300 = 2.00x.
    assert!(page.contains("1300 cycles ≈ 400 ns") && page.contains("2.00x"), "seed ratio missing");
    // Fingerprint and discoveries are rendered, nested.
    assert!(page.contains("<dt>brand</dt><dd>Synthetic CPU</dd>") && page.contains("native_verified"));
    assert!(page.contains("complete"));
}

#[test]
fn report_resolves_latest_and_honours_out() {
    let d = tempfile::tempdir().unwrap();
    let run =
        write_run(d.path(), vec![ok("host.syscall.getppid", "", "per-op", tight(230))], Some("interrupted by Ctrl-C"));
    let out = d.path().join("elsewhere.html");
    let o = ivbench(&["report", "latest", "--runs", p(d.path()), "--out", p(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("elsewhere.html"));
    assert!(!run.join("report.html").exists());
    let page = std::fs::read_to_string(out).unwrap();
    assert!(page.contains("partial") && page.contains("interrupted by Ctrl-C"));
}

#[test]
fn report_of_a_missing_run_is_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let o = ivbench(&["report", p(&d.path().join("nope"))]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn identical_runs_are_the_same() {
    let d = tempfile::tempdir().unwrap();
    let a = write_run(&d.path().join("a"), sample_points(), None);
    let b = write_run(&d.path().join("b"), sample_points(), None);
    let (code, v) = compare_json(&a, &b);
    assert_eq!(code, 0);
    assert_eq!(v["regressions"], 0);
    for r in v["rows"].as_array().unwrap() {
        let key = r["key"].as_str().unwrap();
        let expect = if key.starts_with("vm.view.vmfunc") || key.starts_with("vm.notify.mwait") {
            "not comparable"
        } else {
            "same (within noise)"
        };
        assert_eq!(r["verdict"], expect, "{key}");
    }
    // The unsupported reason travels into the comparison.
    assert!(v["rows"].as_array().unwrap().iter().any(|r| r["note"].as_str().unwrap().contains(EVIL_REASON)));
    let table = ivbench(&["compare", p(&a), p(&b)]);
    assert_eq!(table.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&table.stdout).contains("0 regression(s)"));
}

#[test]
fn a_doubled_tight_p50_is_a_regression() {
    let d = tempfile::tempdir().unwrap();
    let a = write_run(
        &d.path().join("a"),
        vec![ok("vm.hypercall.null", "", "per-op", tight(1500)), ok("host.syscall.getppid", "", "per-op", tight(230))],
        None,
    );
    let b = write_run(
        &d.path().join("b"),
        vec![ok("vm.hypercall.null", "", "per-op", tight(3000)), ok("host.syscall.getppid", "", "per-op", tight(230))],
        None,
    );
    let (code, v) = compare_json(&a, &b);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(verdict_of(&v, "vm.hypercall.null"), "regression");
    assert_eq!(verdict_of(&v, "host.syscall.getppid"), "same (within noise)");
    let row = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"].as_str().unwrap().starts_with("vm.hypercall.null"))
        .unwrap();
    assert!((row["p50"]["ratio"].as_f64().unwrap() - 2.0).abs() < 0.01);
    // And the way back is an improvement, which does not fail.
    let (code, v) = compare_json(&b, &a);
    assert_eq!(code, 0);
    assert_eq!(verdict_of(&v, "vm.hypercall.null"), "improvement");
}

#[test]
fn a_moved_timer_warns_that_the_machine_changed() {
    let d = tempfile::tempdir().unwrap();
    let a = write_run(
        &d.path().join("a"),
        vec![ok("host.timer.overhead", "clock=lfence-rdtsc", "per-op", tight(54))],
        None,
    );
    let b = write_run(
        &d.path().join("b"),
        vec![ok("host.timer.overhead", "clock=lfence-rdtsc", "per-op", tight(90))],
        None,
    );
    let (_, v) = compare_json(&a, &b);
    let w = v["warnings"].as_array().unwrap();
    assert!(w.iter().any(|x| x.as_str().unwrap().contains("machine's state changed")), "{v:#}");
    let (_, v) = compare_json(&a, &a);
    assert!(v["warnings"].as_array().unwrap().is_empty(), "{v:#}");
}

#[test]
fn a_doubling_inside_a_wide_distribution_is_noise() {
    let d = tempfile::tempdir().unwrap();
    let a = write_run(&d.path().join("a"), vec![ok("vm.notify.halt", "", "per-op", wide(1000))], None);
    let b = write_run(&d.path().join("b"), vec![ok("vm.notify.halt", "", "per-op", wide(2000))], None);
    let (code, v) = compare_json(&a, &b);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(verdict_of(&v, "vm.notify.halt"), "same (within noise)");
    let row = &v["rows"][0];
    assert!((row["p50"]["ratio"].as_f64().unwrap() - 2.0).abs() < 0.05, "the change is real: {row}");
    assert!(row["p50"]["noise_factor"].as_f64().unwrap() > 2.0, "{row}");
}

#[test]
fn rows_on_one_side_only_are_reported_missing() {
    let d = tempfile::tempdir().unwrap();
    let a = write_run(&d.path().join("a"), vec![ok("host.syscall.getppid", "", "per-op", tight(230))], None);
    let b = write_run(&d.path().join("b"), vec![ok("vm.syscall.getppid", "", "per-op", tight(2600))], None);
    let (code, v) = compare_json(&a, &b);
    // A probe the base measured and the new run lacks fails the gate; a new probe does not.
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(verdict_of(&v, "host.syscall.getppid"), "missing in new");
    assert_eq!(verdict_of(&v, "vm.syscall.getppid"), "missing in base");
    let (code, v) = compare_json(&b, &a);
    assert_eq!(code, 1, "{v:#}");
    let both = write_run(
        &d.path().join("both"),
        vec![ok("host.syscall.getppid", "", "per-op", tight(230)), ok("vm.syscall.getppid", "", "per-op", tight(2600))],
        None,
    );
    let (code, v) = compare_json(&a, &both);
    assert_eq!(code, 0, "only a new probe: {v:#}");
}

#[test]
fn bmf_has_the_documented_shape() {
    let d = tempfile::tempdir().unwrap();
    let a = write_run(&d.path().join("a"), sample_points(), None);
    let b = write_run(&d.path().join("b"), sample_points(), None);
    let o = ivbench(&["compare", p(&a), p(&b), "--format", "bmf"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = v.as_object().unwrap();
    // The five ok rows of NEW; unsupported and failed rows have no latency to publish.
    assert_eq!(m.len(), 5, "{v:#}");
    assert!(m.contains_key("host.memcpy {size=64} [batched/100]"));
    for (k, entry) in m {
        let l = &entry["latency"];
        let (val, lo, hi) =
            (l["value"].as_f64().unwrap(), l["lower_value"].as_f64().unwrap(), l["upper_value"].as_f64().unwrap());
        assert!(lo <= val && val <= hi, "{k}: {l}");
    }
    // value = p50 ns: 2600 cycles at 2 GHz.
    let vm = m["vm.syscall.getppid [per-op]"]["latency"]["value"].as_f64().unwrap();
    assert!((vm - 1300.0).abs() < 1300.0 * 0.002, "{vm}");
}

#[test]
fn a_missing_run_directory_is_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let a = write_run(&d.path().join("a"), sample_points(), None);
    let missing = d.path().join("does-not-exist");
    let o = ivbench(&["compare", p(&a), p(&missing)]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("new run") && err.contains("does-not-exist"), "unclear message: {err}");
    let o = ivbench(&["compare", p(&a), p(&a), "--threshold", "-1"]);
    assert_eq!(o.status.code(), Some(2));
}

/// A throughput run: one path row at `mpps` with the given trial spread.
fn throughput_run(out: &Path, mpps: f64, spread: f64) -> PathBuf {
    let fp = serde_json::json!({"cpu": {"brand": "Synthetic CPU"}, "kvm": {"backend": "synthetic"}});
    let mut run = RunDir::create(out, "sweep", "# synthetic", fp).unwrap();
    let mut row =
        SummaryRow::without_samples("path.host-ring", "batch=32,copy=copy,rate=max,size=64", Status::Ok, "per-op");
    let received = (mpps * 1e6) as u64;
    (row.mpps, row.gbit_s, row.sent, row.received, row.dropped) =
        (Some(mpps), Some(mpps * 0.512), Some(received + 7), Some(received), Some(7));
    row.tsc_khz = TSC_KHZ;
    row.metrics = format!("loss_ratio=0 ratio; mpps_spread={spread} x (p75/p25 of interval rates)");
    run.record(row, None, Instant::now(), utc_now()).unwrap();
    run.finish(None).unwrap();
    run.path.clone()
}

#[test]
fn throughput_rows_compare_higher_is_better_and_publish_to_bmf() {
    let d = tempfile::tempdir().unwrap();
    let base = throughput_run(&d.path().join("base"), 20.0, 1.02);
    let key = "path.host-ring {batch=32,copy=copy,rate=max,size=64}";
    for (name, mpps, spread, verdict, code) in [
        ("half", 10.0, 1.02, "regression", 1),
        ("same", 19.0, 1.02, "same (within noise)", 0),
        ("double", 40.0, 1.02, "improvement", 0),
        ("noisy", 14.0, 1.6, "same (within noise)", 0),
    ] {
        let new = throughput_run(&d.path().join(name), mpps, spread);
        let (c, v) = compare_json(&base, &new);
        assert_eq!(verdict_of(&v, key), verdict, "{name}: {v:#}");
        assert_eq!(c, code, "{name}");
    }
    let o = ivbench(&["compare", p(&base), p(&base), "--format", "bmf"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let entry = &v[format!("{key} [per-op]")];
    assert_eq!(entry["throughput"]["value"].as_f64(), Some(20e6), "{v:#}");
    assert!(entry.get("latency").is_none(), "no latency figures on this row: {v:#}");
    let r = ivbench(&["report", p(&base), "--out", p(&d.path().join("r.html"))]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}
