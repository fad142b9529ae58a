//! Runs a list of jobs into a new run directory: lock, fingerprint, progress, Ctrl-C.
//! Shared by `ivbench run` and `ivbench sweep`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;
use std::time::Instant;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use probe_api::StopFlag;

use super::UsageError;
use crate::config::Job;
use crate::contention::{self, LoadSample};
use crate::store::lock::{DirLock, LockError};
use crate::store::run_dir::{ensure_writable, utc_now};
use crate::store::RunDir;
use crate::{fingerprint, runner, table, timing};

static SIGNALS: AtomicUsize = AtomicUsize::new(0);
/// Raised by the signal handler; every job's budget carries it, so a point in flight
/// stops at its next check and keeps what it measured.
static STOP: LazyLock<StopFlag> = LazyLock::new(StopFlag::new);

/// First SIGINT, SIGTERM or SIGHUP: the point in flight stops at its next check and keeps
/// its samples (marked partial), the run ends partial. A second one: leave at once (what
/// finished is already on disk).
fn install_signal_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let handler = ctrlc::set_handler(|| {
            STOP.request();
            if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
                errln!("\nivbench: second interrupt, leaving now; finished probes are in the run directory");
                std::process::exit(130);
            }
            errln!("\nivbench: interrupted; stopping the current point (its samples so far are kept, marked partial); interrupt again to leave at once");
        });
        if let Err(e) = handler {
            errln!("ivbench: warning: no signal handler ({e}); Ctrl-C will end the run without marking it");
        }
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

pub fn execute(mut jobs: Vec<Job<'_>>, out: &Path, kind: &str, config_text: &str) -> Result<Executed> {
    // Fail on the directory before measuring anything.
    ensure_writable(out).map_err(|e| UsageError(format!("{e:#}")))?;
    let _lock = DirLock::acquire(out).map_err(|e| match e {
        LockError::Busy(..) | LockError::NotAFile(..) => anyhow::Error::new(UsageError(e.to_string())),
        other => anyhow::Error::new(other),
    })?;
    install_signal_handler();
    STOP.clear();
    SIGNALS.store(0, Ordering::SeqCst);
    for j in &mut jobs {
        j.budget.stop = STOP.clone();
    }

    let pinning: Vec<usize> = jobs.first().map(|j| j.budget.cpus.clone()).unwrap_or_default();
    let fp = fingerprint::collect(&pinning);
    let host_khz = timing::detect_tsc().khz;
    let mut run = RunDir::create(out, kind, config_text, serde_json::to_value(&fp)?)?;
    let load_at_start = LoadSample::now();
    if !load_at_start.other_ivbench.is_empty() {
        let list: Vec<String> = load_at_start.other_ivbench.iter().map(|(p, c)| format!("pid {p} `{c}`")).collect();
        errln!("ivbench: warning: another ivbench is running ({}): figures taken beside it are marked in the `contention` column", list.join(", "));
    }
    run.discovered("load_at_start", serde_json::to_value(&load_at_start)?)?;
    if let Some(e) = std::env::var_os("IVBENCH_EMULATED") {
        // Set by the emulated test rig: these figures come from an emulated CPU.
        run.discovered("emulated", serde_json::json!(e.to_string_lossy()))?;
    }
    if jobs.iter().any(|j| j.probe.name().starts_with("vm.")) {
        // Which backend served the VM probes and how native execution was verified:
        // without it a VM figure cannot be read.
        run.discovered("guest_backend", backend_json(&guest_probes::backend_report()))?;
    }
    let terminal = std::io::stdout().is_terminal();
    errln!("ivbench: {} point(s) -> {}", jobs.len(), run.path.display());

    let mut failed = 0;
    let mut contended = 0;
    let mut i = 0;
    while i < jobs.len() && !STOP.is_requested() {
        // One progress bar per probe, over its points and methods.
        let name = jobs[i].probe.name();
        let n = jobs[i..].iter().take_while(|j| j.probe.name() == name).count();
        let bar = if terminal {
            ProgressBar::new(n as u64)
        } else {
            ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::hidden())
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:<28} [{bar:20}] {pos}/{len} {elapsed_precise} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(name);
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        for job in &jobs[i..i + n] {
            if STOP.is_requested() {
                break;
            }
            bar.set_message(format!("{} {} x{}", job.point, job.budget.method.label(), job.budget.iterations));
            let started = Instant::now();
            let started_utc = utc_now();
            let before = LoadSample::now();
            let outcomes = match job.ndr {
                Some(d) => crate::ndr::run(job, host_khz, d, |o| {
                    bar.set_message(format!("{} {}: {}", o.row.variant, o.row.params, o.row.status))
                }),
                None => vec![runner::run_point(job.probe, &job.point, &job.budget, host_khz)],
            };
            let contention = contention::judge(&before, &LoadSample::now());
            for mut outcome in outcomes {
                if outcome.row.variant.is_empty() {
                    outcome.row.variant = job.variant.clone();
                } else if !job.variant.is_empty() {
                    outcome.row.variant = format!("{}+{}", job.variant, outcome.row.variant);
                }
                if let Some(why) = &contention {
                    outcome.row.contention = why.clone();
                    contended += 1;
                }
                if matches!(outcome.row.status, crate::store::Status::Failed(_)) {
                    failed += 1;
                }
                if !terminal {
                    let p50 = outcome.row.p50_ns.map(|v| format!(" p50 {v:.1} ns")).unwrap_or_default();
                    let mpps = outcome.row.mpps.map(|v| format!(" {v:.3} Mpps")).unwrap_or_default();
                    let partial = if outcome.row.partial.is_empty() {
                        String::new()
                    } else {
                        format!(" (partial: {})", outcome.row.partial)
                    };
                    let variant = if outcome.row.variant.is_empty() {
                        String::new()
                    } else {
                        format!(" <{}>", outcome.row.variant)
                    };
                    errln!(
                        "  {} {}{} [{}]: {}{}{}{}",
                        name,
                        outcome.row.params,
                        variant,
                        outcome.row.method,
                        outcome.row.status,
                        p50,
                        mpps,
                        partial
                    );
                }
                if let Err(e) = run.record(outcome.row, outcome.histogram, started, started_utc.clone()) {
                    // The store says why it ends here, rather than "running" forever.
                    let _ = run.finish(Some(format!("stopped: results of {name} could not be written: {e:#}")));
                    return Err(e.context(format!("writing results of {name} to {}", run.path.display())));
                }
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        if terminal {
            errln!("  done {name} ({n} point(s))");
        }
        i += n;
    }
    let interrupted = STOP.is_requested();
    let load_at_end = LoadSample::now();
    let ticks = load_at_end.total_ticks.saturating_sub(load_at_start.total_ticks);
    if ticks > 0 {
        let steal = load_at_end.steal_ticks.saturating_sub(load_at_start.steal_ticks) as f64 / ticks as f64;
        run.discovered("steal_share", serde_json::json!(steal))?;
    }
    run.discovered("load_at_end", serde_json::to_value(&load_at_end)?)?;
    if contended > 0 {
        run.note(format!("{contended} point(s) ran beside other load (see the contention column)"))?;
    }
    outln!("{}", table::summary_table(run.rows()));
    outln!("run directory: {}{}", run.path.display(), if interrupted { " (partial: interrupted)" } else { "" });
    if let Some(lost) = crate::out::lost() {
        run.note(lost)?;
    }
    run.finish(interrupted.then(|| "interrupted by a signal (SIGINT, SIGTERM or SIGHUP)".to_string()))?;
    Ok(Executed { dir: run.path.clone(), interrupted, failed })
}
