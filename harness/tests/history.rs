//! The SQLite history: derived from run directories, rebuildable from them, readable by
//! other clients as plain tables, kept in step as runs come and go.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ivbench::history::History;

fn ivbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ivbench")).args(args).output().expect("ivbench runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn run(out: &Path, probes: &[&str]) -> PathBuf {
    let before: Vec<_> = dirs(out);
    let mut args = vec!["run"];
    args.extend(probes);
    args.extend(["--iterations", "200", "--out", out.to_str().unwrap()]);
    let o = ivbench(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    dirs(out).into_iter().find(|d| !before.contains(d)).unwrap()
}

fn dirs(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(d).map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect()).unwrap_or_default();
    v.sort();
    v
}

fn count(db: &Path, sql: &str) -> i64 {
    // A plain SQLite client, not ivbench's own code.
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn the_history_follows_the_run_directories_and_rebuilds_from_them() {
    let d = tempfile::tempdir().unwrap();
    let runs = d.path().join("runs");
    let db = d.path().join("h.sqlite");
    let a = run(&runs, &["host.syscall.getppid"]);
    let _b = run(&runs, &["host.syscall.getppid", "host.timer.overhead"]);
    let roots = vec![runs.clone()];
    let mut h = History::open(&db).unwrap();
    let s = h.sync(&roots).unwrap();
    assert_eq!((s.added, s.updated, s.removed), (2, 0, 0));
    assert_eq!(h.sync(&roots).unwrap().added, 0, "a second sync reads nothing again");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM runs"), 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM rows WHERE probe = 'host.syscall.getppid'"), 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM rows WHERE probe = 'host.timer.overhead'"), 4);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM fingerprints"), 2);
    assert!(count(&db, "SELECT COUNT(*) FROM histograms") >= 5);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM machine_classes"), 1);
    let trend = h.trend("host.syscall.getppid", None, Some("per-op"), None).unwrap();
    assert_eq!(trend.len(), 2);
    assert!(trend[0].started_utc <= trend[1].started_utc);
    assert!(trend.iter().all(|p| p.p50_ns.unwrap() > 0.0));
    assert!(h.trend("host.syscall.getppid", None, None, Some("2999-01-01")).unwrap().is_empty());

    // A run whose directory is gone leaves the history; a changed manifest is read again.
    fs::remove_dir_all(&a).unwrap();
    assert_eq!(h.sync(&roots).unwrap().removed, 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM rows WHERE probe = 'host.syscall.getppid'"), 1);
    drop(h);

    // Rebuilt from the directories alone, the same content.
    let before = count(&db, "SELECT COUNT(*) FROM rows");
    let (_h, s) = History::rebuild(&db, &roots).unwrap();
    assert_eq!(s.added, 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM rows"), before);
}

#[test]
fn history_command_prints_the_trend_and_refuses_unknown_probes() {
    let d = tempfile::tempdir().unwrap();
    let runs = d.path().join("runs");
    run(&runs, &["host.syscall.getppid"]);
    run(&runs, &["host.syscall.getppid"]);
    let db = d.path().join("h.sqlite");
    let none = d.path().join("none");
    let base = ["--db", db.to_str().unwrap(), "--runs", runs.to_str().unwrap(), "--baselines", none.to_str().unwrap()];
    let mut args = vec!["history", "host.syscall.getppid", "--json"];
    args.extend(base);
    let o = ivbench(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    let mut args = vec!["history", "host.nosuch"];
    args.extend(base);
    assert_eq!(ivbench(&args).status.code(), Some(2));
    let mut args = vec!["history", "host.syscall.getppid", "--since", "last week"];
    args.extend(base);
    assert_eq!(ivbench(&args).status.code(), Some(2));
}
