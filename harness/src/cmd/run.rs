//! `ivbench run PROBE...`: named probes at their default points with one budget.

use std::path::PathBuf;
use std::time::Duration;

use probe_api::{Budget, Method, Point};

use super::execute::execute;
use super::{UsageError, EXIT_INTERRUPTED};
use crate::config::Job;
use crate::registry;

pub struct RunArgs {
    pub probes: Vec<String>,
    pub iterations: Option<u64>,
    pub duration: Option<f64>,
    pub cpus: Vec<usize>,
    pub method: Method,
    pub params: Option<String>,
    pub out: PathBuf,
    pub timeout: u64,
}

pub fn run(a: RunArgs) -> anyhow::Result<u8> {
    let probes = registry::all();
    let selected = registry::resolve(&probes, &a.probes).map_err(|e| UsageError(e.to_string()))?;
    let point_override = match &a.params {
        Some(p) => Some(Point::parse(p).map_err(UsageError)?),
        None => None,
    };
    let budget = Budget {
        // --duration alone: a generous sample cap that the duration ends first.
        iterations: a.iterations.unwrap_or(if a.duration.is_some() { 10_000_000 } else { 10_000 }),
        duration: a.duration.map(Duration::from_secs_f64),
        cpus: a.cpus.clone(),
        method: a.method,
        timeout: Duration::from_secs(a.timeout),
    };
    let mut jobs = Vec::new();
    for p in selected {
        let points = point_override.clone().map(|x| vec![x]).unwrap_or_else(|| p.points());
        for point in points {
            jobs.push(Job { probe: p, point, budget: budget.clone() });
        }
    }
    let text = format!("ivbench run {} --iterations {} --method {} --cpus {:?}", a.probes.join(" "), budget.iterations, a.method.label(), a.cpus);
    let done = execute(jobs, &a.out, "run", &text)?;
    Ok(if done.interrupted { EXIT_INTERRUPTED } else if done.failed > 0 { 1 } else { 0 })
}
