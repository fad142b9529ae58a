//! `ivbench gate NEW`: the regression gate CI enforces on shared, noisy machines.
//!
//! NEW is compared with the baseline of its own machine class (compare's rule, with the
//! class's measured run-to-run spread in the noise). A row flagged slower is not yet a
//! regression: its point is measured again `--remeasure` times, each time in a run of its
//! own (kept in the results directory, like every trial), and it counts only when the
//! median of those re-measurements is still beyond the rule. Rows lost or missing in NEW
//! fail at once. A class without a baseline passes, loudly.

use std::path::Path;
use std::time::Duration;

use probe_api::{Budget, Method, Point, StopFlag};

use super::compare::{self, judge, BaseSpec, Verdict};
use super::execute::execute;
use super::UsageError;
use crate::config::Job;
use crate::registry;
use crate::store::run_dir::{load_run, resolve_run};
use crate::store::{LoadedRun, SummaryRow};

pub struct GateArgs<'a> {
    pub new: &'a str,
    pub runs_root: &'a Path,
    pub baselines: &'a Path,
    pub name: &'a str,
    pub threshold: f64,
    pub remeasure: u32,
}

/// `per-op` or `batched/K` back into a method.
pub fn parse_method(label: &str) -> Option<Method> {
    if label == "per-op" {
        return Some(Method::PerOp);
    }
    let batch = label.strip_prefix("batched/")?.parse().ok().filter(|&b| b > 0)?;
    Some(Method::Batched { batch })
}

/// The CPUs a row was measured on: its variant's `cpus=a+b`, else the run's pinning.
fn cpus_of(row: &SummaryRow, run: &LoadedRun) -> Vec<usize> {
    if let Some(list) = row.variant.split(',').find_map(|v| v.strip_prefix("cpus=")) {
        let cpus: Vec<usize> = list.split('+').filter_map(|c| c.parse().ok()).collect();
        if !cpus.is_empty() {
            return cpus;
        }
    }
    run.manifest
        .fingerprint
        .pointer("/topology/pinning")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|c| c.as_u64().map(|c| c as usize)).collect::<Vec<_>>())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec![0, 1])
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    Some(v[v.len() / 2])
}

pub fn gate(a: GateArgs<'_>) -> anyhow::Result<u8> {
    if a.remeasure == 0 || a.remeasure > 20 {
        return Err(UsageError(format!("--remeasure must be 1..=20, got {}", a.remeasure)).into());
    }
    let new_dir = resolve_run(a.new, a.runs_root).map_err(|e| UsageError(format!("new run: {e:#}")))?;
    let new = load_run(&new_dir).map_err(|e| UsageError(format!("new run {}: {e:#}", new_dir.display())))?;
    let spec = BaseSpec::Baseline { root: a.baselines, name: a.name };
    let (base, spread) = match compare::find_base(&spec, &new, a.runs_root)? {
        Ok(found) => found,
        Err(why) => {
            outln!("gate: PASS (nothing to compare)");
            errln!("ivbench: NOTE: {why}");
            return Ok(0);
        }
    };
    let rows = compare::compare_rows(&base, &new, a.threshold, spread.as_ref());
    let hard: Vec<_> = rows.iter().filter(|r| matches!(r.verdict, Verdict::Lost | Verdict::MissingInNew)).collect();
    let suspects: Vec<_> = rows.iter().filter(|r| r.verdict == Verdict::Regression).collect();
    outln!(
        "gate: {} row(s) against baseline `{}` of {} ({}); {} flagged slower, {} lost or missing",
        rows.len(),
        a.name,
        crate::machine::MachineClass::of(&new.manifest),
        match &spread {
            Some(s) if !s.runs.is_empty() => format!("noise floor: the run-to-run spread of {} runs", s.runs.len()),
            _ => format!(
                "no measured run-to-run spread: noise floor p50 x{}, p99 x{}",
                crate::store::baseline::UNMEASURED.p50,
                crate::store::baseline::UNMEASURED.p99
            ),
        },
        suspects.len(),
        hard.len()
    );
    for r in &hard {
        outln!("  FAIL {}: {} {}", r.key, r.verdict, r.note);
    }

    // Re-measure every suspect point, each round in a run directory of its own.
    let probes = registry::all();
    let mut jobs = Vec::new();
    let mut keys = Vec::new();
    for r in &suspects {
        let Some(row) = new.rows.iter().find(|x| x.key() == r.key) else { continue };
        let base_row = base.rows.iter().find(|x| x.key() == r.key);
        let (Some(probe), Some(method), Ok(point)) = (
            registry::select(&probes, &row.probe).into_iter().find(|p| p.name() == row.probe),
            parse_method(&row.method),
            Point::parse(&row.params),
        ) else {
            outln!("  FAIL {}: flagged, and cannot be re-measured here (unknown probe, method or params)", r.key);
            keys.push((r.key.clone(), false));
            continue;
        };
        let iterations = base_row
            .map(|b| b.count)
            .filter(|&c| c > 0)
            .unwrap_or(row.count)
            .clamp(1, probe_api::limits::MAX_ITERATIONS);
        let budget = Budget {
            iterations,
            duration: None,
            cpus: cpus_of(row, &new),
            method,
            timeout: Duration::from_secs(120),
            stop: StopFlag::new(),
        };
        jobs.push((probe, point, budget, row.variant.clone()));
        keys.push((r.key.clone(), true));
    }
    let mut remeasured: Vec<LoadedRun> = Vec::new();
    if !jobs.is_empty() {
        for round in 1..=a.remeasure {
            let js: Vec<Job<'_>> = jobs
                .iter()
                .map(|(p, pt, b, v)| Job {
                    probe: *p,
                    point: pt.clone(),
                    budget: b.clone(),
                    variant: v.clone(),
                    ndr: None,
                })
                .collect();
            errln!("gate: re-measuring {} flagged point(s), round {round} of {}", js.len(), a.remeasure);
            let done = execute(
                js,
                a.runs_root,
                "gate",
                &format!("# gate re-measurement {round}/{} of {}", a.remeasure, new.manifest.run_id),
            )?;
            if done.interrupted {
                errln!("gate: interrupted during re-measurement");
                return Ok(super::EXIT_INTERRUPTED);
            }
            remeasured.push(load_run(&done.dir)?);
        }
    }

    let mut confirmed = 0;
    for (key, measurable) in &keys {
        if !measurable {
            confirmed += 1;
            continue;
        }
        let first = rows.iter().find(|r| &r.key == key).expect("a suspect is a compared row");
        let again: Vec<&SummaryRow> =
            remeasured.iter().filter_map(|run| run.rows.iter().find(|x| &x.key() == key && x.status.is_ok())).collect();
        let p50 = median(again.iter().filter_map(|r| r.p50_ns).collect());
        let p99 = median(again.iter().filter_map(|r| r.p99_ns).collect());
        let verdict_of = |m: &Option<compare::MetricCmp>, now: Option<f64>| match (m, now) {
            (Some(m), Some(x)) => Some(judge(m.base_ns, x, m.noise_factor, a.threshold)),
            _ => None,
        };
        let v50 = verdict_of(&first.p50, p50);
        let v99 = verdict_of(&first.p99, p99);
        let still = again.is_empty() || v50 == Some(Verdict::Regression) || v99 == Some(Verdict::Regression);
        let ratio = |m: &Option<compare::MetricCmp>, now: Option<f64>| match (m, now) {
            (Some(m), Some(x)) if m.base_ns > 0.0 => format!("x{:.2} -> x{:.2}", m.ratio, x / m.base_ns),
            _ => "-".into(),
        };
        outln!(
            "  {} {key}: p50 {}, p99 {} (median of {} re-measurement(s))",
            if still { "REGRESSION (confirmed)" } else { "cleared (noise)" },
            ratio(&first.p50, p50),
            ratio(&first.p99, p99),
            again.len()
        );
        if still {
            confirmed += 1;
        }
    }
    let failed = confirmed + hard.len();
    outln!(
        "gate: {} ({confirmed} confirmed regression(s), {} lost or missing)",
        if failed == 0 { "PASS" } else { "FAIL" },
        hard.len()
    );
    Ok(if failed == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_parse_back() {
        assert_eq!(parse_method("per-op"), Some(Method::PerOp));
        assert_eq!(parse_method("batched/100"), Some(Method::Batched { batch: 100 }));
        assert_eq!(parse_method("batched/0"), None);
        assert_eq!(parse_method("sideways"), None);
        assert_eq!(Method::Batched { batch: 7 }.label(), "batched/7");
    }

    #[test]
    fn median_of_remeasurements() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
    }
}
