//! Blocking wake-up round trips between two pinned threads: what a notification costs
//! when the receiver sleeps in the kernel instead of spinning. `host.eventfd.roundtrip`
//! is the mechanism behind ioeventfd/irqfd; `host.futex.roundtrip` is the bare
//! sleep/wake primitive underneath most user-space locks and queues.
//!
//! Either side may find its answer already there and not sleep at all; the
//! context-switch counter (perf note) and, for the futex, `main_slept_fraction` say how
//! often that happened.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use probe_api::{Budget, Methods, Metric, Point, Probe, ProbeError, Samples, Support};

use crate::partner::{Partner, Watchdog};
use crate::pinning::{cpu_pair, two_cpus_support, PinnedHere};
use crate::sampling;

fn released(budget: &Budget, what: &str) -> ProbeError {
    ProbeError::Timeout(budget.timeout, format!("{what}: released by the watchdog"))
}

// ---------------------------------------------------------------- eventfd

pub struct EventfdRoundtrip;
const EVENTFD_NAME: &str = "host.eventfd.roundtrip";

struct EventfdPair {
    to_partner: OwnedFd,
    to_main: OwnedFd,
    stop: AtomicBool,
}

fn new_eventfd() -> io::Result<OwnedFd> {
    // Blocking, counter mode: a read sleeps until the other side writes.
    // SAFETY: eventfd takes plain integers and returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn eventfd_signal(fd: &OwnedFd) -> io::Result<()> {
    let one: u64 = 1;
    loop {
        // SAFETY: writes the 8 bytes of `one`, which lives across the call, to an open fd.
        let n = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if n == 8 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn eventfd_wait(fd: &OwnedFd) -> io::Result<u64> {
    let mut v: u64 = 0;
    loop {
        // SAFETY: reads at most 8 bytes into `v`, a u64 that lives across the call.
        let n = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        if n == 8 {
            return Ok(v);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl EventfdPair {
    /// Wakes both sides whatever they are doing; they see `stop` and leave.
    fn release(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = eventfd_signal(&self.to_partner);
        let _ = eventfd_signal(&self.to_main);
    }
}

fn eventfd_partner(p: &EventfdPair) {
    while eventfd_wait(&p.to_partner).is_ok() {
        if p.stop.load(Ordering::SeqCst) || eventfd_signal(&p.to_main).is_err() {
            return;
        }
    }
}

impl Probe for EventfdRoundtrip {
    fn name(&self) -> &'static str {
        EVENTFD_NAME
    }
    fn description(&self) -> &'static str {
        "eventfd ping-pong between two pinned host threads: write + blocking read each way (one round trip)"
    }
    fn group(&self) -> &'static str {
        "wake"
    }
    fn support(&self) -> Support {
        match new_eventfd() {
            Ok(_) => two_cpus_support(EVENTFD_NAME),
            Err(e) => Support::Unsupported(format!("eventfd() failed: {e}")),
        }
    }
    fn run(&self, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
        let (main_cpu, partner_cpu) = cpu_pair(budget, EVENTFD_NAME)?;
        let _pin = PinnedHere::to(main_cpu)?;
        let pair = Arc::new(EventfdPair {
            to_partner: new_eventfd().map_err(|e| ProbeError::io("eventfd", e))?,
            to_main: new_eventfd().map_err(|e| ProbeError::io("eventfd", e))?,
            stop: AtomicBool::new(false),
        });
        let (p_body, p_release, p_kick) = (Arc::clone(&pair), Arc::clone(&pair), Arc::clone(&pair));
        let partner = Partner::spawn(
            "ivbench-eventfd",
            partner_cpu,
            budget.timeout,
            move || eventfd_partner(&p_body),
            move || p_release.release(),
        )?;
        let watchdog = Watchdog::arm(budget.timeout, move || p_kick.release())?;

        let recorded = sampling::record(budget, Methods::PerOpOnly, EVENTFD_NAME, || {
            eventfd_signal(&pair.to_partner).map_err(|e| ProbeError::io("eventfd write", e))?;
            eventfd_wait(&pair.to_main).map_err(|e| ProbeError::io("eventfd read", e))?;
            if pair.stop.load(Ordering::Relaxed) {
                return Err(released(budget, "eventfd round trip"));
            }
            Ok(())
        });
        drop(watchdog);
        partner.finish()?;
        let mut s = recorded?.into_samples(sampling::HOST_CLOCK);
        s.notes.push(format!(
            "measuring thread on cpu {main_cpu}, partner on cpu {partner_cpu}; blocking read(2) on two eventfds"
        ));
        Ok(s)
    }
}

// ---------------------------------------------------------------- futex

pub struct FutexRoundtrip;
const FUTEX_NAME: &str = "host.futex.roundtrip";

/// Each word on its own line so a wake on one does not bounce the other.
#[repr(align(128))]
struct Word(AtomicU32);

/// Sequence numbers, one word per direction: a waiter sleeps while its word still
/// holds the value it last saw.
struct FutexPair {
    to_partner: Word,
    to_main: Word,
    stop: AtomicBool,
}

fn futex_wait(word: &AtomicU32, expected: u32) -> io::Result<()> {
    // SAFETY: FUTEX_WAIT on the address of a live, aligned AtomicU32 with no timeout;
    // the kernel only reads the word.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn futex_wake(word: &AtomicU32, count: i32) {
    // SAFETY: FUTEX_WAKE on the address of a live, aligned AtomicU32; no memory is written.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, count);
    }
}

/// Waits until `word` moves away from `old`; returns (new value, whether we slept).
/// EAGAIN (value already changed) and EINTR just mean: look again.
fn futex_wait_change(word: &AtomicU32, old: u32, stop: &AtomicBool) -> Option<(u32, bool)> {
    let mut slept = false;
    loop {
        let v = word.load(Ordering::Acquire);
        if v != old {
            return Some((v, slept));
        }
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        slept |= futex_wait(word, old).is_ok();
    }
}

impl FutexPair {
    fn release(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Moving the words makes a wait that is about to start return EAGAIN.
        self.to_partner.0.fetch_add(1, Ordering::SeqCst);
        self.to_main.0.fetch_add(1, Ordering::SeqCst);
        futex_wake(&self.to_partner.0, i32::MAX);
        futex_wake(&self.to_main.0, i32::MAX);
    }
}

fn futex_partner(p: &FutexPair) {
    let mut last = 0u32;
    while let Some((v, _)) = futex_wait_change(&p.to_partner.0, last, &p.stop) {
        if p.stop.load(Ordering::SeqCst) {
            return;
        }
        last = v;
        p.to_main.0.store(v, Ordering::Release);
        futex_wake(&p.to_main.0, 1);
    }
}

impl Probe for FutexRoundtrip {
    fn name(&self) -> &'static str {
        FUTEX_NAME
    }
    fn description(&self) -> &'static str {
        "private futex ping-pong between two pinned host threads: FUTEX_WAKE + FUTEX_WAIT each way (one round trip)"
    }
    fn group(&self) -> &'static str {
        "wake"
    }
    fn support(&self) -> Support {
        two_cpus_support(FUTEX_NAME)
    }
    fn run(&self, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
        let (main_cpu, partner_cpu) = cpu_pair(budget, FUTEX_NAME)?;
        let _pin = PinnedHere::to(main_cpu)?;
        let pair = Arc::new(FutexPair {
            to_partner: Word(AtomicU32::new(0)),
            to_main: Word(AtomicU32::new(0)),
            stop: AtomicBool::new(false),
        });
        let (p_body, p_release, p_kick) = (Arc::clone(&pair), Arc::clone(&pair), Arc::clone(&pair));
        let partner = Partner::spawn(
            "ivbench-futex",
            partner_cpu,
            budget.timeout,
            move || futex_partner(&p_body),
            move || p_release.release(),
        )?;
        let watchdog = Watchdog::arm(budget.timeout, move || p_kick.release())?;

        let mut seq = 0u32;
        let mut rounds = 0u64;
        let mut slept_rounds = 0u64;
        let recorded = sampling::record(budget, Methods::PerOpOnly, FUTEX_NAME, || {
            let previous = seq;
            seq = seq.wrapping_add(1);
            pair.to_partner.0.store(seq, Ordering::Release);
            futex_wake(&pair.to_partner.0, 1);
            let Some((_, slept)) = futex_wait_change(&pair.to_main.0, previous, &pair.stop) else {
                return Err(released(budget, "futex round trip"));
            };
            if pair.stop.load(Ordering::Relaxed) {
                return Err(released(budget, "futex round trip"));
            }
            rounds += 1;
            slept_rounds += u64::from(slept);
            Ok(())
        });
        drop(watchdog);
        partner.finish()?;
        let mut s = recorded?.into_samples(sampling::HOST_CLOCK);
        s.metrics.push(Metric::new("main_slept_fraction", slept_rounds as f64 / rounds.max(1) as f64, "fraction"));
        s.notes.push(format!(
            "measuring thread on cpu {main_cpu}, partner on cpu {partner_cpu}; FUTEX_WAIT/FUTEX_WAKE (private) on two words; main_slept_fraction = rounds (warm-up included) in which the measuring thread actually slept"
        ));
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    // No partner at all: only the watchdog can get the blocked thread out.

    #[test]
    fn watchdog_releases_a_blocked_eventfd_read() {
        let pair = Arc::new(EventfdPair {
            to_partner: new_eventfd().unwrap(),
            to_main: new_eventfd().unwrap(),
            stop: AtomicBool::new(false),
        });
        let kick = Arc::clone(&pair);
        let t = Instant::now();
        let _w = Watchdog::arm(Duration::from_millis(50), move || kick.release()).unwrap();
        eventfd_wait(&pair.to_main).unwrap();
        assert!(pair.stop.load(Ordering::SeqCst));
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn watchdog_releases_a_blocked_futex_wait() {
        let pair = Arc::new(FutexPair {
            to_partner: Word(AtomicU32::new(0)),
            to_main: Word(AtomicU32::new(0)),
            stop: AtomicBool::new(false),
        });
        let kick = Arc::clone(&pair);
        let _w = Watchdog::arm(Duration::from_millis(50), move || kick.release()).unwrap();
        // Either outcome is a release: the word moved, or stop was seen first.
        let _ = futex_wait_change(&pair.to_main.0, 0, &pair.stop);
        assert!(pair.stop.load(Ordering::SeqCst));
    }
}
