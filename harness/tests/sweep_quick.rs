//! `ivbench sweep --quick` end to end: every probe of the default sweep leaves a row
//! (ok, unsupported with a reason, or failed with a reason), and the files are complete.

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;

use ivbench::config::SweepConfig;
use ivbench::registry;
use ivbench::store::run_dir::load_run;
use ivbench::store::Status;

#[test]
fn quick_default_sweep_writes_every_file_and_a_row_per_point() {
    let d = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ivbench"))
        .args(["sweep", "--quick", "--out", d.path().to_str().unwrap()])
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{all}");
    let run_dir =
        fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.is_dir()).expect("a run directory");
    let run = load_run(&run_dir).unwrap();
    assert_eq!(run.manifest.status, ivbench::store::RunStatus::Complete);

    // The rows are exactly the jobs the default sweep expands to.
    let probes = registry::all();
    let jobs = SweepConfig::default_sweep().jobs(&probes, true, "<default>").unwrap();
    assert_eq!(run.rows.len(), jobs.len(), "one row per probe x point x method");
    let names: BTreeSet<&str> = run.rows.iter().map(|r| r.probe.as_str()).collect();
    for j in &jobs {
        assert!(names.contains(j.probe.name()), "{} has no row", j.probe.name());
    }
    for r in &run.rows {
        match &r.status {
            // A throughput row without per-packet stamps (the DPDK baselines): counters, no histogram.
            Status::Ok if r.is_throughput() && r.count == 0 => {
                let (s, rx, d) = (r.sent.unwrap(), r.received.unwrap(), r.dropped.unwrap());
                assert_eq!(s, rx + d, "{}", r.key());
                assert!(r.mpps.unwrap() > 0.0 && run.histogram(r).is_none(), "{}", r.key());
            }
            Status::Ok => {
                assert!(r.count > 0, "{}", r.key());
                if r.is_throughput() {
                    assert_eq!(r.sent.unwrap(), r.received.unwrap() + r.dropped.unwrap(), "{}", r.key());
                }
                let h = run.histogram(r).unwrap_or_else(|| panic!("{} has no histogram in its .hlog", r.key()));
                assert_eq!(h.len(), r.count, "{}", r.key());
                assert!(r.tsc_khz > 0, "{}", r.key());
                let (p50, p99) = (r.p50_ns.unwrap(), r.p99_ns.unwrap());
                assert!(p50 >= 0.0 && p99 >= p50, "{}: p50 {p50} p99 {p99}", r.key());
                // Operations far above the timer's resolution can never net out at 0
                // (a per-op memcpy of 64 B can: it costs about what the timer pair costs).
                if r.probe.starts_with("vm.") && r.probe != "vm.native.loop" || r.probe.starts_with("host.syscall") {
                    assert!(p50 > 0.0, "{}: p50 {p50}", r.key());
                }
            }
            Status::Unsupported(reason) | Status::Failed(reason) => {
                assert!(reason.len() > 5, "{}: reason too thin: {reason}", r.key())
            }
        }
    }
    // The host floor must actually have been measured here.
    for p in ["host.syscall.getppid", "host.cacheline.roundtrip", "host.memcpy", "host.timer.overhead"] {
        assert!(run.rows.iter().any(|r| r.probe == p && r.status.is_ok()), "{p} not ok: {all}");
    }
}
