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

/// A metric's value, 0 when the row has none.
fn opt(s: &Samples, name: &str) -> f64 {
    s.metrics.iter().find(|m| m.name == name).map_or(0.0, |m| m.value)
}

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
    trial_of("path.a", point, packets)
}

fn trial_of(name: &str, point: &str, packets: u64) -> (Samples, Throughput) {
    let p = probe(name);
    let s = p.run(&Point::parse(point).unwrap(), &budget(packets)).unwrap_or_else(|e| panic!("path.a {point}: {e}"));
    let t = s.throughput.clone().expect("a throughput row");
    println!(
        "{name} {point}: sent {} received {} dropped {} in {:.3} s = {:.3} Mpps; {} latency samples",
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
        let hop_drops = (1..=4).map(|k| opt(&s, &format!("hop{k}_drop_full"))).sum::<f64>() as u64;
        assert_eq!(t.received + hop_drops, packets, "{point}: at max the budget counts packets that entered the ring");
    } else {
        assert_eq!(t.sent, packets, "{point}: a paced generator offers exactly its budget");
    }
    // (on multi-hop paths the sink's sequence gaps are the middle boxes' drops, which the
    // probe checked against their counters)
    assert_eq!((t.duplicated, t.reordered, t.corrupted), (0, 0, 0), "{point}: {t:?}");
    if name == "path.a" {
        assert_eq!(t.lost, 0, "{point}: {t:?}");
    }
    assert!(t.received > 0 && t.duration_s > 0.0, "{point}: {t:?}");
    assert!(!s.cycles.is_empty(), "{point}: no latency sample");
    assert!(s.notes.iter().any(|n| n.starts_with("TSC check:")), "{point}: the TSC check is recorded");
    // too few free CPUs for the vCPUs is detected and said, never silently measured
    assert_eq!(
        s.notes.iter().any(|n| n.starts_with("oversubscribed:")),
        metric(&s, "oversubscribed") == 1.0,
        "{point}"
    );
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
        // 256 slots hold 5 ms at 0.05 Mpps: drops come from a sink whose CPU the host gave
        // to another thread for longer than that (tens of ms on a loaded CI machine); a
        // lost wake-up would leave the sink asleep until DONE, receiving one ring's worth.
        assert!(t.received * 4 >= t.sent, "{point}: {t:?}");
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
    // (as for the sleeping sinks: a lost wake-up would receive one ring's worth, 256)
    assert!(t.received * 4 >= t.sent, "{point}: {t:?}");
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

#[test]
fn vmfunc_transport_moves_packets_or_is_unsupported_with_the_reason() {
    if !have_kvm() {
        return;
    }
    let _g = serial(); // on a host with views this runs a trial that spins both CPUs
    let pt = Point::parse("size=64,notify=poll,transport=vmfunc").unwrap();
    let p = probe("path.a");
    match p.run(&pt, &budget(20_000)) {
        // Only a kvm_intel with the kvm-patch module gets here: VM1 has no memslot for the
        // ring, so every packet the sink verified went through the view.
        Ok(s) => {
            let tp = s.throughput.clone().expect("a throughput row");
            assert_eq!(tp.sent, tp.received + tp.dropped);
            assert!(tp.received > 0);
            assert!(s.metrics.iter().any(|m| m.name == "view_entries" && m.value > 0.0), "{:?}", s.metrics);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("unsupported: transport=vmfunc: "), "{msg}");
            if guest_probes::probes::backend_report().backend == "kvm_pvm" {
                assert!(msg.contains("kvm_pvm has no VMFUNC"), "{msg}");
            }
            // and a transport that does not exist is refused by name
            let bad = p.run(&Point::parse("transport=ept").unwrap(), &budget(10)).unwrap_err().to_string();
            assert!(bad.contains("transport must be memslot or vmfunc"), "{bad}");
        }
    }
}

#[test]
fn ctrl_c_stops_the_generator_and_keeps_a_balanced_partial_row() {
    if !have_kvm() {
        return;
    }
    let _g = serial();
    // A paced trial that would run 5 s; the stop flag (what Ctrl-C sets) comes after 0.3 s.
    let mut b = budget(1_000_000_000);
    b.stop = probe_api::StopFlag::new();
    let flag = b.stop.clone();
    let t0 = std::time::Instant::now();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        flag.request();
    });
    let s = probe("path.a")
        .run(&Point::parse("size=64,rate=0.2,batch=1,notify=poll").unwrap(), &b)
        .unwrap_or_else(|e| panic!("interrupted path.a: {e}"));
    stopper.join().unwrap();
    let took = t0.elapsed();
    let t = s.throughput.clone().expect("a throughput row");
    assert!(took < Duration::from_secs(4), "the stop did not end the trial early: {took:?}");
    let why = s.partial.clone().expect("an interrupted trial is partial");
    assert!(why.starts_with("interrupted: the generator was stopped"), "{why}");
    assert_eq!(t.sent, t.received + t.dropped, "{t:?}");
    assert!(t.received > 0, "{t:?}");
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

/// Runs `name` at `point` for long, SIGKILLs the worker called `victim` once it and
/// `other` run, and returns the probe's error and the victim's pid; no worker is left.
fn kill_mid_run(name: &'static str, point: &'static str, victim: &str, other: &str) -> (String, i32) {
    let run = std::thread::spawn(move || probe(name).run(&Point::parse(point).unwrap(), &budget(u64::MAX / 4)));
    let t0 = Instant::now();
    let pid = loop {
        let v = children_with(victim);
        if !v.is_empty() && !children_with(other).is_empty() {
            std::thread::sleep(Duration::from_millis(1500));
            break v[0];
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the workers never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: `pid` is a child of this process that was alive a moment ago.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let err = run.join().unwrap().unwrap_err().to_string();
    println!("{err}");
    assert!(children_with("__ivbench-vm-worker").is_empty(), "a worker is left");
    (err, pid)
}

#[test]
fn a_killed_vm_worker_is_named_and_the_other_is_torn_down() {
    if !have_kvm() {
        return;
    }
    let _s = serial();
    let (err, sink) = kill_mid_run("path.a", "size=64,rate=1,batch=32,notify=poll", "VM2 (sink)", "VM1 (generator)");
    assert!(err.contains("VM2 (sink)") && err.contains("SIGKILL") && err.contains(&format!("pid {sink}")), "{err}");
}

#[test]
fn path_b_switches_every_frame_to_its_port_with_exact_accounting() {
    if !have_kvm() {
        return;
    }
    let _s = serial();
    for notify in ["poll", "halt", "exit"] {
        let point = format!("size=64,copy=copy,rate=1,batch=32,notify={notify}");
        let (s, t) = trial_of("path.b", &point, 200_000);
        let entered = t.sent - metric(&s, "dropped_tx") as u64;
        // every frame that entered ring 0 reached the switch's port 0, none went back to
        // VM1's port, none had an unknown destination; port 1 sent what the sink received
        // (nothing is lost between a box and the next)
        assert_eq!(metric(&s, "switch_port0_rx") as u64, entered, "{point}");
        assert_eq!(metric(&s, "switch_port0_tx"), 0.0, "{point}: nothing is addressed to VM1");
        assert_eq!(metric(&s, "hop1_drop_unknown"), 0.0, "{point}");
        assert_eq!(metric(&s, "switch_port1_tx") as u64, t.received, "{point}");
        assert!(metric(&s, "hop1_cum_p50_ns") > 0.0, "{point}: the switch samples latency");
        if notify != "exit" {
            assert_eq!(metric(&s, "userspace_exits_hop1"), 0.0, "{point}");
        }
        // 3 vCPUs on this machine's CPUs: said, and polling fell back to hybrid
        if metric(&s, "free_cpus") < 3.0 {
            assert_eq!(metric(&s, "oversubscribed"), 1.0, "{point}");
            if notify == "poll" {
                assert!(s.notes.iter().any(|n| n.contains("ran as notify=hybrid")), "{point}: {:?}", s.notes);
            }
        }
    }
}

#[test]
fn a_full_output_ring_drops_at_the_switch_and_never_stalls_its_input() {
    if !have_kvm() {
        return;
    }
    let _s = serial();
    let point = "size=64,copy=copy,rate=1,batch=8,notify=halt,sink_delay_us=100";
    let (s, t) = trial_of("path.b", point, 100_000);
    let entered = t.sent - metric(&s, "dropped_tx") as u64;
    assert!(metric(&s, "hop1_drop_full") > 0.0, "a sink pausing 100 us per 8 frames cannot take 1 Mpps");
    assert_eq!(metric(&s, "switch_port0_rx") as u64, entered, "the switch kept draining its input");
    assert_eq!(t.received + metric(&s, "hop1_drop_full") as u64, entered);
}

#[test]
fn chains_of_middle_boxes_forward_with_exact_accounting() {
    if !have_kvm() {
        return;
    }
    let _s = serial();
    for n in [1, 3] {
        let point = format!("length={n},size=256,copy=copy,rate=0.5,batch=16,notify=halt");
        let (s, t) = trial_of("path.chain", &point, 50_000);
        let entered = t.sent - metric(&s, "dropped_tx") as u64;
        let mut prev = entered;
        for k in 1..=n {
            let (rx, tx, full) = (
                metric(&s, &format!("hop{k}_rx")),
                metric(&s, &format!("hop{k}_tx")),
                metric(&s, &format!("hop{k}_drop_full")),
            );
            assert_eq!(rx as u64, prev, "{point}: hop {k} took what the hop before sent");
            assert_eq!((tx + full) as u64, rx as u64, "{point}: hop {k} sent or dropped every frame");
            prev = tx as u64;
        }
        assert_eq!(prev, t.received, "{point}: the last box sent what the sink received");
        assert!(opt(&s, &format!("hop{}_cum_p50_ns", n)) >= opt(&s, "hop1_cum_p50_ns"), "{point}");
    }
    assert!(probe("path.chain").run(&Point::parse("length=5").unwrap(), &budget(10)).is_err(), "length 5 refused");
}

#[test]
fn a_killed_switch_is_named_and_the_others_are_torn_down() {
    if !have_kvm() {
        return;
    }
    let _s = serial();
    let (err, switch) = kill_mid_run("path.b", "size=64,rate=1,batch=32,notify=halt", "VM0 (switch)", "VM2 (sink)");
    assert!(err.contains("VM0 (switch)") && err.contains("SIGKILL") && err.contains(&format!("pid {switch}")), "{err}");
}
