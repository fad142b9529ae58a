//! `ivbench history PROBE`: a probe's figures across every run the history indexes, oldest
//! first. The history is synced from the run directories first (new and changed runs are
//! read, vanished ones dropped), so it never shows less than the store holds.

use std::path::{Path, PathBuf};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};

use super::UsageError;
use crate::history::History;

pub struct HistoryArgs<'a> {
    pub probe: Option<&'a str>,
    pub params: Option<&'a str>,
    pub method: Option<&'a str>,
    pub since: Option<&'a str>,
    pub db: &'a Path,
    pub runs: &'a Path,
    pub baselines: &'a Path,
    pub rebuild: bool,
    pub json: bool,
}

/// The directories whose direct children are run directories: the runs directory and
/// each machine class's folder of baselines.
pub fn roots(runs: &Path, baselines: &Path) -> Vec<PathBuf> {
    let mut v = vec![runs.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(baselines) {
        let mut classes: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
        classes.sort();
        v.extend(classes);
    }
    v
}

/// `--since`: a UTC date (2026-12-01) or time (2026-12-01T10:00:00Z), as the manifests write it.
pub fn parse_since(text: &str) -> Result<String, String> {
    let t = text.trim();
    if chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok() {
        return Ok(t.to_string());
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .map_err(|_| format!("--since `{text}` is not a date (2026-12-01) or an RFC 3339 time (2026-12-01T10:00:00Z)"))
}

pub fn history(a: HistoryArgs<'_>) -> anyhow::Result<u8> {
    let since = a.since.map(parse_since).transpose().map_err(UsageError)?;
    let roots = roots(a.runs, a.baselines);
    let (h, synced) = if a.rebuild {
        History::rebuild(a.db, &roots)?
    } else {
        let mut h = History::open(a.db)?;
        let s = h.sync(&roots)?;
        (h, s)
    };
    for s in &synced.skipped {
        errln!("ivbench: warning: not in the history: {s}");
    }
    errln!("history {}: {} run(s) added, {} updated, {} removed", h.path.display(), synced.added, synced.updated, synced.removed);
    let Some(probe) = a.probe else {
        let runs = h.runs()?;
        if a.json {
            outln!("{}", serde_json::to_string_pretty(&runs)?);
        } else {
            outln!("{} run(s); probes: {}", runs.len(), h.probes()?.join(", "));
        }
        return Ok(0);
    };
    let points = h.trend(probe, a.params, a.method, since.as_deref())?;
    if points.is_empty() && !h.probes()?.iter().any(|p| p == probe) {
        return Err(UsageError(format!("no run in the history has probe `{probe}`")).into());
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&points)?);
        return Ok(0);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec!["started (UTC)", "run", "machine class", "params", "method", "status", "count", "p50 ns", "p99 ns", "commit"]);
    let num = |v: Option<f64>| v.map(|x| if x >= 100.0 { format!("{x:.0}") } else { format!("{x:.2}") }).unwrap_or_else(|| "-".into());
    for p in &points {
        let params = if p.variant.is_empty() { p.params.clone() } else { format!("{} <{}>", p.params, p.variant) };
        t.add_row(vec![
            Cell::new(&p.started_utc),
            Cell::new(&p.run_id),
            Cell::new(&p.machine_class),
            Cell::new(params),
            Cell::new(&p.method),
            Cell::new(if p.run_status == "complete" { p.status.clone() } else { format!("{} (run {})", p.status, p.run_status) }),
            Cell::new(p.count).set_alignment(CellAlignment::Right),
            Cell::new(num(p.p50_ns)).set_alignment(CellAlignment::Right),
            Cell::new(num(p.p99_ns)).set_alignment(CellAlignment::Right),
            Cell::new(p.git_commit.as_deref().map(|c| c.chars().take(10).collect::<String>()).unwrap_or_default()),
        ]);
    }
    outln!("{t}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_dates_and_times() {
        assert_eq!(parse_since("2026-12-01").unwrap(), "2026-12-01");
        assert_eq!(parse_since("2026-12-01T10:00:00+01:00").unwrap(), "2026-12-01T09:00:00.000Z");
        assert!(parse_since("yesterday").is_err());
    }
}
