//! Notification between two vCPUs: `vm.notify.poll` (one VM), `vm.notify.poll-intervm`
//! (two VMs sharing a memfd), `vm.notify.mwait` (MONITOR/MWAIT without exits) and
//! `vm.notify.halt` (HLT + IPI, the exit-based baseline). Guest code: `payloads::notify`
//! and `payloads::irq`.

use std::time::Instant;

use kvm_bindings::{KVM_CAP_X86_DISABLE_EXITS, KVM_X86_DISABLE_EXITS_MWAIT};
use probe_api::{Budget, Methods, Metric, Point, ProbeError, Samples, Support};

use super::{invalid, no_points, VmProbe};
use super::multi::{
    check_runnable,
    apply_halt_poll, check_iterations, check_one_way, clear_status, counters, halt_points, halt_poll_of, halt_stats, irq_vm,
    irqchip_support, prepare, push_exit_stats, push_halt_stats, read_samples,
    run_pair, samples, set_stop, shared_atomic, status, stop_and_kick, two_cpus, two_vcpu_support, unexpected_exits,
    Prepared,
};
use crate::vmm::irqchip::{self, st, VEC_IRQ};
use crate::vmm::{self, layout, Handled, SharedMemory, Vcpu, Vm};
use std::sync::atomic::Ordering;

/// The two cache lines of the one-VM ping-pong (ping at +0, pong at +64): in main memory,
/// past the per-vCPU result words.
pub const POLL_LINES: u64 = layout::RESULTS + 0x1_0000;
/// The line vm.notify.mwait monitors.
pub const MWAIT_LINE: u64 = layout::RESULTS + 0x1_1000;
/// Size of the memfd the two VMs of vm.notify.poll-intervm share.
pub const SHARED_SIZE: usize = 2 << 20;

pub(crate) const POLL: VmProbe = VmProbe {
    name: "vm.notify.poll",
    description: "two vCPUs of one VM ping-pong two cache lines with PAUSE loops (no exits): vCPU A writes ping = n and \
                  spins until vCPU B echoes it in pong; sample = one round trip (A lfence;rdtsc)",
    group: "notify",
    methods: Methods::Both,
    support: two_vcpu_support,
    points: no_points,
    run: run_poll,
};

pub(crate) const POLL_INTERVM: VmProbe = VmProbe {
    name: "vm.notify.poll-intervm",
    description: "the vm.notify.poll round trip between two VMs (one vCPU each, one process, two pinned threads) whose \
                  memslots map one shared memfd region; no exits during the loop",
    group: "notify",
    methods: Methods::Both,
    support: two_vcpu_support,
    points: no_points,
    run: run_poll_intervm,
};

pub(crate) const MWAIT: VmProbe = VmProbe {
    name: "vm.notify.mwait",
    description: "MONITOR/MWAIT wake-up between two vCPUs with MWAIT exits disabled (KVM_CAP_X86_DISABLE_EXITS, MWAIT): \
                  B MONITORs a line and MWAITs; A stores its lfence;rdtsc there; sample = B's lfence;rdtsc after the \
                  wake - A's stamp (one way)",
    group: "notify",
    methods: Methods::PerOpOnly,
    support: mwait_support,
    points: no_points,
    run: run_mwait,
};

pub(crate) const HALT: VmProbe = VmProbe {
    name: "vm.notify.halt",
    description: "HLT + interrupt wake-up between two vCPUs (the exit-based baseline for poll / mwait): B halts; A stamps \
                  lfence;rdtsc and sends an x2APIC IPI; sample = B's IDT handler entry - A's stamp (one way)",
    group: "notify",
    methods: Methods::PerOpOnly,
    support: irqchip_support,
    points: halt_points,
    run: run_halt,
};

fn batch_of(budget: &Budget) -> u64 {
    u64::from(budget.method.batch().max(1))
}

fn per_op(raw: Vec<u64>, batch: u64) -> Vec<u64> {
    if batch > 1 {
        raw.iter().map(|c| (c + batch / 2) / batch).collect()
    } else {
        raw
    }
}

/// The initiator side of a ping-pong: run_sampling of `poll_ping`, then STOP the responder.
type KvmStats = Option<std::collections::BTreeMap<String, u64>>;
/// KVM's vCPU statistics before and after a loop.
type Around = (KvmStats, KvmStats);

fn ping(
    vcpu: &mut Vcpu,
    n: u64,
    batch: u64,
    lines: u64,
    deadline: Instant,
    stop_peer: &dyn Fn(),
) -> Result<(Vec<u64>, Prepared, Around), ProbeError> {
    let prep = prepare(vcpu, deadline)?;
    vcpu.stats.reset();
    let status_area = layout::params(vcpu.id());
    let before = halt_stats(vcpu);
    let r = vcpu.run_sampling(
        "poll_ping",
        n,
        batch,
        deadline,
        &|r| {
            r.r10 = lines;
            r.r15 = status_area;
        },
        &mut |_| Handled::No,
    );
    stop_peer();
    let after = halt_stats(vcpu);
    Ok((r?, prep, (before, after)))
}

/// The responder: `poll_pong` until STOP.
fn pong(vcpu: &mut Vcpu, lines: u64, deadline: Instant) -> Result<(Prepared, Around), ProbeError> {
    let prep = prepare(vcpu, deadline)?;
    vcpu.stats.reset();
    let status_area = layout::params(vcpu.id());
    let rip = vcpu.vm().entry("poll_pong")?;
    vcpu.set_entry(rip, |r| {
        r.r10 = lines;
        r.r15 = status_area;
    })?;
    let before = halt_stats(vcpu);
    vcpu.run(deadline, &mut |_| Handled::No)?;
    Ok((prep, (before, halt_stats(vcpu))))
}

fn run_poll(p: &VmProbe, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    check_runnable(p, budget)?;
    let name = p.name;
    let n = budget.iterations;
    let batch = batch_of(budget);
    check_iterations(name, n)?;
    let cpus = two_cpus(name, budget)?;
    let deadline = Instant::now() + budget.timeout;
    let vm = Vm::new(name)?;
    let mut va = vm.create_vcpu(0)?;
    let mut vb = vm.create_vcpu(1)?;
    clear_status(&vm, 0)?;
    clear_status(&vm, 1)?;
    vm.fill_u64s(POLL_LINES, 16, 0)?;
    let (vm1, vm2) = (vm.clone(), vm.clone());
    let abort = move || {
        set_stop(&vm1, 0);
        set_stop(&vm1, 1);
    };
    let stop_b = move || set_stop(&vm2, 1);
    let ((raw, prep_a, ka), (prep_b, kb)) = run_pair(
        name,
        cpus,
        || ping(&mut va, n, batch, POLL_LINES, deadline, &stop_b),
        || pong(&mut vb, POLL_LINES, deadline),
        &abort,
    )?;
    let echoes = status(&vm, 1, st::COUNT)?;
    if echoes != n * batch {
        return Err(invalid(name, format!("B echoed {echoes} pings, expected {}", n * batch)));
    }
    let chunks = (n - 1) / layout::samples(0).1 + 1;
    if let Some(e) = unexpected_exits(&va, chunks).or(unexpected_exits(&vb, 1)) {
        return Err(invalid(name, format!("userspace exits during the loop: {e}")));
    }
    let mut s = samples(
        per_op(raw, batch),
        budget.method,
        &prep_a,
        &[("vCPU B", &prep_b)],
        &[("vCPU A (0)", cpus[0]), ("vCPU B (1)", cpus[1])],
        vm.backend().name(),
    );
    s.notes.push(format!(
        "ping at GPA {POLL_LINES:#x}, pong at {:#x} (separate cache lines, one writer each); PAUSE in both spin loops; \
         {echoes} echoes; 0 userspace exits during the loop (EINTR: A {} B {})",
        POLL_LINES + 64,
        va.stats.intr,
        vb.stats.intr
    ));
    s.metrics.push(Metric::new("echoes", echoes as f64, "round trips"));
    s.metrics.push(Metric::new("userspace_exits", 0.0, "exits"));
    push_exit_stats(&mut s, "vCPU A", "a", &ka.0, &ka.1);
    push_exit_stats(&mut s, "vCPU B", "b", &kb.0, &kb.1);
    Ok(s)
}

fn run_poll_intervm(p: &VmProbe, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    check_runnable(p, budget)?;
    let name = p.name;
    let n = budget.iterations;
    let batch = batch_of(budget);
    check_iterations(name, n)?;
    let cpus = two_cpus(name, budget)?;
    let deadline = Instant::now() + budget.timeout;
    let shm = SharedMemory::new(SHARED_SIZE)?;
    for off in (0..128).step_by(8) {
        shared_atomic(&shm, off).store(0, Ordering::SeqCst);
    }
    let vm_a = Vm::new(name)?;
    let vm_b = Vm::new(name)?;
    vm_a.add_shared(1, layout::SHARED_GPA, &shm)?;
    vm_b.add_shared(1, layout::SHARED_GPA, &shm)?;
    let mut va = vm_a.create_vcpu(0)?;
    let mut vb = vm_b.create_vcpu(0)?;
    clear_status(&vm_a, 0)?;
    clear_status(&vm_b, 0)?;
    let (a1, b1, b2) = (vm_a.clone(), vm_b.clone(), vm_b.clone());
    let abort = move || {
        set_stop(&a1, 0);
        set_stop(&b1, 0);
    };
    let stop_b = move || set_stop(&b2, 0);
    let ((raw, prep_a, ka), (prep_b, kb)) = run_pair(
        name,
        cpus,
        || ping(&mut va, n, batch, layout::SHARED_GPA, deadline, &stop_b),
        || pong(&mut vb, layout::SHARED_GPA, deadline),
        &abort,
    )?;
    let echoes = status(&vm_b, 0, st::COUNT)?;
    if echoes != n * batch {
        return Err(invalid(name, format!("VM B echoed {echoes} pings, expected {}", n * batch)));
    }
    let host_ping = shared_atomic(&shm, 0).load(Ordering::SeqCst);
    if host_ping != n * batch {
        return Err(invalid(name, format!("the shared memfd holds ping {host_ping}, expected {}", n * batch)));
    }
    let chunks = (n - 1) / layout::samples(0).1 + 1;
    if let Some(e) = unexpected_exits(&va, chunks).or(unexpected_exits(&vb, 1)) {
        return Err(invalid(name, format!("userspace exits during the loop: {e}")));
    }
    let mut s = samples(
        per_op(raw, batch),
        budget.method,
        &prep_a,
        &[("VM B's vCPU", &prep_b)],
        &[("VM A vCPU", cpus[0]), ("VM B vCPU", cpus[1])],
        vm_a.backend().name(),
    );
    s.notes.push(format!(
        "two VMs in one process, one vCPU each; memslot 1 of both at GPA {:#x} maps the same {} KiB memfd (MAP_SHARED); \
         ping at +0, pong at +64; PAUSE spin loops; {echoes} echoes; the host sees ping = {host_ping}",
        layout::SHARED_GPA,
        SHARED_SIZE >> 10
    ));
    s.notes.push(format!(
        "exits to userspace during the measured loop: 0 (VM A: {} exits = its {chunks} done port write(s); VM B: {} = done); \
         KVM_RUN interruptions (EINTR): A {} B {}",
        va.stats.userspace_exits(),
        vb.stats.userspace_exits(),
        va.stats.intr,
        vb.stats.intr
    ));
    s.metrics.push(Metric::new("echoes", echoes as f64, "round trips"));
    s.metrics.push(Metric::new("userspace_exits", 0.0, "exits"));
    push_exit_stats(&mut s, "VM A's vCPU", "a", &ka.0, &ka.1);
    push_exit_stats(&mut s, "VM B's vCPU", "b", &kb.0, &kb.1);
    Ok(s)
}

fn disable_exits_names(caps: u32) -> String {
    let names: Vec<&str> = [(1, "MWAIT"), (2, "HLT"), (4, "PAUSE"), (8, "CSTATE")]
        .into_iter()
        .filter(|(b, _)| caps & b != 0)
        .map(|(_, n)| n)
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join("|")
    }
}

fn mwait_support() -> Support {
    match two_vcpu_support() {
        Support::Supported => {}
        u => return u,
    }
    let monitor = raw_cpuid::CpuId::new().get_feature_info().map(|f| f.has_monitor_mwait()).unwrap_or(false);
    let caps = match vmm::kvm() {
        Ok(k) => k.check_extension_raw(libc::c_ulong::from(KVM_CAP_X86_DISABLE_EXITS)),
        Err(e) => return Support::Unsupported(e.to_string()),
    };
    let kvm_mwait = caps > 0 && (caps as u32) & KVM_X86_DISABLE_EXITS_MWAIT != 0;
    if monitor && kvm_mwait {
        return Support::Supported;
    }
    let cpu = if monitor {
        "the host CPU has MONITOR/MWAIT (CPUID.1:ECX bit 3 = 1)".to_string()
    } else {
        "the host CPU lacks MONITOR/MWAIT (CPUID.1:ECX bit 3 = 0)".to_string()
    };
    let kvm = if caps < 0 {
        format!("KVM_CHECK_EXTENSION(KVM_CAP_X86_DISABLE_EXITS) failed ({caps})")
    } else if kvm_mwait {
        format!("KVM_CHECK_EXTENSION(KVM_CAP_X86_DISABLE_EXITS) = {caps:#x} ({}) offers MWAIT", disable_exits_names(caps as u32))
    } else {
        format!(
            "KVM_CHECK_EXTENSION(KVM_CAP_X86_DISABLE_EXITS) = {caps:#x} ({}): no KVM_X86_DISABLE_EXITS_MWAIT (0x1)",
            disable_exits_names(caps as u32)
        )
    };
    Support::Unsupported(format!("{cpu}; {kvm}; MWAIT would exit to KVM, so there is no exit-free MWAIT wake-up to time"))
}

fn run_mwait(p: &VmProbe, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    check_runnable(p, budget)?;
    let name = p.name;
    let n = budget.iterations;
    check_iterations(name, n)?;
    let cpus = two_cpus(name, budget)?;
    let deadline = Instant::now() + budget.timeout;
    let vm = Vm::new(name)?;
    irqchip::disable_exits(&vm, KVM_X86_DISABLE_EXITS_MWAIT)?;
    let mut va = vm.create_vcpu(0)?;
    let mut vb = vm.create_vcpu(1)?;
    clear_status(&vm, 0)?;
    clear_status(&vm, 1)?;
    vm.write_u64(MWAIT_LINE, 0)?;
    let settle = irqchip::settle_cycles(va.tsc_khz()?);
    let vm1 = vm.clone();
    let abort = move || {
        set_stop(&vm1, 0);
        set_stop(&vm1, 1);
        let _ = vm1.write_u64(MWAIT_LINE, 1); // wakes a monitor
    };
    let (prep_a, (cycles, prep_b)) = run_pair(
        name,
        cpus,
        || {
            let prep = prepare(&mut va, deadline)?;
            va.stats.reset();
            let rip = vm.entry("notify_store")?;
            va.set_entry(rip, |r| {
                r.rsi = n;
                r.r9 = settle;
                r.r10 = layout::params(1);
                r.r11 = MWAIT_LINE;
                r.r15 = layout::params(0);
            })?;
            va.run(deadline, &mut |_| Handled::No)?;
            Ok(prep)
        },
        || {
            let prep = prepare(&mut vb, deadline)?;
            vb.stats.reset();
            let (buf, _) = layout::samples(1);
            let rip = vm.entry("mwait_recv")?;
            vb.set_entry(rip, |r| {
                r.rdi = buf;
                r.rsi = n;
                r.r11 = MWAIT_LINE;
                r.r15 = layout::params(1);
            })?;
            vb.run(deadline, &mut |_| Handled::No)?;
            Ok((read_samples(&vb, n, "mwait_recv")?, prep))
        },
        &abort,
    )?;
    check_one_way(name, &cycles)?;
    if let Some(e) = unexpected_exits(&va, 1).or(unexpected_exits(&vb, 1)) {
        return Err(invalid(name, format!("userspace exits during the loop: {e}")));
    }
    let mwaits = status(&vm, 1, st::MWAITS)?;
    let early = status(&vm, 1, st::EARLY)?;
    let mut s = samples(
        cycles,
        probe_api::Method::PerOp,
        &prep_b,
        &[("vCPU A", &prep_a)],
        &[("vCPU A (0)", cpus[0]), ("vCPU B (1)", cpus[1])],
        vm.backend().name(),
    );
    s.notes.push(format!(
        "KVM_ENABLE_CAP(KVM_CAP_X86_DISABLE_EXITS, MWAIT): MONITOR/MWAIT run natively; guest CPUID left as KVM reports it; \
         A stores {settle} cycles (20 us) after B announced its MWAIT; {mwaits} MWAITs, {early} early wakes"
    ));
    s.metrics.push(Metric::new("mwaits", mwaits as f64, "mwait"));
    s.metrics.push(Metric::new("early_wakes", early as f64, "wakes"));
    Ok(s)
}

fn run_halt(p: &VmProbe, point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    check_runnable(p, budget)?;
    let name = p.name;
    let n = budget.iterations;
    check_iterations(name, n)?;
    let cpus = two_cpus(name, budget)?;
    let deadline = Instant::now() + budget.timeout;
    let halt_poll = halt_poll_of(name, point)?;
    let (vm, mut vcpus, setup) = irq_vm(name, 2)?;
    let poll_note = apply_halt_poll(&vm, halt_poll)?;
    let mut vb = vcpus.remove(1);
    let mut va = vcpus.remove(0);
    let settle = irqchip::settle_cycles(va.tsc_khz()?);
    let (fa, fb) = (irqchip::irq_flag_addr(&va), irqchip::irq_flag_addr(&vb));
    let vm_abort = vm.clone();
    let abort = move || stop_and_kick(&vm_abort, &[0, 1]);
    let (prep_a, (cycles, prep_b)) = run_pair(
        name,
        cpus,
        || {
            let prep = prepare(&mut va, deadline)?;
            va.stats.reset();
            va.set_entry(vm.entry("ipi_send")?, |r| {
                r.rdi = layout::samples(0).0;
                r.rsi = n;
                r.r15 = layout::params(0);
                r.r10 = layout::params(1);
                r.r11 = irqchip::x2apic_icr(1, VEC_IRQ);
                r.rbx = fa;
                r.r8 = 2; // one way: no reply
                r.r9 = settle;
            })?;
            va.run(deadline, &mut |_| Handled::No)?;
            Ok((prep, unexpected_exits(&va, 1), va.stats.intr))
        },
        || {
            let prep = prepare(&mut vb, deadline)?;
            vb.stats.reset();
            vb.set_entry(vm.entry("irq_recv")?, |r| {
                r.rdi = layout::samples(1).0;
                r.rsi = n;
                r.r15 = layout::params(1);
                r.rbx = fb;
                r.r8 = 1; // HLT
                r.r11 = 0;
            })?;
            let hb = halt_stats(&vb);
            vb.run(deadline, &mut |_| Handled::No)?;
            let ha = halt_stats(&vb);
            Ok((read_samples(&vb, n, "irq_recv")?, (prep, unexpected_exits(&vb, 1), vb.stats.intr, (hb, ha))))
        },
        &abort,
    )?;
    let (prep_a, exits_a, intr_a) = prep_a;
    let (prep_b, exits_b, intr_b, halts_b) = prep_b;
    check_one_way(name, &cycles)?;
    let (ca, cb) = (counters(&vm, 0)?, counters(&vm, 1)?);
    ca.check_no_kicks(name, "A")?;
    cb.check_no_kicks(name, "B")?;
    if cb.handler != n || ca.sent != n || ca.handler != 0 {
        return Err(invalid(
            name,
            format!("B's handler ran {} times, A sent {} IPIs and took {} interrupts; expected {n}, {n}, 0", cb.handler, ca.sent, ca.handler),
        ));
    }
    if let Some(e) = exits_a.or(exits_b) {
        return Err(invalid(name, format!("userspace exits during the loop: {e}")));
    }
    let pvm = vm.backend().kind() == vmm::BackendKind::Pvm;
    let mut s = samples(
        cycles,
        probe_api::Method::PerOp,
        &prep_b,
        &[("vCPU A", &prep_a)],
        &[("vCPU A (0)", cpus[0]), ("vCPU B (1)", cpus[1])],
        vm.backend().name(),
    );
    s.notes.push(format!(
        "one way: A lfence;rdtsc -> x2APIC ICR write (wrmsr 0x830, vector {VEC_IRQ:#x}, dest 1) -> B wakes from HLT \
         ({}=1; HLT handled by the in-kernel irqchip, no userspace exit) -> B's IDT handler entry lfence;rdtsc; \
         A sends {settle} cycles (20 us) after B announced its HLT; EOI (wrmsr 0x80b) after the sample",
        if pvm { "vif.if" } else { "RFLAGS.IF" }
    ));
    s.notes.push(cb.hlt_note("B"));
    s.notes.push(poll_note);
    push_halt_stats(&mut s, "vCPU B", &halts_b.0, &halts_b.1);
    push_exit_stats(&mut s, "vCPU B", "b", &halts_b.0, &halts_b.1);
    s.notes.push(irqchip::apicv_note(vm.backend().kind()));
    s.notes.push(format!(
        "B's handler ran {} times; A sent {} IPIs; spurious: {}; 0 userspace exits during the loop; EINTR: A {intr_a} B {intr_b}",
        cb.handler, ca.sent, cb.spurious
    ));
    s.notes.push(setup.join("; "));
    s.metrics.push(Metric::new("handler_entries", cb.handler as f64, "interrupts"));
    s.metrics.push(Metric::new("early_hlt_wakes", cb.early as f64, "wakes"));
    s.metrics.push(Metric::new("hlts", cb.hlts as f64, "hlt"));
    Ok(s)
}
