//! Baselines: reference runs kept per machine class under `results/baselines/<class>/<name>/`
//! (a run directory: manifest.json, summary.csv, hlog/), with the run-to-run spread that
//! repeated runs on that class showed in `spread.json` beside it. Compare and the gate
//! find the baseline of a run's own class here; nothing else decides which base applies.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::atomic::write_atomic;
use super::read::{read_bounded, MAX_MANIFEST_BYTES};
use super::{LoadedRun, RunStatus};
use crate::machine::{self, MachineClass};

pub const SPREAD_FILE: &str = "spread.json";

/// Where baselines live when no `--baselines` is given: the checkout's committed ones.
pub fn default_root() -> PathBuf {
    PathBuf::from("results").join("baselines")
}

/// The directory of the baseline `name` for `class`.
pub fn dir_for(root: &Path, class: &MachineClass, name: &str) -> PathBuf {
    root.join(class.name()).join(name)
}

/// Names a baseline may have: a folder name, nothing that walks elsewhere.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        bail!("baseline name `{name}` must be 1-64 letters, digits, '-' or '_'");
    }
    Ok(())
}

/// Why a run cannot become a baseline, if it cannot.
pub fn refusal(run: &LoadedRun) -> Option<String> {
    if run.manifest.status != RunStatus::Complete {
        return Some(format!("run {} is partial ({})", run.manifest.run_id, run.manifest.stop_reason.as_deref().unwrap_or("no reason recorded")));
    }
    if let Some(why) = machine::emulated(&run.manifest) {
        return Some(format!("run {} was measured on an emulated CPU: {why}", run.manifest.run_id));
    }
    if let Some(r) = run.rows.iter().find(|r| matches!(r.status, super::Status::Failed(_))) {
        return Some(format!("run {} has a failed row: {} {}", run.manifest.run_id, r.key(), r.status));
    }
    if let Some(r) = run.rows.iter().find(|r| !r.partial.is_empty()) {
        return Some(format!("run {} has a partial row: {} ({})", run.manifest.run_id, r.key(), r.partial));
    }
    if !run.problems.is_empty() {
        return Some(format!("run {} has unreadable files: {}", run.manifest.run_id, run.problems.join("; ")));
    }
    None
}

/// Copies a run into `dest` (replacing what was there) with only the store's files.
pub fn promote(run: &LoadedRun, dest: &Path) -> Result<()> {
    if let Some(why) = refusal(run) {
        bail!("not promoted: {why}");
    }
    let parent = dest.parent().context("baseline directory has no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    // Built beside the destination, then swapped in: a reader sees the old or the new.
    let staging = tempfile::Builder::new().prefix(".ivbench-baseline-").tempdir_in(parent)?;
    fs::create_dir(staging.path().join("hlog"))?;
    for rel in ["manifest.json", "summary.csv"] {
        fs::copy(run.path.join(rel), staging.path().join(rel)).with_context(|| format!("copying {rel}"))?;
    }
    let hdir = run.path.join("hlog");
    if hdir.is_dir() {
        for e in fs::read_dir(&hdir)? {
            let p = e?.path();
            if p.extension().and_then(|x| x.to_str()) == Some("hlog") && p.is_file() {
                fs::copy(&p, staging.path().join("hlog").join(p.file_name().unwrap()))?;
            }
        }
    }
    let old = parent.join(format!(".ivbench-old-{}", std::process::id()));
    if dest.exists() {
        fs::rename(dest, &old).with_context(|| format!("moving the old baseline {} aside", dest.display()))?;
    }
    let staged = staging.keep();
    if let Err(e) = fs::rename(&staged, dest) {
        if old.exists() {
            let _ = fs::rename(&old, dest);
        }
        return Err(e).with_context(|| format!("installing the baseline at {}", dest.display()));
    }
    if old.exists() {
        let _ = fs::remove_dir_all(&old);
    }
    Ok(())
}

/// Run-to-run spread of each row over repeated runs on one machine class: the factor
/// max/min of its p50 and of its p99 across the runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub class: String,
    pub runs: Vec<String>,
    pub rows: BTreeMap<String, RowSpread>,
    /// The factor used for rows without a measured spread (a probe newer than the
    /// measurement, or a baseline whose spread was never measured).
    #[serde(default)]
    pub default: Option<RowSpread>,
}

/// What these shared machines are documented to do between unchanged runs (10-30%, at
/// times 2x in the tail): the gate's noise floor where no spread was measured.
pub const UNMEASURED: RowSpread = RowSpread { p50: 1.5, p99: 3.0, n: 0 };

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowSpread {
    pub p50: f64,
    pub p99: f64,
    /// Runs in which the row was ok.
    pub n: usize,
}

impl Spread {
    /// Measures the spread over `runs`, which must all be of one class.
    pub fn measure(runs: &[LoadedRun]) -> Result<Spread> {
        if runs.len() < 2 {
            bail!("the run-to-run spread needs at least two runs, got {}", runs.len());
        }
        let class = MachineClass::of(&runs[0].manifest);
        for r in runs {
            let c = MachineClass::of(&r.manifest);
            if c != class {
                bail!("run {} is of machine class {c}, run {} of {class}: the spread is measured on one class", r.manifest.run_id, runs[0].manifest.run_id);
            }
        }
        let mut by_key: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for run in runs {
            for row in run.rows.iter().filter(|r| r.status.is_ok()) {
                if let (Some(a), Some(b)) = (row.p50_ns, row.p99_ns) {
                    by_key.entry(row.key()).or_default().push((a, b));
                }
            }
        }
        let factor = |v: &[f64]| {
            let (lo, hi) = v.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            if lo > 0.0 {
                hi / lo
            } else if hi > 0.0 {
                f64::INFINITY
            } else {
                1.0
            }
        };
        let rows = by_key
            .into_iter()
            .filter(|(_, v)| v.len() >= 2)
            .map(|(k, v)| {
                let p50: Vec<f64> = v.iter().map(|x| x.0).collect();
                let p99: Vec<f64> = v.iter().map(|x| x.1).collect();
                (k, RowSpread { p50: factor(&p50), p99: factor(&p99), n: v.len() })
            })
            .collect();
        Ok(Spread { class: class.name(), runs: runs.iter().map(|r| r.manifest.run_id.clone()).collect(), rows, default: Some(UNMEASURED) })
    }

    /// The spread assumed for a baseline nobody measured: [`UNMEASURED`] for every row.
    pub fn unmeasured(class: &MachineClass) -> Spread {
        Spread { class: class.name(), runs: Vec::new(), rows: BTreeMap::new(), default: Some(UNMEASURED) }
    }

    /// The factors for one row key.
    pub fn for_key(&self, key: &str) -> Option<RowSpread> {
        self.rows.get(key).copied().or(self.default)
    }

    pub fn write(&self, baseline_dir: &Path) -> Result<()> {
        // JSON has no infinity: an unbounded factor is stored as a very large one.
        let mut s = self.clone();
        for r in s.rows.values_mut() {
            r.p50 = r.p50.min(1e12);
            r.p99 = r.p99.min(1e12);
        }
        write_atomic(&baseline_dir.join(SPREAD_FILE), &serde_json::to_vec_pretty(&s)?)?;
        Ok(())
    }

    /// The spread stored beside a baseline, when one was measured.
    pub fn read(baseline_dir: &Path) -> Result<Option<Spread>> {
        let p = baseline_dir.join(SPREAD_FILE);
        if !p.is_file() {
            return Ok(None);
        }
        let bytes = read_bounded(&p, MAX_MANIFEST_BYTES)?;
        let s: Spread = serde_json::from_slice(&bytes).with_context(|| format!("{} is not a spread file", p.display()))?;
        if s.rows.values().any(|r| !(r.p50.is_finite() && r.p99.is_finite() && r.p50 >= 1.0 && r.p99 >= 1.0)) {
            bail!("{}: spread factors must be finite and at least 1", p.display());
        }
        Ok(Some(s))
    }
}
