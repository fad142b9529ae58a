//! `ivbench report RUN`: renders a stored run to one self-contained HTML file.

use std::path::Path;

use anyhow::Context;

use crate::report;
use crate::store::run_dir::{load_run, resolve_run};

pub fn report(run: &str, runs_root: &Path, out: Option<&Path>) -> anyhow::Result<u8> {
    let dir = resolve_run(run, runs_root).map_err(|e| super::UsageError(format!("{e:#}")))?;
    let loaded = load_run(&dir).map_err(|e| super::UsageError(format!("{e:#}")))?;
    let path = report::write(&loaded, out).with_context(|| format!("cannot write the report of {}", dir.display()))?;
    outln!("report: {}", path.display());
    Ok(0)
}
