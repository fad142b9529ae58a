//! Notification between two vCPUs: `vm.notify.poll` (one VM), `vm.notify.poll-intervm`
//! (two VMs sharing a memfd), `vm.notify.mwait` (MONITOR/MWAIT without exits) and
//! `vm.notify.halt` (HLT + IPI, the exit-based baseline). Guest code: `payloads::notify`
//! and `payloads::irq`.

use crate::payloads::args::{MwaitRecv, NotifyStore, PollPing, PollPong};
use std::time::Instant;

use kvm_bindings::{KVM_CAP_X86_DISABLE_EXITS, KVM_X86_DISABLE_EXITS_MWAIT};
use probe_api::{Budget, Methods, Metric, Point, ProbeError, Samples, Support};

use super::multi::{
    check_exits, check_one_way, counters_ab, halt_points, halt_stats, ipi_send_a_to_b, irq_recv, irq_vm,
    irqchip_support, pins_ab, prepare, push_exit_stats, push_halt_stats, read_samples, run_entry, run_entry_counted,
    run_pair, samples, set_stop, set_stops, status, stop_and_kick, two_vcpu_support, vcpu_pair, Around, IrqVm,
    Prepared, Run,
};
use super::{batch_of, invalid, no_points, VmProbe};
use crate::vmm::irqchip::{self, st, VEC_IRQ};
use crate::vmm::{self, layout, Handled, SharedMemory, Vcpu, Vm};
use crate::worker::{self, Group, Role, Shared, WorkerSpec};
use std::sync::atomic::Ordering;

/// The two cache lines of the one-VM ping-pong (ping at +0, pong at +64): in main memory,
/// past the per-vCPU result words.
pub const POLL_LINES: u64 = layout::NOTIFY_LINES;
/// The line vm.notify.mwait monitors.
pub const MWAIT_LINE: u64 = layout::MWAIT_LINE;
/// Size of the memfd the two VMs of vm.notify.poll-intervm share.
pub const SHARED_SIZE: usize = 2 << 20;

pub(crate) const POLL: VmProbe = VmProbe {
    name: "vm.notify.poll",
    description:
        "two vCPUs of one VM ping-pong two cache lines with PAUSE loops (no exits): vCPU A writes ping = n and \
                  spins until vCPU B echoes it in pong; sample = one round trip (A lfence;rdtsc)",
    group: "notify",
    methods: Methods::Both,
    support: two_vcpu_support,
    points: no_points,
    run: run_poll,
    extra_keys: &[],
};

pub(crate) const POLL_INTERVM: VmProbe = VmProbe {
    name: "vm.notify.poll-intervm",
    description: "the vm.notify.poll round trip between two VMs, each in its own worker process with its vCPU thread \
                  pinned, whose memslots map one shared memfd region; no exits during the loop",
    group: "notify",
    methods: Methods::Both,
    support: two_vcpu_support,
    points: no_points,
    run: run_poll_intervm,
    extra_keys: &[],
};

pub(crate) const MWAIT: VmProbe = VmProbe {
    name: "vm.notify.mwait",
    description:
        "MONITOR/MWAIT wake-up between two vCPUs with MWAIT exits disabled (KVM_CAP_X86_DISABLE_EXITS, MWAIT): \
                  B MONITORs a line and MWAITs; A stores its lfence;rdtsc there; sample = B's lfence;rdtsc after the \
                  wake - A's stamp (one way)",
    group: "notify",
    methods: Methods::PerOpOnly,
    support: mwait_support,
    points: no_points,
    run: run_mwait,
    extra_keys: &[],
};

pub(crate) const HALT: VmProbe = VmProbe {
    name: "vm.notify.halt",
    description:
        "HLT + interrupt wake-up between two vCPUs (the exit-based baseline for poll / mwait): B halts; A stamps \
                  lfence;rdtsc and sends an x2APIC IPI; sample = B's IDT handler entry - A's stamp (one way)",
    group: "notify",
    methods: Methods::PerOpOnly,
    support: irqchip_support,
    points: halt_points,
    run: run_halt,
    extra_keys: &[],
};

fn per_op(raw: Vec<u64>, batch: u64) -> Vec<u64> {
    if batch > 1 {
        raw.iter().map(|c| (c + batch / 2) / batch).collect()
    } else {
        raw
    }
}

/// The initiator side of a ping-pong: run_sampling of `poll_ping`, then STOP the responder.
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
    let r = vcpu.run_sampling(&PollPing { lines, status: status_area }, n, batch, deadline, &mut |_| Handled::No);
    stop_peer();
    let after = halt_stats(vcpu);
    Ok((r?, prep, (before, after)))
}

/// The responder: `poll_pong` until STOP.
fn pong(vcpu: &mut Vcpu, lines: u64, deadline: Instant) -> Result<(Prepared, Around), ProbeError> {
    let status_area = layout::params(vcpu.id());
    run_entry_counted(vcpu, &PollPong { lines, status: status_area }, deadline)
}

/// What a ping-pong returns: A's raw samples, what both vCPUs' `prepare` measured and KVM's
/// statistics of both around their loops.
type PingPong = ((Vec<u64>, Prepared, Around), (Prepared, Around));

/// The ping-pong of vCPU `va` (`ping`, timed) against vCPU `vb` (`pong`) on the two lines at
/// `lines`: A stops B when it is done; a failure of either stops both.
fn ping_pong(run: &Run, batch: u64, lines: u64, va: &mut Vcpu, vb: &mut Vcpu) -> Result<PingPong, ProbeError> {
    let (vm_a, id_a) = (va.vm().clone(), va.id());
    let (vm_b, id_b) = (vb.vm().clone(), vb.id());
    let vm_b2 = vm_b.clone();
    let abort = move || {
        set_stop(&vm_a, id_a);
        set_stop(&vm_b, id_b);
    };
    let stop_b = move || set_stop(&vm_b2, id_b);
    let deadline = run.deadline;
    run_pair(
        run.name,
        run.cpus,
        || ping(va, run.n, batch, lines, deadline, &stop_b),
        || pong(vb, lines, deadline),
        &abort,
    )
}

/// Fails when a ping-pong of `n` samples had userspace exits beyond A's done exits (one per
/// sample-buffer chunk) and B's one.
fn check_ping_pong_exits(name: &str, va: &Vcpu, vb: &Vcpu, n: u64) -> Result<u64, ProbeError> {
    let chunks = (n - 1) / layout::samples(0).1 + 1;
    check_exits(name, "userspace exits during the loop", &[(va, chunks), (vb, 1)])?;
    Ok(chunks)
}

fn run_poll(p: &VmProbe, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    let run = Run::start(p, budget)?;
    let (name, n, batch) = (run.name, run.n, batch_of(budget));
    let vm = Vm::new(name)?;
    let (mut va, mut vb) = vcpu_pair(&vm)?;
    vm.fill_u64s(POLL_LINES, 16, 0)?;
    let ((raw, prep_a, ka), (prep_b, kb)) = ping_pong(&run, batch, POLL_LINES, &mut va, &mut vb)?;
    let echoes = status(&vm, 1, st::COUNT)?;
    if echoes != n * batch {
        return Err(invalid(name, format!("B echoed {echoes} pings, expected {}", n * batch)));
    }
    check_ping_pong_exits(name, &va, &vb, n)?;
    let mut s = samples(
        per_op(raw, batch),
        budget.method,
        &prep_a,
        &[("vCPU B", &prep_b)],
        &pins_ab(run.cpus),
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
    push_exit_stats(&mut s, "vCPU A", "a", &ka);
    push_exit_stats(&mut s, "vCPU B", "b", &kb);
    Ok(s)
}

/// Byte offset of the worker barrier in the shared region (past the two lines).
const INTERVM_BARRIER: u64 = 4096;

/// The one-process `Prepared` of what a worker measured.
fn prepared_of(p: &worker::proto::Prepared) -> Prepared {
    Prepared {
        native: vmm::NativeCheck { cycles_per_iter: p.cycles_per_iter, iterations: p.native_iterations },
        overhead: p.overhead,
        tsc_khz: p.tsc_khz,
        setup: p.setup.clone(),
    }
}

/// Fails when a worker's run had userspace exits beyond its `done` exits.
fn check_worker_exits(name: &str, who: &str, e: &worker::proto::Exits, done: u64) -> Result<(), ProbeError> {
    if e.userspace != done || e.done != done {
        return Err(invalid(
            name,
            format!(
                "userspace exits during the loop: {who}: {} userspace exits ({} done, {done} expected)",
                e.userspace, e.done
            ),
        ));
    }
    Ok(())
}

fn run_poll_intervm(p: &VmProbe, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    let run = Run::start(p, budget)?;
    let (name, n, batch) = (run.name, run.n, batch_of(budget));
    let shm = SharedMemory::new(SHARED_SIZE)?;
    let lines = layout::SHARED_GPA;
    let spec = |who: &str, cpu, role, stops_when_done| WorkerSpec {
        name: who.into(),
        cpu,
        role,
        stops_when_done,
        deadline: None,
    };
    let specs = vec![
        spec("VM A", run.cpus[0], Role::PollPing { samples: n, batch, lines }, vec![1]),
        spec("VM B", run.cpus[1], Role::PollPong { lines }, vec![]),
    ];
    let shared = [Shared { memory: &shm, slot: 1, gpa: layout::SHARED_GPA }];
    let mut group = Group::spawn(name, &shared, INTERVM_BARRIER, specs, run.deadline)?;
    let pids = group.pids();
    // Ctrl-C / SIGTERM: the workers are torn down at once (a partial row is not kept).
    let mut reports = group.supervise(&|| budget.stop.is_requested())?;
    drop(group);
    let (b, a) = (reports.remove(1), reports.remove(0));
    let echoes = b.status["COUNT"];
    if echoes != n * batch {
        return Err(invalid(name, format!("VM B echoed {echoes} pings, expected {}", n * batch)));
    }
    let host_ping = shm.atomic(0).load(Ordering::SeqCst);
    if host_ping != n * batch {
        return Err(invalid(name, format!("the shared memfd holds ping {host_ping}, expected {}", n * batch)));
    }
    let chunks = a.exits.chunks;
    check_worker_exits(name, "VM A", &a.exits, chunks)?;
    check_worker_exits(name, "VM B", &b.exits, 1)?;
    let (prep_a, prep_b) = (prepared_of(&a.prepared), prepared_of(&b.prepared));
    let mut s = samples(
        per_op(a.samples, batch),
        budget.method,
        &prep_a,
        &[("VM B's vCPU", &prep_b)],
        &[("VM A vCPU", run.cpus[0]), ("VM B vCPU", run.cpus[1])],
        vmm::host().backend()?.name(),
    );
    s.notes.push(format!(
        "two VMs in two worker processes (pids {} and {}), one vCPU each, started together on a barrier in shared memory; \
         memslot 1 of both at GPA {:#x} maps the same {} KiB memfd (MAP_SHARED, passed over a socket); ping at +0, pong at +64; \
         PAUSE spin loops; {echoes} echoes; the parent sees ping = {host_ping}",
        pids[0],
        pids[1],
        layout::SHARED_GPA,
        SHARED_SIZE >> 10
    ));
    s.notes.push(format!(
        "exits to userspace during the measured loop: 0 (VM A: {} exits = its {chunks} done port write(s); VM B: {} = done); \
         KVM_RUN interruptions (EINTR): A {} B {}",
        a.exits.userspace, b.exits.userspace, a.exits.intr, b.exits.intr
    ));
    s.metrics.push(Metric::new("echoes", echoes as f64, "round trips"));
    s.metrics.push(Metric::new("userspace_exits", 0.0, "exits"));
    push_exit_stats(&mut s, "VM A's vCPU", "a", &(a.kvm_before, a.kvm_after));
    push_exit_stats(&mut s, "VM B's vCPU", "b", &(b.kvm_before, b.kvm_after));
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

pub(crate) fn mwait_support() -> Support {
    match two_vcpu_support() {
        Support::Supported => {}
        u => return u,
    }
    let monitor = raw_cpuid::CpuId::new().get_feature_info().map(|f| f.has_monitor_mwait()).unwrap_or(false);
    let caps = match vmm::host().kvm() {
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
        format!(
            "KVM_CHECK_EXTENSION(KVM_CAP_X86_DISABLE_EXITS) = {caps:#x} ({}) offers MWAIT",
            disable_exits_names(caps as u32)
        )
    } else {
        format!(
            "KVM_CHECK_EXTENSION(KVM_CAP_X86_DISABLE_EXITS) = {caps:#x} ({}): no KVM_X86_DISABLE_EXITS_MWAIT (0x1)",
            disable_exits_names(caps as u32)
        )
    };
    Support::Unsupported(format!(
        "{cpu}; {kvm}; MWAIT would exit to KVM, so there is no exit-free MWAIT wake-up to time"
    ))
}

fn run_mwait(p: &VmProbe, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    let Run { name, n, cpus, deadline } = Run::start(p, budget)?;
    let vm = Vm::new(name)?;
    irqchip::disable_exits(&vm, KVM_X86_DISABLE_EXITS_MWAIT)?;
    let (mut va, mut vb) = vcpu_pair(&vm)?;
    vm.write_u64(MWAIT_LINE, 0)?;
    let settle = irqchip::settle_cycles(va.tsc_khz()?);
    let vm1 = vm.clone();
    let abort = move || {
        set_stops(&vm1, &[0, 1]);
        let _ = vm1.write_u64(MWAIT_LINE, 1); // wakes a monitor
    };
    let (prep_a, (cycles, prep_b)) = run_pair(
        name,
        cpus,
        || {
            let store = NotifyStore {
                samples: n,
                delay: settle,
                peer_status: layout::params(1),
                line: MWAIT_LINE,
                status: layout::params(0),
            };
            run_entry(&mut va, &store, deadline)
        },
        || {
            let recv =
                MwaitRecv { buffer: layout::samples(1).0, samples: n, line: MWAIT_LINE, status: layout::params(1) };
            let prep = run_entry(&mut vb, &recv, deadline)?;
            Ok((read_samples(&vb, n, "mwait_recv")?, prep))
        },
        &abort,
    )?;
    check_one_way(name, &cycles)?;
    check_exits(name, "userspace exits during the loop", &[(&va, 1), (&vb, 1)])?;
    let mwaits = status(&vm, 1, st::MWAITS)?;
    let early = status(&vm, 1, st::EARLY)?;
    let mut s =
        samples(cycles, probe_api::Method::PerOp, &prep_b, &[("vCPU A", &prep_a)], &pins_ab(cpus), vm.backend().name());
    s.notes.push(format!(
        "KVM_ENABLE_CAP(KVM_CAP_X86_DISABLE_EXITS, MWAIT): MONITOR/MWAIT run natively; guest CPUID left as KVM reports it; \
         A stores {settle} cycles (20 us) after B announced its MWAIT; {mwaits} MWAITs, {early} early wakes"
    ));
    s.metrics.push(Metric::new("mwaits", mwaits as f64, "mwait"));
    s.metrics.push(Metric::new("early_wakes", early as f64, "wakes"));
    Ok(s)
}

fn run_halt(p: &VmProbe, point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    let Run { name, n, cpus, deadline } = Run::start(p, budget)?;
    let IrqVm { vm, mut vcpus, setup, poll_note } = irq_vm(name, point, 2)?;
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
            let send = ipi_send_a_to_b(n, fa, 2, settle); // mode 2: one way, no reply
            run_entry(&mut va, &send, deadline)
        },
        || {
            let (prep, kvm) = run_entry_counted(
                &mut vb,
                &irq_recv(1, n, fb, 1, 0), // wait 1: HLT
                deadline,
            )?;
            Ok((read_samples(&vb, n, "irq_recv")?, (prep, kvm)))
        },
        &abort,
    )?;
    let (prep_b, kvm_b) = prep_b;
    check_one_way(name, &cycles)?;
    let (ca, cb) = counters_ab(name, &vm)?;
    if cb.handler != n || ca.sent != n || ca.handler != 0 {
        return Err(invalid(
            name,
            format!(
                "B's handler ran {} times, A sent {} IPIs and took {} interrupts; expected {n}, {n}, 0",
                cb.handler, ca.sent, ca.handler
            ),
        ));
    }
    check_exits(name, "userspace exits during the loop", &[(&va, 1), (&vb, 1)])?;
    let (intr_a, intr_b) = (va.stats.intr, vb.stats.intr);
    let pvm = vm.backend().kind() == vmm::BackendKind::Pvm;
    let mut s =
        samples(cycles, probe_api::Method::PerOp, &prep_b, &[("vCPU A", &prep_a)], &pins_ab(cpus), vm.backend().name());
    s.notes.push(format!(
        "one way: A lfence;rdtsc -> x2APIC ICR write (wrmsr 0x830, vector {VEC_IRQ:#x}, dest 1) -> B wakes from HLT \
         ({}=1; HLT handled by the in-kernel irqchip, no userspace exit) -> B's IDT handler entry lfence;rdtsc; \
         A sends {settle} cycles (20 us) after B announced its HLT; EOI (wrmsr 0x80b) after the sample",
        if pvm { "vif.if" } else { "RFLAGS.IF" }
    ));
    s.notes.push(cb.hlt_note("B"));
    s.notes.push(poll_note);
    push_halt_stats(&mut s, "vCPU B", &kvm_b);
    push_exit_stats(&mut s, "vCPU B", "b", &kvm_b);
    s.notes.push(irqchip::apicv_note(vm.backend().kind()));
    s.notes.push(format!(
        "B's handler ran {} times; A sent {} IPIs; spurious: {}; 0 userspace exits during the loop; EINTR: A {intr_a} B {intr_b}",
        cb.handler, ca.sent, cb.spurious
    ));
    s.notes.push(setup.join("; "));
    cb.push_metrics(&mut s);
    Ok(s)
}
