//! `ivbench publish`: a static site from two or more runs, navigable, self-contained.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ivbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ivbench")).args(args).output().expect("ivbench runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Two runs of a few probes into `runs`, and the published site.
pub fn published(d: &Path) -> PathBuf {
    let runs = d.join("runs");
    for _ in 0..2 {
        for args in [vec!["host.syscall.getppid"], vec!["host.memcpy", "--params", "size=64", "--method", "batched"]] {
            let mut a = vec!["run"];
            a.extend(args);
            a.extend(["--iterations", "500", "--out", runs.to_str().unwrap()]);
            let o = ivbench(&a);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        }
    }
    let site = d.join("site");
    let o = ivbench(&[
        "publish",
        "--out",
        site.to_str().unwrap(),
        "--runs",
        runs.to_str().unwrap(),
        "--db",
        d.join("h.sqlite").to_str().unwrap(),
        "--baselines",
        d.join("none").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    site
}

#[test]
fn the_site_links_every_run_and_probe_and_needs_no_network() {
    let d = tempfile::tempdir().unwrap();
    let site = published(d.path());
    let index = fs::read_to_string(site.join("index.html")).unwrap();
    let runs: Vec<PathBuf> = fs::read_dir(site.join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 4);
    for r in &runs {
        let name = r.file_name().unwrap().to_str().unwrap();
        assert!(index.contains(&format!("href=\"runs/{name}\"")), "index lacks {name}");
    }
    for p in ["host.syscall.getppid", "host.memcpy"] {
        assert!(index.contains(&format!("href=\"probes/{p}.html\"")), "index lacks {p}");
        let page = fs::read_to_string(site.join("probes").join(format!("{p}.html"))).unwrap();
        for title in ["cumulative distribution", "latency by percentile", "across runs (p50 and p99)"] {
            assert!(page.contains(title), "{p}: no `{title}` chart");
        }
        assert!(page.matches("<svg").count() >= 4, "{p}: histogram, CDF, percentiles and trend");
        assert!(page.contains("<th>percentile</th>"), "{p}: percentile table");
        // The .hlog it links is there and is the run's own.
        let link = page.split("href=\"../hlog/").nth(1).unwrap().split('"').next().unwrap();
        let copied = fs::read(site.join("hlog").join(link)).unwrap();
        assert!(!ivbench::store::hlog::read_log(&copied).unwrap().is_empty());
    }
    assert!(fs::read_to_string(site.join("classes.html")).unwrap().contains("max / min"));
    // Self-contained: no page references anything outside the site.
    for dir in [site.clone(), site.join("runs"), site.join("probes")] {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().and_then(|x| x.to_str()) == Some("html") {
                let t = fs::read_to_string(&p).unwrap();
                assert!(!t.contains("http://") && !t.contains("https://") && !t.contains("<script"), "{} references the network or runs a script", p.display());
                assert!(t.len() < 400_000, "{}: {} bytes", p.display(), t.len());
            }
        }
    }
}

#[test]
fn publish_refuses_a_folder_that_is_not_a_site() {
    let d = tempfile::tempdir().unwrap();
    let runs = d.path().join("runs");
    let o = ivbench(&["run", "host.syscall.getppid", "--iterations", "100", "--out", runs.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let other = d.path().join("docs");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("precious.txt"), b"x").unwrap();
    let o = ivbench(&["publish", "--out", other.to_str().unwrap(), "--runs", runs.to_str().unwrap(), "--db", d.path().join("h.sqlite").to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o).contains("not an ivbench site"), "{}", text(&o));
    assert_eq!(fs::read_dir(&other).unwrap().count(), 1);
}
