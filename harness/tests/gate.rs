//! The regression gate, proven in both directions on this machine: a deliberately slowed
//! probe (`host.spin` under `IVBENCH_SPIN_SCALE`) is flagged and confirmed by its
//! re-measurements; unchanged runs repeated many times never are; a slow-down that does
//! not persist is cleared by re-measuring. Plus baselines per machine class.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ivbench(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ivbench"));
    c.args(args).env_remove("IVBENCH_SPIN_SCALE").env_remove("IVBENCH_EMULATED");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("ivbench runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The gate's subjects: the known-cost probe, per-op and batched, beside two real ones.
const CONFIG: &str = "[defaults]\niterations = 3000\n\
[[probe]]\nname = \"host.spin\"\nmethods = [\"per-op\", \"batched\"]\nbatch = 20\n\
[[probe]]\nname = \"host.syscall.getppid\"\n\
[[probe]]\nname = \"host.timer.overhead\"\nparams = [\"clock=lfence-rdtsc\"]\n";

struct Bench {
    dir: tempfile::TempDir,
}

impl Bench {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("gate.toml"), CONFIG).unwrap();
        Bench { dir }
    }
    fn runs(&self) -> PathBuf {
        self.dir.path().join("runs")
    }
    fn baselines(&self) -> PathBuf {
        self.dir.path().join("baselines")
    }
    /// One sweep of the gate's config; returns its run directory.
    fn sweep(&self, env: &[(&str, &str)]) -> PathBuf {
        let before: Vec<PathBuf> = list(&self.runs());
        let cfg = self.dir.path().join("gate.toml");
        let o = ivbench(&["sweep", "--no-report", "--config", cfg.to_str().unwrap(), "--out", self.runs().to_str().unwrap()], env);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let after = list(&self.runs());
        let new: Vec<_> = after.into_iter().filter(|p| !before.contains(p)).collect();
        assert_eq!(new.len(), 1, "{new:?}");
        new[0].clone()
    }
    fn gate(&self, run: &Path, env: &[(&str, &str)]) -> Output {
        ivbench(
            &["gate", run.to_str().unwrap(), "--runs", self.runs().to_str().unwrap(), "--baselines", self.baselines().to_str().unwrap()],
            env,
        )
    }
}

fn list(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(d).map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect()).unwrap_or_default();
    v.sort();
    v
}

#[test]
fn the_gate_flags_a_slowed_probe_and_never_an_unchanged_run() {
    let b = Bench::new();
    // The baseline, and the run-to-run spread over five unchanged runs of this machine.
    let base = b.sweep(&[]);
    let o = ivbench(&["baseline", "update", base.to_str().unwrap(), "--baselines", b.baselines().to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut spread_runs = vec![base.to_str().unwrap().to_string()];
    for _ in 0..4 {
        spread_runs.push(b.sweep(&[]).to_str().unwrap().to_string());
    }
    let mut args = vec!["baseline", "spread"];
    args.extend(spread_runs.iter().map(String::as_str));
    let bl = b.baselines();
    args.extend(["--baselines", bl.to_str().unwrap()]);
    let o = ivbench(&args, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Unchanged runs, repeated: never a confirmed regression.
    for i in 0..8 {
        let run = b.sweep(&[]);
        let o = b.gate(&run, &[]);
        assert_eq!(o.status.code(), Some(0), "unchanged run {i} failed the gate: {}", text(&o));
        assert!(text(&o).contains("gate: PASS"), "{}", text(&o));
    }

    // A deliberately slowed probe, slow in its re-measurements too: flagged and confirmed.
    let slow = [("IVBENCH_SPIN_SCALE", "2")];
    let run = b.sweep(&slow);
    let o = b.gate(&run, &slow);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("REGRESSION (confirmed) host.spin {cycles=2000} [per-op]"), "{t}");
    assert!(t.contains("REGRESSION (confirmed) host.spin {cycles=2000} [batched/20]"), "{t}");
    assert!(t.contains("gate: FAIL"), "{t}");

    // Slow once, normal when measured again: cleared, the gate passes.
    let run = b.sweep(&slow);
    let o = b.gate(&run, &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("cleared (noise) host.spin {cycles=2000} [per-op]"), "{t}");
}

#[test]
fn a_machine_class_without_a_baseline_passes_loudly() {
    let b = Bench::new();
    let run = b.sweep(&[]);
    let o = b.gate(&run, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("NOTE: no `quick` baseline for machine class"), "{}", text(&o));
    let o = ivbench(
        &["compare", "--baseline", "quick", run.to_str().unwrap(), "--baselines", b.baselines().to_str().unwrap(), "--runs", b.runs().to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("nothing was compared"), "{}", text(&o));
}

#[test]
fn runs_of_different_machine_classes_are_not_compared_unless_forced() {
    let b = Bench::new();
    let base = b.sweep(&[]);
    let other = b.dir.path().join("other");
    fs::create_dir_all(other.join("hlog")).unwrap();
    fs::copy(base.join("summary.csv"), other.join("summary.csv")).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(base.join("manifest.json")).unwrap()).unwrap();
    let vendor = m["fingerprint"]["cpu"]["vendor"].as_str().unwrap().to_string();
    m["fingerprint"]["cpu"]["vendor"] = if vendor == "GenuineIntel" { "AuthenticAMD" } else { "GenuineIntel" }.into();
    fs::write(other.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    let o = ivbench(&["compare", base.to_str().unwrap(), other.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("not comparable: machine class differs"), "{}", text(&o));
    let o = ivbench(&["compare", base.to_str().unwrap(), other.to_str().unwrap(), "--force"], &[]);
    assert!(text(&o).contains("compared because --force"), "{}", text(&o));
}

#[test]
fn baseline_update_refuses_partial_failed_and_emulated_runs() {
    let b = Bench::new();
    let bl = b.baselines();
    let emulated = b.sweep(&[("IVBENCH_EMULATED", "kvm_intel on an emulated GenuineIntel CPU")]);
    let o = ivbench(&["baseline", "update", emulated.to_str().unwrap(), "--baselines", bl.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("emulated CPU"), "{}", text(&o));

    let run = b.sweep(&[]);
    let mpath = run.join("manifest.json");
    let good = fs::read(&mpath).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&good).unwrap();
    m["status"] = "partial".into();
    fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    let o = ivbench(&["baseline", "update", run.to_str().unwrap(), "--baselines", bl.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is partial"), "{}", text(&o));
    fs::write(&mpath, &good).unwrap();

    let csv = fs::read_to_string(run.join("summary.csv")).unwrap();
    let failed = csv.replacen(",ok,", ",failed: synthetic,", 1);
    // A failed row carries no figures.
    let mut r = csv::Reader::from_reader(failed.as_bytes());
    let header = r.headers().unwrap().clone();
    let mut w = csv::Writer::from_path(run.join("summary.csv")).unwrap();
    w.write_record(&header).unwrap();
    for rec in r.records() {
        let rec = rec.unwrap();
        let failed = rec.get(2).unwrap().starts_with("failed");
        let row: Vec<&str> = rec.iter().enumerate().map(|(i, v)| if failed && (header[i].ends_with("_ns") || (header[i].ends_with("_cycles") && &header[i] != "overhead_cycles")) { "" } else { v }).collect();
        w.write_record(&row).unwrap();
    }
    w.flush().unwrap();
    let o = ivbench(&["baseline", "update", run.to_str().unwrap(), "--baselines", bl.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("failed row"), "{}", text(&o));
    assert!(list(&bl).is_empty(), "nothing was promoted");
}
