//! Multi-vCPU probes (interrupts, IPIs, notification), run for real with small iteration
//! counts. Bounds are generous sanity limits, not speed targets (the development machine
//! is a noisy nested 2-CPU VM). Needs /dev/kvm (prints SKIPPED otherwise).

use guest_probes::payloads::entry;
use std::time::Duration;

use guest_probes::probes;
use probe_api::{Budget, Method, Point, Samples, Support};

mod common;
// These tests skip only without /dev/kvm; one that exists but does not open fails them.
use common::{have_kvm_device, metric, probe};

/// The probes pin two spinning threads to CPUs 0 and 1: tests that run them must not
/// overlap (cargo runs tests in parallel), or each would measure the other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn budget(iterations: u64, method: Method) -> Budget {
    Budget {
        iterations,
        duration: None,
        cpus: vec![0, 1],
        method,
        timeout: Duration::from_secs(120),
        stop: Default::default(),
    }
}

fn pct(s: &Samples, q: f64) -> u64 {
    let mut c = s.cycles.clone();
    c.sort_unstable();
    c[((c.len() as f64 * q) as usize).min(c.len() - 1)]
}

/// Runs one point and checks the common contract.
fn run(name: &str, point: &Point, n: u64, method: Method) -> Samples {
    let p = probe(name);
    assert_eq!(p.support(), Support::Supported, "{name}");
    let s = p.run(point, &budget(n, method)).unwrap_or_else(|e| panic!("{name} {point}: {e}"));
    assert_eq!(s.cycles.len() as u64, n, "{name} {point}: samples != iterations");
    assert_eq!(s.method, method);
    assert_eq!(s.clock, "guest lfence;rdtsc");
    assert!(s.tsc_khz.unwrap_or(0) > 100_000, "{name}: tsc_khz {:?}", s.tsc_khz);
    assert!(s.overhead_cycles > 0 && s.overhead_cycles < 5_000, "{name}: overhead {}", s.overhead_cycles);
    assert!(s.cycles.iter().all(|&c| c > 0 && c < 1 << 62), "{name}: a zero or negative sample");
    println!(
        "{name} {point} {}: median {} p99 {} cycles (overhead {}); notes:",
        method.label(),
        pct(&s, 0.5),
        pct(&s, 0.99),
        s.overhead_cycles
    );
    for n in &s.notes {
        println!("    {n}");
    }
    s
}

fn wait(w: &str) -> Point {
    Point::none().with("wait", w)
}

#[test]
fn points_and_table() {
    let names: Vec<&str> = probes().iter().map(|p| p.name()).collect();
    for n in [
        "vm.irq.inject",
        "vm.ipi.roundtrip",
        "vm.notify.poll",
        "vm.notify.poll-intervm",
        "vm.notify.mwait",
        "vm.notify.halt",
    ] {
        assert!(names.contains(&n), "{n} missing from the probe table");
    }
    for p in ["vm.irq.inject", "vm.ipi.roundtrip"] {
        let pts: Vec<String> = probe(p).points().iter().map(|p| p.to_string()).collect();
        assert_eq!(pts, ["wait=spin", "wait=hlt", "halt_poll_ns=0,wait=hlt"], "{p}");
    }
    let pts: Vec<String> = probe("vm.notify.halt").points().iter().map(|p| p.to_string()).collect();
    assert_eq!(pts, ["", "halt_poll_ns=0"]);
}

#[test]
fn bad_point_and_same_cpu_are_refused() {
    if !have_kvm_device() {
        return;
    }
    let _serial = serial();
    let p = probe("vm.irq.inject");
    let e = p.run(&wait("doze"), &budget(10, Method::PerOp)).unwrap_err().to_string();
    assert!(e.contains("wait=doze"), "{e}");
    let mut b = budget(10, Method::PerOp);
    b.cpus = vec![0, 0];
    let e = probe("vm.notify.poll").run(&Point::none(), &b).unwrap_err().to_string();
    assert!(e.contains("two distinct CPUs"), "{e}");
    let e =
        probe("vm.notify.halt").run(&Point::none(), &budget(10, Method::Batched { batch: 4 })).unwrap_err().to_string();
    assert!(e.contains("per-op"), "{e}");
}

#[test]
fn irq_inject_spin_and_hlt() {
    if !have_kvm_device() {
        return;
    }
    let _serial = serial();
    for point in probe("vm.irq.inject").points() {
        let n = 1000;
        let w = point.get("wait").unwrap().to_string();
        let s = run("vm.irq.inject", &point, n, Method::PerOp);
        assert_eq!(metric(&s, "handler_entries") as u64, n, "handler count");
        assert_eq!(metric(&s, "userspace_exits"), 0.0);
        let m = pct(&s, 0.5);
        assert!(m > 100 && m < 50_000_000, "vm.irq.inject wait={w}: median {m} cycles");
        assert!(s.notes.iter().any(|n| n.contains("APICv")), "APICv note missing");
        if w == "hlt" {
            let hlts = metric(&s, "hlts") as u64;
            let early = metric(&s, "early_hlt_wakes") as u64;
            assert!(hlts >= n - early && hlts >= n / 2, "only {hlts} HLTs for {n} halted waits");
            assert!(s.notes.iter().any(|n| n.contains("early HLT wakes")));
            check_halt_polling(&s, &point, "guest");
        }
    }
}

/// With halt polling off for the VM, KVM's counters must show no successful poll.
fn check_halt_polling(s: &Samples, point: &Point, tag: &str) {
    let key = format!("halt_successful_poll_{tag}");
    let Some(m) = s.metrics.iter().find(|m| m.name == key) else {
        assert!(s.notes.iter().any(|n| n.contains("not available")), "no {key} metric and no reason");
        return;
    };
    if point.get("halt_poll_ns") == Some("0") {
        assert_eq!(m.value, 0.0, "{point}: halt polling is off, yet {key} = {}", m.value);
        assert!(s.notes.iter().any(|n| n.contains("KVM_CAP_HALT_POLL = 0")));
    }
}

#[test]
fn ipi_roundtrip_spin_and_hlt() {
    if !have_kvm_device() {
        return;
    }
    let _serial = serial();
    for point in probe("vm.ipi.roundtrip").points() {
        let n = 1000;
        let s = run("vm.ipi.roundtrip", &point, n, Method::PerOp);
        if point.get("wait") == Some("hlt") {
            check_halt_polling(&s, &point, "a");
            check_halt_polling(&s, &point, "b");
        }
        assert_eq!(metric(&s, "handler_entries_a") as u64, n);
        assert_eq!(metric(&s, "handler_entries_b") as u64, n);
        let m = pct(&s, 0.5);
        let ow = metric(&s, "one_way_median") as u64;
        assert!(m > 100 && m < 50_000_000, "round trip median {m}");
        assert!(ow > 50 && ow < m, "one-way median {ow} vs round trip {m}");
        assert!(s.notes.iter().any(|n| n.contains("wrmsr 0x830")));
    }
}

#[test]
fn notify_poll_one_vm() {
    if !have_kvm_device() {
        return;
    }
    let _serial = serial();
    let n = 2000;
    let s = run("vm.notify.poll", &Point::none(), n, Method::PerOp);
    assert_eq!(metric(&s, "echoes") as u64, n);
    let m = pct(&s, 0.5);
    assert!(m > 20 && m < 100_000, "poll round trip median {m}");
    assert_no_exit_per_round_trip(&s, n);
    let b = run("vm.notify.poll", &Point::none(), 200, Method::Batched { batch: 16 });
    assert_eq!(metric(&b, "echoes") as u64, 200 * 16);
    assert!(pct(&b, 0.5) < 100_000);
}

#[test]
fn notify_poll_between_vms() {
    if !have_kvm_device() {
        return;
    }
    let _serial = serial();
    let n = 2000;
    let s = run("vm.notify.poll-intervm", &Point::none(), n, Method::PerOp);
    assert_eq!(metric(&s, "echoes") as u64, n);
    assert_eq!(metric(&s, "userspace_exits"), 0.0);
    let m = pct(&s, 0.5);
    assert!(m > 20 && m < 100_000, "inter-VM poll round trip median {m}");
    assert!(s.notes.iter().any(|n| n.contains("memfd")));
    assert_no_exit_per_round_trip(&s, n);
}

/// Where KVM's stats fd exists, the polling loop must not exit to KVM once per round trip
/// (only host interrupts and the final done port write may show up).
fn assert_no_exit_per_round_trip(s: &Samples, n: u64) {
    for tag in ["a", "b"] {
        match s.metrics.iter().find(|m| m.name == format!("kvm_exits_{tag}")) {
            Some(m) => assert!(m.value < (n / 4) as f64, "vCPU {tag}: {} exits to KVM in {n} round trips", m.value),
            None => assert!(s.notes.iter().any(|n| n.contains("not available")), "no kvm_exits_{tag} and no reason"),
        }
    }
}

#[test]
fn notify_halt() {
    if !have_kvm_device() {
        return;
    }
    let _serial = serial();
    for point in probe("vm.notify.halt").points() {
        let n = 1000;
        let s = run("vm.notify.halt", &point, n, Method::PerOp);
        assert_eq!(metric(&s, "handler_entries") as u64, n);
        let m = pct(&s, 0.5);
        assert!(m > 100 && m < 50_000_000, "halt wake median {m}");
        check_halt_polling(&s, &point, "b");
    }
}

/// CPUID.1:ECX bit 3 (MONITOR/MWAIT) of this host, read directly.
fn host_has_monitor() -> bool {
    // SAFETY: CPUID leaf 1 exists on every x86-64 CPU (the intrinsic is safe on newer Rust).
    #[allow(unused_unsafe)]
    let r = unsafe { core::arch::x86_64::__cpuid(1) };
    r.ecx & (1 << 3) != 0
}

#[test]
fn notify_mwait_support_matches_this_host() {
    if !have_kvm_device() {
        return;
    }
    let _serial = serial();
    let p = probe("vm.notify.mwait");
    let support = p.support();
    if host_has_monitor() {
        println!("host has MONITOR: {support}");
        if support == Support::Supported {
            let s = run("vm.notify.mwait", &Point::none(), 500, Method::PerOp);
            assert!(pct(&s, 0.5) < 50_000_000);
        } else {
            // KVM must then be what lacks it
            assert!(support.to_string().contains("KVM_X86_DISABLE_EXITS_MWAIT"), "{support}");
        }
    } else {
        let Support::Unsupported(reason) = &support else { panic!("no MONITOR on this host, yet {support}") };
        println!("vm.notify.mwait: unsupported: {reason}");
        assert!(reason.contains("MONITOR"), "{reason}");
        assert!(reason.contains("CPUID.1:ECX bit 3 = 0"), "{reason}");
        assert!(reason.contains("KVM_CAP_X86_DISABLE_EXITS"), "{reason}");
        // running it anyway reports the same reason, no number
        let e = p.run(&Point::none(), &budget(10, Method::PerOp)).unwrap_err();
        assert!(e.to_string().starts_with("unsupported: "), "{e}");
        assert!(e.to_string().contains("MONITOR"), "{e}");
    }
}

/// A run that cannot finish before its deadline ends with a timeout, and promptly: the
/// watchdog stops the timing side, the abort stops (and kicks out of HLT) the other side.
#[test]
fn deadline_stops_both_sides() {
    if !have_kvm_device() {
        return;
    }
    let _serial = serial();
    for (name, point) in [
        ("vm.irq.inject", wait("hlt")),
        ("vm.ipi.roundtrip", wait("hlt")),
        ("vm.notify.halt", Point::none()),
        ("vm.notify.poll-intervm", Point::none()),
    ] {
        let p = probe(name);
        let mut b = budget(1_000_000, Method::PerOp);
        b.timeout = Duration::from_millis(if name.contains("poll") { 150 } else { 1500 });
        let t0 = std::time::Instant::now();
        let r = p.run(&point, &b);
        let took = t0.elapsed();
        println!("{name} {point}: {:?} after {took:?}", r.as_ref().map(|s| s.cycles.len()).map_err(|e| e.to_string()));
        match r {
            Err(probe_api::ProbeError::Timeout(..)) => {}
            // a very fast poll may still finish; then it must be complete
            Ok(s) if name.contains("poll") => assert_eq!(s.cycles.len(), 1_000_000),
            other => panic!("{name}: expected a timeout, got {:?}", other.map(|s| s.cycles.len())),
        }
        assert!(took < b.timeout + Duration::from_secs(10), "{name}: took {took:?} to stop");
    }
}

/// Release figures: `cargo test --release -p guest-probes --test multi -- --ignored figures --nocapture`
/// (IVB_FIGURES_N iterations, default 20000).
#[test]
#[ignore]
fn figures() {
    if !have_kvm_device() {
        return;
    }
    let _serial = serial();
    let n: u64 = std::env::var("IVB_FIGURES_N").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let runs: [(&str, Point); 11] = [
        ("vm.notify.poll", Point::none()),
        ("vm.notify.poll-intervm", Point::none()),
        ("vm.irq.inject", wait("spin")),
        ("vm.irq.inject", wait("hlt")),
        ("vm.irq.inject", wait("hlt").with("halt_poll_ns", 0)),
        ("vm.ipi.roundtrip", wait("spin")),
        ("vm.ipi.roundtrip", wait("hlt")),
        ("vm.ipi.roundtrip", wait("hlt").with("halt_poll_ns", 0)),
        ("vm.notify.halt", Point::none()),
        ("vm.notify.halt", Point::none().with("halt_poll_ns", 0)),
        ("vm.notify.mwait", Point::none()),
    ];
    for (name, point) in runs {
        match probe(name).run(&point, &budget(n, Method::PerOp)) {
            Ok(s) => {
                let extra = s
                    .metrics
                    .iter()
                    .filter(|m| {
                        m.name.starts_with("one_way") || m.name.starts_with("early") || m.name.starts_with("halt_")
                    })
                    .map(|m| format!(" {}={}", m.name, m.value))
                    .collect::<String>();
                println!(
                    "FIG {name:<24} {:<24} n={} median {} p99 {} (raw, timer cost {} included){extra}",
                    point.to_string(),
                    s.cycles.len(),
                    pct(&s, 0.5),
                    pct(&s, 0.99),
                    s.overhead_cycles
                );
            }
            Err(e) => println!("FIG {name:<24} {:<24} {e}", point.to_string()),
        }
    }
}

/// The vector-0x40 handler steps over a HLT it interrupted just before (the guard against
/// a lost wake-up): entering at a HLT with interrupts enabled and vector 0x40 pending must
/// deliver it at the HLT, step over it and reach DONE (FIXUPS = 1, handler counted once).
/// Limitation on kvm_pvm: an HLT executed right after the handler's IRETQ returns by itself
/// there (a mutation that drops the step-over still reaches DONE), so on this host the test
/// proves the detection (the saved RIP the handler inspects is the HLT: FIXUPS = 1) and
/// delivery at the HLT, not the step itself; elsewhere a missing step-over hangs until the
/// 10 s watchdog and fails.
#[test]
fn handler_steps_over_a_pending_hlt() {
    if !have_kvm_device() {
        return;
    }
    let _serial = serial();
    use guest_probes::vmm::{irqchip, layout, Handled, Vm};
    let vm = Vm::new("test.irq-fixup").unwrap();
    irqchip::create_irqchip(&vm).unwrap();
    irqchip::write_tables(&vm).unwrap();
    let mut v = vm.create_vcpu(0).unwrap();
    irqchip::install_tables(&v).unwrap();
    irqchip::enable_x2apic(&v).unwrap();
    let st = layout::params(0);
    vm.write_bytes(st, &[0u8; irqchip::st::SIZE as usize]).unwrap();
    let flag = irqchip::irq_flag_addr(&v);
    if flag != 0 {
        vm.write_bytes(flag, &[1]).unwrap(); // vif.if = 1
    }
    v.set_entry(vm.entry(entry::IRQ_FIXUP_SELFTEST).unwrap(), |r| {
        r.r15 = st;
        if flag == 0 {
            r.rflags |= 0x200; // IF
        }
    })
    .unwrap();
    irqchip::signal_msi(&vm, 0, irqchip::VEC_IRQ).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    v.run(deadline, &mut |_| Handled::No).unwrap_or_else(|e| panic!("HLT not stepped over: {e}"));
    assert_eq!(vm.read_u64(st + irqchip::st::COUNT).unwrap(), 1, "handler entries");
    assert_eq!(vm.read_u64(st + irqchip::st::FIXUPS).unwrap(), 1, "HLT step-overs");
    assert_ne!(vm.read_u64(st + irqchip::st::STAMP).unwrap(), 0, "handler stamp");
}
