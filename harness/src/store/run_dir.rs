//! A run directory being written, and a run directory read back.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

use super::atomic::write_atomic;
use super::hlog::{self, Interval};
use super::manifest::{Manifest, ProbeEntry, RunStatus, SCHEMA_VERSION};
use super::read::{read_bounded, MAX_HLOG_BYTES, MAX_MANIFEST_BYTES};
use super::summary::{self, SummaryRow};
use crate::stats::HIST_UNITS_PER_CYCLE;

pub fn utc_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn short_id() -> String {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{:06x}", (u64::from(nanos) ^ (u64::from(std::process::id()) << 12)) & 0xff_ffff)
}

/// Checks that `out` can hold runs *before* anything is measured. The probe file is an
/// unnamed temporary (O_TMPFILE where the file system has it): nothing to plant a link
/// on, nothing left behind.
pub fn ensure_writable(out: &Path) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("cannot create results directory {}", out.display()))?;
    tempfile::tempfile_in(out).with_context(|| format!("results directory {} is not writable", out.display()))?;
    Ok(())
}

/// The run being written. Every `record` rewrites summary.csv, the probe's .hlog and the
/// manifest atomically, so whatever finished survives an interruption.
pub struct RunDir {
    pub path: PathBuf,
    pub manifest: Manifest,
    rows: Vec<SummaryRow>,
    intervals: BTreeMap<String, Vec<Interval>>,
    base_time: SystemTime,
    base_instant: Instant,
}

impl RunDir {
    pub fn create(out: &Path, kind: &str, config: &str, fingerprint: serde_json::Value) -> Result<RunDir> {
        ensure_writable(out)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let path = out.join(format!("{stamp}-{}", short_id()));
        fs::create_dir(&path).with_context(|| format!("cannot create run directory {}", path.display()))?;
        fs::create_dir(path.join("hlog"))?;
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            run_id: path.file_name().unwrap().to_string_lossy().into_owned(),
            ivbench_version: env!("CARGO_PKG_VERSION").into(),
            started_utc: utc_now(),
            finished_utc: None,
            status: RunStatus::Partial,
            stop_reason: Some("running".into()),
            command_line: std::env::args().collect(),
            kind: kind.into(),
            config: config.into(),
            hist_units_per_cycle: HIST_UNITS_PER_CYCLE,
            fingerprint,
            discovered: BTreeMap::new(),
            notes: Vec::new(),
            probes: Vec::new(),
        };
        let dir = RunDir {
            path,
            manifest,
            rows: Vec::new(),
            intervals: BTreeMap::new(),
            base_time: SystemTime::now(),
            base_instant: Instant::now(),
        };
        dir.write_summary_and_manifest()?;
        Ok(dir)
    }

    pub fn rows(&self) -> &[SummaryRow] {
        &self.rows
    }

    /// Stores one probe x point: its row, and its histogram when it has one.
    pub fn record(
        &mut self,
        mut row: SummaryRow,
        histogram: Option<Histogram<u64>>,
        started: Instant,
        started_utc: String,
    ) -> Result<()> {
        let wall = started.elapsed();
        let mut hlog_rel = None;
        if let Some(h) = histogram {
            // One histogram per point, method and variant: a sweep may time both per-op
            // and batched, and list one probe twice (other CPUs).
            let mut key = if row.params.is_empty() {
                format!("method={}", row.method)
            } else {
                format!("{},method={}", row.params, row.method)
            };
            if !row.variant.is_empty() {
                key.push_str(&format!(",variant={}", row.variant));
            }
            let list = self.intervals.entry(row.probe.clone()).or_default();
            let mut tag = hlog::tag_for(&key);
            // Rows are unique by key (the sweep gives repeated entries a variant); should
            // two still collide, the second gets its own tag rather than replacing the first.
            let mut n = 1;
            while list.iter().any(|iv| iv.tag == tag) {
                n += 1;
                tag = hlog::tag_for(&format!("{key},repeat={n}"));
            }
            if n > 1 {
                row.variant =
                    if row.variant.is_empty() { format!("repeat={n}") } else { format!("{}+repeat={n}", row.variant) };
            }
            row.hlog_tag = tag.clone();
            list.push(Interval { tag, start: started.duration_since(self.base_instant), duration: wall, histogram: h });
            let rel = format!("hlog/{}.hlog", row.probe);
            let bytes = hlog::write_log(self.base_time, &row.probe, list)?;
            write_atomic(&self.path.join(&rel), &bytes)?;
            hlog_rel = Some(rel);
        }
        self.manifest.probes.push(ProbeEntry {
            probe: row.probe.clone(),
            params: row.params.clone(),
            method: row.method.clone(),
            variant: row.variant.clone(),
            status: row.status.to_string(),
            partial: row.partial.clone(),
            hlog: hlog_rel,
            tag: if row.hlog_tag.is_empty() { None } else { Some(row.hlog_tag.clone()) },
            started_utc,
            wall_seconds: wall.as_secs_f64(),
        });
        self.rows.push(row);
        self.write_summary_and_manifest()
    }

    /// A fact about the run as a whole (output lost, contention seen), kept in the manifest.
    pub fn note(&mut self, text: String) -> Result<()> {
        if !self.manifest.notes.contains(&text) {
            self.manifest.notes.push(text);
        }
        self.write_summary_and_manifest()
    }

    pub fn discovered(&mut self, who: &str, value: serde_json::Value) -> Result<()> {
        self.manifest.discovered.insert(who.into(), value);
        self.write_summary_and_manifest()
    }

    /// Ends the run: complete, or partial with the reason.
    pub fn finish(&mut self, interrupted: Option<String>) -> Result<()> {
        self.manifest.finished_utc = Some(utc_now());
        match interrupted {
            None => {
                self.manifest.status = RunStatus::Complete;
                self.manifest.stop_reason = None;
            }
            Some(reason) => {
                self.manifest.status = RunStatus::Partial;
                self.manifest.stop_reason = Some(reason);
            }
        }
        self.write_summary_and_manifest()
    }

    fn write_summary_and_manifest(&self) -> Result<()> {
        write_atomic(&self.path.join("summary.csv"), &summary::write_csv(&self.rows)?)?;
        write_atomic(&self.path.join("manifest.json"), &serde_json::to_vec_pretty(&self.manifest)?)?;
        Ok(())
    }
}

/// A run read back from its directory alone.
pub struct LoadedRun {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub rows: Vec<SummaryRow>,
    /// probe -> tag -> histogram (values in TSC cycles x `hist_units_per_cycle`).
    pub histograms: BTreeMap<String, BTreeMap<String, Histogram<u64>>>,
    /// Files of the run that could not be read (a corrupt `.hlog`): the rest of the run
    /// still loads, and whoever shows it says what is missing.
    pub problems: Vec<String>,
}

impl LoadedRun {
    pub fn histogram(&self, row: &SummaryRow) -> Option<&Histogram<u64>> {
        self.histograms.get(&row.probe)?.get(&row.hlog_tag)
    }
}

/// Resolves `RUN`: a run directory, `latest` (the run under `runs_root` that started
/// last, by its manifest), or a run id under it.
pub fn resolve_run(run: &str, runs_root: &Path) -> Result<PathBuf> {
    if run.trim().is_empty() {
        bail!("an empty run name (an unset shell variable?): give a run directory, a run id or `latest`");
    }
    let direct = PathBuf::from(run);
    if direct.join("manifest.json").is_file() {
        return Ok(direct);
    }
    if run == "latest" {
        let mut runs: Vec<(String, PathBuf)> = fs::read_dir(runs_root)
            .with_context(|| format!("no runs under {}", runs_root.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| read_manifest(&p.join("manifest.json")).ok().map(|m| (m.started_utc, p)))
            .collect();
        // started_utc is ISO 8601 UTC with a fixed width: text order is time order. The
        // directory name breaks ties (two runs in one millisecond).
        runs.sort();
        return runs.pop().map(|(_, p)| p).with_context(|| format!("no runs under {}", runs_root.display()));
    }
    let under = runs_root.join(run);
    if under.join("manifest.json").is_file() {
        return Ok(under);
    }
    bail!("`{run}` is not a run directory (no manifest.json there or under {})", runs_root.display())
}

/// Reads and checks a manifest: bounded, and refused when a newer ivbench wrote it.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = read_bounded(path, MAX_MANIFEST_BYTES)?;
    let m: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("{}:{}:{}: not an ivbench manifest: {e}", path.display(), e.line(), e.column()))?;
    if m.schema_version == 0 || m.schema_version > SCHEMA_VERSION {
        bail!(
            "{}: manifest schema version {} is not one this ivbench reads (1..={SCHEMA_VERSION}); a newer ivbench wrote it",
            path.display(),
            m.schema_version
        );
    }
    Ok(m)
}

/// Loads a run. The manifest and summary.csv must be readable; a histogram file that is
/// not is skipped and named in `problems`, so `show` and `compare` still work.
pub fn load_run(dir: &Path) -> Result<LoadedRun> {
    let manifest = read_manifest(&dir.join("manifest.json"))?;
    let rows = summary::read_csv(&dir.join("summary.csv"))?;
    let mut histograms = BTreeMap::new();
    let mut problems = Vec::new();
    let hdir = dir.join("hlog");
    if hdir.is_dir() {
        let entries = fs::read_dir(&hdir).with_context(|| format!("cannot list {}", hdir.display()))?;
        for e in entries {
            let p = match e {
                Ok(e) => e.path(),
                Err(e) => {
                    problems.push(format!("{}: {e}", hdir.display()));
                    continue;
                }
            };
            if p.extension().and_then(|x| x.to_str()) != Some("hlog") {
                continue;
            }
            let probe = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let logs = read_bounded(&p, MAX_HLOG_BYTES)
                .map_err(|e| e.to_string())
                .and_then(|bytes| hlog::read_log(&bytes).map_err(|e| format!("{}: {e}", p.display())));
            match logs {
                Ok(logs) => {
                    histograms.insert(probe, logs);
                }
                Err(why) => problems.push(format!("histograms of {probe} not loaded: {why}")),
            }
        }
    }
    Ok(LoadedRun { path: dir.to_path_buf(), manifest, rows, histograms, problems })
}
