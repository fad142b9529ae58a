//! `ivbench show RUN`: a stored run as a terminal table (reads only the store).

use std::path::Path;

use crate::store::run_dir::{load_run, resolve_run};
use crate::table;

pub fn show(run: &str, runs_root: &Path) -> anyhow::Result<u8> {
    let dir = resolve_run(run, runs_root).map_err(|e| super::UsageError(format!("{e:#}")))?;
    let r = load_run(&dir)?;
    let m = &r.manifest;
    outln!(
        "run {} ({:?}) {} .. {}",
        m.run_id,
        m.status,
        m.started_utc,
        m.finished_utc.as_deref().unwrap_or("not finished")
    );
    if let Some(reason) = &m.stop_reason {
        outln!("stopped: {reason}");
    }
    for n in &m.notes {
        outln!("note: {n}");
    }
    for p in &r.problems {
        errln!("ivbench: warning: {p}");
    }
    outln!("{}", table::summary_table(&r.rows));
    Ok(0)
}
