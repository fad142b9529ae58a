//! `ivbench publish [RUN...] --out DIR`: a static site of the runs (every run in the
//! results directory when none is named), with trends from the history.

use std::path::{Path, PathBuf};

use super::UsageError;
use crate::history::History;
use crate::store::run_dir::{load_run, resolve_run};

pub fn publish(runs: &[String], out: &Path, runs_root: &Path, baselines: &Path, db: &Path) -> anyhow::Result<u8> {
    let mut roots = super::history::roots(runs_root, baselines);
    let dirs: Vec<PathBuf> = if runs.is_empty() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(runs_root)
            .map_err(|e| UsageError(format!("no runs under {}: {e}", runs_root.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("manifest.json").is_file())
            .collect();
        v.sort();
        v
    } else {
        runs.iter().map(|r| resolve_run(r, runs_root).map_err(|e| UsageError(format!("{e:#}")))).collect::<Result<_, _>>()?
    };
    if dirs.is_empty() {
        return Err(UsageError(format!("nothing to publish: no run under {}", runs_root.display())).into());
    }
    for d in &dirs {
        if let Some(p) = d.parent() {
            if !roots.iter().any(|r| r == p) {
                roots.push(p.to_path_buf());
            }
        }
    }
    let mut history = History::open(db)?;
    let synced = history.sync(&roots)?;
    for s in &synced.skipped {
        errln!("ivbench: warning: not in the history: {s}");
    }
    let mut loaded = Vec::new();
    for d in &dirs {
        match load_run(d) {
            Ok(r) => {
                for p in &r.problems {
                    errln!("ivbench: warning: {}: {p}", d.display());
                }
                loaded.push(r);
            }
            Err(e) => errln!("ivbench: warning: {} not published: {e:#}", d.display()),
        }
    }
    let site = crate::publish::publish(&loaded, &history, out)?;
    outln!("published {} run(s), {} page(s): {}", loaded.len(), site.pages, site.index.display());
    Ok(0)
}
