//! `ivbench publish`: a static site of runs, made from the store and the history alone.
//!
//! ```text
//! DIR/index.html            every run: machine class, date, status, commit; links below
//! DIR/runs/<run>.html       one run: status, seed table, summary, fingerprint
//! DIR/probes/<probe>.html   one probe: per point the newest histogram, CDF, percentile
//!                           table, the .hlog to download, and a trend chart across runs
//! DIR/classes.html          the newest p50 of every point on each machine class, side by side
//! DIR/hlog/<run>/<probe>.hlog  the interval logs the probe pages link
//! ```
//! Every page is self-contained (inline CSS and SVG, no script, no network asset) and
//! links only within DIR, so the folder can be served as it is or opened from disk.

pub mod plots;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::history::{History, RunEntry};
use crate::machine::MachineClass;
use crate::report::html::{self, esc, CSS};
use crate::report::plots::{histogram_svg, percentile_svg};
use crate::report::seed;
use crate::store::atomic::write_atomic;
use crate::store::{LoadedRun, SummaryRow};

/// A file in a published site's top folder that marks it as one (publish refuses to
/// write into a non-empty folder without it).
pub const MARKER: &str = ".ivbench-site";

const SITE_CSS: &str =
    "nav { margin-bottom: 1em; padding-bottom: 6px; border-bottom: 1px solid #ccc; } nav a { margin-right: 1em; } \
td.rank { color: #777; } .point { margin-top: 2em; }";

/// What was written.
pub struct Site {
    pub index: PathBuf,
    pub pages: usize,
}

fn page(title: &str, depth: usize, body: &str) -> String {
    let up = "../".repeat(depth);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>{CSS}{SITE_CSS}</style></head><body>\n<nav><a href=\"{up}index.html\">runs</a><a href=\"{up}classes.html\">machine classes</a></nav>\n{body}\n</body></html>\n",
        t = esc(title)
    )
}

/// A name safe as one path component of a URL and a file: probe names and run ids are
/// made of these already; anything else is replaced.
fn file_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
}

fn prepare(out: &Path) -> Result<()> {
    if out.exists() {
        let empty = fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))?.next().is_none();
        if !empty && !out.join(MARKER).is_file() {
            bail!("{} is not empty and not an ivbench site (no {MARKER}): refusing to write into it", out.display());
        }
    }
    for sub in ["", "runs", "probes", "hlog"] {
        fs::create_dir_all(out.join(sub)).with_context(|| format!("cannot create {}", out.join(sub).display()))?;
    }
    write_atomic(&out.join(MARKER), b"written by ivbench publish\n")?;
    Ok(())
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() && x >= 100.0 => format!("{x:.0}"),
        Some(x) if x.is_finite() => format!("{x:.2}"),
        _ => "-".into(),
    }
}

fn index_page(entries: &[RunEntry], published: &BTreeMap<String, &LoadedRun>, probes: &[String]) -> String {
    let mut b = String::from("<h1>ivbench results</h1>\n<p class=\"small\">Figures on shared machines move 10-30% between runs: read ratios between runs of one machine class, not absolutes.</p>\n");
    let _ = write!(b, "<h2>Runs ({})</h2>\n<div class=\"wrap\"><table><tr><th>started (UTC)</th><th>run</th><th>machine class</th><th>kind</th><th>status</th><th>rows ok / all</th><th>commit</th><th>CPU</th></tr>\n", published.len());
    for e in entries.iter().rev().filter(|e| published.contains_key(&e.run_id)) {
        let status = match (&e.emulated, e.status.as_str()) {
            (Some(_), s) => format!("{s} (emulated CPU)"),
            (None, s) => s.to_string(),
        };
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td><a href=\"runs/{}.html\">{}</a></td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{} / {}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.started_utc),
            file_name(&e.run_id),
            esc(&e.run_id),
            esc(&e.machine_class),
            esc(&e.kind),
            if e.status == "complete" { "ok" } else { "failed" },
            esc(&status),
            e.ok_rows,
            e.rows,
            esc(&e.git_commit.as_deref().unwrap_or("").chars().take(10).collect::<String>()),
            esc(e.cpu_brand.as_deref().unwrap_or(""))
        );
    }
    b.push_str("</table></div>\n<h2>Probes</h2>\n<ul>\n");
    for p in probes {
        let _ = writeln!(b, "<li><a href=\"probes/{}.html\">{}</a></li>", file_name(p), esc(p));
    }
    b.push_str("</ul>\n");
    page("ivbench results", 0, &b)
}

fn run_page(run: &LoadedRun) -> String {
    let mut b = html::header(run);
    let _ = writeln!(b, "<p>machine class <b>{}</b></p>", esc(&MachineClass::of(&run.manifest).name()));
    b.push_str("<h2>Seed table: this run beside the 2014 figures</h2>\n");
    b.push_str(&html::seed_table(&seed::seed_table(&run.rows)));
    b.push_str("<h2>Summary</h2>\n<p class=\"small\">Each probe links to its page: histograms, CDF, percentiles and its trend across runs.</p>\n");
    // The report's table links plots on its own page; here a probe links its probe page.
    let table = html::summary_table(run);
    let mut linked = table.clone();
    for (i, r) in run.rows.iter().enumerate() {
        linked = linked.replace(
            &format!("<a href=\"#plot-{i}\">"),
            &format!("<a href=\"../probes/{}.html\">", file_name(&r.probe)),
        );
    }
    b.push_str(&linked);
    b.push_str("<h2>Environment</h2>\n");
    b.push_str(&html::json_html(&run.manifest.fingerprint));
    page(&format!("ivbench run {}", run.manifest.run_id), 1, &b)
}

const QUANTILES: [(f64, &str); 8] = [
    (0.0, "min"),
    (0.5, "p50"),
    (0.9, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (0.9999, "p99.99"),
    (0.99999, "p99.999"),
    (1.0, "max"),
];

fn percentile_table(run: &LoadedRun, r: &SummaryRow) -> String {
    let Some(h) = run.histogram(r) else { return String::new() };
    let mut o = String::from("<table><tr><th>percentile</th><th>ns</th><th>cycles</th></tr>");
    for (q, name) in QUANTILES {
        let units = if q >= 1.0 {
            h.max()
        } else if q <= 0.0 {
            h.min()
        } else {
            h.value_at_quantile(q)
        };
        let cycles = units as f64 / crate::stats::HIST_UNITS_PER_CYCLE as f64;
        let _ = write!(
            o,
            "<tr><td>{name}</td><td class=\"n\">{}</td><td class=\"n\">{cycles:.1}</td></tr>",
            num(Some(crate::stats::cycles_to_ns(cycles, r.tsc_khz)))
        );
    }
    o.push_str("</table>");
    o
}

fn probe_page(
    probe: &str,
    runs: &[&LoadedRun],
    published: &BTreeMap<String, &LoadedRun>,
    history: &History,
    out: &Path,
) -> Result<String> {
    let mut b = format!("<h1>{}</h1>\n", esc(probe));
    // The newest run that has this probe shows its distributions.
    let Some(newest) = runs.iter().rev().find(|r| r.rows.iter().any(|x| x.probe == probe)) else {
        return Ok(page(probe, 1, &(b + "<p>no run has this probe</p>")));
    };
    let hlog = newest.path.join("hlog").join(format!("{probe}.hlog"));
    let hlog_link = if hlog.is_file() {
        let rel = format!("hlog/{}/{}.hlog", file_name(&newest.manifest.run_id), file_name(probe));
        fs::create_dir_all(out.join("hlog").join(file_name(&newest.manifest.run_id)))?;
        fs::copy(&hlog, out.join(&rel)).with_context(|| format!("copying {}", hlog.display()))?;
        format!(" &middot; <a href=\"../{rel}\" download>download the HdrHistogram interval log</a>")
    } else {
        String::new()
    };
    let _ = writeln!(
        b,
        "<p>Distributions from the newest run with this probe, <a href=\"../runs/{}.html\">{}</a> ({}, {}){hlog_link}.</p>",
        file_name(&newest.manifest.run_id),
        esc(&newest.manifest.run_id),
        esc(&newest.manifest.started_utc),
        esc(&MachineClass::of(&newest.manifest).name())
    );
    if let Some(desc) = crate::registry::all().iter().find(|p| p.name() == probe).map(|p| p.description()) {
        let _ = writeln!(b, "<p class=\"small\">{}</p>", esc(desc));
    }
    for r in newest.rows.iter().filter(|x| x.probe == probe) {
        let _ = writeln!(b, "<div class=\"point\"><h3>{}</h3>", esc(&r.key()));
        if !r.status.is_ok() {
            let _ = write!(
                b,
                "<p class=\"{}\">{}</p>",
                if matches!(r.status, crate::store::Status::Unsupported(_)) { "unsupported" } else { "failed" },
                esc(&r.status.to_string())
            );
        } else {
            b.push_str(&html::figure_caption(r));
            if let (Some(mpps), Some(sent), Some(received), Some(dropped)) = (r.mpps, r.sent, r.received, r.dropped) {
                let _ = writeln!(
                    b,
                    "<p><b>throughput</b>: {mpps:.3} Mpps received ({} Gbit/s); sent {sent}, received {received}, dropped {dropped}</p>",
                    num(r.gbit_s)
                );
            }
            b.push_str("<div class=\"plots\">");
            if let Some(h) = newest.histogram(r) {
                for svg in [
                    histogram_svg(h, r.tsc_khz, (560, 300)),
                    plots::cdf_svg(h, r.tsc_khz, (560, 300)),
                    percentile_svg(h, r.tsc_khz, (560, 300)),
                ] {
                    match svg {
                        Ok(s) => b.push_str(&s.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)),
                        Err(e) => {
                            let _ = write!(b, "<p class=\"small\">not drawn: {}</p>", esc(&e));
                        }
                    }
                }
            }
            b.push_str("</div>");
            b.push_str(&percentile_table(newest, r));
        }
        // The trend: this point in every run of the history, oldest first.
        let trend = history.trend(probe, Some(&r.params), Some(&r.method), None)?;
        let trend: Vec<_> =
            trend.into_iter().filter(|t| t.variant == r.variant && published.contains_key(&t.run_id)).collect();
        let samples: Vec<plots::TrendSample> = trend
            .iter()
            .filter_map(|t| {
                Some(plots::TrendSample {
                    label: t.started_utc.get(..10).unwrap_or("").to_string(),
                    p50_ns: t.p50_ns?,
                    p99_ns: t.p99_ns?,
                })
            })
            .collect();
        if samples.len() >= 2 {
            match plots::trend_svg(&samples, (760, 300)) {
                Ok(s) => b.push_str(&s.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)),
                Err(e) => {
                    let _ = write!(b, "<p class=\"small\">trend not drawn: {}</p>", esc(&e));
                }
            }
        }
        b.push_str("<details><summary>every run with this point</summary><table><tr><th>started</th><th>run</th><th>machine class</th><th>status</th><th>count</th><th>p50 ns</th><th>p99 ns</th></tr>");
        for t in &trend {
            let _ = write!(
                b,
                "<tr><td>{}</td><td><a href=\"../runs/{}.html\">{}</a></td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&t.started_utc),
                file_name(&t.run_id),
                esc(&t.run_id),
                esc(&t.machine_class),
                esc(&t.status),
                t.count,
                num(t.p50_ns),
                num(t.p99_ns)
            );
        }
        b.push_str("</table></details></div>\n");
    }
    Ok(page(probe, 1, &b))
}

fn classes_page(runs: &[&LoadedRun]) -> String {
    // Newest ok row of every key on every class.
    let mut classes: Vec<String> = Vec::new();
    let mut cells: BTreeMap<String, BTreeMap<String, (f64, String)>> = BTreeMap::new();
    for run in runs {
        let c = MachineClass::of(&run.manifest).name();
        if !classes.contains(&c) {
            classes.push(c.clone());
        }
        for r in run.rows.iter().filter(|r| r.status.is_ok()) {
            if let Some(p50) = r.p50_ns {
                cells.entry(r.key()).or_default().insert(c.clone(), (p50, run.manifest.run_id.clone()));
            }
        }
    }
    classes.sort();
    let mut b = String::from("<h1>Machine classes side by side</h1>\n<p class=\"small\">The newest ok p50 (ns) of each point on each machine class; the last column is the largest over the smallest. Different classes are different machines: these are not regressions.</p>\n<div class=\"wrap\"><table><tr><th>point</th>");
    for c in &classes {
        let _ = write!(b, "<th>{}</th>", esc(c));
    }
    b.push_str("<th>max / min</th></tr>\n");
    for (key, per) in &cells {
        let _ = write!(b, "<tr><td>{}</td>", esc(key));
        for c in &classes {
            match per.get(c) {
                Some((v, run)) => {
                    let _ = write!(b, "<td class=\"n\" title=\"run {}\">{}</td>", esc(run), num(Some(*v)));
                }
                None => b.push_str("<td class=\"n\">-</td>"),
            }
        }
        let vals: Vec<f64> = per.values().map(|v| v.0).filter(|v| *v > 0.0).collect();
        let ratio = if vals.len() >= 2 {
            format!(
                "x{:.2}",
                vals.iter().cloned().fold(0.0, f64::max) / vals.iter().cloned().fold(f64::INFINITY, f64::min)
            )
        } else {
            "-".into()
        };
        let _ = writeln!(b, "<td class=\"n\">{ratio}</td></tr>");
    }
    b.push_str("</table></div>\n");
    page("ivbench machine classes", 0, &b)
}

/// Writes the site for `runs` (already loaded) into `out`, with trends from `history`.
pub fn publish(runs: &[LoadedRun], history: &History, out: &Path) -> Result<Site> {
    if runs.is_empty() {
        bail!("nothing to publish: no run");
    }
    prepare(out)?;
    let mut sorted: Vec<&LoadedRun> = runs.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.manifest.started_utc, &a.manifest.run_id).cmp(&(&b.manifest.started_utc, &b.manifest.run_id))
    });
    let by_id: BTreeMap<String, &LoadedRun> = sorted.iter().map(|r| (r.manifest.run_id.clone(), *r)).collect();
    let mut probes: Vec<String> = sorted.iter().flat_map(|r| r.rows.iter().map(|x| x.probe.clone())).collect();
    probes.sort();
    probes.dedup();
    let mut pages = 0;
    let entries = history.runs()?;
    write_atomic(&out.join("index.html"), index_page(&entries, &by_id, &probes).as_bytes())?;
    pages += 1;
    for r in &sorted {
        write_atomic(
            &out.join("runs").join(format!("{}.html", file_name(&r.manifest.run_id))),
            run_page(r).as_bytes(),
        )?;
        pages += 1;
    }
    for p in &probes {
        let html = probe_page(p, &sorted, &by_id, history, out)?;
        write_atomic(&out.join("probes").join(format!("{}.html", file_name(p))), html.as_bytes())?;
        pages += 1;
    }
    write_atomic(&out.join("classes.html"), classes_page(&sorted).as_bytes())?;
    pages += 1;
    Ok(Site { index: out.join("index.html"), pages })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_one_component() {
        assert_eq!(file_name("host.syscall.getppid"), "host.syscall.getppid");
        assert_eq!(file_name("../etc/passwd"), ".._etc_passwd");
        assert_eq!(file_name("a b<c>"), "a_b_c_");
    }
}
