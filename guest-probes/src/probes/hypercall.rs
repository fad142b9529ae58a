//! `vm.hypercall.null`: a null hypercall round trip (guest CPL0 -> KVM -> guest).

use crate::payloads::args::Hypercall;
use probe_api::{Budget, Methods, Metric, Point, ProbeError, Samples};

use super::{batch_of, in_vm, invalid, no_points, vm_support, VmProbe};
use crate::vmm::{layout, Handled};

/// A hypercall number KVM does not implement.
pub const UNKNOWN_NR: u64 = 0x7ff;

pub(crate) const NULL: VmProbe = VmProbe {
    name: "vm.hypercall.null",
    description: "null hypercall (unknown number, must return -ENOSYS) from guest CPL0 into KVM and back, no VMM exit",
    group: "hypercall",
    methods: Methods::Both,
    support: vm_support,
    points: no_points,
    run,
    extra_keys: &[],
};

fn run(p: &VmProbe, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    let batch = batch_of(budget);
    in_vm(
        p.name,
        budget,
        |_| Ok(()),
        move |ctx| {
            let expected = ctx.vm.backend().unknown_hypercall_ret();
            let res = layout::results(ctx.vcpu.id());
            ctx.vm.fill_u64s(res, 4, 0)?;
            ctx.vcpu.stats.reset();
            let got =
                ctx.sample(&Hypercall { nr: UNKNOWN_NR, expected: expected as u64 }, batch, &mut |_| Handled::No)?;
            let (n, chunks, raw) = (got.cycles.len() as u64, got.chunks, got.cycles);
            let first = ctx.vm.read_u64(res)? as i64;
            let bad = ctx.vm.read_u64(res + 8)?;
            if first != expected {
                return Err(invalid(
                    p.name,
                    format!(
                        "hypercall {UNKNOWN_NR:#x} ({}) returned {first}, expected {expected} (-ENOSYS)",
                        ctx.vm.backend().hypercall_name()
                    ),
                ));
            }
            if bad != 0 {
                return Err(invalid(
                    p.name,
                    format!("{bad} of {} timed hypercalls did not return {expected}", n * batch),
                ));
            }
            if ctx.vcpu.stats.userspace_exits() != chunks {
                return Err(invalid(p.name, format!("the hypercalls left to the VMM: exits {:?}", ctx.vcpu.stats)));
            }
            let mut s = ctx.samples(raw, batch, budget.method);
            s.metrics.push(Metric::new("hypercall_return", first as f64, "value"));
            s.notes.push(format!(
                "hypercall {} nr {UNKNOWN_NR:#x} returned {first} every time",
                ctx.vm.backend().hypercall_name()
            ));
            Ok(s)
        },
    )
}
