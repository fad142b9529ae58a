//! Interrupts: `vm.irq.inject` (host irqfd -> guest IDT handler) and `vm.ipi.roundtrip`
//! (vCPU -> vCPU x2APIC IPI and back). Guest code: `payloads::irq`.

use std::time::Instant;

use probe_api::{Budget, Method, Methods, Metric, Point, ProbeError, Samples};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{invalid, VmProbe};
use super::multi::{
    check_runnable,
    apply_halt_poll, check_iterations, check_one_way, counters, halt_poll_of, halt_stats, push_exit_stats, push_halt_stats, irq_vm, irqchip_support, median, prepare, read_samples, run_pair, samples,
    stop_and_kick, two_cpus, unexpected_exits, wait_of, wait_points, guest_atomic, Wait,
};
use crate::vmm::irqchip::{self, st, VEC_IRQ};
use crate::vmm::{layout, Handled};
use std::sync::atomic::Ordering;

/// GSI of the irqfd's MSI route.
pub const IRQFD_GSI: u32 = 5;

pub(crate) const INJECT: VmProbe = VmProbe {
    name: "vm.irq.inject",
    description: "interrupt delivery from the host to a native guest: host lfence;rdtsc, then write to an irqfd with an MSI \
                  route on the in-kernel irqchip; sample = guest IDT handler entry (lfence;rdtsc) - host stamp. \
                  wait=spin: the guest spins with interrupts enabled; wait=hlt: the guest is halted (HLT + wake-up)",
    group: "irq",
    methods: Methods::PerOpOnly,
    support: irqchip_support,
    points: wait_points,
    run: run_inject,
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
    check_runnable(p, budget)?;
    let name = p.name;
    let wait = wait_of(name, point)?;
    let n = budget.iterations;
    check_iterations(name, n)?;
    let cpus = two_cpus(name, budget)?;
    let deadline = Instant::now() + budget.timeout;

    let halt_poll = halt_poll_of(name, point)?;
    let (vm, mut vcpus, setup) = irq_vm(name, 1)?;
    let poll_note = apply_halt_poll(&vm, halt_poll)?;
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
            let prep = prepare(&mut v0, deadline)?;
            v0.stats.reset();
            let (buf, _) = layout::samples(0);
            v0.set_entry(vm.entry("irq_recv")?, |r| {
                r.rdi = buf;
                r.rsi = n;
                r.r15 = layout::params(0);
                r.rbx = flag;
                r.r8 = wait.reg();
                r.r11 = 0;
            })?;
            let hb = halt_stats(&v0);
            v0.run(deadline, &mut |_| Handled::No)?;
            let ha = halt_stats(&v0);
            let s = read_samples(&v0, n, "irq_recv")?;
            Ok((s, prep, v0.stats.clone(), unexpected_exits(&v0, 1), (hb, ha)))
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
    let (cycles, prep, stats, exits, halts) = guest;
    check_one_way(name, &cycles)?;
    let c = counters(&vm, 0)?;
    c.check_no_kicks(name, "the guest")?;
    if c.handler != n {
        return Err(invalid(name, format!("the vector-0x40 handler ran {} times for {n} interrupts", c.handler)));
    }
    if sent != n {
        return Err(invalid(name, format!("host sent {sent} interrupts, expected {n}")));
    }
    if let Some(e) = exits {
        return Err(invalid(name, format!("unexpected userspace exits during the loop: {e}")));
    }
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
        s.notes.push(format!("host sends {settle} cycles (20 us) after the guest announced its HLT, so that it is halted"));
        s.notes.push(c.hlt_note("guest"));
        s.notes.push(poll_note);
        push_halt_stats(&mut s, "the guest", &halts.0, &halts.1);
    }
    push_exit_stats(&mut s, "the guest", "guest", &halts.0, &halts.1);
    s.notes.push(irqchip::apicv_note(vm.backend().kind()));
    s.notes.push(if same_clock {
        format!(
            "host and guest TSC compared directly ({tsc_attr}): measured guest - host = {tsc_off} cycles, within the \
             +-{tsc_err} cycles of the KVM_GET_MSRS(IA32_TSC) bracket"
        )
    } else {
        format!("{tsc_attr}; measured guest TSC - host TSC = {tsc_off} +- {tsc_err} cycles: host stamps corrected by it")
    });
    s.notes.push(format!(
        "handler ran {} times for {n} interrupts; {} spurious (0xff); 0 userspace exits during the loop; {} KVM_RUN interruptions (EINTR)",
        c.handler, c.spurious, stats.intr
    ));
    s.notes.push(setup.join("; "));
    s.metrics.push(Metric::new("handler_entries", c.handler as f64, "interrupts"));
    s.metrics.push(Metric::new("early_hlt_wakes", c.early as f64, "wakes"));
    s.metrics.push(Metric::new("hlts", c.hlts as f64, "hlt"));
    s.metrics.push(Metric::new("tsc_offset_guest_minus_host", tsc_off as f64, "cycles"));
    s.metrics.push(Metric::new("userspace_exits", (stats.userspace_exits() - 1) as f64, "exits"));
    Ok(s)
}

fn run_ipi_roundtrip(p: &VmProbe, point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    check_runnable(p, budget)?;
    let name = p.name;
    let wait = wait_of(name, point)?;
    let n = budget.iterations;
    check_iterations(name, n)?;
    let cpus = two_cpus(name, budget)?;
    let deadline = Instant::now() + budget.timeout;
    let halt_poll = halt_poll_of(name, point)?;
    let (vm, mut vcpus, setup) = irq_vm(name, 2)?;
    let poll_note = apply_halt_poll(&vm, halt_poll)?;
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
            let prep = prepare(&mut va, deadline)?;
            va.stats.reset();
            let (buf, _) = layout::samples(0);
            va.set_entry(vm.entry("ipi_send")?, |r| {
                r.rdi = buf;
                r.rsi = n;
                r.r15 = layout::params(0);
                r.r10 = layout::params(1);
                r.r11 = irqchip::x2apic_icr(1, VEC_IRQ);
                r.rbx = fa;
                r.r8 = wait.reg();
                r.r9 = delay;
            })?;
            let hb = halt_stats(&va);
            va.run(deadline, &mut |_| Handled::No)?;
            let ha = halt_stats(&va);
            let s = read_samples(&va, n, "ipi_send")?;
            Ok((s, prep, va.stats.clone(), unexpected_exits(&va, 1), (hb, ha)))
        },
        || {
            let prep = prepare(&mut vb, deadline)?;
            vb.stats.reset();
            let (buf, _) = layout::samples(1);
            vb.set_entry(vm.entry("irq_recv")?, |r| {
                r.rdi = buf;
                r.rsi = n;
                r.r15 = layout::params(1);
                r.rbx = fb;
                r.r8 = wait.reg();
                r.r11 = irqchip::x2apic_icr(0, VEC_IRQ);
            })?;
            let hb = halt_stats(&vb);
            vb.run(deadline, &mut |_| Handled::No)?;
            let ha = halt_stats(&vb);
            let s = read_samples(&vb, n, "irq_recv")?;
            Ok((s, prep, vb.stats.clone(), unexpected_exits(&vb, 1), (hb, ha)))
        },
        &abort,
    )?;
    let (rt, prep_a, stats_a, exits_a, halts_a) = a;
    let (one_way, prep_b, stats_b, exits_b, halts_b) = b;
    check_one_way(name, &one_way)?;
    let (ca, cb) = (counters(&vm, 0)?, counters(&vm, 1)?);
    ca.check_no_kicks(name, "A")?;
    cb.check_no_kicks(name, "B")?;
    if ca.handler != n || cb.handler != n {
        return Err(invalid(name, format!("handler entries: A {} B {}, expected {n} each", ca.handler, cb.handler)));
    }
    if ca.sent != n || cb.sent != n {
        return Err(invalid(name, format!("IPIs sent: A {} B {}, expected {n} each", ca.sent, cb.sent)));
    }
    if let Some(e) = exits_a.or(exits_b) {
        return Err(invalid(name, format!("unexpected userspace exits during the loop: {e}")));
    }
    let ow = median(&one_way);
    let ow99 = {
        let mut c = one_way.clone();
        c.sort_unstable();
        c[(c.len() * 99 / 100).min(c.len() - 1)]
    };
    let mut s = samples(
        rt,
        Method::PerOp,
        &prep_a,
        &[("vCPU B", &prep_b)],
        &[("vCPU A (0)", cpus[0]), ("vCPU B (1)", cpus[1])],
        vm.backend().name(),
    );
    s.notes.push(format!(
        "true round trip: A lfence;rdtsc -> x2APIC ICR write (wrmsr 0x830, fixed vector {VEC_IRQ:#x}, physical dest 1) -> \
         B's IDT handler -> B's loop writes the ICR back (dest 0) -> A's handler entry lfence;rdtsc; EOIs (wrmsr 0x80b) after the timed part"
    ));
    s.notes.push(format!("wait={}: {}; {}", wait.name(), wait_note(wait, "B", pvm), wait_note(wait, "A (for the reply)", pvm)));
    if wait == Wait::Hlt {
        s.notes.push(format!(
            "A sends {settle} cycles (20 us) after B announced its HLT; A halts right after its ICR write, so the reply may \
             arrive before A is fully halted"
        ));
        s.notes.push(ca.hlt_note("A"));
        s.notes.push(cb.hlt_note("B"));
        s.notes.push(poll_note);
        push_halt_stats(&mut s, "vCPU A", &halts_a.0, &halts_a.1);
        push_halt_stats(&mut s, "vCPU B", &halts_b.0, &halts_b.1);
    }
    push_exit_stats(&mut s, "vCPU A", "a", &halts_a.0, &halts_a.1);
    push_exit_stats(&mut s, "vCPU B", "b", &halts_b.0, &halts_b.1);
    s.notes.push(format!("one-way A stamp -> B handler entry: median {ow} cycles, p99 {ow99} (metrics one_way_median, one_way_p99)"));
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
    s.metrics.push(Metric::new("userspace_exits", (stats_a.userspace_exits() + stats_b.userspace_exits() - 2) as f64, "exits"));
    Ok(s)
}
