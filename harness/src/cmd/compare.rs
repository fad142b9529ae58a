//! `ivbench compare BASE NEW`: which points got slower, judged against the runs' own noise.
//!
//! Rows are matched by `SummaryRow::key()` (probe + params + method). For each matched ok
//! pair, p50 and p99 are compared as a change factor `NEW/BASE` of their ns figures (ns,
//! not cycles: two runs may come from machines with different TSC rates).
//!
//! Spread rule. A change is flagged only when its factor exceeds BOTH `1 + threshold` AND
//! the noise factor of the two runs, taken from their stored histograms:
//! - p50: noise = the larger of the two runs' interquartile ratios p75/p25. Half of each
//!   run's samples lie within that factor, so a median that moved less than it stayed
//!   inside the body of the distribution.
//! - p99: noise = the larger of the two runs' tail ratios p99.9/p90 (wider than the
//!   interquartile one, because a tail quantile moves between runs with every preemption
//!   or interrupt that happens to land in it).
//!
//! Slower beyond both limits is a `regression`, faster beyond both (factor BASE/NEW) an
//! `improvement`, anything else `same (within noise)`. A row is a regression when p50 or
//! p99 is one, an improvement when one of them improved and neither regressed. A point
//! without a stored histogram falls back to the threshold alone, and says so. Ratios are
//! factors rather than differences so that one rule serves 0.5 ns loops and 1 ms wake-ups.
//!
//! Throughput (rows with an `mpps` figure, path.*) is higher-is-better under the same rule:
//! the factor is BASE/NEW of the Mpps, the noise the larger of the two trials' own spread
//! (`mpps_spread`: p75/p25 of the rates of equal intervals of the trial) and, against a
//! baseline, the class's run-to-run Mpps spread (`baseline spread`), so a drop in
//! Mpps beyond both threshold and noise is a `regression`. A throughput row offered at
//! `rate=max` is judged on its Mpps alone: its one-way latency is the queueing delay of a
//! path kept full, which moves with every scheduling hiccup of a shared machine (and is
//! already the inverse of the drain rate), so it is shown but not judged.
//!
//! The spread is within-run; it cannot see a machine that was busier during one run than
//! the other. So compare also warns when the fingerprints (CPU, kernel, KVM backend) or TSC
//! rates differ, and when the timer's own cost (`host.timer.overhead`, lfence;rdtsc) moved:
//! that figure does not depend on any probe's code, so when it moves the machine did.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;

use super::UsageError;
use crate::machine::MachineClass;
use crate::store::baseline::{self, Spread};
use crate::store::run_dir::{load_run, resolve_run};
use crate::store::{LoadedRun, SummaryRow};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Bmf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Regression,
    Improvement,
    Same,
    MissingInBase,
    MissingInNew,
    /// ok in the base, not ok (failed, unsupported) in the new run: coverage was lost.
    Lost,
    NotComparable,
}

impl Verdict {
    /// Whether this verdict fails the gate (exit 1): slower, gone, or broken.
    pub fn fails_gate(self) -> bool {
        matches!(self, Verdict::Regression | Verdict::MissingInNew | Verdict::Lost)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Regression => "regression",
            Verdict::Improvement => "improvement",
            Verdict::Same => "same (within noise)",
            Verdict::MissingInBase => "missing in base",
            Verdict::MissingInNew => "missing in new",
            Verdict::Lost => "lost (ok in base, not in new)",
            Verdict::NotComparable => "not comparable",
        })
    }
}

impl Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One side of a matched row, as the JSON output shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    pub status: String,
    pub count: u64,
    pub min_ns: Option<f64>,
    pub p50_ns: Option<f64>,
    pub p99_ns: Option<f64>,
    pub tsc_khz: u64,
    /// p75/p25 of the stored histogram, when there is one.
    pub iqr_factor: Option<f64>,
    /// p99.9/p90 of the stored histogram, when there is one.
    pub tail_factor: Option<f64>,
    /// Throughput rows: received Mpps and the trial's own spread (p75/p25 of interval rates).
    pub mpps: Option<f64>,
    pub mpps_spread: Option<f64>,
}

/// One percentile compared.
#[derive(Clone, Debug, Serialize)]
pub struct MetricCmp {
    pub base_ns: f64,
    pub new_ns: f64,
    /// NEW / BASE.
    pub ratio: f64,
    /// The factor a change had to exceed besides the threshold; None (JSON null): no
    /// histogram, or unbounded because a lower quantile was 0 (the row's note says which).
    pub noise_factor: Option<f64>,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, Serialize)]
pub struct RowCmp {
    pub key: String,
    pub verdict: Verdict,
    /// Why the verdict is what it is, when the figures alone do not say.
    pub note: String,
    pub base: Option<Side>,
    pub new: Option<Side>,
    pub p50: Option<MetricCmp>,
    pub p99: Option<MetricCmp>,
    /// Throughput, higher is better: `base_ns`/`new_ns` hold Mpps here, `ratio` NEW/BASE.
    pub mpps: Option<MetricCmp>,
}

/// A ratio of two quantiles of one histogram; infinite when the lower one is 0 (a
/// distribution that reaches 0 has no usable relative spread, so nothing can be flagged).
fn quantile_factor(h: &Histogram<u64>, lo: f64, hi: f64) -> f64 {
    let (a, b) = (h.value_at_quantile(lo) as f64, h.value_at_quantile(hi) as f64);
    if a <= 0.0 {
        f64::INFINITY
    } else {
        b / a
    }
}

fn side(run: &LoadedRun, r: &SummaryRow) -> Side {
    let h = run.histogram(r).filter(|h| !h.is_empty());
    Side {
        status: r.status.to_string(),
        count: r.count,
        min_ns: r.min_ns,
        p50_ns: r.p50_ns,
        p99_ns: r.p99_ns,
        tsc_khz: r.tsc_khz,
        iqr_factor: h.map(|h| quantile_factor(h, 0.25, 0.75)),
        tail_factor: h.map(|h| quantile_factor(h, 0.90, 0.999)),
        mpps: r.mpps,
        mpps_spread: r.metric("mpps_spread"),
    }
}

/// Throughput, higher is better: the same rule as a latency with the sides swapped (a
/// drop from BASE to NEW is what a rise is for a latency).
fn rate_metric(base: Option<f64>, new: Option<f64>, noise: Option<f64>, threshold: f64) -> Option<MetricCmp> {
    let (b, n) = (base?, new?);
    if !b.is_finite() || !n.is_finite() {
        return None;
    }
    let ratio = if b > 0.0 { n / b } else { f64::INFINITY };
    Some(MetricCmp { base_ns: b, new_ns: n, ratio, noise_factor: noise, verdict: judge(n, b, noise, threshold) })
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        _ => None,
    }
}

/// The decision for one percentile (see the module doc).
pub fn judge(base_ns: f64, new_ns: f64, noise_factor: Option<f64>, threshold: f64) -> Verdict {
    if base_ns == new_ns {
        return Verdict::Same;
    }
    let limit = (1.0 + threshold).max(noise_factor.unwrap_or(1.0));
    if base_ns <= 0.0 {
        // From exactly 0 any growth is an unbounded factor; only noise can excuse it.
        return if noise_factor.is_some_and(f64::is_infinite) { Verdict::Same } else { Verdict::Regression };
    }
    if new_ns <= 0.0 {
        return if noise_factor.is_some_and(f64::is_infinite) { Verdict::Same } else { Verdict::Improvement };
    }
    let ratio = new_ns / base_ns;
    if ratio > limit {
        Verdict::Regression
    } else if 1.0 / ratio > limit {
        Verdict::Improvement
    } else {
        Verdict::Same
    }
}

fn metric(base: Option<f64>, new: Option<f64>, noise: Option<f64>, threshold: f64) -> Option<MetricCmp> {
    let (b, n) = (base?, new?);
    if !b.is_finite() || !n.is_finite() {
        return None;
    }
    Some(MetricCmp { base_ns: b, new_ns: n, ratio: n / b, noise_factor: noise, verdict: judge(b, n, noise, threshold) })
}

/// Keys that occur more than once in a run (written by an ivbench that did not tell
/// repeated sweep entries apart): their rows cannot be matched without guessing.
pub fn duplicate_keys(run: &LoadedRun) -> Vec<String> {
    let mut seen = BTreeMap::new();
    for r in &run.rows {
        *seen.entry(r.key()).or_insert(0usize) += 1;
    }
    seen.into_iter().filter(|(_, n)| *n > 1).map(|(k, _)| k).collect()
}

/// Compares every row of two runs (see the module doc). `spread`, the run-to-run spread
/// measured on the base's machine class, widens each row's noise factor to at least what
/// repeated unchanged runs showed.
pub fn compare_rows(base: &LoadedRun, new: &LoadedRun, threshold: f64, spread: Option<&Spread>) -> Vec<RowCmp> {
    let index = |run: &LoadedRun| -> BTreeMap<String, usize> {
        run.rows.iter().enumerate().map(|(i, r)| (r.key(), i)).collect()
    };
    let (bdup, ndup) = (duplicate_keys(base), duplicate_keys(new));
    let (bi, ni) = (index(base), index(new));
    let mut order: Vec<(String, Option<usize>, Option<usize>)> = Vec::new();
    for (i, r) in new.rows.iter().enumerate() {
        let k = r.key();
        if ni[&k] == i {
            order.push((k.clone(), bi.get(&k).copied(), Some(i)));
        }
    }
    for (i, r) in base.rows.iter().enumerate() {
        let k = r.key();
        if bi[&k] == i && !ni.contains_key(&k) {
            order.push((k, Some(i), None));
        }
    }
    order
        .into_iter()
        .map(|(key, b, n)| {
            let bs = b.map(|i| side(base, &base.rows[i]));
            let ns = n.map(|i| side(new, &new.rows[i]));
            let (br, nr) = (b.map(|i| &base.rows[i]), n.map(|i| &new.rows[i]));
            let mut row = RowCmp { key, verdict: Verdict::Same, note: String::new(), base: bs.clone(), new: ns.clone(), p50: None, p99: None, mpps: None };
            if bdup.contains(&row.key) || ndup.contains(&row.key) {
                row.verdict = Verdict::NotComparable;
                row.note = "this key appears more than once in a run: rows cannot be matched".into();
                return row;
            }
            match (br, nr, bs, ns) {
                (None, _, _, _) => row.verdict = Verdict::MissingInBase,
                (Some(br), None, _, _) => {
                    row.verdict = if br.status.is_ok() { Verdict::MissingInNew } else { Verdict::NotComparable };
                    if !br.status.is_ok() {
                        row.note = format!("missing in new; base: {}", br.status);
                    }
                }
                (Some(br), Some(nr), Some(bs), Some(ns)) => {
                    if br.status.is_ok() && !nr.status.is_ok() {
                        row.verdict = Verdict::Lost;
                        row.note = format!("new: {}", nr.status);
                        return row;
                    }
                    if !br.status.is_ok() || !nr.status.is_ok() {
                        row.verdict = Verdict::NotComparable;
                        row.note = if br.status == nr.status {
                            format!("{} on both sides", br.status)
                        } else {
                            format!("base: {}; new: {}", br.status, nr.status)
                        };
                        return row;
                    }
                    let between = spread.and_then(|s| s.for_key(&row.key));
                    let widen = |within: Option<f64>, run_to_run: Option<f64>| match (within, run_to_run) {
                        (Some(w), Some(r)) => Some(w.max(r)),
                        (w, r) => w.or(r),
                    };
                    row.p50 = metric(br.p50_ns, nr.p50_ns, widen(max_opt(bs.iqr_factor, ns.iqr_factor), between.map(|b| b.p50)), threshold);
                    row.p99 = metric(br.p99_ns, nr.p99_ns, widen(max_opt(bs.tail_factor, ns.tail_factor), between.map(|b| b.p99)), threshold);
                    // Throughput noise: the larger trial spread; unknown on either side means
                    // the threshold alone (as for a row without a histogram).
                    let rate_spread = max_opt(bs.mpps_spread, ns.mpps_spread);
                    row.mpps = rate_metric(br.mpps, nr.mpps, widen(rate_spread, between.and_then(|b| b.mpps)), threshold);
                    let saturated = saturated(nr) && saturated(br);
                    let verdicts = judged(&row, saturated);
                    row.verdict = if verdicts.is_empty() {
                        row.note = "ok on both sides but without latency or throughput figures".into();
                        Verdict::NotComparable
                    } else if verdicts.contains(&Verdict::Regression) {
                        Verdict::Regression
                    } else if verdicts.contains(&Verdict::Improvement) {
                        Verdict::Improvement
                    } else {
                        Verdict::Same
                    };
                    if saturated && row.mpps.is_some() {
                        row.note = "offered at rate=max: its latency is the queueing delay of a full path, shown but \
                                    not judged; Mpps decides"
                            .into();
                    } else if row.mpps.is_some() && row.p50.is_none() {
                        if rate_spread.is_none() {
                            row.note = "throughput without an interval spread on one side: judged by the threshold alone".into();
                        }
                    } else if bs.iqr_factor.is_none() || ns.iqr_factor.is_none() {
                        row.note = "no stored histogram on one side: judged by the threshold alone".into();
                    } else if [&row.p50, &row.p99].iter().any(|m| m.as_ref().is_some_and(|m| m.noise_factor.is_some_and(f64::is_infinite))) {
                        // JSON has no infinity: the factor prints as null, this says why.
                        row.note = "a lower quantile is 0 ns on one side: relative spread unbounded, that percentile cannot be flagged".into();
                    }
                }
                _ => unreachable!("sides exist exactly when rows do"),
            }
            row
        })
        .collect()
}

/// Bencher Metric Format for the NEW run's ok rows: `{key: {"latency": {"value": p50_ns,
/// "lower_value": min_ns, "upper_value": p99_ns}, "throughput": {"value": packets per
/// second received}}}` (throughput only on rows that have it, latency only on rows with
/// latency figures).
pub fn bmf(new: &LoadedRun) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for r in new.rows.iter().filter(|r| r.status.is_ok()) {
        let mut measures = serde_json::Map::new();
        if let (Some(p50), Some(min), Some(p99)) = (r.p50_ns, r.min_ns, r.p99_ns) {
            if p50.is_finite() && min.is_finite() && p99.is_finite() {
                measures.insert("latency".into(), json!({ "value": p50, "lower_value": min, "upper_value": p99 }));
            }
        }
        if let Some(m) = r.mpps.filter(|m| m.is_finite()) {
            measures.insert("throughput".into(), json!({ "value": m * 1e6 }));
        }
        if !measures.is_empty() {
            out.insert(r.key(), serde_json::Value::Object(measures));
        }
    }
    serde_json::Value::Object(out)
}

fn load(which: &str, run: &str, runs_root: &Path) -> Result<LoadedRun, UsageError> {
    let dir: PathBuf = resolve_run(run, runs_root).map_err(|e| UsageError(format!("{which} run: {e:#}")))?;
    load_run(&dir).map_err(|e| UsageError(format!("{which} run {}: {e:#}", dir.display())))
}

fn num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn factor(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.is_infinite() => "inf".into(),
        Some(x) => format!("x{x:.2}"),
    }
}

fn table(rows: &[RowCmp], base: &LoadedRun, new: &LoadedRun, threshold: f64) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "key",
        "verdict",
        "p50 base ns",
        "p50 new ns",
        "p50 new/base",
        "p50 noise",
        "p99 base ns",
        "p99 new ns",
        "p99 new/base",
        "p99 noise",
        "Mpps base",
        "Mpps new",
        "Mpps new/base",
        "note",
    ]);
    for r in rows {
        let mut cells = vec![Cell::new(&r.key), Cell::new(r.verdict.to_string())];
        for m in [&r.p50, &r.p99] {
            match m {
                Some(m) => cells.extend([
                    Cell::new(num(m.base_ns)).set_alignment(CellAlignment::Right),
                    Cell::new(num(m.new_ns)).set_alignment(CellAlignment::Right),
                    Cell::new(format!("{:.2}", m.ratio)).set_alignment(CellAlignment::Right),
                    Cell::new(factor(m.noise_factor)).set_alignment(CellAlignment::Right),
                ]),
                None => cells.extend((0..4).map(|_| Cell::new("-").set_alignment(CellAlignment::Right))),
            }
        }
        match &r.mpps {
            Some(m) => cells.extend([
                Cell::new(num(m.base_ns)).set_alignment(CellAlignment::Right),
                Cell::new(num(m.new_ns)).set_alignment(CellAlignment::Right),
                Cell::new(format!("{:.2}", m.ratio)).set_alignment(CellAlignment::Right),
            ]),
            None => cells.extend((0..3).map(|_| Cell::new("-").set_alignment(CellAlignment::Right))),
        }
        // The terminal gets the gist; --format json carries the whole reason.
        let note = if r.note.chars().count() > 80 {
            format!("{}...", r.note.chars().take(77).collect::<String>())
        } else {
            r.note.clone()
        };
        cells.push(Cell::new(note));
        t.add_row(cells);
    }
    let count = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
    format!(
        "base {} -> new {}\n{t}\n{} regression(s), {} lost, {} improvement(s), {} same, {} not comparable, {} missing in base, {} missing in new \
         (threshold {:.0}%; flagged only beyond the larger of threshold and noise: p50 noise = max p75/p25, p99 noise = max p99.9/p90 of the two runs; Mpps: higher is better, noise = max mpps_spread)",
        base.manifest.run_id,
        new.manifest.run_id,
        count(Verdict::Regression),
        count(Verdict::Lost),
        count(Verdict::Improvement),
        count(Verdict::Same),
        count(Verdict::NotComparable),
        count(Verdict::MissingInBase),
        count(Verdict::MissingInNew),
        threshold * 100.0
    )
}

/// Reasons the verdicts may reflect the machine rather than the code: flagged changes are
/// only as meaningful as the two runs are alike.
pub fn warnings(base: &LoadedRun, new: &LoadedRun, rows: &[RowCmp]) -> Vec<String> {
    let mut w = Vec::new();
    for (what, ptr) in [("CPU", "/cpu/brand"), ("kernel", "/host/kernel_release"), ("KVM backend", "/kvm/backend")] {
        let (a, b) = (base.manifest.fingerprint.pointer(ptr), new.manifest.fingerprint.pointer(ptr));
        if let (Some(a), Some(b)) = (a, b) {
            if a != b {
                w.push(format!("{what} differs: base {a}, new {b}"));
            }
        }
    }
    let khz = |run: &LoadedRun| run.rows.iter().map(|r| r.tsc_khz).find(|k| *k > 0);
    if let (Some(a), Some(b)) = (khz(base), khz(new)) {
        if a != b {
            w.push(format!(
                "TSC rate differs (base {a} kHz, new {b} kHz): ns figures are compared, cycle counts would not be"
            ));
        }
    }
    // The timer's own cost does not depend on any probe's code: when it moved, the machine did.
    for r in rows.iter().filter(|r| r.key.starts_with("host.timer.overhead {clock=lfence-rdtsc}")) {
        if let (Some(m), Verdict::Regression | Verdict::Improvement) = (&r.p50, r.verdict) {
            w.push(format!(
                "the timer's own cost moved x{:.2} ({}): the machine's state changed between the runs (load, frequency, placement), and other flags may share that cause",
                m.ratio, r.key
            ));
        }
    }
    w
}

fn run_info(r: &LoadedRun) -> serde_json::Value {
    json!({ "run_id": r.manifest.run_id, "path": r.path.display().to_string(), "status": r.manifest.status, "stop_reason": r.manifest.stop_reason })
}

/// Where the base of a comparison comes from.
pub enum BaseSpec<'a> {
    /// A run named on the command line (directory, run id, `latest`).
    Run(&'a str),
    /// The committed baseline of this name for NEW's own machine class.
    Baseline { root: &'a Path, name: &'a str },
}

pub struct Options {
    pub format: Format,
    pub threshold: f64,
    /// Compare runs of different machine classes anyway.
    pub force: bool,
}

/// The base run for NEW and the spread measured on its class, or None (with the reason)
/// when NEW's class has no baseline of that name.
pub fn find_base(
    spec: &BaseSpec<'_>,
    new: &LoadedRun,
    runs_root: &Path,
) -> Result<Result<(LoadedRun, Option<Spread>), String>, UsageError> {
    match spec {
        BaseSpec::Run(r) => Ok(Ok((load("base", r, runs_root)?, None))),
        BaseSpec::Baseline { root, name } => {
            baseline::check_name(name).map_err(|e| UsageError(e.to_string()))?;
            let class = MachineClass::of(&new.manifest);
            let dir = baseline::dir_for(root, &class, name);
            if !dir.join("manifest.json").is_file() {
                return Ok(Err(format!(
                    "no `{name}` baseline for machine class {class} (looked in {}): nothing was compared. Make one with `ivbench baseline update RUN --name {name}`",
                    dir.display()
                )));
            }
            let base = load_run(&dir).map_err(|e| UsageError(format!("baseline {}: {e:#}", dir.display())))?;
            let spread = Spread::read(&dir)
                .map_err(|e| UsageError(format!("{e:#}")))?
                .unwrap_or_else(|| Spread::unmeasured(&class));
            Ok(Ok((base, Some(spread))))
        }
    }
}

/// What a comparison that did not happen prints: JSON says why; BMF, being about the new
/// run alone, is still the new run's figures.
fn not_compared(format: Format, new: &LoadedRun, why: &str) -> anyhow::Result<()> {
    match format {
        Format::Table => {}
        Format::Json => outln!("{}", serde_json::to_string_pretty(&json!({"compared": false, "reason": why}))?),
        Format::Bmf => outln!("{}", serde_json::to_string_pretty(&bmf(new))?),
    }
    Ok(())
}

pub fn compare(spec: BaseSpec<'_>, new: &str, runs_root: &Path, opts: Options) -> anyhow::Result<u8> {
    let (format, threshold) = (opts.format, opts.threshold);
    if !(threshold.is_finite() && threshold >= 0.0) {
        return Err(
            UsageError(format!("--threshold must be a non-negative fraction (0.10 = 10%), got {threshold}")).into()
        );
    }
    let n = load("new", new, runs_root)?;
    let (b, spread) = match find_base(&spec, &n, runs_root)? {
        Ok(found) => found,
        Err(why) => {
            // Loud, and not a failure: a machine class nobody measured yet has no gate.
            errln!("ivbench: NOTE: {why}");
            not_compared(format, &n, &why)?;
            return Ok(0);
        }
    };
    let (bc, nc) = (MachineClass::of(&b.manifest), MachineClass::of(&n.manifest));
    if bc != nc && !opts.force {
        let why = format!("not comparable: machine class differs (base {bc}, new {nc}); figures of another CPU or backend are not regressions. --force compares anyway");
        errln!("ivbench: NOTE: {why}");
        not_compared(format, &n, &why)?;
        return Ok(0);
    }
    let rows = compare_rows(&b, &n, threshold, spread.as_ref());
    let regressions = rows.iter().filter(|r| r.verdict == Verdict::Regression).count();
    let failing = rows.iter().filter(|r| r.verdict.fails_gate()).count();
    let mut warns = warnings(&b, &n, &rows);
    if bc != nc {
        warns.push(format!("machine classes differ (base {bc}, new {nc}), compared because --force was given"));
    }
    match &spread {
        Some(s) if s.runs.is_empty() => warns.push(format!(
            "this baseline has no measured run-to-run spread (spread.json): noise includes the pool's documented floor, p50 x{} and p99 x{}",
            baseline::UNMEASURED.p50,
            baseline::UNMEASURED.p99
        )),
        Some(s) => warns.push(format!("noise includes the run-to-run spread of {} repeated runs on {} (spread.json)", s.runs.len(), s.class)),
        None => {}
    }
    for (which, run) in [("base", &b), ("new", &n)] {
        warns.extend(run.problems.iter().map(|p| format!("{which} run: {p}")));
        if run.manifest.status != crate::store::RunStatus::Complete {
            warns.push(format!(
                "{which} run {} is partial: {}",
                run.manifest.run_id,
                run.manifest.stop_reason.as_deref().unwrap_or("no reason recorded")
            ));
        }
    }
    if n.rows.iter().all(|r| !r.status.is_ok()) {
        warns.push(format!("new run {} has no ok row: nothing in it was measured", n.manifest.run_id));
    }
    match format {
        Format::Table => {
            outln!("{}", table(&rows, &b, &n, threshold));
            for w in &warns {
                outln!("warning: {w}");
            }
        }
        Format::Json => {
            let counts: BTreeMap<String, usize> = rows.iter().fold(BTreeMap::new(), |mut m, r| {
                *m.entry(r.verdict.to_string()).or_insert(0) += 1;
                m
            });
            let doc = json!({
                "compared": true,
                "machine_class": nc.name(),
                "base": run_info(&b),
                "new": run_info(&n),
                "threshold": threshold,
                "rule": "flag when NEW/BASE (or BASE/NEW) exceeds both 1+threshold and the noise factor: p50 noise = max(p75/p25) of the two runs, p99 noise = max(p99.9/p90); from the stored histograms; throughput (mpps, higher is better): BASE/NEW against 1+threshold and the larger mpps_spread (p75/p25 of interval rates)",
                "regressions": regressions,
                "failing": failing,
                "counts": counts,
                "warnings": warns,
                "rows": rows,
            });
            outln!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Bmf => {
            // stdout is the BMF document alone; the warnings go where a CI log shows them.
            for w in &warns {
                errln!("ivbench: warning: {w}");
            }
            outln!("{}", serde_json::to_string_pretty(&bmf(&n))?)
        }
    }
    // A new run with nothing ok fails even against a base where nothing was ok either.
    let empty_new = n.rows.iter().all(|r| !r.status.is_ok());
    Ok(if failing > 0 || empty_new { 1 } else { 0 })
}

/// Whether a row is a throughput trial offered as fast as the generator could (`rate=max`).
fn saturated(r: &SummaryRow) -> bool {
    r.mpps.is_some() && r.params.split(',').any(|kv| kv == "rate=max")
}

/// The verdicts that decide a row: p50, p99 and Mpps, or Mpps alone for a saturated trial.
fn judged(row: &RowCmp, saturated: bool) -> Vec<Verdict> {
    let figures = if saturated { vec![&row.mpps] } else { vec![&row.p50, &row.p99, &row.mpps] };
    figures.into_iter().filter_map(|m| m.as_ref().map(|m| m.verdict)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_must_beat_threshold_and_noise() {
        // Tight distribution: the threshold decides.
        assert_eq!(judge(100.0, 200.0, Some(1.02), 0.10), Verdict::Regression);
        assert_eq!(judge(100.0, 105.0, Some(1.02), 0.10), Verdict::Same);
        assert_eq!(judge(200.0, 100.0, Some(1.02), 0.10), Verdict::Improvement);
        // Wide distribution: a doubling inside a 3x interquartile range is noise.
        assert_eq!(judge(100.0, 200.0, Some(3.0), 0.10), Verdict::Same);
        assert_eq!(judge(100.0, 400.0, Some(3.0), 0.10), Verdict::Regression);
        // No histogram: threshold alone.
        assert_eq!(judge(100.0, 120.0, None, 0.10), Verdict::Regression);
        assert_eq!(judge(0.0, 0.0, Some(f64::INFINITY), 0.10), Verdict::Same);
        assert_eq!(judge(0.0, 5.0, Some(f64::INFINITY), 0.10), Verdict::Same);
        assert_eq!(judge(0.0, 5.0, Some(1.1), 0.10), Verdict::Regression);
    }

    #[test]
    fn throughput_is_higher_is_better_under_the_same_rule() {
        let v = |b, n, noise| rate_metric(Some(b), Some(n), noise, 0.10).unwrap().verdict;
        assert_eq!(v(10.0, 5.0, Some(1.05)), Verdict::Regression);
        assert_eq!(v(10.0, 20.0, Some(1.05)), Verdict::Improvement);
        assert_eq!(v(10.0, 9.5, Some(1.05)), Verdict::Same);
        assert_eq!(v(10.0, 7.0, Some(1.5)), Verdict::Same, "a drop inside the trials' own spread");
        assert_eq!(v(10.0, 8.5, None), Verdict::Regression, "threshold alone");
        assert!((rate_metric(Some(10.0), Some(5.0), None, 0.1).unwrap().ratio - 0.5).abs() < 1e-12);
        assert!(rate_metric(None, Some(5.0), None, 0.1).is_none());
    }

    #[test]
    fn a_saturated_trial_is_judged_on_its_rate_alone() {
        use crate::store::Status;
        let mut r = SummaryRow::without_samples("path.a", "batch=32,rate=max,size=64", Status::Ok, "per-op");
        assert!(!saturated(&r), "no Mpps: not a throughput row");
        r.mpps = Some(10.0);
        assert!(saturated(&r));
        r.params = "batch=32,rate=0.5,size=64".into();
        assert!(!saturated(&r), "a paced trial's latency means something");
        let slower = rate_metric(Some(1.0), Some(5.0), None, 0.1).unwrap(); // p50 5x: a regression
        let same_rate = rate_metric(Some(10.0), Some(10.0), Some(1.05), 0.1).unwrap();
        let mut row = RowCmp {
            key: Default::default(),
            verdict: Verdict::Same,
            note: String::new(),
            base: Default::default(),
            new: Default::default(),
            p50: Some(MetricCmp { verdict: Verdict::Regression, ..slower }),
            p99: None,
            mpps: Some(same_rate),
        };
        assert!(judged(&row, false).contains(&Verdict::Regression));
        assert_eq!(judged(&row, true), vec![Verdict::Same]);
        row.mpps = None;
        assert!(judged(&row, true).is_empty());
    }

    #[test]
    fn quantile_factors_come_from_the_histogram() {
        let mut h = crate::stats::new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 100).unwrap();
        }
        let iqr = quantile_factor(&h, 0.25, 0.75);
        assert!((iqr - 3.0).abs() < 0.01, "{iqr}");
        let mut z = crate::stats::new_histogram();
        z.record(0).unwrap();
        z.record(10).unwrap();
        assert!(quantile_factor(&z, 0.25, 0.75).is_infinite());
    }
}
