//! `vm.native.loop`: is guest code native? Cycles per `dec; jnz` iteration inside a guest.

use crate::payloads::args::NativeLoop;
use probe_api::{Budget, Method, Methods, Metric, Point, ProbeError, Samples};

use super::{in_vm, invalid, no_points, vm_support, VmProbe};
use crate::vmm::native::MAX_NATIVE_CYCLES_PER_ITER;
use crate::vmm::Handled;

/// Iterations per sample when the budget asks for per-op samples (a single `dec; jnz` is
/// far below the timer's resolution, so this probe is always batched).
pub const DEFAULT_BATCH: u32 = 10_000;

pub(crate) const LOOP: VmProbe = VmProbe {
    name: "vm.native.loop",
    description: "guest CPL0 dec;jnz loop, TSC cycles per iteration (always batched; per-op requests use 10k iterations per sample)",
    group: "native",
    methods: Methods::Both,
    support: vm_support,
    points: no_points,
    run,
    extra_keys: &[],
};

fn run(p: &VmProbe, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    let batch = match budget.method {
        Method::Batched { batch } if batch > 1 => batch,
        _ => DEFAULT_BATCH,
    };
    let n = budget.iterations;
    in_vm(
        p.name,
        budget,
        |_| Ok(()),
        move |ctx| {
            let got = ctx.sample(&NativeLoop {}, u64::from(batch), &mut |_| Handled::No)?;
            if got.cycles.is_empty() || (!got.stopped_early && got.cycles.len() as u64 != n) {
                return Err(invalid(p.name, format!("{} samples, expected {n}", got.cycles.len())));
            }
            let raw = got.cycles;
            let mut sorted = raw.clone();
            sorted.sort_unstable();
            let median = sorted[sorted.len() / 2] as f64 / f64::from(batch);
            let best = sorted[0] as f64 / f64::from(batch);
            if best > MAX_NATIVE_CYCLES_PER_ITER {
                return Err(invalid(p.name, format!("guest is being emulated ({best:.1} cycles/iteration)")));
            }
            let mut s = ctx.samples(raw, u64::from(batch), Method::Batched { batch });
            s.metrics.push(Metric::new("cycles_per_iteration_median", median, "cycles"));
            s.metrics.push(Metric::new("cycles_per_iteration_min", best, "cycles"));
            if budget.method == Method::PerOp {
                s.notes.push(format!(
                    "per-op requested: a single dec;jnz is below timer resolution, sampled batched/{batch}"
                ));
            }
            Ok(s)
        },
    )
}
