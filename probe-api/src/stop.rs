//! When a point must stop before it has all its samples: the user interrupted the run
//! (Ctrl-C, SIGTERM, SIGHUP) or the point's timeout passed. Probes check this inside
//! their sampling loops, between batches and between VM runs, and hand back what they
//! measured marked partial instead of throwing it away.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set once by the harness's signal handler; shared by every budget of a run.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn clear(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
    #[inline]
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a sampling loop ended before it had every sample it was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The user asked the run to stop.
    Interrupted,
    /// The point's timeout passed.
    TimedOut(Duration),
}

impl Stop {
    /// The `partial` text of a row: why, and how much was kept.
    pub fn describe(&self, taken: u64, wanted: u64) -> String {
        match self {
            Stop::Interrupted => format!("interrupted after {taken} of {wanted} samples"),
            Stop::TimedOut(t) => format!("timed out after {} s with {taken} of {wanted} samples", t.as_secs()),
        }
    }
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Interrupted => f.write_str("interrupted"),
            Stop::TimedOut(t) => write!(f, "timed out after {} s", t.as_secs()),
        }
    }
}

/// The instant `timeout` after `start`, or far in the future when that overflows.
pub fn deadline(start: Instant, timeout: Duration) -> Instant {
    start.checked_add(timeout).unwrap_or_else(|| start + Duration::from_secs(u32::MAX.into()))
}
