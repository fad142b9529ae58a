//! `ivbench show RUN`: a stored run as a terminal table (reads only the store).

use std::path::Path;

use crate::store::run_dir::{load_run, resolve_run};
use crate::table;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShowFormat {
    /// A terminal table for people.
    Table,
    /// Run facts and every row, for scripts.
    Json,
    /// summary.csv's columns, for spreadsheets and scripts.
    Csv,
}

pub fn show(run: &str, runs_root: &Path, format: ShowFormat) -> anyhow::Result<u8> {
    let dir = resolve_run(run, runs_root).map_err(|e| super::UsageError(format!("{e:#}")))?;
    let r = load_run(&dir)?;
    let m = &r.manifest;
    for p in &r.problems {
        errln!("ivbench: warning: {p}");
    }
    match format {
        ShowFormat::Table => {}
        ShowFormat::Json => {
            let doc = serde_json::json!({
                "run_id": m.run_id,
                "path": r.path.display().to_string(),
                "status": m.status,
                "stop_reason": m.stop_reason,
                "started_utc": m.started_utc,
                "finished_utc": m.finished_utc,
                "machine_class": crate::machine::MachineClass::of(m).name(),
                "emulated": crate::machine::emulated(m),
                "notes": m.notes,
                "problems": r.problems,
                "rows": r.rows,
                "seed": crate::report::seed::seed_json(&r.rows),
            });
            outln!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(0);
        }
        ShowFormat::Csv => {
            out!("{}", String::from_utf8_lossy(&crate::store::summary::write_csv(&r.rows)?));
            return Ok(0);
        }
    }
    outln!("run {} ({:?}) {} .. {}", m.run_id, m.status, m.started_utc, m.finished_utc.as_deref().unwrap_or("not finished"));
    if let Some(reason) = &m.stop_reason {
        outln!("stopped: {reason}");
    }
    for n in &m.notes {
        outln!("note: {n}");
    }
    outln!("{}", table::summary_table(&r.rows));
    Ok(0)
}
