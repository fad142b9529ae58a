//! Runs a list of jobs into a new run directory: lock, fingerprint, progress, Ctrl-C.
//! Shared by `ivbench run` and `ivbench sweep`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::UsageError;
use crate::config::Job;
use crate::store::lock::{DirLock, LockError};
use crate::store::run_dir::{ensure_writable, utc_now};
use crate::store::RunDir;
use crate::{fingerprint, runner, table, timing};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SIGINTS: AtomicUsize = AtomicUsize::new(0);

/// First Ctrl-C: finish the point in flight, keep everything, mark the run partial.
/// Second Ctrl-C: leave at once (what finished is already on disk).
fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            INTERRUPTED.store(true, Ordering::SeqCst);
            if SIGINTS.fetch_add(1, Ordering::SeqCst) >= 1 {
                eprintln!("\nivbench: second interrupt, leaving now; finished probes are in the run directory");
                std::process::exit(130);
            }
            eprintln!("\nivbench: interrupted; finishing the current point, then stopping (Ctrl-C again to leave at once)");
        });
    });
}

/// The guest backend report as JSON for the manifest.
pub fn backend_json(r: &guest_probes::BackendReport) -> serde_json::Value {
    serde_json::json!({
        "backend": r.backend,
        "native_verified": r.native_verified,
        "cycles_per_iteration": r.cycles_per_iter,
        "hypercall": r.hypercall,
        "tsc_khz": r.tsc_khz,
        "details": r.details,
    })
}

pub struct Executed {
    pub dir: PathBuf,
    pub interrupted: bool,
    pub failed: usize,
}

pub fn execute(jobs: Vec<Job<'_>>, out: &Path, kind: &str, config_text: &str) -> Result<Executed> {
    // Fail on the directory before measuring anything.
    ensure_writable(out).map_err(|e| UsageError(format!("{e:#}")))?;
    let _lock = DirLock::acquire(out).map_err(|e| match e {
        LockError::Busy(..) => anyhow::Error::new(UsageError(e.to_string())),
        other => anyhow::Error::new(other),
    })?;
    install_ctrlc();
    INTERRUPTED.store(false, Ordering::SeqCst);

    let pinning: Vec<usize> = jobs.first().map(|j| j.budget.cpus.clone()).unwrap_or_default();
    let fp = fingerprint::collect(&pinning);
    let host_khz = timing::detect_tsc().khz;
    let mut run = RunDir::create(out, kind, config_text, serde_json::to_value(&fp)?)?;
    if jobs.iter().any(|j| j.probe.name().starts_with("vm.")) {
        // Which backend served the VM probes and how native execution was verified:
        // without it a VM figure cannot be read.
        run.discovered("guest_backend", backend_json(&guest_probes::backend_report()))?;
    }
    let terminal = std::io::stdout().is_terminal();
    eprintln!("ivbench: {} point(s) -> {}", jobs.len(), run.path.display());

    let mut failed = 0;
    let mut i = 0;
    while i < jobs.len() && !INTERRUPTED.load(Ordering::SeqCst) {
        // One progress bar per probe, over its points and methods.
        let name = jobs[i].probe.name();
        let n = jobs[i..].iter().take_while(|j| j.probe.name() == name).count();
        let bar = if terminal { ProgressBar::new(n as u64) } else { ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::hidden()) };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:<28} [{bar:20}] {pos}/{len} {elapsed_precise} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(name);
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        for job in &jobs[i..i + n] {
            if INTERRUPTED.load(Ordering::SeqCst) {
                break;
            }
            bar.set_message(format!("{} {} x{}", job.point, job.budget.method.label(), job.budget.iterations));
            let started = Instant::now();
            let started_utc = utc_now();
            let outcome = runner::run_point(job.probe, &job.point, &job.budget, host_khz);
            if matches!(outcome.row.status, crate::store::Status::Failed(_)) {
                failed += 1;
            }
            if !terminal {
                let p50 = outcome.row.p50_ns.map(|v| format!(" p50 {v:.1} ns")).unwrap_or_default();
                eprintln!("  {} {} [{}]: {}{}", name, job.point, outcome.row.method, outcome.row.status, p50);
            }
            run.record(outcome.row, outcome.histogram, started, started_utc)
                .with_context(|| format!("writing results of {name} to {}", run.path.display()))?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        if terminal {
            eprintln!("  done {name} ({n} point(s))");
        }
        i += n;
    }
    let interrupted = INTERRUPTED.load(Ordering::SeqCst);
    run.finish(interrupted.then(|| "interrupted by Ctrl-C (SIGINT)".to_string()))?;
    println!("{}", table::summary_table(run.rows()));
    println!("run directory: {}{}", run.path.display(), if interrupted { " (partial: interrupted)" } else { "" });
    Ok(Executed { dir: run.path.clone(), interrupted, failed })
}
