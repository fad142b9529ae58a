//! `ivbench sweep`: the embedded default sweep, or a user's config that replaces it.

use std::path::Path;

use super::execute::execute;
use super::{UsageError, EXIT_INTERRUPTED};
use crate::config::{SweepConfig, DEFAULT_SWEEP};
use crate::registry;

pub fn sweep(config: Option<&Path>, quick: bool, out: &Path, report: bool) -> anyhow::Result<u8> {
    let (cfg, text, file) = match config {
        Some(p) => {
            let (cfg, text) = SweepConfig::load(p).map_err(|e| UsageError(e.to_string()))?;
            (cfg, text, p.display().to_string())
        }
        None => (SweepConfig::default_sweep(), DEFAULT_SWEEP.to_string(), "<default sweep>".to_string()),
    };
    let probes = registry::all();
    let jobs = cfg.jobs(&probes, quick, &file).map_err(|e| UsageError(e.to_string()))?;
    let label = if quick { format!("# --quick\n{text}") } else { text };
    let done = execute(jobs, out, "sweep", &label)?;
    if report {
        // The measurements are already stored; a report that cannot be drawn must not
        // turn a finished sweep into a failed one.
        match crate::store::load_run(&done.dir).and_then(|r| crate::report::write(&r, None)) {
            Ok(path) => outln!("report: {}", path.display()),
            Err(e) => errln!("ivbench: warning: report not written: {e:#}"),
        }
    }
    Ok(if done.interrupted { EXIT_INTERRUPTED } else { 0 })
}
