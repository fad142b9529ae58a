//! VM worker processes: three VMs in three processes share one memfd and pass a token
//! around; a worker killed mid-run, one whose guest hangs and one whose process stops are
//! each named, the others torn down, no process left and no fd leaked. Needs /dev/kvm.

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use guest_probes::vmm::{layout, SharedMemory, VmmError};
use guest_probes::worker::{Group, Role, Shared, WorkerSpec};

mod common;
use common::have_kvm;

/// The fd counts compare the whole process: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const TOKEN: u64 = 256;
const BARRIER: u64 = 512;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// One test's guard: the serialising lock and the fd count before the test.
struct Guard {
    _serial: std::sync::MutexGuard<'static, ()>,
    fds: usize,
}

fn start() -> Guard {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Guard { _serial: serial, fds: open_fds() }
}

impl Guard {
    /// No worker is left and, once `shm` is gone too, no fd is.
    fn torn_down(self, pids: &[i32], shm: SharedMemory) {
        assert!(pids.iter().all(|&p| !alive(p)), "a worker is left: {pids:?}");
        drop(shm);
        assert_eq!(open_fds(), self.fds, "fd count after the group");
    }
}

fn ring(n: u64, passes: u64, hang: Option<usize>) -> Vec<WorkerSpec> {
    (0..n)
        .map(|i| WorkerSpec {
            name: format!("vm{i}"),
            cpu: None,
            role: if hang == Some(i as usize) {
                Role::Hang
            } else {
                Role::TokenRing { passes, participants: n, index: i, token: layout::SHARED_GPA + TOKEN }
            },
            stops_when_done: vec![],
            deadline: None,
        })
        .collect()
}

fn spawn(shm: &SharedMemory, specs: Vec<WorkerSpec>, timeout: Duration) -> Group {
    let shared = [Shared { memory: shm, slot: 1, gpa: layout::SHARED_GPA }];
    Group::spawn("test.workers", &shared, BARRIER, specs, Instant::now() + timeout).unwrap()
}

/// Waits until the token has moved `passes` times (the workers are past the barrier).
fn wait_for_token(shm: &SharedMemory, passes: u64) {
    let t0 = Instant::now();
    while shm.atomic(TOKEN as usize).load(Ordering::SeqCst) < passes {
        assert!(t0.elapsed() < Duration::from_secs(20), "the token did not move");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn three_worker_vms_pass_a_token_through_one_memfd() {
    if !have_kvm() {
        return;
    }
    let guard = start();
    let shm = SharedMemory::new(2 << 20).unwrap();
    let passes = 300;
    let mut g = spawn(&shm, ring(3, passes, None), Duration::from_secs(60));
    let pids = g.pids();
    let reports = g.supervise(&|| false).unwrap();
    drop(g);
    assert_eq!(shm.atomic(TOKEN as usize).load(Ordering::SeqCst), 3 * passes);
    assert_eq!(shm.atomic(BARRIER as usize).load(Ordering::SeqCst), 3, "every worker passed the barrier");
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r.status["COUNT"], passes, "vm{i} passed the token {} times", r.status["COUNT"]);
        assert_eq!((r.exits.userspace, r.exits.done), (1, 1), "vm{i}: only the done exit: {:?}", r.exits);
        assert!(r.prepared.cycles_per_iter < 10.0, "vm{i} not native: {:?}", r.prepared);
        assert_eq!(r.pid as i32, pids[i]);
    }
    let distinct: std::collections::BTreeSet<u32> = reports.iter().map(|r| r.pid).collect();
    assert_eq!(distinct.len(), 3, "three processes");
    guard.torn_down(&pids, shm);
}

#[test]
fn a_sigkilled_worker_is_named_and_the_others_are_torn_down() {
    if !have_kvm() {
        return;
    }
    let guard = start();
    let shm = SharedMemory::new(2 << 20).unwrap();
    let mut g = spawn(&shm, ring(3, 1 << 40, None), Duration::from_secs(60));
    let pids = g.pids();
    wait_for_token(&shm, 30);
    // SAFETY: pids[1] is our own child, alive (it is passing the token).
    assert_eq!(unsafe { libc::kill(pids[1], libc::SIGKILL) }, 0);
    let t0 = Instant::now();
    let err = g.supervise(&|| false).unwrap_err();
    let took = t0.elapsed();
    drop(g);
    let msg = err.to_string();
    println!("{msg} (torn down {took:?} after the kill)");
    assert!(matches!(&err, VmmError::WorkerDied { worker, .. } if worker == "vm1"), "{msg}");
    assert!(msg.contains("signal 9") && msg.contains("SIGKILL") && msg.contains(&format!("pid {}", pids[1])), "{msg}");
    assert!(took < Duration::from_secs(1), "teardown took {took:?}");
    guard.torn_down(&pids, shm);
}

#[test]
fn a_worker_whose_guest_hangs_is_named_with_rip_and_last_exit() {
    if !have_kvm() {
        return;
    }
    let guard = start();
    let shm = SharedMemory::new(2 << 20).unwrap();
    // vm1 hangs and its watchdog fires after 2 s; the others (waiting for the token vm1
    // never passes) would run into theirs only at the group deadline.
    let timeout = Duration::from_secs(2);
    let t0 = Instant::now();
    let mut specs = ring(3, 1 << 40, Some(1));
    specs[1].deadline = Some(Instant::now() + timeout);
    let mut g = spawn(&shm, specs, Duration::from_secs(30));
    let pids = g.pids();
    let err = g.supervise(&|| false).unwrap_err();
    let took = t0.elapsed();
    drop(g);
    let msg = err.to_string();
    println!("{msg} (after {took:?})");
    assert!(matches!(&err, VmmError::Worker { worker, timeout: true, .. } if worker == "vm1"), "{msg}");
    assert!(msg.contains("RIP 0x") && msg.contains("last exit") && msg.contains("jmp ."), "{msg}");
    assert!(took < timeout + Duration::from_secs(2), "took {took:?}");
    guard.torn_down(&pids, shm);
}

#[test]
fn a_stopped_worker_process_is_named_as_hung() {
    if !have_kvm() {
        return;
    }
    let guard = start();
    let shm = SharedMemory::new(2 << 20).unwrap();
    let timeout = Duration::from_secs(2);
    let t0 = Instant::now();
    // vm0 passes a token to itself 10 times and reports; vm1 passes its own forever
    // until it is frozen.
    let solo = |name: &str, passes: u64, word: u64| WorkerSpec {
        name: name.into(),
        cpu: None,
        role: Role::TokenRing { passes, participants: 1, index: 0, token: layout::SHARED_GPA + word },
        stops_when_done: vec![],
        deadline: None,
    };
    let mut g = spawn(&shm, vec![solo("vm0", 10, TOKEN + 64), solo("vm1", 1 << 40, TOKEN)], timeout);
    let pids = g.pids();
    wait_for_token(&shm, 30);
    // SAFETY: pids[1] is our own child; SIGSTOP freezes it, so its watchdog cannot report.
    assert_eq!(unsafe { libc::kill(pids[1], libc::SIGSTOP) }, 0);
    let err = g.supervise(&|| false).unwrap_err();
    let took = t0.elapsed();
    drop(g);
    let msg = err.to_string();
    println!("{msg} (after {took:?})");
    assert!(matches!(&err, VmmError::WorkerHung { worker, .. } if worker == "vm1"), "{msg}");
    assert!(msg.contains("started (past the barrier, vCPU running)"), "{msg}");
    assert_eq!(shm.atomic(TOKEN as usize + 64).load(Ordering::SeqCst), 10, "vm0 finished");
    assert!(took < timeout + guest_probes::worker::group::GRACE + Duration::from_secs(1), "took {took:?}");
    guard.torn_down(&pids, shm);
}

#[test]
fn an_interrupted_group_is_torn_down() {
    if !have_kvm() {
        return;
    }
    let guard = start();
    let shm = SharedMemory::new(2 << 20).unwrap();
    let mut g = spawn(&shm, ring(2, 1 << 40, None), Duration::from_secs(60));
    let pids = g.pids();
    wait_for_token(&shm, 30);
    // what Ctrl-C / SIGTERM do through the budget's stop flag
    let t0 = Instant::now();
    let err = g.supervise(&|| true).unwrap_err();
    let took = t0.elapsed();
    drop(g);
    assert!(matches!(err, VmmError::Interrupted { .. }), "{err}");
    assert!(took < Duration::from_secs(1), "teardown took {took:?}");
    guard.torn_down(&pids, shm);
}
