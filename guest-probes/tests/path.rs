//! `path.a` run for real: two VMs in two worker processes over the packet ring. Checks the
//! accounting (sent = received + dropped, no loss, duplicate, reordering or corruption),
//! each notification mode's mechanics (no userspace exit in poll/hybrid/halt, kicks and
//! halts where the sink sleeps, the VMM's signals in exit mode), a deliberately slow sink
//! (drops, never a corrupted frame), and a VM worker killed mid-run (named, the other torn
//! down, no process left). Rates are sanity bounds, not speed targets. Needs /dev/kvm.

use std::time::{Duration, Instant};

use probe_api::{Budget, Method, Point, Samples, Support, Throughput};

mod common;
use common::{have_kvm, metric, probe};

/// Each trial spins on both CPUs: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn budget(packets: u64) -> Budget {
    Budget {
        iterations: packets,
        duration: Some(Duration::from_secs(5)),
        cpus: vec![0, 1],
        method: Method::PerOp,
        timeout: Duration::from_secs(120),
        stop: Default::default(),
    }
}

fn trial(point: &str, packets: u64) -> (Samples, Throughput) {
    let p = probe("path.a");
    let s = p.run(&Point::parse(point).unwrap(), &budget(packets)).unwrap_or_else(|e| panic!("path.a {point}: {e}"));
    let t = s.throughput.clone().expect("a throughput row");
    println!(
        "path.a {point}: sent {} received {} dropped {} in {:.3} s = {:.3} Mpps; {} latency samples",
        t.sent,
        t.received,
        t.dropped,
        t.duration_s,
        t.mpps(),
        s.cycles.len()
    );
    for n in &s.notes {
        println!("    {n}");
    }
    assert_eq!(t.violation(), None, "{point}: {t:?}");
    if point.contains("rate=max") {
        assert_eq!(t.received, packets, "{point}: at max the budget counts packets that entered the ring");
    } else {
        assert_eq!(t.sent, packets, "{point}: a paced generator offers exactly its budget");
    }
    assert_eq!((t.lost, t.duplicated, t.reordered, t.corrupted), (0, 0, 0, 0), "{point}: {t:?}");
    assert!(t.received > 0 && t.duration_s > 0.0, "{point}: {t:?}");
    assert!(!s.cycles.is_empty(), "{point}: no latency sample");
    assert!(s.notes.iter().any(|n| n.starts_with("TSC check:")), "{point}: the TSC check is recorded");
    // too few free CPUs for the busy vCPUs is detected and said, never silently measured
    let oversubscribed = metric(&s, "busy_vcpus") > metric(&s, "free_cpus");
    assert_eq!(s.notes.iter().any(|n| n.starts_with("oversubscribed:")), oversubscribed, "{point}");
    (s, t)
}

#[test]
fn poll_moves_every_size_without_exits_and_balances() {
    if !have_kvm() {
        return;
    }
    let _s = serial();
    assert_eq!(probe("path.a").support(), Support::Supported);
    for point in [
        "size=64,copy=copy,rate=max,batch=32,notify=poll",
        "size=1518,copy=zero-copy,rate=max,batch=8,notify=poll",
        "size=imix,copy=copy,rate=1,batch=1,notify=poll",
    ] {
        let (s, _) = trial(point, 300_000);
        assert_eq!(metric(&s, "userspace_exits_tx") + metric(&s, "userspace_exits_rx"), 0.0, "{point}");
        assert_eq!(metric(&s, "kicks_tx"), 0.0, "{point}: poll never kicks");
        assert_eq!(metric(&s, "sink_halts"), 0.0, "{point}: a polling sink never halts");
    }
}

#[test]
fn sleeping_sinks_are_woken_by_kicks_without_userspace() {
    if !have_kvm() {
        return;
    }
    let _s = serial();
    // 0.05 Mpps: 20 us between packets, far longer than hybrid's 5 us of polling, so the
    // sink halts between packets and every wake-up needs a kick.
    for notify in ["halt", "hybrid"] {
        let point = format!("size=64,copy=copy,rate=0.05,batch=1,notify={notify},poll_us=5");
        let (s, t) = trial(&point, 5_000);
        // 256 slots hold 5 ms at 0.05 Mpps: drops here only come from a sink that stayed
        // asleep, woken late by a loaded host (or never: a lost wake-up would lose most).
        assert!(t.received * 10 >= t.sent * 9, "{point}: {t:?}");
        assert!(metric(&s, "sink_halts") > 0.0, "{point}: the sink never halted");
        assert!(metric(&s, "kicks_tx") > 0.0 && metric(&s, "sink_wakes") > 0.0, "{point}: no kick woke the sink");
        assert_eq!(metric(&s, "userspace_exits_tx") + metric(&s, "userspace_exits_rx"), 0.0, "{point}");
        assert_eq!(metric(&s, "vmm_signals"), 0.0, "{point}: ioeventfd -> irqfd needs no VMM");
    }
}

#[test]
fn the_exit_mode_goes_through_the_vmm() {
    if !have_kvm() {
        return;
    }
    let _s = serial();
    let point = "size=64,copy=copy,rate=0.05,batch=1,notify=exit";
    let (s, t) = trial(point, 3_000);
    assert!(t.received * 10 >= t.sent * 9, "{point}: {t:?}");
    // one exit per publication, and the VMM woke the sleeping sink
    assert!(metric(&s, "userspace_exits_tx") >= metric(&s, "publications_tx"), "{point}");
    assert!(metric(&s, "vmm_signals") > 0.0 && metric(&s, "sink_wakes") > 0.0, "{point}");
    assert_eq!(metric(&s, "userspace_exits_rx"), 0.0, "{point}: the sink halts in KVM");
}

#[test]
fn a_slow_sink_drops_at_the_generator_and_never_sees_a_corrupted_frame() {
    if !have_kvm() {
        return;
    }
    let _s = serial();
    let point = "size=256,copy=copy,rate=2,batch=8,notify=poll,sink_delay_us=50";
    let (_, t) = trial(point, 100_000);
    assert!(t.dropped > 0, "a sink pausing 50 us per 8 frames cannot take 2 Mpps: {t:?}");
}

#[test]
fn mwait_is_unsupported_with_the_reason() {
    if !have_kvm() {
        return;
    }
    let e = probe("path.a").run(&Point::parse("notify=mwait").unwrap(), &budget(1000)).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("unsupported: notify=mwait: "), "{msg}");
}

/// Pids of this process's children whose command line contains `needle`.
fn children_with(needle: &str) -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).unwrap_or("");
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == me && String::from_utf8_lossy(&cmd).contains(needle) {
            v.push(pid);
        }
    }
    v
}

#[test]
fn a_killed_vm_worker_is_named_and_the_other_is_torn_down() {
    if !have_kvm() {
        return;
    }
    let _s = serial();
    let run = std::thread::spawn(|| {
        probe("path.a").run(&Point::parse("size=64,rate=1,batch=32,notify=poll").unwrap(), &budget(u64::MAX / 4))
    });
    // wait until both workers run, then kill the sink's
    let t0 = Instant::now();
    let sink = loop {
        let sinks = children_with("VM2 (sink)");
        if !sinks.is_empty() && children_with("VM1 (generator)").len() == 1 {
            std::thread::sleep(Duration::from_millis(1500));
            break sinks[0];
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the workers never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: `sink` is a child of this process that was alive a moment ago.
    assert_eq!(unsafe { libc::kill(sink, libc::SIGKILL) }, 0);
    let err = run.join().unwrap().unwrap_err().to_string();
    println!("{err}");
    assert!(err.contains("VM2 (sink)") && err.contains("SIGKILL") && err.contains(&format!("pid {sink}")), "{err}");
    assert!(children_with("__ivbench-vm-worker").is_empty(), "a worker is left");
}
