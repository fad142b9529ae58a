//! Page assembly: one self-contained HTML file (inline CSS and SVG, no script, no network
//! asset), so that a run directory can be mailed or archived and still render.
//!
//! Everything that comes from the store (probe names, reasons, notes, the fingerprint) is
//! text of unknown origin and goes through `esc`.

use std::fmt::Write;

use serde_json::Value;

use super::plots::{self, fmt_ns, BudgetBar};
use super::seed::{self, Measured, SeedLine, BUDGET_10GBE_NS, BUDGET_40GBE_NS};
use crate::stats::cycles_to_ns;
use crate::store::{LoadedRun, RunStatus, Status, SummaryRow};

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Inline SVG in HTML needs no namespace declaration; dropping it keeps the page free of
/// any URL, so "no network reference" stays checkable with a plain text search.
pub(crate) fn inline_svg(svg: &str) -> String {
    svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

pub(crate) const CSS: &str = r#"
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1360px; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; } h3 { margin-bottom: 0.3em; font-family: monospace; font-size: 1.05em; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; vertical-align: top; }
th { background: #f0f0f0; } td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.wrap { overflow-x: auto; }
.ok { color: #176d2c; } .unsupported { color: #8a5a00; } .failed { color: #b00020; font-weight: bold; }
.small { font-size: 12px; color: #555; }
.caption { font-size: 13px; background: #f7f7f7; border-left: 3px solid #4678b4; padding: 4px 8px; margin: 4px 0 8px; }
.plots { display: flex; flex-wrap: wrap; gap: 8px; }
svg { max-width: 100%; height: auto; border: 1px solid #eee; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; margin: 2px 0; }
dt { font-weight: bold; } dd { margin: 0; font-family: monospace; font-size: 12px; overflow-wrap: anywhere; }
dd dl { border-left: 2px solid #ddd; padding-left: 8px; font-family: sans-serif; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 12px; }
"#;

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if !x.is_finite() => "-".into(),
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

fn status_cell(s: &Status) -> String {
    let class = match s {
        Status::Ok => "ok",
        Status::Unsupported(_) => "unsupported",
        Status::Failed(_) => "failed",
    };
    format!("<td class=\"{class}\">{}</td>", esc(&s.to_string()))
}

/// `batched/100` -> 100; `per-op` -> 1.
fn batch_of(method: &str) -> u64 {
    method.strip_prefix("batched/").and_then(|k| k.parse().ok()).unwrap_or(1)
}

/// The facts every figure carries: unit, method, clock and the subtracted overhead.
pub(crate) fn figure_caption(r: &SummaryRow) -> String {
    let k = batch_of(&r.method);
    let method = if k > 1 {
        format!("{} ({k} operations between one timestamp pair, divided by {k}: steady-state cost per operation, tail averaged away)", r.method)
    } else {
        format!("{} (one timestamp pair around every operation)", r.method)
    };
    let per_op = r.overhead_cycles as f64 / k as f64;
    let overhead = if k > 1 {
        format!(
            "{} cycles per timestamp pair = {per_op:.2} cycles ({}) per operation",
            r.overhead_cycles,
            fmt_ns(cycles_to_ns(per_op, r.tsc_khz))
        )
    } else {
        format!("{} cycles ({}) per sample", r.overhead_cycles, fmt_ns(cycles_to_ns(per_op, r.tsc_khz)))
    };
    format!(
        "<div class=\"caption\"><b>unit</b>: ns, converted from TSC cycles at {} kHz &middot; <b>method</b>: {} &middot; <b>clock</b>: {} &middot; <b>timer overhead subtracted</b>: {}<br>{} samples; p50 {} ns ({} cycles), p99 {} ns, p99.9 {} ns, max {} ns{}{}{}{}</div>",
        r.tsc_khz,
        esc(&method),
        esc(if r.clock.is_empty() { "not recorded" } else { &r.clock }),
        esc(&overhead),
        r.count,
        num(r.p50_ns),
        num(r.p50_cycles),
        num(r.p99_ns),
        num(r.p999_ns),
        num(r.max_ns),
        if r.metrics.is_empty() { String::new() } else { format!("<br><b>metrics</b>: {}", esc(&r.metrics)) },
        if r.notes.is_empty() { String::new() } else { format!("<br><b>notes</b>: {}", esc(&r.notes)) },
        if r.partial.is_empty() { String::new() } else { format!("<br><b>partial</b>: {}", esc(&r.partial)) },
        if r.contention.is_empty() { String::new() } else { format!("<br><b>taken under contention</b>: {}", esc(&r.contention)) },
    )
}

pub(crate) fn header(run: &LoadedRun) -> String {
    let m = &run.manifest;
    let status = match (m.status, m.stop_reason.as_deref()) {
        (RunStatus::Complete, _) => "<span class=\"ok\">complete</span>".to_string(),
        (RunStatus::Partial, Some("running")) => {
            "<span class=\"failed\">partial</span>: the run had not finished when this report was written (still running, or its process died)".into()
        }
        (RunStatus::Partial, Some(r)) => format!("<span class=\"failed\">partial</span>: stopped: {}", esc(r)),
        (RunStatus::Partial, None) => "<span class=\"failed\">partial</span> (no stop reason recorded)".into(),
    };
    let cmdline: Vec<String> = m
        .command_line
        .iter()
        .map(|a| {
            if a.is_empty() || a.contains([' ', '\'', '"', '*']) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.clone()
            }
        })
        .collect();
    let counts = |f: fn(&Status) -> bool| run.rows.iter().filter(|r| f(&r.status)).count();
    format!(
        "<h1>ivbench report: {id}</h1>\n<dl>\n<dt>status</dt><dd>{status}</dd>\n<dt>started</dt><dd>{start}</dd>\n<dt>finished</dt><dd>{end}</dd>\n<dt>command line</dt><dd>{cmd}</dd>\n<dt>kind</dt><dd>{kind}, ivbench {ver}, store schema {schema}</dd>\n<dt>rows</dt><dd>{n} ({ok} ok, {uns} unsupported, {fail} failed)</dd>\n<dt>directory</dt><dd>{dir}</dd>\n</dl>\n<details><summary>configuration that drove the run</summary><pre>{config}</pre></details>\n",
        id = esc(&m.run_id),
        start = esc(&m.started_utc),
        end = esc(m.finished_utc.as_deref().unwrap_or("not finished")),
        cmd = esc(&cmdline.join(" ")),
        kind = esc(&m.kind),
        ver = esc(&m.ivbench_version),
        schema = m.schema_version,
        n = run.rows.len(),
        ok = counts(|s| s.is_ok()),
        uns = counts(|s| matches!(s, Status::Unsupported(_))),
        fail = counts(|s| matches!(s, Status::Failed(_))),
        dir = esc(&run.path.display().to_string()),
        config = esc(&m.config),
    )
}

pub(crate) fn summary_table(run: &LoadedRun) -> String {
    let mut o = String::from("<div class=\"wrap\"><table>\n<tr><th>probe</th><th>params</th><th>method</th><th>status</th><th>count</th><th>min ns</th><th>p50 ns</th><th>p90 ns</th><th>p99 ns</th><th>p99.9 ns</th><th>max ns</th><th>mean ns</th><th>p50 cycles</th><th>p99 cycles</th><th>overhead cycles</th><th>TSC kHz</th><th>clock</th><th>Mpps</th></tr>\n");
    for (i, r) in run.rows.iter().enumerate() {
        let name = if run.histogram(r).is_some() {
            format!("<a href=\"#plot-{i}\">{}</a>", esc(&r.probe))
        } else {
            esc(&r.probe)
        };
        let _ = writeln!(
            o,
            "<tr><td>{name}</td><td>{}</td><td>{}</td>{}<td class=\"n\">{}</td>{}<td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            esc(&r.params),
            esc(&r.method),
            status_cell(&r.status),
            r.count,
            [r.min_ns, r.p50_ns, r.p90_ns, r.p99_ns, r.p999_ns, r.max_ns, r.mean_ns, r.p50_cycles, r.p99_cycles]
                .iter()
                .map(|v| format!("<td class=\"n\">{}</td>", num(*v)))
                .collect::<String>(),
            r.overhead_cycles,
            r.tsc_khz,
            esc(&r.clock),
            num(r.mpps),
        );
    }
    o.push_str("</table></div>\n");
    o
}

pub(crate) fn seed_table(lines: &[SeedLine]) -> String {
    let mut o = String::from(
        "<div class=\"wrap\"><table>\n<tr><th>operation</th><th>probe</th><th>method</th><th>p50 cycles</th><th>p50 ns</th><th>p99 cycles</th><th>p99 ns</th><th>2014 figure (Haswell 3.2 GHz)</th><th>p50 / 2014 (cycles)</th><th>cores needed at 10GbE<br>(p50 / 67.2 ns)</th><th>cores needed at 40GbE<br>(p50 / 16.8 ns)</th></tr>\n",
    );
    for l in lines {
        let seed = match l.seed {
            Some(s) if l.seed_note.is_empty() => esc(&s.label()),
            Some(s) => format!("{}<br><span class=\"small\">{}</span>", esc(&s.label()), esc(l.seed_note)),
            None => "-".into(),
        };
        let _ = write!(o, "<tr><td>{}</td><td>{}</td>", esc(l.operation), esc(l.probe));
        match &l.measured {
            Measured::NotInRun => {
                let _ = write!(o, "<td colspan=\"5\" class=\"small\">not in this run</td><td>{seed}</td><td class=\"n\">-</td><td class=\"n\">-</td><td class=\"n\">-</td>");
            }
            Measured::NotOk(s) => {
                let _ = write!(
                    o,
                    "<td colspan=\"5\" class=\"{}\">{}</td><td>{seed}</td><td class=\"n\">-</td><td class=\"n\">-</td><td class=\"n\">-</td>",
                    if matches!(s, Status::Failed(_)) { "failed" } else { "unsupported" },
                    esc(&s.to_string())
                );
            }
            Measured::Ok { p50_cycles, p99_cycles, p50_ns, p99_ns, tsc_khz, method, params } => {
                let m = if params.is_empty() { method.clone() } else { format!("{method} {{{params}}}") };
                let _ = write!(
                    o,
                    "<td>{}</td><td class=\"n\">{}</td><td class=\"n\" title=\"at {tsc_khz} kHz\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{seed}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
                    esc(&m),
                    num(Some(*p50_cycles)),
                    num(Some(*p50_ns)),
                    num(Some(*p99_cycles)),
                    num(Some(*p99_ns)),
                    l.ratio().map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into()),
                    num(l.cores_needed(BUDGET_10GBE_NS)),
                    num(l.cores_needed(BUDGET_40GBE_NS)),
                );
            }
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</table></div>\n");
    o
}

fn budget_section(run: &LoadedRun) -> String {
    let mut bars = Vec::new();
    let mut not_drawn = Vec::new();
    for (probe, params) in seed::BUDGET_PROBES {
        let Some(r) = seed::pick_row(&run.rows, probe, *params) else { continue };
        let label = match params {
            Some(p) => format!("{probe} {p}"),
            None => probe.to_string(),
        };
        match (&r.status, r.p50_cycles, r.p99_cycles) {
            (Status::Ok, Some(p50), Some(p99)) if r.tsc_khz > 0 => {
                let seed_ns = seed::SEED_ROWS
                    .iter()
                    .find(|s| s.probe == *probe && s.seed_note.is_empty())
                    .and_then(|s| s.seed)
                    .map(|s| s.ns_approx);
                let label = if r.method == "per-op" { label } else { format!("{label} [{}]", r.method) };
                bars.push(BudgetBar {
                    label,
                    p50_ns: cycles_to_ns(p50, r.tsc_khz),
                    p99_ns: cycles_to_ns(p99, r.tsc_khz),
                    seed_ns,
                });
            }
            (s, ..) => not_drawn.push(format!("{label} ({s})")),
        }
    }
    let budgets = [(BUDGET_40GBE_NS, "40GbE: 16.8 ns"), (BUDGET_10GBE_NS, "10GbE: 67.2 ns")];
    let mut o = String::from(
        "<p>Per-packet time budget at 64-byte line rate, from the 2014 talk: <b>67.2 ns</b> at 10GbE and <b>16.8 ns</b> at 40GbE (dashed lines). \
An operation whose bar crosses a line cannot be done once per packet on one core at that rate. Bars: measured p50 (per-op rows where the run has them); triangles: measured p99; circles: the talk's figure.</p>\n",
    );
    match plots::budget_svg(&bars, &budgets, 1200) {
        Ok(svg) => o.push_str(&inline_svg(&svg)),
        Err(e) => {
            let _ = writeln!(o, "<p class=\"small\">chart not drawn: {}</p>", esc(&e));
        }
    }
    let _ = writeln!(o, "<div class=\"caption\"><b>unit</b>: ns per operation (each row converted at its own TSC rate), log scale &middot; <b>method</b>: per-op where present, otherwise marked in the label &middot; <b>overhead</b>: each row's timer overhead is already subtracted (see its caption below)</div>");
    if !not_drawn.is_empty() {
        let _ = writeln!(o, "<p class=\"small\">Not drawn (no ok row): {}</p>", esc(&not_drawn.join("; ")));
    }
    o
}

fn plots_section(run: &LoadedRun) -> String {
    let mut o = String::new();
    let mut any = false;
    for (i, r) in run.rows.iter().enumerate() {
        let Some(h) = run.histogram(r) else {
            if r.status.is_ok() {
                let _ = writeln!(
                    o,
                    "<h3>{}</h3><p class=\"small\">ok, but no histogram is stored for this point: summary figures only.</p>",
                    esc(&r.key())
                );
            }
            continue;
        };
        any = true;
        let _ = writeln!(
            o,
            "<section id=\"plot-{i}\"><h3>{}</h3>{}",
            esc(&r.key()),
            if r.status.is_ok() {
                String::new()
            } else {
                format!("<p>{}</p>", status_cell(&r.status).replace("<td", "<span").replace("</td>", "</span>"))
            }
        );
        o.push_str(&figure_caption(r));
        o.push_str("<div class=\"plots\">");
        for svg in [plots::histogram_svg(h, r.tsc_khz, (660, 360)), plots::percentile_svg(h, r.tsc_khz, (660, 360))] {
            match svg {
                Ok(s) => o.push_str(&inline_svg(&s)),
                Err(e) => {
                    let _ = write!(o, "<p class=\"small\">plot not drawn: {}</p>", esc(&e));
                }
            }
        }
        o.push_str("</div></section>\n");
    }
    if !any {
        o.push_str("<p>No point of this run stored a histogram.</p>\n");
    }
    o
}

/// Arbitrary JSON as nested definition lists: the fingerprint's shape belongs to whichever
/// ivbench wrote the run, so nothing here assumes a field.
pub fn json_html(v: &Value) -> String {
    match v {
        Value::Object(map) if map.is_empty() => "<i>(empty)</i>".into(),
        Value::Object(map) => {
            let mut o = String::from("<dl>");
            for (k, v) in map {
                let _ = write!(o, "<dt>{}</dt><dd>{}</dd>", esc(k), json_html(v));
            }
            o.push_str("</dl>");
            o
        }
        Value::Array(a) if a.is_empty() => "<i>(none)</i>".into(),
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            esc(&a.iter().map(scalar).collect::<Vec<_>>().join(", "))
        }
        Value::Array(a) => {
            format!("<ol>{}</ol>", a.iter().map(|x| format!("<li>{}</li>", json_html(x))).collect::<String>())
        }
        other => esc(&scalar(other)),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn page(run: &LoadedRun) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ivbench report {}</title><style>{CSS}</style></head><body>\n",
        esc(&run.manifest.run_id)
    );
    o.push_str(&header(run));
    o.push_str("<p>Sections: <a href=\"#budget\">seed budget</a> &middot; <a href=\"#seed\">seed table</a> &middot; <a href=\"#throughput\">throughput</a> &middot; <a href=\"#summary\">summary</a> &middot; <a href=\"#plots\">histograms and percentiles</a> &middot; <a href=\"#env\">environment</a></p>\n");
    o.push_str("<h2 id=\"budget\">Seed budget: measured latency against the per-packet budget</h2>\n");
    o.push_str(&budget_section(run));
    o.push_str("<h2 id=\"seed\">Seed table: this run beside the 2014 figures</h2>\n");
    o.push_str("<p class=\"small\">2014 figures: TSC cycles of a round trip on Haswell 3.2 GHz (Intel internal measurements quoted in the talk), with the talk's ns rounding. The ratio divides this run's p50 cycles by the talk's cycles (the middle of a range). Cores needed: p50 ns over the per-packet budget, as the talk's &quot;400/67.2 = 5.9&quot;.</p>\n");
    o.push_str(&seed_table(&seed::seed_table(&run.rows)));
    o.push_str("<h2 id=\"throughput\">Throughput: packets per second against line rate</h2>\n");
    o.push_str(&super::throughput::section(run));
    o.push_str("<h2 id=\"summary\">Summary: every row of summary.csv</h2>\n");
    o.push_str(&summary_table(run));
    o.push_str("<h2 id=\"plots\">Histograms and percentiles</h2>\n<p class=\"small\">Left: how many samples fell in each log-spaced latency bin (samples at 0 are counted in the first bin). Right: latency at each percentile; the curve ends at the last percentile the sample count resolves (1 - 1/count), where the maximum is drawn.</p>\n");
    o.push_str(&plots_section(run));
    o.push_str("<h2 id=\"env\">Environment</h2>\n<h3>fingerprint</h3>\n");
    o.push_str(&json_html(&run.manifest.fingerprint));
    o.push_str("\n<h3>discovered while running</h3>\n");
    if run.manifest.discovered.is_empty() {
        o.push_str("<p class=\"small\">nothing recorded</p>\n");
    } else {
        let map: serde_json::Map<String, Value> =
            run.manifest.discovered.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        o.push_str(&json_html(&Value::Object(map)));
    }
    o.push_str("\n</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_attributes() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn json_renders_nested_and_escaped() {
        let v = serde_json::json!({"cpu": {"flags": {"vmx": false}, "brand": "<b>x</b>"}, "list": [1, 2], "objs": [{"a": null}]});
        let h = json_html(&v);
        assert!(h.contains("<dt>cpu</dt><dd><dl><dt>brand</dt><dd>&lt;b&gt;x&lt;/b&gt;</dd>"), "{h}");
        assert!(h.contains("<dd>1, 2</dd>"));
        assert!(h.contains("<ol><li><dl><dt>a</dt><dd>null</dd></dl></li></ol>"));
    }

    #[test]
    fn batched_captions_divide_the_overhead() {
        let mut r = SummaryRow::without_samples("p", "", Status::Ok, "batched/100");
        r.overhead_cycles = 50;
        r.tsc_khz = 1_000_000;
        let c = figure_caption(&r);
        assert!(c.contains("50 cycles per timestamp pair = 0.50 cycles"), "{c}");
        r.method = "per-op".into();
        assert!(figure_caption(&r).contains("50 cycles (50 ns) per sample"));
    }
}
