//! Every probe, run for real with small iteration counts, with sane (generous) bounds.
//! Needs /dev/kvm (prints SKIPPED otherwise).

use std::time::Duration;

use guest_probes::{backend_report, probes};
use probe_api::{Budget, Method, Point, ProbeError, Samples, Support};

mod common;
use common::{have_kvm, metric, probe};

fn budget(iterations: u64, method: Method) -> Budget {
    Budget {
        iterations,
        duration: None,
        cpus: vec![0],
        method,
        timeout: Duration::from_secs(120),
        stop: Default::default(),
    }
}

fn median(s: &Samples) -> u64 {
    let mut c = s.cycles.clone();
    c.sort_unstable();
    c[c.len() / 2]
}

/// Runs a probe per-op and batched; checks the common contract and returns the per-op run.
fn run_both(name: &str, n: u64) -> Samples {
    let p = probe(name);
    assert_eq!(p.support(), Support::Supported, "{name}");
    let s = p.run(&Point::none(), &budget(n, Method::PerOp)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(s.cycles.len() as u64, n, "{name}: samples != iterations");
    assert_eq!(s.method, Method::PerOp);
    assert_eq!(s.clock, "guest lfence;rdtsc");
    assert!(s.tsc_khz.unwrap_or(0) > 100_000, "{name}: tsc_khz {:?}", s.tsc_khz);
    assert!(s.overhead_cycles > 0 && s.overhead_cycles < 5_000, "{name}: overhead {}", s.overhead_cycles);
    assert!(s.cycles.iter().all(|&c| c >= s.overhead_cycles / 2), "{name}: a sample below the timer cost");
    let b = p
        .run(&Point::none(), &budget(n / 10 + 1, Method::Batched { batch: 8 }))
        .unwrap_or_else(|e| panic!("{name} batched: {e}"));
    assert_eq!(b.cycles.len() as u64, n / 10 + 1, "{name}: batched samples != iterations");
    assert_eq!(b.method, Method::Batched { batch: 8 });
    println!(
        "{name}: per-op median {} cycles (overhead {}), batched/8 median {} cycles; notes {:?}",
        median(&s),
        s.overhead_cycles,
        median(&b),
        s.notes
    );
    s
}

#[test]
fn native_loop_is_native() {
    if !have_kvm() {
        return;
    }
    let p = probe("vm.native.loop");
    let s = p.run(&Point::none(), &budget(200, Method::Batched { batch: 100_000 })).unwrap();
    assert_eq!(s.cycles.len(), 200);
    let cpi = metric(&s, "cycles_per_iteration_median");
    println!("vm.native.loop: {cpi:.3} cycles/iteration");
    assert!(cpi < 10.0, "{cpi} cycles per iteration: emulated?");
    // Batched samples keep their fraction (thousandths of a cycle) and agree with the metric.
    assert_eq!(s.scale, 1000);
    let from_samples = median(&s) as f64 / s.scale as f64;
    assert!((from_samples - cpi).abs() < 0.05, "samples say {from_samples}, metric {cpi}");
    // per-op requests are served batched (a single dec;jnz is below the timer resolution)
    let s = p.run(&Point::none(), &budget(50, Method::PerOp)).unwrap();
    assert_eq!(s.cycles.len(), 50);
    assert!(matches!(s.method, Method::Batched { .. }));
}

#[test]
fn null_hypercall_returns_enosys() {
    if !have_kvm() {
        return;
    }
    let s = run_both("vm.hypercall.null", 300);
    let ret = metric(&s, "hypercall_return");
    let r = backend_report();
    let want = if r.backend == "kvm_pvm" { -38.0 } else { -1000.0 };
    assert_eq!(ret, want, "unknown hypercall returned {ret}");
    assert!(median(&s) > s.overhead_cycles, "a hypercall cheaper than the timer?");
}

#[test]
fn pio_exit() {
    if !have_kvm() {
        return;
    }
    let s = run_both("vm.exit.pio", 300);
    let exits = metric(&s, "userspace_exits");
    assert_eq!(exits, 300.0);
}

#[test]
fn pio_kernel_exit_stays_in_kernel() {
    if !have_kvm() {
        return;
    }
    let p = probe("vm.exit.pio-kernel");
    if let Support::Unsupported(r) = p.support() {
        println!("vm.exit.pio-kernel unsupported here: {r}");
        return;
    }
    let s = run_both("vm.exit.pio-kernel", 300);
    assert_eq!(metric(&s, "userspace_exits"), 0.0);
    assert_eq!(metric(&s, "eventfd_count"), 300.0);
}

#[test]
fn mmio_exit() {
    if !have_kvm() {
        return;
    }
    let s = run_both("vm.exit.mmio", 300);
    let exits = metric(&s, "userspace_exits");
    assert_eq!(exits, 300.0);
}

#[test]
fn cpuid_exit() {
    if !have_kvm() {
        return;
    }
    let s = run_both("vm.exit.cpuid", 300);
    assert!(s.notes.iter().any(|n| n.contains("matches the CPUID table")), "{:?}", s.notes);
}

#[test]
fn getppid_value_arrives_in_user_mode() {
    if !have_kvm() {
        return;
    }
    let s = run_both("vm.syscall.getppid", 300);
    let ppid = std::os::unix::process::parent_id();
    assert!(
        s.notes.iter().any(|n| n.contains(&format!("{:#x}", 0x5050_0000_0000_0000u64 | u64::from(ppid)))
            && n.contains("arrived in user mode")),
        "{:?}",
        s.notes
    );
}

#[test]
fn view_hypercall_hides_protected_pages() {
    if !have_kvm() {
        return;
    }
    let s = run_both("vm.view.hypercall", 100);
    assert!(
        s.notes.iter().any(|n| n.contains("exited as KVM_EXIT_MMIO") && n.contains("never saw the secret")),
        "{:?}",
        s.notes
    );
    let sw = metric(&s, "view_switches");
    assert_eq!(sw, 2.0 + 2.0 * 100.0);
}

#[test]
fn vmfunc_runs_or_reports_a_specific_reason() {
    if !have_kvm() {
        return;
    }
    let p = probe("vm.view.vmfunc");
    let r = backend_report();
    match p.support() {
        Support::Unsupported(reason) => {
            println!("vm.view.vmfunc: unsupported: {reason}");
            match r.backend.as_str() {
                "kvm_pvm" => assert!(reason.contains("kvm_pvm has no VMFUNC"), "{reason}"),
                "kvm_intel" => assert!(reason.contains("kvm-patch") || reason.contains("vmfunc_views=N"), "{reason}"),
                _ => assert!(reason.len() > 20, "{reason}"),
            }
            match p.run(&Point::none(), &budget(10, Method::PerOp)) {
                Err(ProbeError::Unsupported(r2)) => assert_eq!(r2, reason),
                other => panic!("vm.view.vmfunc ran: {:?}", other.map(|s| s.cycles.len())),
            }
        }
        Support::Supported => {
            // Only a kvm_intel with the kvm-patch module says so; then the switch must work.
            assert_eq!(r.backend, "kvm_intel");
            let s = run_both("vm.view.vmfunc", 50);
            assert!(s.notes.iter().any(|n| n.contains("no #UD, no fault in the view")), "{:?}", s.notes);
            assert!(metric(&s, "view_switches") >= 100.0);
        }
    }
}

#[test]
fn vmfunc_views_api_is_absent_from_this_kvm_or_answers_version_1() {
    if !have_kvm() {
        return;
    }
    // The real ioctl on this host's /dev/kvm: a kernel without the kvm-patch must answer
    // ENOTTY, which ivbench turns into an `unsupported:` reason, never an error.
    let vm = guest_probes::vmm::Vm::new("views-api-test").unwrap();
    match guest_probes::vmm::views::check_query(guest_probes::vmm::views::query(vm.fd())) {
        Ok(q) => assert_eq!(q.version, 1),
        Err(reason) => {
            println!("views API: {reason}");
            assert!(reason.contains("KVM_VMFUNC_QUERY"), "{reason}");
            match vm.enable_views() {
                Err(guest_probes::vmm::VmmError::Unsupported(r2)) => assert_eq!(r2, reason),
                other => panic!("enable_views on a kernel without the API: {:?}", other.map(|_| ())),
            }
        }
    }
}

#[test]
fn backend_report_verifies_native_execution() {
    if !have_kvm() {
        return;
    }
    let r = backend_report();
    println!("{r}");
    assert!(r.native_verified, "{r}");
    assert!(r.cycles_per_iter.unwrap() < 10.0, "{r}");
    assert_ne!(r.backend, "none");
}

#[test]
fn every_probe_is_listed_once() {
    let names: Vec<_> = probes().iter().map(|p| p.name()).collect();
    for n in [
        "vm.native.loop",
        "vm.hypercall.null",
        "vm.exit.pio",
        "vm.exit.pio-kernel",
        "vm.exit.mmio",
        "vm.exit.cpuid",
        "vm.syscall.getppid",
        "vm.view.vmfunc",
        "vm.view.hypercall",
    ] {
        assert_eq!(names.iter().filter(|x| **x == n).count(), 1, "{n} in {names:?}");
    }
}

#[test]
fn duration_budget_stops_early_and_says_so() {
    if !have_kvm() {
        return;
    }
    let p = probe("vm.exit.pio");
    let mut b = budget(10_000_000, Method::PerOp);
    b.duration = Some(Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    let s = p.run(&Point::none(), &b).unwrap();
    let took = t0.elapsed();
    println!("duration 300 ms: {} samples in {took:?}; {:?}", s.cycles.len(), s.notes.last());
    assert!(!s.cycles.is_empty() && (s.cycles.len() as u64) < 10_000_000);
    assert!(s.notes.iter().any(|n| n.contains("stopped at the budget's duration")), "{:?}", s.notes);
    assert!(took < Duration::from_secs(30), "{took:?}");
    let exits = metric(&s, "userspace_exits");
    assert_eq!(exits, s.cycles.len() as f64);
}
