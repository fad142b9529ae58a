//! Interrupts: `vm.irq.inject` (host irqfd -> guest IDT handler) and `vm.ipi.roundtrip`
//! (vCPU -> vCPU x2APIC IPI and back). Guest code: `payloads::irq`.

use probe_api::{Budget, Method, Methods, Metric, Point, ProbeError, Samples};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::multi::{
    check_exits, check_one_way, counters, counters_ab, guest_atomic, ipi_send_a_to_b, irq_recv, irq_vm,
    irqchip_support, median, pins_ab, push_exit_stats, push_halt_stats, read_samples, run_entry_counted, run_pair,
    samples, stop_and_kick, wait_of, wait_points, IrqVm, Run, Wait,
};
use super::{invalid, VmProbe};
use crate::vmm::irqchip::{self, st, VEC_IRQ};
use crate::vmm::layout;
use std::sync::atomic::Ordering;

/// GSI of the irqfd's MSI route.
pub const IRQFD_GSI: u32 = 5;

pub(crate) const INJECT: VmProbe = VmProbe {
    name: "vm.irq.inject",
    description:
        "interrupt delivery from the host to a native guest: host lfence;rdtsc, then write to an irqfd with an MSI \
                  route on the in-kernel irqchip; sample = guest IDT handler entry (lfence;rdtsc) - host stamp. \
                  wait=spin: the guest spins with interrupts enabled; wait=hlt: the guest is halted (HLT + wake-up)",
    group: "irq",
    methods: Methods::PerOpOnly,
    support: irqchip_support,
    points: wait_points,
    run: run_inject,
    extra_keys: &[],
};

pub(crate) const IPI_ROUNDTRIP: VmProbe = VmProbe {
    name: "vm.ipi.roundtrip",
    description: "vCPU-to-vCPU IPI round trip on the in-kernel LAPIC: vCPU A stamps t0 and writes the x2APIC ICR \
                  (wrmsr 0x830) -> vCPU B's IDT handler -> B writes the ICR back -> A's handler entry (lfence;rdtsc) - t0. \
                  wait=spin: both wait spinning with interrupts enabled; wait=hlt: both wait in HLT. The one-way \
                  A stamp -> B handler entry is reported as metric one_way_median",
    group: "irq",
    methods: Methods::PerOpOnly,
    support: irqchip_support,
    points: wait_points,
    run: run_ipi_roundtrip,
    extra_keys: &[],
};

fn wait_note(wait: Wait, who: &str, pvm: bool) -> String {
    let flag = if pvm { "vif.if=1" } else { "RFLAGS.IF=1" };
    match wait {
        Wait::Spin => format!("{who} spins (PAUSE loop) with interrupts enabled ({flag})"),
        Wait::Hlt => format!(
            "{who} waits in HLT with interrupts enabled ({flag}); HLT is handled by the in-kernel irqchip (no userspace exit)"
        ),
    }
}

fn run_inject(p: &VmProbe, point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    let (Run { name, n, cpus, deadline }, wait) = Run::start_with(p, budget, || wait_of(p.name, point))?;
    let IrqVm { vm, mut vcpus, setup, poll_note } = irq_vm(name, point, 1)?;
    let mut v0 = vcpus.remove(0);
    let pvm = vm.backend().kind() == crate::vmm::BackendKind::Pvm;
    let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| ProbeError::io(format!("{name}: eventfd"), e))?;
    irqchip::route_msi(&vm, IRQFD_GSI, 0, VEC_IRQ)?;
    vm.fd()
        .register_irqfd(&evt, IRQFD_GSI)
        .map_err(|e| ProbeError::Unsupported(format!("KVM_IRQFD (GSI {IRQFD_GSI}) refused: {e}")))?;
    // Host stamps are compared with guest stamps: measure guest TSC - host TSC.
    let tsc_attr = irqchip::zero_tsc_offset(&v0);
    let (tsc_off, tsc_err) = irqchip::tsc_offset(&v0)?;
    let same_clock = tsc_off.unsigned_abs() <= tsc_err.max(1000);
    let host_off = if same_clock { 0 } else { tsc_off };
    let settle = irqchip::settle_cycles(v0.tsc_khz()?);
    let ready = guest_atomic(&vm, layout::params(0) + st::READY)?;
    let src = guest_atomic(&vm, layout::params(0) + st::SRC)?;
    let stop = guest_atomic(&vm, layout::params(0) + st::STOP)?;
    let flag = irqchip::irq_flag_addr(&v0);
    let vm_abort = vm.clone();
    let abort = move || stop_and_kick(&vm_abort, &[0]);

    let (guest, sent) = run_pair(
        name,
        cpus,
        || {
            let (prep, kvm) = run_entry_counted(&mut v0, &irq_recv(0, n, flag, wait.reg(), 0), deadline)?;
            Ok((read_samples(&v0, n, "irq_recv")?, prep, kvm))
        },
        || {
            // The host sender: wait for READY, (hlt: let the guest halt), stamp, irqfd.
            let mut sent = 0u64;
            while sent < n {
                while ready.load(Ordering::Acquire) == 0 {
                    if stop.load(Ordering::Relaxed) != 0 {
                        return Err(ProbeError::Failed(format!("{name}: host sender stopped after {sent} interrupts")));
                    }
                    if irqchip::past(deadline) {
                        return Err(ProbeError::Timeout(
                            budget.timeout,
                            format!("{name}: host sender: the guest was not ready for interrupt {sent} of {n}"),
                        ));
                    }
                    std::hint::spin_loop();
                }
                ready.store(0, Ordering::Relaxed);
                if wait == Wait::Hlt {
                    irqchip::host_delay(settle);
                }
                src.store(irqchip::host_tsc().wrapping_add(host_off as u64), Ordering::Release);
                evt.write(1).map_err(|e| ProbeError::io(format!("{name}: write the irqfd"), e))?;
                sent += 1;
            }
            Ok(sent)
        },
        &abort,
    )?;
    let (cycles, prep, kvm) = guest;
    check_one_way(name, &cycles)?;
    let c = counters(&vm, 0)?;
    c.check_no_kicks(name, "the guest")?;
    if c.handler != n {
        return Err(invalid(name, format!("the vector-0x40 handler ran {} times for {n} interrupts", c.handler)));
    }
    if sent != n {
        return Err(invalid(name, format!("host sent {sent} interrupts, expected {n}")));
    }
    check_exits(name, "unexpected userspace exits during the loop", &[(&v0, 1)])?;
    let stats = &v0.stats;
    let mut s = samples(
        cycles,
        Method::PerOp,
        &prep,
        &[],
        &[("vCPU 0", cpus[0]), ("host sender", cpus[1])],
        vm.backend().name(),
    );
    s.notes.push(format!(
        "source: host thread writes an eventfd registered with KVM_IRQFD on GSI {IRQFD_GSI}, MSI route -> vector {VEC_IRQ:#x}, APIC id 0, \
         in-kernel irqchip (KVM_CREATE_IRQCHIP); x2APIC, EOI by wrmsr 0x80b after the sample"
    ));
    s.notes.push(format!("wait={}: {}", wait.name(), wait_note(wait, "the guest", pvm)));
    if wait == Wait::Hlt {
        s.notes.push(format!(
            "host sends {settle} cycles (20 us) after the guest announced its HLT, so that it is halted"
        ));
        s.notes.push(c.hlt_note("guest"));
        s.notes.push(poll_note);
        push_halt_stats(&mut s, "the guest", &kvm);
    }
    push_exit_stats(&mut s, "the guest", "guest", &kvm);
    s.notes.push(irqchip::apicv_note(vm.backend().kind()));
    s.notes.push(if same_clock {
        format!(
            "host and guest TSC compared directly ({tsc_attr}): measured guest - host = {tsc_off} cycles, within the \
             +-{tsc_err} cycles of the KVM_GET_MSRS(IA32_TSC) bracket"
        )
    } else {
        format!(
            "{tsc_attr}; measured guest TSC - host TSC = {tsc_off} +- {tsc_err} cycles: host stamps corrected by it"
        )
    });
    s.notes.push(format!(
        "handler ran {} times for {n} interrupts; {} spurious (0xff); 0 userspace exits during the loop; {} KVM_RUN interruptions (EINTR)",
        c.handler, c.spurious, stats.intr
    ));
    s.notes.push(setup.join("; "));
    c.push_metrics(&mut s);
    s.metrics.push(Metric::new("tsc_offset_guest_minus_host", tsc_off as f64, "cycles"));
    s.metrics.push(Metric::new("userspace_exits", (stats.userspace_exits() - 1) as f64, "exits"));
    Ok(s)
}

fn run_ipi_roundtrip(p: &VmProbe, point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    let (Run { name, n, cpus, deadline }, wait) = Run::start_with(p, budget, || wait_of(p.name, point))?;
    let IrqVm { vm, mut vcpus, setup, poll_note } = irq_vm(name, point, 2)?;
    let mut vb = vcpus.remove(1);
    let mut va = vcpus.remove(0);
    let pvm = vm.backend().kind() == crate::vmm::BackendKind::Pvm;
    let settle = irqchip::settle_cycles(va.tsc_khz()?);
    let delay = if wait == Wait::Hlt { settle } else { 0 };
    let (fa, fb) = (irqchip::irq_flag_addr(&va), irqchip::irq_flag_addr(&vb));
    let vm_abort = vm.clone();
    let abort = move || stop_and_kick(&vm_abort, &[0, 1]);

    let (a, b) = run_pair(
        name,
        cpus,
        || {
            let (prep, kvm) = run_entry_counted(&mut va, &ipi_send_a_to_b(n, fa, wait.reg(), delay), deadline)?;
            Ok((read_samples(&va, n, "ipi_send")?, prep, kvm))
        },
        || {
            let (prep, kvm) =
                run_entry_counted(&mut vb, &irq_recv(1, n, fb, wait.reg(), irqchip::x2apic_icr(0, VEC_IRQ)), deadline)?;
            Ok((read_samples(&vb, n, "irq_recv")?, prep, kvm))
        },
        &abort,
    )?;
    let (rt, prep_a, kvm_a) = a;
    let (one_way, prep_b, kvm_b) = b;
    check_one_way(name, &one_way)?;
    let (ca, cb) = counters_ab(name, &vm)?;
    if ca.handler != n || cb.handler != n {
        return Err(invalid(name, format!("handler entries: A {} B {}, expected {n} each", ca.handler, cb.handler)));
    }
    if ca.sent != n || cb.sent != n {
        return Err(invalid(name, format!("IPIs sent: A {} B {}, expected {n} each", ca.sent, cb.sent)));
    }
    check_exits(name, "unexpected userspace exits during the loop", &[(&va, 1), (&vb, 1)])?;
    let (stats_a, stats_b) = (&va.stats, &vb.stats);
    let ow = median(&one_way);
    let ow99 = {
        let mut c = one_way.clone();
        c.sort_unstable();
        c[(c.len() * 99 / 100).min(c.len() - 1)]
    };
    let mut s = samples(rt, Method::PerOp, &prep_a, &[("vCPU B", &prep_b)], &pins_ab(cpus), vm.backend().name());
    s.notes.push(format!(
        "true round trip: A lfence;rdtsc -> x2APIC ICR write (wrmsr 0x830, fixed vector {VEC_IRQ:#x}, physical dest 1) -> \
         B's IDT handler -> B's loop writes the ICR back (dest 0) -> A's handler entry lfence;rdtsc; EOIs (wrmsr 0x80b) after the timed part"
    ));
    s.notes.push(format!(
        "wait={}: {}; {}",
        wait.name(),
        wait_note(wait, "B", pvm),
        wait_note(wait, "A (for the reply)", pvm)
    ));
    if wait == Wait::Hlt {
        s.notes.push(format!(
            "A sends {settle} cycles (20 us) after B announced its HLT; A halts right after its ICR write, so the reply may \
             arrive before A is fully halted"
        ));
        s.notes.push(ca.hlt_note("A"));
        s.notes.push(cb.hlt_note("B"));
        s.notes.push(poll_note);
        push_halt_stats(&mut s, "vCPU A", &kvm_a);
        push_halt_stats(&mut s, "vCPU B", &kvm_b);
    }
    push_exit_stats(&mut s, "vCPU A", "a", &kvm_a);
    push_exit_stats(&mut s, "vCPU B", "b", &kvm_b);
    s.notes.push(format!(
        "one-way A stamp -> B handler entry: median {ow} cycles, p99 {ow99} (metrics one_way_median, one_way_p99)"
    ));
    s.notes.push(irqchip::apicv_note(vm.backend().kind()));
    s.notes.push(format!(
        "handlers: A {} B {}; IPIs sent: A {} B {}; spurious: A {} B {}; 0 userspace exits during the loop; EINTR: A {} B {}",
        ca.handler, cb.handler, ca.sent, cb.sent, ca.spurious, cb.spurious, stats_a.intr, stats_b.intr
    ));
    s.notes.push(setup.join("; "));
    s.metrics.push(Metric::new("one_way_median", ow as f64, "cycles"));
    s.metrics.push(Metric::new("one_way_p99", ow99 as f64, "cycles"));
    s.metrics.push(Metric::new("handler_entries_a", ca.handler as f64, "interrupts"));
    s.metrics.push(Metric::new("handler_entries_b", cb.handler as f64, "interrupts"));
    s.metrics.push(Metric::new("early_hlt_wakes", (ca.early + cb.early) as f64, "wakes"));
    s.metrics.push(Metric::new(
        "userspace_exits",
        (stats_a.userspace_exits() + stats_b.userspace_exits() - 2) as f64,
        "exits",
    ));
    Ok(s)
}
