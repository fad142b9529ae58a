//! `ivbench baseline update RUN` and `ivbench baseline spread RUN...`: promote a run to the
//! baseline of its machine class, and measure the run-to-run spread the gate allows for.

use std::path::Path;

use super::UsageError;
use crate::machine::MachineClass;
use crate::store::baseline::{self, Spread};
use crate::store::run_dir::{load_run, resolve_run};
use crate::store::LoadedRun;

fn load(run: &str, runs_root: &Path) -> Result<LoadedRun, UsageError> {
    let dir = resolve_run(run, runs_root).map_err(|e| UsageError(format!("{e:#}")))?;
    load_run(&dir).map_err(|e| UsageError(format!("{}: {e:#}", dir.display())))
}

/// Copies RUN to `<root>/<its machine class>/<name>/`, refusing partial, failed and
/// emulated runs.
pub fn update(run: &str, name: &str, runs_root: &Path, root: &Path) -> anyhow::Result<u8> {
    baseline::check_name(name).map_err(|e| UsageError(e.to_string()))?;
    let r = load(run, runs_root)?;
    if let Some(why) = baseline::refusal(&r) {
        return Err(UsageError(format!("not promoted: {why}")).into());
    }
    let class = MachineClass::of(&r.manifest);
    let dest = baseline::dir_for(root, &class, name);
    // A spread measured against the old baseline's runs says nothing about the new one.
    let stale_spread = dest.join(baseline::SPREAD_FILE).is_file();
    baseline::promote(&r, &dest)?;
    outln!("baseline `{name}` for machine class {class}: {} (run {})", dest.display(), r.manifest.run_id);
    if stale_spread {
        outln!("the previous spread.json was not carried over: measure it again with `ivbench baseline spread RUN RUN ... --name {name}`");
    }
    Ok(0)
}

/// Measures the run-to-run spread over RUNS (repeated unchanged runs of one machine class)
/// and stores it beside that class's baseline `name`.
pub fn spread(runs: &[String], name: &str, runs_root: &Path, root: &Path) -> anyhow::Result<u8> {
    baseline::check_name(name).map_err(|e| UsageError(e.to_string()))?;
    let loaded = runs.iter().map(|r| load(r, runs_root)).collect::<Result<Vec<_>, _>>()?;
    for r in &loaded {
        if let Some(why) = baseline::refusal(r) {
            return Err(UsageError(format!("not used for the spread: {why}")).into());
        }
    }
    let s = Spread::measure(&loaded).map_err(|e| UsageError(format!("{e:#}")))?;
    let class = MachineClass::of(&loaded[0].manifest);
    let dir = baseline::dir_for(root, &class, name);
    if !dir.join("manifest.json").is_file() {
        return Err(UsageError(format!("no `{name}` baseline for {class} at {}: promote one first with `ivbench baseline update`", dir.display())).into());
    }
    s.write(&dir)?;
    let mut widest: Vec<(&String, &baseline::RowSpread)> = s.rows.iter().collect();
    widest.sort_by(|a, b| b.1.p50.partial_cmp(&a.1.p50).unwrap_or(std::cmp::Ordering::Equal));
    outln!("run-to-run spread over {} runs of {class} -> {}", loaded.len(), dir.join(baseline::SPREAD_FILE).display());
    for (k, r) in widest.iter().take(10) {
        outln!("  p50 x{:.2}  p99 x{:.2}  {k}", r.p50, r.p99);
    }
    Ok(0)
}
