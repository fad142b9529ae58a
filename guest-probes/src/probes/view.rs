//! Memory views: `vm.view.vmfunc` (hardware EPTP switching) and `vm.view.hypercall` (the
//! software fallback: the VMM maps and unmaps a protected memslot on request).

use crate::payloads::args::{ViewSwitch, VmfuncDiscover, VmfuncSwitch};
use std::cell::Cell;

use probe_api::{Budget, Methods, Metric, Point, ProbeError, Samples, Support};

use super::{batch_of, in_vm, invalid, no_points, vm_support, VmProbe};
use crate::vmm::views::uapi;
use crate::vmm::{self, layout, Exit, Handled, Vm};

/// The port the guest asks for a view switch on (al = 1 alternate, 0 default).
pub const PORT_VIEW: u16 = 0x12;
/// Memslot of the protected region.
pub const PROTECTED_SLOT: u32 = 2;
pub const PROTECTED_SIZE: usize = 2 << 20;
/// Value the VMM returns for reads of the protected GPA while it is hidden.
pub const POISON: u64 = 0xbad0_bad0_bad0_bad0;
/// What the protected page holds.
pub const SECRET: u64 = 0x5ec2_e7da_7a00_0001;
/// The VMFUNC view `vm.view.vmfunc` publishes (any of 1..=511; not 1, so that a guest that
/// assumed the first index instead of asking would be caught).
pub const VMFUNC_VIEW: u32 = 3;
/// The tag the guest asks for that view by ("ivbview" + 1).
pub const VMFUNC_TAG: u64 = 0x0077_6569_7662_7669 << 8 | 1;
const _: () = assert!(VMFUNC_VIEW > 1 && VMFUNC_VIEW <= uapi::MAX_VIEW && VMFUNC_TAG != VMFUNC_VIEW as u64);

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

pub(crate) fn vmfunc_support() -> Support {
    match vm_support() {
        Support::Supported => {}
        u => return u,
    }
    match vmm::host().backend() {
        Ok(b) => b.vmfunc_support(),
        Err(e) => Support::Unsupported(e.to_string()),
    }
}

/// The VMFUNC view of `vm.view.vmfunc`: the payload's code, the page tables and the
/// protected page (memslot PROTECTED_SLOT, never mapped in the default view), read-only.
fn build_vmfunc_view(vm: &Vm) -> Result<(), ProbeError> {
    vm.enable_views()?;
    vm.add_private_slot(PROTECTED_SLOT, layout::PROTECTED_GPA, PROTECTED_SIZE)?;
    vm.slot_write(PROTECTED_SLOT, 0, &SECRET.to_le_bytes())?;
    vm.view_create(VMFUNC_VIEW, VMFUNC_TAG)?;
    vm.view_map_trampoline(VMFUNC_VIEW, "vmfunc")?;
    vm.view_map_slot(VMFUNC_VIEW, PROTECTED_SLOT, 0, 0x1000, layout::PROTECTED_GPA, uapi::PERM_R)?;
    vm.view_publish(VMFUNC_VIEW)?;
    Ok(())
}

/// Answers the default view's reads of the protected GPA (no memslot there) with POISON
/// and counts them.
fn poison_reads<'a>(count: &'a Cell<u64>) -> impl FnMut(Exit<'_>) -> Handled + 'a {
    move |e| match e {
        Exit::MmioRead { addr, data }
            if (layout::PROTECTED_GPA..layout::PROTECTED_GPA + PROTECTED_SIZE as u64).contains(&addr) =>
        {
            count.set(count.get() + 1);
            let len = data.len().min(8);
            data[..len].copy_from_slice(&POISON.to_le_bytes()[..len]);
            Handled::Continue
        }
        _ => Handled::No,
    }
}

/// The discovery results, judged: what a correct patched KVM and VMM must give.
pub(crate) fn check_vmfunc_discovery(res: &[u64]) -> Result<(), String> {
    let bit = 1u64 << uapi::FEATURE_VMFUNC_VIEWS;
    if res[0] & bit == 0 {
        return Err(format!(
            "CPUID {:#x}.EAX = {:#x} lacks the views bit {}",
            uapi::KVM_CPUID_FEATURES,
            res[0],
            uapi::FEATURE_VMFUNC_VIEWS
        ));
    }
    if res[1] != u64::from(VMFUNC_VIEW) {
        return Err(format!(
            "the view query hypercall answered {} for the published tag, expected view {VMFUNC_VIEW}",
            res[1] as i64
        ));
    }
    if res[2] as i64 != -uapi::ENOENT_VIEW {
        return Err(format!(
            "the view query hypercall answered {} for an unknown tag, expected -{}",
            res[2] as i64,
            uapi::ENOENT_VIEW
        ));
    }
    if res[3] != POISON || res[5] != POISON {
        return Err(format!(
            "the default view read {:#x} / {:#x} at the protected GPA instead of exiting (MMIO)",
            res[3], res[5]
        ));
    }
    if res[4] != SECRET {
        return Err(format!("inside the view the protected GPA read {:#x}, expected {SECRET:#x}", res[4]));
    }
    Ok(())
}

/// Judges the timed loop's loads of the protected word. `misses`: loads that did not read
/// the secret; `mmio`: loads that exited (no memslot in the default view); `forced`:
/// KVM's returns of the vCPU to the default view during the loop (an exit inside the view
/// other than an external interrupt or the preemption timer: a host NMI, for one). A miss
/// is legitimate only as a load that ran in the default view after such a return: it
/// exited (the VMM answered poison), and there are no more of them than returns. Ok holds
/// the note for a loop that had some.
pub(crate) fn judge_timed_loads(misses: u64, mmio: u64, forced: u64) -> Result<Option<String>, String> {
    if misses != mmio {
        return Err(format!(
            "{misses} timed in-view loads missed the protected word but {mmio} exited: a load read another page"
        ));
    }
    if misses > forced {
        return Err(format!(
            "{misses} timed loads ran outside the view, but KVM returned the vCPU to the default view only {forced} times"
        ));
    }
    Ok((misses > 0).then(|| {
        format!(
            "{misses} timed loads ran in the default view (MMIO exit, poison answered) after {forced} returns to it \
             that KVM forced (exits inside the view, e.g. host NMIs): their samples include that exit"
        )
    }))
}

fn run_vmfunc(p: &VmProbe, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    if let Support::Unsupported(r) = vmfunc_support() {
        return Err(ProbeError::Unsupported(r));
    }
    let batch = batch_of(budget);
    in_vm(p.name, budget, build_vmfunc_view, move |ctx| {
        let res = layout::results(ctx.vcpu.id());
        ctx.vm.fill_u64s(res, 8, 0)?;
        let hidden = Cell::new(0u64);
        ctx.vcpu.enter(&VmfuncDiscover {
            results: res,
            tag: VMFUNC_TAG,
            hypercall: uapi::HC_VMFUNC_VIEW_QUERY,
            protected: layout::PROTECTED_GPA,
            expected_view: u64::from(VMFUNC_VIEW),
        })?;
        ctx.vcpu.run(ctx.deadline, &mut poison_reads(&hidden))?;
        let found = ctx.vm.read_u64s(res, 6)?;
        check_vmfunc_discovery(&found).map_err(|e| invalid(p.name, e))?;
        let after_discovery = ctx.vm.view_stats(0)?;
        ctx.vcpu.stats.reset();
        let timed_hidden = Cell::new(0u64);
        let got = ctx.sample(
            &VmfuncSwitch { view: u64::from(VMFUNC_VIEW), protected: layout::PROTECTED_GPA, secret: SECRET },
            batch,
            &mut poison_reads(&timed_hidden),
        )?;
        let stats = ctx.vm.view_stats(0)?;
        let misses = ctx.vm.read_u64(res + 48)?;
        let userspace_exits = ctx.vcpu.stats.userspace_exits();
        let (n, chunks) = (got.cycles.len() as u64, got.chunks);
        if stats.vmfunc_ud != 0 || stats.view_faults != 0 || stats.current_view != 0 {
            return Err(invalid(
                p.name,
                format!(
                    "KVM_VMFUNC_VCPU_STATS: {} VMFUNC #UDs, {} faults in a view, vCPU left in view {} (all must be 0)",
                    stats.vmfunc_ud, stats.view_faults, stats.current_view
                ),
            ));
        }
        let forced = stats.forced_default.saturating_sub(after_discovery.forced_default);
        let outside = judge_timed_loads(misses, timed_hidden.get(), forced).map_err(|e| invalid(p.name, e))?;
        let mut s = ctx.samples(got.cycles, batch, budget.method);
        let switches = 2 * n * batch;
        s.metrics.push(Metric::new("view_switches", switches as f64, "switches"));
        s.metrics.push(Metric::new("userspace_exits", userspace_exits as f64, "exits"));
        s.metrics.push(Metric::new("forced_default", forced as f64, "returns"));
        s.metrics.push(Metric::new("loads_outside_view", misses as f64, "loads"));
        if let Some(note) = outside {
            s.notes.push(note);
        }
        s.notes.push(format!(
            "one op = VMFUNC leaf 0 into view {VMFUNC_VIEW} (the guest found it by tag with the kvm-patch \
             hypercall, CPUID {:#x} bit {}), a load of the protected page, VMFUNC back to view 0; \
             the default view's reads of {:#x} exited as KVM_EXIT_MMIO ({} times, untimed) and never saw the \
             secret; {userspace_exits} userspace exits in {chunks} chunks (the chunks' done ports), no #UD, \
             no fault in the view",
            uapi::KVM_CPUID_FEATURES,
            uapi::FEATURE_VMFUNC_VIEWS,
            layout::PROTECTED_GPA,
            hidden.get()
        ));
        Ok(s)
    })
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
            let mut poison = poison_reads(&hidden_reads);
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
                    other => poison(other),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Vec<u64> {
        vec![
            1 << uapi::FEATURE_VMFUNC_VIEWS | 1,
            u64::from(VMFUNC_VIEW),
            (-uapi::ENOENT_VIEW) as u64,
            POISON,
            SECRET,
            POISON,
        ]
    }

    #[test]
    fn timed_misses_need_a_forced_return_each() {
        assert_eq!(judge_timed_loads(0, 0, 0), Ok(None));
        assert_eq!(judge_timed_loads(0, 0, 5), Ok(None));
        assert!(judge_timed_loads(2, 2, 3).unwrap().unwrap().contains("2 timed loads ran in the default view"));
        assert!(judge_timed_loads(1, 0, 1).unwrap_err().contains("read another page"));
        assert!(judge_timed_loads(3, 3, 2).unwrap_err().contains("only 2 times"));
    }

    #[test]
    fn discovery_is_judged_word_by_word() {
        assert_eq!(check_vmfunc_discovery(&good()), Ok(()));
        let cases: [(usize, u64, &str); 6] = [
            (0, 1, "lacks the views bit"),
            (1, 1, "expected view 3"),
            (2, (-1000i64) as u64, "unknown tag"),
            (3, SECRET, "instead of exiting"),
            (4, POISON, "inside the view"),
            (5, 0, "instead of exiting"),
        ];
        for (word, value, what) in cases {
            let mut r = good();
            r[word] = value;
            let e = check_vmfunc_discovery(&r).unwrap_err();
            assert!(e.contains(what), "word {word}: {e}");
        }
    }
}
