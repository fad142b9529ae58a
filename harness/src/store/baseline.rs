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
        return Some(format!(
            "run {} is partial ({})",
            run.manifest.run_id,
            run.manifest.stop_reason.as_deref().unwrap_or("no reason recorded")
        ));
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

/// The pool-wide run-to-run floor: no row is judged tighter than this, measured or not.
/// Five unchanged quick sweeps on a kvm_pvm AMD EPYC machine gave a median per-row max/min
/// of x1.40 for p50 and x1.90 for p99 (40 rows; up to x8.6 and x66 on the noisiest), and
/// the pool is documented to move 10-30% between runs, at times 2x: a handful of runs
/// cannot see a row's worst day, so the floor sits above the median.
/// Throughput gets the p50 floor: the quick sweep's `path.host-ring` moved x1.7 in Mpps
/// over five unchanged runs on a kvm_pvm Intel machine.
pub const UNMEASURED: RowSpread = RowSpread { p50: 1.5, p99: 3.0, mpps: Some(1.5), n: 0 };

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowSpread {
    pub p50: f64,
    pub p99: f64,
    /// max/min of the row's Mpps (throughput rows; absent in spreads measured before).
    #[serde(default)]
    pub mpps: Option<f64>,
    /// Runs in which the row was ok.
    pub n: usize,
}

/// One row's figures over the runs: (p50, p99) where it had latency, Mpps where it had
/// throughput.
type Observed = (Vec<(f64, f64)>, Vec<f64>);

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
                bail!(
                    "run {} is of machine class {c}, run {} of {class}: the spread is measured on one class",
                    r.manifest.run_id,
                    runs[0].manifest.run_id
                );
            }
        }
        // per row key: (p50, p99) of the runs with latency, Mpps of the runs with throughput
        let mut by_key: BTreeMap<String, Observed> = BTreeMap::new();
        for run in runs {
            for row in run.rows.iter().filter(|r| r.status.is_ok()) {
                if let (Some(a), Some(b)) = (row.p50_ns, row.p99_ns) {
                    by_key.entry(row.key()).or_default().0.push((a, b));
                }
                if let Some(m) = row.mpps {
                    by_key.entry(row.key()).or_default().1.push(m);
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
            .filter(|(_, (lat, mpps))| lat.len() >= 2 || mpps.len() >= 2)
            .map(|(k, (lat, mpps))| {
                let p50: Vec<f64> = lat.iter().map(|x| x.0).collect();
                let p99: Vec<f64> = lat.iter().map(|x| x.1).collect();
                let spread = RowSpread {
                    // a throughput-only row has no latency spread: the floor decides
                    p50: if lat.len() >= 2 { factor(&p50) } else { 1.0 },
                    p99: if lat.len() >= 2 { factor(&p99) } else { 1.0 },
                    mpps: (mpps.len() >= 2).then(|| factor(&mpps)),
                    n: lat.len().max(mpps.len()),
                };
                (k, spread)
            })
            .collect();
        Ok(Spread {
            class: class.name(),
            runs: runs.iter().map(|r| r.manifest.run_id.clone()).collect(),
            rows,
            default: Some(UNMEASURED),
        })
    }

    /// The spread assumed for a baseline nobody measured: [`UNMEASURED`] for every row.
    pub fn unmeasured(class: &MachineClass) -> Spread {
        Spread { class: class.name(), runs: Vec::new(), rows: BTreeMap::new(), default: Some(UNMEASURED) }
    }

    /// The factors for one row key: its measured spread, never below the default floor.
    pub fn for_key(&self, key: &str) -> Option<RowSpread> {
        match (self.rows.get(key).copied(), self.default) {
            (Some(r), Some(d)) => Some(RowSpread {
                p50: r.p50.max(d.p50),
                p99: r.p99.max(d.p99),
                mpps: match (r.mpps, d.mpps) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                },
                n: r.n,
            }),
            (r, d) => r.or(d),
        }
    }

    pub fn write(&self, baseline_dir: &Path) -> Result<()> {
        // JSON has no infinity: an unbounded factor is stored as a very large one.
        let mut s = self.clone();
        for r in s.rows.values_mut() {
            r.p50 = r.p50.min(1e12);
            r.p99 = r.p99.min(1e12);
            r.mpps = r.mpps.map(|m| m.min(1e12));
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
        let s: Spread =
            serde_json::from_slice(&bytes).with_context(|| format!("{} is not a spread file", p.display()))?;
        if s.rows.values().any(|r| !(r.p50.is_finite() && r.p99.is_finite() && r.p50 >= 1.0 && r.p99 >= 1.0)) {
            bail!("{}: spread factors must be finite and at least 1", p.display());
        }
        Ok(Some(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::run_dir::{load_run, utc_now};
    use crate::store::{RunDir, Status, SummaryRow};

    /// A run with one throughput-only row at `mpps`.
    fn run_at(dir: &Path, mpps: f64) -> LoadedRun {
        let mut run = RunDir::create(dir, "run", "", serde_json::json!({})).unwrap();
        let mut row = SummaryRow::without_samples("path.dpdk-memif", "size=64", Status::Ok, "per-op");
        row.mpps = Some(mpps);
        run.record(row, None, std::time::Instant::now(), utc_now()).unwrap();
        run.finish(None).unwrap();
        load_run(&run.path).unwrap()
    }

    #[test]
    fn the_run_to_run_spread_covers_throughput_rows_and_keeps_the_floor() {
        let d = tempfile::tempdir().unwrap();
        let runs: Vec<LoadedRun> =
            [10.0, 17.0, 12.0].iter().enumerate().map(|(i, m)| run_at(&d.path().join(i.to_string()), *m)).collect();
        let s = Spread::measure(&runs).unwrap();
        let key = runs[0].rows[0].key();
        let r = s.rows[&key];
        assert!((r.mpps.unwrap() - 1.7).abs() < 1e-9, "{r:?}");
        assert_eq!((r.p50, r.p99, r.n), (1.0, 1.0, 3), "no latency: the floor decides");
        let judged = s.for_key(&key).unwrap();
        assert_eq!((judged.p50, judged.mpps), (UNMEASURED.p50, Some(1.7)));
        let steady: Vec<LoadedRun> =
            [10.0, 10.5].iter().enumerate().map(|(i, m)| run_at(&d.path().join(format!("s{i}")), *m)).collect();
        let s = Spread::measure(&steady).unwrap();
        assert_eq!(s.for_key(&key).unwrap().mpps, UNMEASURED.mpps, "never tighter than the floor");
    }
}
