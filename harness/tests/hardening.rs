//! The command line as a careless or hostile user and a flaky machine meet it: one test
//! (or a few) per class of failure, each through the real binary. Every one of these
//! aborted, hung, leaked, wrote through a link or mislabelled a result before its fix.
//!
//! `IVBENCH_TEST_BIN` runs them against another ivbench build (to show that a build
//! without the fixes fails them); by default they run the binary of this checkout.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> PathBuf {
    std::env::var_os("IVBENCH_TEST_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ivbench")))
}

fn ivbench(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("ivbench runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn run_dirs(out: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(out).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect()).unwrap_or_default();
    v.sort();
    v
}

fn only_run_dir(out: &Path) -> PathBuf {
    let dirs = run_dirs(out);
    assert_eq!(dirs.len(), 1, "expected one run directory in {}: {dirs:?}", out.display());
    dirs[0].clone()
}

fn manifest(run: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(run.join("manifest.json")).unwrap()).unwrap()
}

/// summary.csv as (header, rows) of strings.
fn summary(run: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(run.join("summary.csv")).unwrap();
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r.records().map(|x| x.unwrap().iter().map(String::from).collect()).collect();
    (header, rows)
}

fn col<'a>(header: &[String], row: &'a [String], name: &str) -> &'a str {
    &row[header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name} in {header:?}"))]
}

/// Runs ivbench expecting exit 2; runs that would measure go to a scratch directory.
fn usage_error(args: &[&str]) {
    let scratch = tempfile::tempdir().unwrap();
    let mut args: Vec<&str> = args.to_vec();
    let out = scratch.path().to_str().unwrap().to_string();
    if matches!(args.first(), Some(&"run") | Some(&"sweep")) && !args.contains(&"--out") {
        args.extend(["--out", out.as_str()]);
    }
    let args = args.as_slice();
    let o = ivbench(args);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?} -> {:?}: {t}", o.status);
    assert!(!t.contains("panicked") && !t.contains("RUST_BACKTRACE"), "{args:?}: {t}");
}

/// Waits for a child with a limit; kills it (and fails) past the limit.
fn wait_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("{what}: still running after {limit:?}: {}", text(&o));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(bin()).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits until the run under `out` has started measuring its first point.
fn wait_for_run_dir(out: &Path) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no run directory appeared under {}", out.display());
        if let Some(d) = run_dirs(out).pop() {
            if d.join("manifest.json").is_file() {
                return d;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// 1. Numbers that abort or exhaust the machine.

#[test]
fn out_of_range_numbers_are_usage_errors() {
    let max = u64::MAX.to_string();
    for args in [
        vec!["run", "host.timer.overhead", "--cpus", "5000"],
        vec!["run", "host.timer.overhead", "--cpus", "0,99999999999"],
        vec!["run", "host.timer.overhead", "--iterations", "1000000000"],
        vec!["run", "host.timer.overhead", "--iterations", max.as_str()],
        vec!["run", "host.timer.overhead", "--iterations", "0"],
        vec!["run", "host.timer.overhead", "--timeout", max.as_str()],
        vec!["run", "host.timer.overhead", "--timeout", "0"],
        vec!["run", "host.timer.overhead", "--duration", "nan"],
        vec!["run", "host.timer.overhead", "--duration", "inf"],
        vec!["run", "host.timer.overhead", "--duration", "-1"],
        vec!["run", "host.timer.overhead", "--duration", "1e300"],
        vec!["run", "host.memcpy", "--method", "batched", "--batch", "4294967295"],
        vec!["env", "--cpus", "100000"],
    ] {
        usage_error(&args);
    }
    // A CPU the mask can hold but this process may not run on: refused before measuring.
    let allowed = probe_api::cpu::allowed_cpus();
    let absent = (0..1024).find(|c| !allowed.contains(c)).unwrap().to_string();
    usage_error(&["run", "host.timer.overhead", "--cpus", &absent, "--iterations", "10"]);
}

#[test]
fn out_of_range_numbers_in_a_sweep_config_are_usage_errors() {
    let d = tempfile::tempdir().unwrap();
    for line in ["iterations = 18446744073709551615", "timeout_s = 18446744073709551615", "cpus = [4096]", "batch = 2000000000"] {
        let cfg = d.path().join("c.toml");
        fs::write(&cfg, format!("[defaults]\n[[probe]]\nname = \"host.memcpy\"\n{line}\n")).unwrap();
        let out = d.path().join("runs");
        usage_error(&["sweep", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(run_dirs(&out).is_empty(), "{line}: a run directory was made");
    }
}

#[test]
fn sample_buffers_grow_with_what_is_measured() {
    // `--duration` alone asks for up to 10 million samples; 0.2 s of getppid takes about a
    // million. Allocating every sample up front costs 80 MB of resident memory.
    let d = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .args(["run", "host.syscall.getppid", "--duration", "0.3", "--out", d.path().to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The child's own high-water mark (VmHWM), read while it runs: rusage's maxrss would
    // also count this test process's memory from before the exec.
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(s) = fs::read_to_string(&status) {
            if let Some(kb) = s.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()) {
                peak_kb = peak_kb.max(kb);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.wait().unwrap().success());
    assert!(peak_kb > 0, "never saw the child's memory");
    let peak_mb = peak_kb as f64 / 1024.0;
    assert!(peak_mb < 60.0, "peak RSS {peak_mb:.0} MB for a 0.3 s point");
}

// 2. A closed stdout or stderr kills a sweep.

/// A pipe whose read end is already closed: every write to it fails with EPIPE.
fn closed_pipe() -> std::fs::File {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array it is given.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] is the read end this test just created and owns.
    unsafe { libc::close(fds[0]) };
    // SAFETY: fds[1] is an open descriptor nobody else owns.
    unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) }
}

#[test]
fn closed_stdout_or_stderr_never_ends_a_measurement() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("c.toml");
    fs::write(&cfg, "[defaults]\niterations = 300\n[[probe]]\nname = \"host.timer.overhead\"\n[[probe]]\nname = \"host.memcpy\"\nparams = [\"size=64\", \"size=128\"]\n").unwrap();
    for (which, out_closed) in [("stdout", true), ("stderr", false)] {
        let out = d.path().join(which);
        let mut c = Command::new(bin());
        c.args(["sweep", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let o = if out_closed {
            c.stdout(closed_pipe()).stderr(Stdio::piped()).output().unwrap()
        } else {
            c.stdout(Stdio::piped()).stderr(closed_pipe()).output().unwrap()
        };
        assert_eq!(o.status.code(), Some(0), "{which} closed: {:?} {}", o.status, text(&o));
        assert!(!text(&o).contains("panicked"), "{which}: {}", text(&o));
        let run = only_run_dir(&out);
        let m = manifest(&run);
        assert_eq!(m["status"], "complete", "{which}: {m}");
        assert!(m["notes"].to_string().contains(&format!("{which} was closed")), "{which}: {}", m["notes"]);
        assert_eq!(summary(&run).1.len(), 4 + 2, "{which}: every point is stored");
        assert!(run.join("report.html").is_file());
    }
}

// 3. Files created on predictable names, through symlinks.

#[test]
fn links_planted_in_the_results_directory_are_never_written_through() {
    let d = tempfile::tempdir().unwrap();
    let victim = d.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    let out = d.path().join("runs");
    fs::create_dir(&out).unwrap();
    std::os::unix::fs::symlink(&victim, out.join(".ivbench.lock")).unwrap();
    let o = ivbench(&["run", "host.timer.overhead", "--iterations", "10", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("symbolic link"), "{}", text(&o));
    assert_eq!(fs::read(&victim).unwrap(), b"precious");

    // Without the planted link the run works and leaves no temporary file anywhere.
    fs::remove_file(out.join(".ivbench.lock")).unwrap();
    let o = ivbench(&["run", "host.memcpy", "--iterations", "50", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let run = only_run_dir(&out);
    for dir in [out.clone(), run.clone(), run.join("hlog")] {
        for e in fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.contains(".tmp") && !name.starts_with(".ivbench-write-test"), "left behind in {}: {name}", dir.display());
        }
    }
}

// 4. Deadlines and signals inside a point.

#[test]
fn a_huge_batch_stops_at_the_timeout_with_its_samples_kept() {
    // One batch of a million cache-line round trips takes about 0.3-1 s here: the old
    // loop looked at the clock once per 64 batches, tens of seconds past a 1 s timeout.
    let d = tempfile::tempdir().unwrap();
    let child = spawn(&[
        "run", "host.cacheline.roundtrip", "--method", "batched", "--batch", "1000000", "--iterations", "1000", "--timeout", "2", "--out",
        d.path().to_str().unwrap(),
    ]);
    let t0 = Instant::now();
    let o = wait_within(child, Duration::from_secs(30), "a 2 s timeout");
    assert!(t0.elapsed() < Duration::from_secs(15), "took {:?}", t0.elapsed());
    let run = only_run_dir(d.path());
    let (h, rows) = summary(&run);
    assert_eq!(rows.len(), 1, "{}", text(&o));
    let status = col(&h, &rows[0], "status");
    let partial = col(&h, &rows[0], "partial");
    // Either a few batches finished (kept, marked partial) or none did (failed: timeout).
    assert!((status == "ok" && partial.contains("timed out after 2 s")) || status.contains("timed out"), "{status} / {partial}");
}

#[test]
fn each_stop_signal_keeps_the_point_in_flight_as_partial() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // 100 million eventfd round trips would take twenty minutes.
        let d = tempfile::tempdir().unwrap();
        let child = spawn(&["run", "host.eventfd.roundtrip", "--iterations", "100000000", "--timeout", "3600", "--out", d.path().to_str().unwrap()]);
        let run = wait_for_run_dir(d.path());
        // Past the warm-up and into the timed loop.
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, sig) };
        let t0 = Instant::now();
        let o = wait_within(child, Duration::from_secs(20), "after a stop signal");
        assert!(t0.elapsed() < Duration::from_secs(10), "signal {sig}: took {:?} to stop", t0.elapsed());
        assert_eq!(o.status.code(), Some(130), "signal {sig}: {}", text(&o));
        let m = manifest(&run);
        assert_eq!(m["status"], "partial", "signal {sig}: {m}");
        let (h, rows) = summary(&run);
        assert_eq!(rows.len(), 1, "signal {sig}: the point in flight is kept");
        assert_eq!(col(&h, &rows[0], "status"), "ok", "signal {sig}");
        let count: u64 = col(&h, &rows[0], "count").parse().unwrap();
        assert!(count > 0 && count < 100_000_000, "signal {sig}: count {count}");
        assert!(col(&h, &rows[0], "partial").starts_with(&format!("interrupted after {count} of 100000000")), "{:?}", rows[0]);
        assert!(run.join("hlog/host.eventfd.roundtrip.hlog").is_file());
    }
}

// 5. Results that are silently mislabelled.

#[test]
fn a_probe_listed_twice_keeps_two_rows_and_two_histograms() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("c.toml");
    fs::write(&cfg, "[defaults]\niterations = 300\n[[probe]]\nname = \"host.syscall.getppid\"\ncpus = [0]\n[[probe]]\nname = \"host.syscall.getppid\"\ncpus = [1]\n").unwrap();
    let out = d.path().join("runs");
    let o = ivbench(&["sweep", "--no-report", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let run = only_run_dir(&out);
    let (h, rows) = summary(&run);
    assert_eq!(rows.len(), 2);
    let variants: Vec<&str> = rows.iter().map(|r| col(&h, r, "variant")).collect();
    assert_eq!(variants, vec!["cpus=0", "cpus=1"]);
    let tags: Vec<&str> = rows.iter().map(|r| col(&h, r, "hlog_tag")).collect();
    assert_ne!(tags[0], tags[1]);
    let log = fs::read(run.join("hlog/host.syscall.getppid.hlog")).unwrap();
    assert_eq!(ivbench::store::hlog::read_log(&log).unwrap().len(), 2, "both histograms are in the log");
    // compare keeps them apart: two rows, not one merged.
    let o = ivbench(&["compare", run.to_str().unwrap(), run.to_str().unwrap(), "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["rows"].as_array().unwrap().len(), 2, "{doc}");
}

#[test]
fn parameters_a_probe_does_not_read_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("runs");
    let out = out.to_str().unwrap();
    usage_error(&["run", "host.memcpy", "--params", "sise=64", "--out", out]);
    usage_error(&["run", "host.syscall.getppid", "--params", "size=64", "--out", out]);
    usage_error(&["run", "host.memcpy", "--params", "size=64,size=128", "--out", out]);
    let cfg = d.path().join("c.toml");
    fs::write(&cfg, "[defaults]\n[[probe]]\nname = \"host.memcpy\"\nparams = [\"bytes=64\"]\n").unwrap();
    usage_error(&["sweep", "--config", cfg.to_str().unwrap(), "--out", out]);
    assert!(run_dirs(Path::new(out)).is_empty());
}

// 6. Readers that trust their input.

fn small_run(out: &Path) -> PathBuf {
    let o = ivbench(&["run", "host.syscall.getppid", "host.timer.overhead", "--iterations", "200", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    only_run_dir(out)
}

#[test]
fn one_corrupt_histogram_file_does_not_hide_the_run() {
    let d = tempfile::tempdir().unwrap();
    let run = small_run(d.path());
    fs::write(run.join("hlog/host.syscall.getppid.hlog"), b"Tag=x,0.1,0.2,3.0,@@@@not base64\n").unwrap();
    let o = ivbench(&["show", run.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("host.syscall.getppid") && t.contains("host.timer.overhead"), "{t}");
    assert!(t.contains("host.syscall.getppid.hlog") && t.contains("line 1"), "the warning names file and line: {t}");
    assert!(!t.contains("ParseError {") && !t.contains("Parse {"), "a raw parser struct: {t}");
    let o = ivbench(&["report", run.to_str().unwrap(), "--out", d.path().join("r.html").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn implausible_or_foreign_files_are_refused_naming_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let run = small_run(d.path());
    let csv_path = run.join("summary.csv");
    let good = fs::read_to_string(&csv_path).unwrap();
    let (header, rows) = summary(&run);
    let p50 = header.iter().position(|h| h == "p50_ns").unwrap();
    for bad in ["NaN", "inf", "-5"] {
        let mut row = rows[0].clone();
        row[p50] = bad.into();
        let mut w = csv::Writer::from_path(&csv_path).unwrap();
        w.write_record(&header).unwrap();
        w.write_record(&row).unwrap();
        w.flush().unwrap();
        let o = ivbench(&["show", run.to_str().unwrap()]);
        assert_ne!(o.status.code(), Some(0), "{bad}: {}", text(&o));
        assert!(text(&o).contains(&format!("{}:2:", csv_path.display())), "{bad}: {}", text(&o));
    }
    fs::write(&csv_path, good).unwrap();
    let mpath = run.join("manifest.json");
    let mut m = manifest(&run);
    m["schema_version"] = 99.into();
    fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    let o = ivbench(&["show", run.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o).contains("schema version 99"), "{}", text(&o));
}

#[test]
fn an_endless_config_is_refused_at_once() {
    let d = tempfile::tempdir().unwrap();
    let child = spawn(&["sweep", "--config", "/dev/zero", "--out", d.path().to_str().unwrap()]);
    let o = wait_within(child, Duration::from_secs(10), "--config /dev/zero");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("/dev/zero"), "{}", text(&o));
}

// 7. A gate that passes a broken run.

#[test]
fn compare_fails_a_new_run_that_lost_probes_or_measured_nothing() {
    let d = tempfile::tempdir().unwrap();
    let base = small_run(&d.path().join("base"));
    // The new run lacks the base's timer probe.
    let o = ivbench(&["run", "host.syscall.getppid", "--iterations", "200", "--out", d.path().join("fewer").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let fewer = only_run_dir(&d.path().join("fewer"));
    let o = ivbench(&["compare", base.to_str().unwrap(), fewer.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "missing probes must fail the gate: {}", text(&o));
    // The new run has only failed rows: a timeout of 1 s on a probe whose partner cannot start
    // is hard to arrange, so the rows are rewritten as failed.
    let failed = d.path().join("failed");
    copy_dir(&base, &failed);
    let (header, rows) = summary(&failed);
    let status = header.iter().position(|h| h == "status").unwrap();
    let mut w = csv::Writer::from_path(failed.join("summary.csv")).unwrap();
    w.write_record(&header).unwrap();
    for mut r in rows {
        r[status] = "failed: synthetic".into();
        for (i, h) in header.iter().enumerate() {
            if h.ends_with("_ns") || h.ends_with("_cycles") && h != "overhead_cycles" {
                r[i] = String::new();
            }
        }
        w.write_record(&r).unwrap();
    }
    w.flush().unwrap();
    let o = ivbench(&["compare", base.to_str().unwrap(), failed.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "only failed rows must fail the gate: {}", text(&o));
    assert!(text(&o).contains("lost"), "{}", text(&o));
    let o = ivbench(&["compare", base.to_str().unwrap(), base.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to.join("hlog")).unwrap();
    for sub in ["", "hlog"] {
        for e in fs::read_dir(from.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                fs::copy(&p, to.join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
    }
}

#[test]
fn latest_is_the_run_that_started_last_not_the_last_name() {
    let d = tempfile::tempdir().unwrap();
    let first = small_run(&d.path().join("a"));
    let second = small_run(&d.path().join("b"));
    let runs = d.path().join("runs");
    // Names that sort the other way round from the start times.
    copy_dir(&first, &runs.join("20991231T235959Z-ffffff"));
    copy_dir(&second, &runs.join("20000101T000000Z-000000"));
    let o = ivbench(&["show", "latest", "--runs", runs.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let id = manifest(&second)["run_id"].as_str().unwrap().to_string();
    assert!(text(&o).contains(&format!("run {id}")), "expected the later-started run {id}: {}", text(&o));
}

// 8. Contention nobody sees.

#[test]
fn a_second_ivbench_is_warned_about_and_marked_in_the_rows() {
    let d = tempfile::tempdir().unwrap();
    let busy_out = d.path().join("busy");
    let mut busy = spawn(&["run", "host.eventfd.roundtrip", "--iterations", "100000000", "--timeout", "60", "--out", busy_out.to_str().unwrap()]);
    wait_for_run_dir(&busy_out);
    let out = d.path().join("mine");
    let o = ivbench(&["run", "host.timer.overhead", "--iterations", "200", "--out", out.to_str().unwrap()]);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(busy.id() as i32, libc::SIGKILL) };
    let _ = busy.wait();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("another ivbench is running"), "{}", text(&o));
    let run = only_run_dir(&out);
    let (h, rows) = summary(&run);
    for r in &rows {
        assert!(col(&h, r, "contention").contains("another ivbench was running"), "{r:?}");
    }
    let m = manifest(&run);
    assert!(!m["discovered"]["load_at_start"]["other_ivbench"].as_array().unwrap().is_empty(), "{m}");
    assert!(m["discovered"]["load_at_start"]["loadavg"].is_array(), "{m}");
    assert!(m["discovered"]["steal_share"].as_f64().is_some_and(|s| (0.0..=1.0).contains(&s)), "{m}");
}

// 9. An empty pattern runs everything.

#[test]
fn empty_patterns_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().to_str().unwrap();
    for pat in ["", ".", " ", ".*"] {
        usage_error(&["run", pat, "--iterations", "10", "--out", out]);
    }
    assert!(run_dirs(d.path()).is_empty());
}
