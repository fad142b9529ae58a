//! Memory views: `vm.view.vmfunc` (hardware EPTP switching) and `vm.view.hypercall` (the
//! software fallback: the VMM maps and unmaps a protected memslot on request).

use crate::payloads::args::ViewSwitch;
use std::cell::Cell;

use probe_api::{Budget, Methods, Metric, Point, ProbeError, Samples, Support};

use super::{batch_of, in_vm, invalid, no_points, vm_support, VmProbe};
use crate::vmm::{self, layout, Exit, Handled};

/// The port the guest asks for a view switch on (al = 1 alternate, 0 default).
pub const PORT_VIEW: u16 = 0x12;
/// Memslot of the protected region.
pub const PROTECTED_SLOT: u32 = 2;
pub const PROTECTED_SIZE: usize = 2 << 20;
/// Value the VMM returns for reads of the protected GPA while it is hidden.
pub const POISON: u64 = 0xbad0_bad0_bad0_bad0;
/// What the protected page holds.
pub const SECRET: u64 = 0x5ec2_e7da_7a00_0001;

pub(crate) const VMFUNC: VmProbe = VmProbe {
    name: "vm.view.vmfunc",
    description: "VMFUNC leaf 0 (EPTP switching) from guest CPL0: hardware view switch without an exit",
    group: "view",
    methods: Methods::Both,
    support: vmfunc_support,
    points: no_points,
    run: run_vmfunc,
    extra_keys: &[],
};

pub(crate) const HYPERCALL: VmProbe = VmProbe {
    name: "vm.view.hypercall",
    description: "software view switch: guest asks the VMM (PIO exit), which maps the protected memslot, guest reads it, asks again to unmap",
    group: "view",
    methods: Methods::Both,
    support: vm_support,
    points: no_points,
    run: run_hypercall,
    extra_keys: &[],
};

fn vmfunc_support() -> Support {
    match vm_support() {
        Support::Supported => {}
        u => return u,
    }
    match vmm::host().backend() {
        Ok(b) => b.vmfunc_support(),
        Err(e) => Support::Unsupported(e.to_string()),
    }
}

fn run_vmfunc(_p: &VmProbe, _point: &Point, _budget: &Budget) -> Result<Samples, ProbeError> {
    match vmfunc_support() {
        Support::Unsupported(r) => Err(ProbeError::Unsupported(r)),
        // No backend reports Supported today: running it needs the kvm-patch capability.
        Support::Supported => Err(ProbeError::Unsupported(
            "VMFUNC view switching needs the ivbench kvm-patch capability, which does not exist yet".into(),
        )),
    }
}

fn run_hypercall(p: &VmProbe, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    let batch = batch_of(budget);
    in_vm(
        p.name,
        budget,
        |vm| {
            vm.add_private_slot(PROTECTED_SLOT, layout::PROTECTED_GPA, PROTECTED_SIZE)?;
            Ok(vm.slot_write(PROTECTED_SLOT, 0, &SECRET.to_le_bytes())?)
        },
        move |ctx| {
            let res = layout::results(ctx.vcpu.id());
            ctx.vm.fill_u64s(res, 4, 0)?;
            ctx.vcpu.stats.reset();
            let switches = Cell::new(0u64);
            let hidden_reads = Cell::new(0u64);
            let failure: Cell<Option<ProbeError>> = Cell::new(None);
            let vm = ctx.vm.clone();
            let got = ctx.sample(
                &ViewSwitch { port: u64::from(PORT_VIEW), protected: layout::PROTECTED_GPA, secret: SECRET },
                batch,
                &mut |e| match e {
                    Exit::IoOut { port: PORT_VIEW, data } => {
                        switches.set(switches.get() + 1);
                        match vm.set_slot_mapped(PROTECTED_SLOT, data[0] == 1) {
                            Ok(()) => Handled::Continue,
                            Err(err) => {
                                failure.set(Some(err.into()));
                                Handled::No
                            }
                        }
                    }
                    Exit::MmioRead { addr, data }
                        if (layout::PROTECTED_GPA..layout::PROTECTED_GPA + PROTECTED_SIZE as u64).contains(&addr) =>
                    {
                        hidden_reads.set(hidden_reads.get() + 1);
                        let len = data.len().min(8);
                        data[..len].copy_from_slice(&POISON.to_le_bytes()[..len]);
                        Handled::Continue
                    }
                    _ => Handled::No,
                },
            );
            if let Some(err) = failure.take() {
                return Err(err);
            }
            let got = got?;
            let (n, chunks, raw) = (got.cycles.len() as u64, got.chunks, got.cycles);
            let w = ctx.vm.read_u64s(res, 4)?;
            if w[0] != POISON || w[2] != POISON {
                return Err(invalid(
                    p.name,
                    format!(
                        "the default view read {:#x} / {:#x} at the protected GPA instead of failing (MMIO exit)",
                        w[0], w[2]
                    ),
                ));
            }
            if w[1] != SECRET {
                return Err(invalid(
                    p.name,
                    format!("the alternate view read {:#x}, expected the secret {SECRET:#x}", w[1]),
                ));
            }
            if w[3] != 0 {
                return Err(invalid(p.name, format!("{} timed alternate-view reads missed the secret", w[3])));
            }
            let expect_switches = 2 + 2 * n * batch;
            if switches.get() != expect_switches || hidden_reads.get() != 2 * (chunks) {
                return Err(invalid(
                    p.name,
                    format!(
                        "{} view switches (expected {expect_switches}), {} hidden reads",
                        switches.get(),
                        hidden_reads.get()
                    ),
                ));
            }
            let mut s = ctx.samples(raw, batch, budget.method);
            s.metrics.push(Metric::new("view_switches", switches.get() as f64, "switches"));
            s.notes.push(format!(
                "one op = map the protected memslot (KVM_SET_USER_MEMORY_REGION on a PIO exit), read it, unmap it; \
                 the default view's reads of {:#x} exited as KVM_EXIT_MMIO ({} times) and never saw the secret; \
                 each memslot update waits for KVM's SRCU grace period, hence the long tail",
                layout::PROTECTED_GPA,
                hidden_reads.get()
            ));
            Ok(s)
        },
    )
}
