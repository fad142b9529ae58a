//! `vm.syscall.getppid`: guest user SYSCALL -> guest supervisor (LSTAR) -> SYSRETQ.

use crate::payloads::args::Syscall;
use crate::payloads::entry;
use probe_api::{Budget, Methods, Point, ProbeError, Samples};

use super::{batch_of, in_vm, invalid, no_points, vm_support, VmProbe};
use crate::vmm::{arch::MSR_LSTAR, layout, Handled};

pub(crate) const GETPPID: VmProbe = VmProbe {
    name: "vm.syscall.getppid",
    description: "guest user-mode SYSCALL into a minimal guest getppid handler (LSTAR) and SYSRETQ back, no exit",
    group: "syscall",
    methods: Methods::Both,
    support: vm_support,
    points: no_points,
    run,
    extra_keys: &[],
};

fn run(p: &VmProbe, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    let batch = batch_of(budget);
    // The "parent pid" the guest kernel hands out: this process's real parent pid, tagged
    // so that a stray register value cannot match it by accident.
    let ppid = 0x5050_0000_0000_0000 | u64::from(std::os::unix::process::parent_id());
    in_vm(
        p.name,
        budget,
        |_| Ok(()),
        move |ctx| {
            let res = layout::results(ctx.vcpu.id());
            ctx.vm.fill_u64s(res, 5, 0)?;
            ctx.vm.write_u64(layout::KDATA, ppid)?;
            ctx.vcpu.set_msrs(&[(MSR_LSTAR, ctx.vm.entry(entry::SYS_ENTRY)?)])?;
            let user_stack = layout::user_stack_top(ctx.vcpu.id());
            ctx.vcpu.stats.reset();
            let got = ctx.sample(&Syscall { user_stack, expected: ppid }, batch, &mut |_| Handled::No)?;
            let (n, raw) = (got.cycles.len() as u64, got.cycles);
            let w = ctx.vm.read_u64s(res, 5)?;
            if w[0] != ppid {
                return Err(invalid(
                    p.name,
                    format!("first getppid in user mode returned {:#x}, the handler returns {ppid:#x}", w[0]),
                ));
            }
            if w[1] != 0 {
                return Err(invalid(
                    p.name,
                    format!("{} of {} timed getppid calls returned a wrong value", w[1], n * batch),
                ));
            }
            if w[2] != ppid {
                return Err(invalid(p.name, format!("last getppid returned {:#x}, expected {ppid:#x}", w[2])));
            }
            // On kvm_intel / kvm_amd the CS selectors prove the privilege levels; kvm_pvm runs
            // guest CPL0 and CPL3 both in hardware ring 3, so `mov %cs` reads the same there.
            if w[3] != w[4] && (w[3] & 3 != 3 || w[4] & 3 != 0) {
                return Err(invalid(
                    p.name,
                    format!("CS {:#x} in \"user mode\", {:#x} at CPL0: not a CPL3/CPL0 pair", w[3], w[4]),
                ));
            }
            let mut s = ctx.samples(raw, batch, budget.method);
            s.notes.push(format!(
            "the handler's value {ppid:#x} arrived in user mode on every call (CS read as {:#x} in user mode, {:#x} at guest CPL0)",
            w[3], w[4]
        ));
            Ok(s)
        },
    )
}
