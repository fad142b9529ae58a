//! VMM core: native execution, timer overhead, watchdog, fatal exits, shared memory,
//! VM create/destroy robustness. Needs /dev/kvm (prints SKIPPED otherwise).

use std::time::{Duration, Instant};

use guest_probes::payloads::args::PioOut;
use guest_probes::payloads::entry;
use guest_probes::vmm::{self, layout, Backing, Handled, SharedMemory, Vm, VmmError};
use probe_api::ProbeError;

mod common;
use common::have_kvm;

#[test]
fn native_execution_is_verified() {
    if !have_kvm() {
        return;
    }
    let vm = Vm::new("test.native").unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let check = vmm::native::verify(&mut vcpu, deadline).unwrap();
    println!(
        "backend {} native: {:.3} cycles/iteration ({})",
        vm.backend().name(),
        check.cycles_per_iter,
        vcpu.setup()
    );
    assert!(check.cycles_per_iter < 10.0, "{} cycles/iteration", check.cycles_per_iter);
    let ovh = vcpu.timer_overhead(deadline).unwrap();
    println!("guest lfence;rdtsc pair: {ovh} cycles");
    assert!(ovh > 0 && ovh < 5_000, "timer overhead {ovh}");
    assert!(vcpu.tsc_khz().unwrap() > 100_000);
}

fn expect_timeout(entry: guest_probes::payloads::Entry) -> String {
    let vm = Vm::new("test.watchdog").unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    let rip = vm.entry(entry).unwrap();
    vcpu.set_entry(rip, |_| {}).unwrap();
    let t0 = Instant::now();
    let err = vcpu.run(Instant::now() + Duration::from_millis(300), &mut |_| Handled::No).unwrap_err();
    let took = t0.elapsed();
    let msg = err.to_string();
    println!("{entry}: {msg} (stopped after {took:?})");
    assert!(matches!(err, VmmError::Timeout { .. }), "{msg}");
    assert!(matches!(ProbeError::from(err), ProbeError::Timeout(..)), "{msg}");
    assert!(took < Duration::from_secs(10), "watchdog took {took:?}");
    assert!(msg.contains("test.watchdog"), "{msg}");
    assert!(msg.contains("RIP 0x"), "{msg}");
    assert!(msg.contains("last exit"), "{msg}");
    msg
}

#[test]
fn watchdog_stops_an_endless_loop() {
    if !have_kvm() {
        return;
    }
    let msg = expect_timeout(entry::HANG_LOOP);
    assert!(msg.contains("jmp ."), "{msg}");
}

#[test]
fn watchdog_stops_vmcall_on_pvm() {
    if !have_kvm() {
        return;
    }
    let b = vmm::host().backend().unwrap();
    if b.kind() != vmm::BackendKind::Pvm {
        println!("vmcall is a real hypercall on {}: not a hang there", b.name());
        return;
    }
    // shared/docs/kvm-backends.md says the kvm_pvm emulator retries `vmcall` forever. On
    // some kvm_pvm builds it returns an error in RAX instead. Either way the VMM must not
    // hang: a hang is stopped by the watchdog with an error naming RIP and the vmcall, a
    // return must carry a negative error code.
    let vm = Vm::new("test.watchdog").unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    vcpu.set_entry(vm.entry(entry::HANG_VMCALL).unwrap(), |_| {}).unwrap();
    let t0 = Instant::now();
    match vcpu.run(Instant::now() + Duration::from_millis(300), &mut |_| Handled::No) {
        Err(err) => {
            let msg = err.to_string();
            println!("vmcall: {msg} (stopped after {:?})", t0.elapsed());
            assert!(matches!(err, VmmError::Timeout { .. }), "{msg}");
            assert!(msg.contains("RIP 0x") && msg.contains("vmcall") && msg.contains("test.watchdog"), "{msg}");
        }
        Ok(()) => {
            let rax = vcpu.regs().unwrap().rax as i64;
            println!("vmcall returned RAX = {rax} on this kvm_pvm (it did not hang)");
            assert!(rax < 0, "vmcall returned {rax}, expected a negative error");
        }
    }
}

#[test]
fn fatal_exit_names_exit_and_rip() {
    if !have_kvm() {
        return;
    }
    let vm = Vm::new("test.ud2").unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    vcpu.set_entry(vm.entry(entry::CRASH_UD2).unwrap(), |_| {}).unwrap();
    let err = vcpu.run(Instant::now() + Duration::from_secs(10), &mut |_| Handled::No).unwrap_err();
    let msg = err.to_string();
    println!("ud2 without IDT: {msg}");
    assert!(matches!(&err, VmmError::GuestExit { what, .. } if what.starts_with("fatal exit")), "{msg}");
    assert!(matches!(ProbeError::from(err), ProbeError::Failed(_)), "{msg}");
    assert!(msg.contains("test.ud2") && msg.contains("RIP 0x") && msg.contains("KVM_EXIT"), "{msg}");
}

#[test]
fn shared_memory_is_shared_between_vms() {
    if !have_kvm() {
        return;
    }
    shared_between_vms(SharedMemory::new(2 << 20).unwrap());
}

/// 2 MiB hugepages when the host has free ones; otherwise the refusal names the reason.
#[test]
fn shared_memory_on_hugepages_or_the_reason() {
    if !have_kvm() {
        return;
    }
    let free = vmm::shared::free_huge_pages_2m();
    match SharedMemory::with_backing(4 << 20, Backing::Huge2M) {
        Ok(shm) => {
            assert!(free >= 2, "{free} free hugepages, yet 4 MiB of them were mapped");
            assert_eq!(shm.backing(), Backing::Huge2M);
            shared_between_vms(shm);
        }
        Err(VmmError::Unsupported(why)) => {
            assert!(free < 2, "{free} free 2 MiB pages, yet refused: {why}");
            assert!(why.contains("hugepages") && why.contains(&format!("{free} free")), "{why}");
            println!("hugepages unavailable here ({why}); 4 KiB pages checked by shared_memory_is_shared_between_vms");
        }
        Err(e) => panic!("{e}"),
    }
    assert!(SharedMemory::with_backing(3 << 20, Backing::Huge2M).is_err(), "not a multiple of 2 MiB");
}

fn shared_between_vms(shm: SharedMemory) {
    let a = Vm::new("test.shm.a").unwrap();
    let b = Vm::new("test.shm.b").unwrap();
    a.add_shared(1, layout::SHARED_GPA, &shm).unwrap();
    b.add_shared(1, layout::SHARED_GPA, &shm).unwrap();
    a.slot_write(1, 64, &0x1234_5678_9abc_def0u64.to_le_bytes()).unwrap();
    // SAFETY: the shared mapping is 2 MiB and alive.
    let seen = unsafe { std::ptr::read_volatile(shm.host_addr().add(64) as *const u64) };
    assert_eq!(seen, 0x1234_5678_9abc_def0);
    // guest A reads what the host wrote and writes a word; guest B reads A's word
    let peek = |vm: &Vm, gpa: u64, value: u64| -> u64 {
        let mut v = vm.create_vcpu(0).unwrap();
        v.set_entry(vm.entry(entry::PEEK).unwrap(), |r| {
            r.r9 = layout::results(0);
            r.r15 = gpa;
            r.rbp = value;
        })
        .unwrap();
        v.run(Instant::now() + Duration::from_secs(10), &mut |_| Handled::No).unwrap();
        vm.read_u64(layout::results(0)).unwrap()
    };
    assert_eq!(peek(&a, layout::SHARED_GPA + 64, 0xaaaa_5555), 0x1234_5678_9abc_def0);
    assert_eq!(peek(&b, layout::SHARED_GPA + 72, 0), 0xaaaa_5555);
    // both VMs run a vCPU at the same time on the same memory, natively
    std::thread::scope(|s| {
        for vm in [&a, &b] {
            s.spawn(move || {
                let mut v = vm.create_vcpu(1).unwrap();
                vmm::native::verify(&mut v, Instant::now() + Duration::from_secs(30)).unwrap();
            });
        }
    });
}

#[test]
fn a_vm_point_past_its_timeout_or_interrupted_keeps_its_samples_as_partial() {
    if !have_kvm() {
        return;
    }
    use probe_api::{Budget, Method, Point};
    let p = guest_probes::probes().into_iter().find(|p| p.name() == "vm.exit.pio").unwrap();
    // A million PIO exits take tens of seconds here: the timeout ends the point first.
    let budget = Budget {
        iterations: 1_000_000,
        duration: None,
        cpus: vec![0],
        method: Method::PerOp,
        timeout: Duration::from_millis(1500),
        stop: Default::default(),
    };
    let t0 = Instant::now();
    let s = p.run(&Point::none(), &budget).expect("a timed-out point keeps its samples");
    println!("{} samples, {:?} after {:?}", s.cycles.len(), s.partial, t0.elapsed());
    assert!(!s.cycles.is_empty() && s.cycles.len() < 1_000_000);
    assert!(s.partial.as_deref().unwrap().starts_with("timed out after 1 s with"), "{:?}", s.partial);
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());

    // The same with a long timeout and the stop flag raised from another thread (what
    // Ctrl-C does): it stops within a chunk (~50 ms), not at the timeout.
    let budget = Budget { timeout: Duration::from_secs(600), ..budget };
    let flag = budget.stop.clone();
    let raiser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        flag.request();
        Instant::now()
    });
    let s = p.run(&Point::none(), &budget).expect("an interrupted point keeps its samples");
    let late = raiser.join().unwrap().elapsed();
    assert!(late < Duration::from_secs(2), "stopped {late:?} after the interrupt");
    assert!(!s.cycles.is_empty());
    assert!(
        s.partial.as_deref().unwrap().starts_with(&format!("interrupted after {} of 1000000", s.cycles.len())),
        "{:?}",
        s.partial
    );
}

#[test]
fn vm_and_vcpu_can_move_between_threads() {
    fn send<T: Send>() {}
    fn sync<T: Send + Sync>() {}
    send::<guest_probes::vmm::Vcpu>();
    sync::<Vm>();
    sync::<SharedMemory>();
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn thousand_vms_leak_nothing() {
    if !have_kvm() {
        return;
    }
    let cycle = || {
        let vm = Vm::new("test.robust").unwrap();
        let mut v = vm.create_vcpu(0).unwrap();
        v.set_entry(vm.entry(entry::DONE).unwrap(), |_| {}).unwrap();
        v.run(Instant::now() + Duration::from_secs(10), &mut |_| Handled::No).unwrap();
    };
    for _ in 0..20 {
        cycle();
    }
    let (fd0, rss0) = (fd_count(), rss_kib());
    for _ in 0..1000 {
        cycle();
    }
    let (fd1, rss1) = (fd_count(), rss_kib());
    println!("1000 VMs: fds {fd0} -> {fd1}, RSS {rss0} -> {rss1} KiB");
    // other tests run in parallel threads of this process and open fds of their own
    assert!(fd1 <= fd0 + 16, "fd count grew from {fd0} to {fd1}");
    assert!(rss1 <= rss0 + 64 * 1024, "RSS grew from {rss0} to {rss1} KiB");
}

#[test]
fn emulated_guest_is_refused() {
    if !have_kvm() {
        return;
    }
    let b = vmm::host().backend().unwrap();
    if b.kind() != vmm::BackendKind::Pvm {
        println!("only kvm_pvm has a way to run a guest emulated on purpose (no VIF page)");
        return;
    }
    let vm = Vm::new("test.emulated").unwrap();
    let mut vcpu = vm.create_vcpu_without_backend_setup(0).unwrap();
    let t0 = Instant::now();
    let err = vmm::native::verify(&mut vcpu, Instant::now() + Duration::from_secs(60)).unwrap_err();
    let msg = err.to_string();
    println!("{msg} ({:?})", t0.elapsed());
    assert!(msg.contains("guest is being emulated") && msg.contains("test.emulated"), "{msg}");
}

#[test]
fn unexpected_exit_names_probe_exit_and_rip() {
    if !have_kvm() {
        return;
    }
    let vm = Vm::new("test.unexpected").unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    let err = vcpu
        .run_sampling(&PioOut { port: 0x10 }, 10, 1, Instant::now() + Duration::from_secs(10), &mut |_| Handled::No)
        .unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, VmmError::GuestExit { .. }), "{msg}");
    assert!(
        msg.contains("test.unexpected")
            && msg.contains("unexpected exit KVM_EXIT_IO out port 0x10")
            && msg.contains("RIP 0x"),
        "{msg}"
    );
}
