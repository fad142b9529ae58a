//! Watchdog for KVM_RUN.
//!
//! One process-wide watchdog thread keeps a table of armed guards. A guard is armed by the
//! vCPU thread itself (see `Vcpu::run`) with a deadline and the address of its `kvm_run`
//! page. When the deadline passes, the watchdog
//! 1. marks the guard as fired,
//! 2. sets `kvm_run.immediate_exit = 1` (so a KVM_RUN entered after the check returns EINTR
//!    at once), and
//! 3. sends [`kick_signal()`] to the vCPU thread, repeating every 5 ms until the guard is
//!    dropped (a signal that lands between the run loop's check and the ioctl would be
//!    lost otherwise).
//!
//! A hung guest (`vmcall` on kvm_pvm is retried forever by the emulator) therefore makes
//! KVM_RUN return EINTR; the run loop sees the fired flag and reports a timeout naming the
//! probe, the RIP and the last exit. The kick signal has an empty handler installed without
//! SA_RESTART; it is `SIGRTMIN + 4`, which nothing else in ivbench uses.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

struct Entry {
    id: u64,
    thread: libc::pthread_t,
    deadline: Instant,
    fired: Arc<AtomicBool>,
    /// Address of the guarded vCPU's `kvm_run.immediate_exit` byte.
    immediate_exit: usize,
}

struct Shared {
    entries: Mutex<Vec<Entry>>,
    cv: Condvar,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
static SIGNAL: Once = Once::new();

/// The signal the watchdog sends to a vCPU thread whose deadline passed.
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 4
}

extern "C" fn on_kick(_: libc::c_int) {}

fn install_signal() {
    SIGNAL.call_once(|| {
        // SAFETY: installs an async-signal-safe empty handler; the sigaction struct is zeroed
        // and fully initialised before use.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            sa.sa_flags = 0; // no SA_RESTART: KVM_RUN must come back with EINTR
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
        }
    });
}

fn shared() -> &'static Arc<Shared> {
    SHARED.get_or_init(|| {
        install_signal();
        let s = Arc::new(Shared { entries: Mutex::new(Vec::new()), cv: Condvar::new() });
        let t = s.clone();
        std::thread::Builder::new()
            .name("ivb-watchdog".into())
            .spawn(move || watchdog_thread(&t))
            .expect("spawn the KVM_RUN watchdog thread");
        s
    })
}

fn watchdog_thread(s: &Shared) {
    let mut entries = s.entries.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        let mut wait = Duration::from_secs(1);
        for e in entries.iter() {
            if now >= e.deadline {
                if !e.fired.swap(true, Ordering::SeqCst) {
                    // SAFETY: the entry is removed (under this lock) before the vCPU and its
                    // kvm_run mapping can go away, so the address is valid here.
                    unsafe { (*(e.immediate_exit as *const AtomicU8)).store(1, Ordering::SeqCst) };
                }
                // SAFETY: the guarded thread is alive while its entry is registered.
                unsafe { libc::pthread_kill(e.thread, kick_signal()) };
                wait = wait.min(Duration::from_millis(5));
            } else {
                wait = wait.min(e.deadline - now);
            }
        }
        entries = s.cv.wait_timeout(entries, wait).unwrap_or_else(|e| e.into_inner()).0;
    }
}

/// An armed watchdog for the calling thread. Dropping it disarms it.
pub struct Guard {
    id: u64,
    fired: Arc<AtomicBool>,
    armed_at: Instant,
}

impl Guard {
    /// Arms a watchdog for the calling thread. `immediate_exit` is the address of the
    /// `immediate_exit` byte of the vCPU's kvm_run page; it must stay mapped until the guard
    /// is dropped.
    pub fn arm(deadline: Instant, immediate_exit: *mut u8) -> Guard {
        let s = shared();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let fired = Arc::new(AtomicBool::new(false));
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() };
        s.entries.lock().unwrap_or_else(|e| e.into_inner()).push(Entry {
            id,
            thread,
            deadline,
            fired: fired.clone(),
            immediate_exit: immediate_exit as usize,
        });
        s.cv.notify_all();
        Guard { id, fired, armed_at: Instant::now() }
    }
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
    pub fn elapsed(&self) -> Duration {
        self.armed_at.elapsed()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let s = shared();
        s.entries.lock().unwrap_or_else(|e| e.into_inner()).retain(|e| e.id != self.id);
    }
}
