//! The command line's error paths and a quick end-to-end run, through the real binary.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ivbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ivbench")).args(args).output().expect("ivbench runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn only_run_dir(out: &Path) -> std::path::PathBuf {
    let dirs: Vec<_> = fs::read_dir(out).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    assert_eq!(dirs.len(), 1, "expected one run directory in {}: {dirs:?}", out.display());
    dirs[0].clone()
}

#[test]
fn unknown_probe_exits_2_and_names_the_closest() {
    let o = ivbench(&["run", "host.syscal.getppid", "--iterations", "10"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("unknown probe `host.syscal.getppid`"), "{t}");
    assert!(t.contains("host.syscall.getppid"), "closest names missing: {t}");
}

#[test]
fn malformed_config_names_file_line_and_column() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("bad.toml");
    fs::write(&cfg, "[defaults]\niterations = 10\n[[probe]]\nname = \"host.memcpy\"\niterations = \"many\"\n").unwrap();
    let out = d.path().join("runs");
    let o = ivbench(&["sweep", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains(&format!("{}:5:", cfg.display())), "no file:line: in {t}");
    assert!(!out.exists() || fs::read_dir(&out).unwrap().next().is_none(), "a run directory was created for a bad config");
}

#[test]
fn config_naming_an_unknown_probe_is_refused_before_measuring() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("c.toml");
    fs::write(&cfg, "[defaults]\n[[probe]]\nname = \"host.memcpyy\"\n").unwrap();
    let o = ivbench(&["sweep", "--config", cfg.to_str().unwrap(), "--out", d.path().join("r").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("host.memcpy"), "{}", text(&o));
}

#[test]
fn unwritable_output_directory_fails_before_any_measurement() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    let out = file.join("runs");
    let started = Instant::now();
    let o = ivbench(&["run", "host.eventfd.roundtrip", "--iterations", "200000", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("cannot create results directory"), "{}", text(&o));
    // 200k blocking round trips would take seconds; refusing first takes milliseconds.
    assert!(started.elapsed() < Duration::from_secs(5), "it measured before failing");
}

#[test]
fn a_results_directory_in_use_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(d.path().join(".ivbench.lock")).unwrap();
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let o = ivbench(&["run", "host.timer.overhead", "--iterations", "10", "--out", d.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("in use by another ivbench run"), "{}", text(&o));
    drop(lock);
    let o = ivbench(&["run", "host.timer.overhead", "--iterations", "10", "--out", d.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "after release: {}", text(&o));
}

#[test]
fn bad_arguments_are_usage_errors_not_panics() {
    for args in [
        vec!["run", "host.memcpy", "--params", "size"],
        vec!["run", "host.memcpy", "--batch", "0", "--method", "batched"],
        vec!["run", "host.memcpy", "--cpus", "x"],
        vec!["show", "/nonexistent/run"],
        vec!["frobnicate"],
    ] {
        let o = ivbench(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(!text(&o).contains("panicked"), "{args:?}: {}", text(&o));
    }
}

#[test]
fn every_subcommand_has_help_with_examples() {
    for sub in ["list", "env", "run", "sweep", "show"] {
        let o = ivbench(&[sub, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{sub}");
        assert!(text(&o).contains("Examples:"), "{sub} --help has no examples");
    }
}

#[test]
fn run_writes_manifest_summary_and_hlog_with_contract_columns() {
    let d = tempfile::tempdir().unwrap();
    let o = ivbench(&["run", "host.syscall.getppid", "host.memcpy", "--iterations", "500", "--out", d.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let run = only_run_dir(d.path());
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["status"], "complete");
    assert!(manifest["fingerprint"].is_object());
    let mut r = csv::Reader::from_path(run.join("summary.csv")).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    for col in ["probe", "params", "status", "count", "min_ns", "p50_ns", "p99_ns", "p999_ns", "p50_cycles", "overhead_cycles", "tsc_khz", "method"] {
        assert!(header.iter().any(|h| h == col), "missing {col}");
    }
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(rows.len(), 1 + 6, "getppid + six memcpy sizes");
    let idx = |c: &str| header.iter().position(|h| h == c).unwrap();
    for row in &rows {
        assert_eq!(&row[idx("status")], "ok", "{row:?}");
        assert_eq!(&row[idx("count")], "500");
        let p50: f64 = row[idx("p50_ns")].parse().unwrap();
        let p99: f64 = row[idx("p99_ns")].parse().unwrap();
        // A per-op 64-byte copy costs about as much as the timer pair around it, so after
        // the subtraction its p50 may honestly be 0; a syscall cannot be.
        assert!(p50 >= 0.0 && p99 >= p50, "{row:?}");
        if &row[idx("probe")] == "host.syscall.getppid" {
            assert!(p50 > 0.0, "{row:?}");
        }
    }
    assert!(run.join("hlog/host.memcpy.hlog").is_file());
    assert!(run.join("hlog/host.syscall.getppid.hlog").is_file());
    // show reads it back from the store alone.
    let o = ivbench(&["show", run.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).contains("host.memcpy") && text(&o).contains("size=1518"), "{}", text(&o));
}

#[test]
fn ctrl_c_keeps_finished_probes_and_marks_the_run_partial() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("slow.toml");
    // Many slow points, so that the interrupt lands mid-sweep.
    let slow = "[[probe]]\nname = \"host.eventfd.roundtrip\"\n".repeat(8);
    fs::write(&cfg, format!("[defaults]\niterations = 20000\n[[probe]]\nname = \"host.timer.overhead\"\niterations = 100\n{slow}")).unwrap();
    let out = d.path().join("runs");
    let child = Command::new(env!("CARGO_BIN_EXE_ivbench"))
        .args(["sweep", "--no-report", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first probe is on disk.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no row appeared");
        if let Ok(mut entries) = fs::read_dir(&out) {
            if let Some(Ok(e)) = entries.find(|e| e.as_ref().map(|e| e.path().is_dir()).unwrap_or(false)) {
                if fs::read_to_string(e.path().join("summary.csv")).map(|s| s.lines().count() >= 2).unwrap_or(false) {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    let run = only_run_dir(&out);
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["status"], "partial", "{manifest}");
    assert!(manifest["stop_reason"].as_str().unwrap().contains("interrupted"));
    let rows = csv::Reader::from_path(run.join("summary.csv")).unwrap().records().count();
    assert!((1..9).contains(&rows), "{rows} rows: expected the finished ones only");
}

#[test]
fn show_reads_out_as_json_and_csv_for_scripts() {
    let d = tempfile::tempdir().unwrap();
    let o = ivbench(&["run", "host.syscall.getppid", "--iterations", "200", "--out", d.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let run = only_run_dir(d.path());
    let o = ivbench(&["show", run.to_str().unwrap(), "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("show --format json prints JSON alone");
    assert_eq!(v["status"], "complete");
    assert_eq!(v["rows"][0]["probe"], "host.syscall.getppid");
    assert!(v["rows"][0]["p50_ns"].as_f64().unwrap() > 0.0);
    assert!(v["machine_class"].as_str().unwrap().contains("cpu"));
    let o = ivbench(&["show", run.to_str().unwrap(), "--format", "csv"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(o.stdout, fs::read(run.join("summary.csv")).unwrap(), "the csv is summary.csv's");
}
