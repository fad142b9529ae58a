//! The history: an embedded SQLite database (default `results/history.sqlite`) indexing
//! run directories. It is derived, never primary: every table is filled from the run
//! directories and `rebuild` recreates it from them alone. The tables are plain, so the
//! `sqlite3` shell or pandas read them too:
//!
//! ```text
//! meta(key TEXT PRIMARY KEY, value TEXT)                    schema_version = 1
//! machine_classes(name TEXT PRIMARY KEY, backend, vendor, family, model, cpus)
//! runs(run_id TEXT PRIMARY KEY, path, kind, status, stop_reason, started_utc,
//!      finished_utc, machine_class -> machine_classes.name, emulated, git_commit,
//!      ivbench_version, cpu_brand, kernel, backend, manifest_bytes, manifest_mtime_ns)
//! fingerprints(run_id TEXT PRIMARY KEY -> runs, json TEXT)  the manifest's fingerprint
//! rows(run_id -> runs, key, probe, params, method, variant, status, count,
//!      min_ns, p50_ns, p90_ns, p99_ns, p999_ns, max_ns, mean_ns, stddev_ns,
//!      p50_cycles, p99_cycles, overhead_cycles, tsc_khz, clock, partial, contention,
//!      hlog_tag, PRIMARY KEY (run_id, key))
//! histograms(run_id -> runs, probe, tag, hlog_path, PRIMARY KEY (run_id, probe, tag))
//! ```
//! `hlog_path` is relative to the run's `path`. Times are the manifests' ISO 8601 UTC
//! text, which sorts in time order.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::machine::{self, MachineClass};
use crate::store::run_dir::load_run;
use crate::store::LoadedRun;

pub const SCHEMA_VERSION: i64 = 1;

pub fn default_path() -> PathBuf {
    PathBuf::from("results").join("history.sqlite")
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS machine_classes(
    name TEXT PRIMARY KEY, backend TEXT NOT NULL, vendor TEXT NOT NULL, family INTEGER, model INTEGER, cpus INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
    run_id TEXT PRIMARY KEY, path TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL, stop_reason TEXT,
    started_utc TEXT NOT NULL, finished_utc TEXT, machine_class TEXT NOT NULL REFERENCES machine_classes(name),
    emulated TEXT, git_commit TEXT, ivbench_version TEXT, cpu_brand TEXT, kernel TEXT, backend TEXT,
    manifest_bytes INTEGER NOT NULL, manifest_mtime_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fingerprints(run_id TEXT PRIMARY KEY REFERENCES runs(run_id) ON DELETE CASCADE, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows(
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE, key TEXT NOT NULL, probe TEXT NOT NULL,
    params TEXT NOT NULL, method TEXT NOT NULL, variant TEXT NOT NULL, status TEXT NOT NULL, count INTEGER NOT NULL,
    min_ns REAL, p50_ns REAL, p90_ns REAL, p99_ns REAL, p999_ns REAL, max_ns REAL, mean_ns REAL, stddev_ns REAL,
    p50_cycles REAL, p99_cycles REAL, overhead_cycles INTEGER, tsc_khz INTEGER, clock TEXT, partial TEXT,
    contention TEXT, hlog_tag TEXT, PRIMARY KEY (run_id, key));
CREATE TABLE IF NOT EXISTS histograms(
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE, probe TEXT NOT NULL, tag TEXT NOT NULL,
    hlog_path TEXT NOT NULL, PRIMARY KEY (run_id, probe, tag));
CREATE INDEX IF NOT EXISTS rows_by_probe ON rows(probe, params, method);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs(started_utc);
";

pub struct History {
    conn: Connection,
    pub path: PathBuf,
}

/// What a sync did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    /// Directories that look like runs but could not be read, with why.
    pub skipped: Vec<String>,
}

/// One point of a probe's trend.
#[derive(Clone, Debug, Serialize)]
pub struct TrendPoint {
    pub run_id: String,
    pub started_utc: String,
    pub machine_class: String,
    pub status: String,
    pub run_status: String,
    pub params: String,
    pub method: String,
    pub variant: String,
    pub count: u64,
    pub p50_ns: Option<f64>,
    pub p99_ns: Option<f64>,
    pub git_commit: Option<String>,
}

/// One run as the index lists it.
#[derive(Clone, Debug, Serialize)]
pub struct RunEntry {
    pub run_id: String,
    pub path: String,
    pub kind: String,
    pub status: String,
    pub started_utc: String,
    pub machine_class: String,
    pub emulated: Option<String>,
    pub git_commit: Option<String>,
    pub cpu_brand: Option<String>,
    pub rows: u64,
    pub ok_rows: u64,
}

fn mtime_ns(p: &Path) -> i64 {
    fs::metadata(p).and_then(|m| m.modified()).ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

impl History {
    /// Opens (creating when absent) the database at `path`. A database of another schema
    /// version is refused: it is derived data, rebuild it.
    pub fn open(path: &Path) -> Result<History> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("cannot open history {}", path.display()))?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL;").context("configuring the history database")?;
        conn.execute_batch(SCHEMA).with_context(|| format!("creating the tables of {}", path.display()))?;
        let version: Option<String> = conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).optional()?;
        match version {
            None => {
                conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?1)", params![SCHEMA_VERSION.to_string()])?;
            }
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => anyhow::bail!(
                "{} has history schema {v}, this ivbench writes {SCHEMA_VERSION}: it is derived data, rebuild it with `ivbench history --rebuild`",
                path.display()
            ),
        }
        Ok(History { conn, path: path.to_path_buf() })
    }

    /// Deletes the database and builds it again from the run directories alone.
    pub fn rebuild(path: &Path, roots: &[PathBuf]) -> Result<(History, Synced)> {
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", path.display()));
            if p.exists() {
                fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        let mut h = History::open(path)?;
        let s = h.sync(roots)?;
        Ok((h, s))
    }

    /// Brings the index up to date with the run directories directly under each root:
    /// new runs are added, runs whose manifest changed (a run that was still going) are
    /// re-read, runs whose directory is gone are dropped.
    pub fn sync(&mut self, roots: &[PathBuf]) -> Result<Synced> {
        let mut out = Synced::default();
        let mut seen = BTreeSet::new();
        let tx = self.conn.transaction()?;
        for root in roots {
            let Ok(entries) = fs::read_dir(root) else { continue };
            let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join("manifest.json").is_file()).collect();
            dirs.sort();
            for dir in dirs {
                let mpath = dir.join("manifest.json");
                let (bytes, mtime) = (fs::metadata(&mpath).map(|m| m.len() as i64).unwrap_or(0), mtime_ns(&mpath));
                let path_text = dir.display().to_string();
                let known: Option<(String, i64, i64)> = tx
                    .query_row("SELECT run_id, manifest_bytes, manifest_mtime_ns FROM runs WHERE path = ?1", params![path_text], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?;
                if let Some((id, b, m)) = &known {
                    if *b == bytes && *m == mtime {
                        seen.insert(id.clone());
                        continue;
                    }
                }
                let run = match load_run(&dir) {
                    Ok(r) => r,
                    Err(e) => {
                        out.skipped.push(format!("{}: {e:#}", dir.display()));
                        continue;
                    }
                };
                if let Some((id, ..)) = &known {
                    tx.execute("DELETE FROM runs WHERE run_id = ?1", params![id])?;
                    out.updated += 1;
                } else {
                    out.added += 1;
                }
                // The same run id in two places (a run copied into baselines): the first wins.
                if seen.contains(&run.manifest.run_id) {
                    continue;
                }
                insert_run(&tx, &run, bytes, mtime)?;
                seen.insert(run.manifest.run_id.clone());
            }
        }
        let ids: Vec<String> = {
            let mut st = tx.prepare("SELECT run_id FROM runs")?;
            let ids = st.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
            ids
        };
        for id in ids.into_iter().filter(|id| !seen.contains(id)) {
            tx.execute("DELETE FROM runs WHERE run_id = ?1", params![id])?;
            out.removed += 1;
        }
        tx.commit()?;
        Ok(out)
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> Result<Vec<RunEntry>> {
        let mut st = self.conn.prepare(
            "SELECT r.run_id, r.path, r.kind, r.status, r.started_utc, r.machine_class, r.emulated, r.git_commit, r.cpu_brand,
                    (SELECT COUNT(*) FROM rows w WHERE w.run_id = r.run_id),
                    (SELECT COUNT(*) FROM rows w WHERE w.run_id = r.run_id AND w.status = 'ok')
             FROM runs r ORDER BY r.started_utc, r.run_id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(RunEntry {
                run_id: r.get(0)?,
                path: r.get(1)?,
                kind: r.get(2)?,
                status: r.get(3)?,
                started_utc: r.get(4)?,
                machine_class: r.get(5)?,
                emulated: r.get(6)?,
                git_commit: r.get(7)?,
                cpu_brand: r.get(8)?,
                rows: r.get::<_, i64>(9)? as u64,
                ok_rows: r.get::<_, i64>(10)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// A probe's figures across runs, oldest first; `params` and `method` narrow it,
    /// `since` (an ISO date or time, UTC) drops older runs.
    pub fn trend(&self, probe: &str, params_filter: Option<&str>, method: Option<&str>, since: Option<&str>) -> Result<Vec<TrendPoint>> {
        let mut st = self.conn.prepare(
            "SELECT w.run_id, r.started_utc, r.machine_class, w.status, r.status, w.params, w.method, w.variant, w.count,
                    w.p50_ns, w.p99_ns, r.git_commit
             FROM rows w JOIN runs r ON r.run_id = w.run_id
             WHERE w.probe = ?1 AND (?2 IS NULL OR w.params = ?2) AND (?3 IS NULL OR w.method = ?3)
                   AND (?4 IS NULL OR r.started_utc >= ?4)
             ORDER BY r.started_utc, w.params, w.method, w.variant",
        )?;
        let rows = st.query_map(params![probe, params_filter, method, since], |r| {
            Ok(TrendPoint {
                run_id: r.get(0)?,
                started_utc: r.get(1)?,
                machine_class: r.get(2)?,
                status: r.get(3)?,
                run_status: r.get(4)?,
                params: r.get(5)?,
                method: r.get(6)?,
                variant: r.get(7)?,
                count: r.get::<_, i64>(8)? as u64,
                p50_ns: r.get(9)?,
                p99_ns: r.get(10)?,
                git_commit: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Every probe name in the history, sorted.
    pub fn probes(&self) -> Result<Vec<String>> {
        let mut st = self.conn.prepare("SELECT DISTINCT probe FROM rows ORDER BY probe")?;
        let v = st.query_map([], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

fn insert_run(tx: &rusqlite::Transaction<'_>, run: &LoadedRun, bytes: i64, mtime: i64) -> Result<()> {
    let m = &run.manifest;
    let fp = &m.fingerprint;
    let s = |ptr: &str| fp.pointer(ptr).and_then(|v| v.as_str()).map(str::to_string);
    let class = MachineClass::of(m);
    tx.execute(
        "INSERT OR IGNORE INTO machine_classes(name, backend, vendor, family, model, cpus) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![class.name(), class.backend, class.vendor, class.family.map(|x| x as i64), class.model.map(|x| x as i64), class.cpus as i64],
    )?;
    let status = serde_json::to_value(m.status)?.as_str().unwrap_or("partial").to_string();
    tx.execute(
        "INSERT INTO runs(run_id, path, kind, status, stop_reason, started_utc, finished_utc, machine_class, emulated, git_commit,
                          ivbench_version, cpu_brand, kernel, backend, manifest_bytes, manifest_mtime_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            m.run_id,
            run.path.display().to_string(),
            m.kind,
            status,
            m.stop_reason,
            m.started_utc,
            m.finished_utc,
            class.name(),
            machine::emulated(m),
            s("/ivbench/git_commit"),
            m.ivbench_version,
            s("/cpu/brand"),
            s("/host/kernel_release"),
            s("/kvm/backend"),
            bytes,
            mtime
        ],
    )?;
    tx.execute("INSERT INTO fingerprints(run_id, json) VALUES (?1, ?2)", params![m.run_id, serde_json::to_string(fp)?])?;
    let mut ins = tx.prepare(
        "INSERT OR REPLACE INTO rows(run_id, key, probe, params, method, variant, status, count, min_ns, p50_ns, p90_ns, p99_ns,
                          p999_ns, max_ns, mean_ns, stddev_ns, p50_cycles, p99_cycles, overhead_cycles, tsc_khz, clock,
                          partial, contention, hlog_tag)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
    )?;
    for r in &run.rows {
        ins.execute(params![
            m.run_id,
            r.key(),
            r.probe,
            r.params,
            r.method,
            r.variant,
            r.status.to_string(),
            r.count as i64,
            r.min_ns,
            r.p50_ns,
            r.p90_ns,
            r.p99_ns,
            r.p999_ns,
            r.max_ns,
            r.mean_ns,
            r.stddev_ns,
            r.p50_cycles,
            r.p99_cycles,
            r.overhead_cycles as i64,
            r.tsc_khz as i64,
            r.clock,
            r.partial,
            r.contention,
            r.hlog_tag
        ])?;
    }
    let mut hins = tx.prepare("INSERT OR IGNORE INTO histograms(run_id, probe, tag, hlog_path) VALUES (?1, ?2, ?3, ?4)")?;
    for (probe, tags) in &run.histograms {
        for tag in tags.keys() {
            hins.execute(params![m.run_id, probe, tag, format!("hlog/{probe}.hlog")])?;
        }
    }
    Ok(())
}
