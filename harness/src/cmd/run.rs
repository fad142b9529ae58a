//! `ivbench run PROBE...`: named probes at their default points with one budget.

use std::path::PathBuf;
use std::time::Duration;

use probe_api::{Budget, Method, Point, StopFlag};

use super::execute::execute;
use super::{UsageError, EXIT_INTERRUPTED};
use crate::config::{check_cpus_available, Job};
use crate::registry;

pub struct RunArgs {
    pub probes: Vec<String>,
    pub iterations: Option<u64>,
    pub duration: Option<Duration>,
    pub cpus: Vec<usize>,
    pub method: Method,
    pub params: Option<String>,
    pub out: PathBuf,
    pub timeout: Duration,
    /// Search each point's offered rate for NDR/PDR (full trials of --duration, default 1 s).
    pub ndr: bool,
}

pub fn run(a: RunArgs) -> anyhow::Result<u8> {
    let probes = registry::all();
    let selected = registry::resolve(&probes, &a.probes).map_err(|e| UsageError(e.to_string()))?;
    let point_override = match &a.params {
        Some(p) => Some(Point::parse(p).map_err(UsageError)?),
        None => None,
    };
    check_cpus_available(&a.cpus).map_err(UsageError)?;
    let budget = Budget {
        // --duration alone: a generous sample cap that the duration ends first (sample
        // buffers grow with what is measured, so the cap costs no memory up front).
        iterations: a.iterations.unwrap_or(if a.duration.is_some() { 10_000_000 } else { 10_000 }),
        duration: a.duration,
        cpus: a.cpus.clone(),
        method: a.method,
        timeout: a.timeout,
        stop: StopFlag::new(),
    };
    let mut jobs = Vec::new();
    for p in selected {
        let points = point_override.clone().map(|x| vec![x]).unwrap_or_else(|| p.points());
        for point in points {
            registry::check_point(p, &point).map_err(UsageError)?;
            let ndr = a.ndr.then(|| crate::ndr::Durations::from_full(a.duration.unwrap_or(Duration::from_secs(1))));
            jobs.push(Job { probe: p, point, budget: budget.clone(), variant: String::new(), ndr });
        }
    }
    let text = format!(
        "ivbench run {} --iterations {} --method {} --cpus {:?}{}",
        a.probes.join(" "),
        budget.iterations,
        a.method.label(),
        a.cpus,
        if a.ndr { " --ndr" } else { "" }
    );
    let done = execute(jobs, &a.out, "run", &text)?;
    Ok(if done.interrupted {
        EXIT_INTERRUPTED
    } else if done.failed > 0 {
        1
    } else {
        0
    })
}
