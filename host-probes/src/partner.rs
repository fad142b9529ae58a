//! The second thread of a two-thread probe, and the watchdog that makes sure neither
//! thread can stay blocked past the budget's timeout.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use probe_api::{cpu, ProbeError};

/// A pinned partner thread. Dropping it releases the partner (with the probe's own
/// release action) and joins it, so no exit path of a probe can leave it behind.
pub struct Partner {
    handle: Option<JoinHandle<()>>,
    release: Box<dyn Fn() + Send>,
}

impl Partner {
    /// Spawns `body` on a thread pinned to `cpu_id` and waits (at most `timeout`) until
    /// it is pinned and about to run. `release` must make `body` return promptly from
    /// any state it can be in.
    pub fn spawn<B, R>(name: &str, cpu_id: usize, timeout: Duration, body: B, release: R) -> Result<Self, ProbeError>
    where
        B: FnOnce() + Send + 'static,
        R: Fn() + Send + 'static,
    {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                if let Err(e) = cpu::pin_current_thread(cpu_id) {
                    let _ = ready_tx.send(Err(format!("pinning the partner thread to cpu {cpu_id}: {e}")));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                body();
            })
            .map_err(|e| ProbeError::io("spawning the partner thread", e))?;
        let partner = Partner { handle: Some(handle), release: Box::new(release) };
        match ready_rx.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(partner),
            Ok(Err(e)) => Err(ProbeError::Failed(e)),
            Err(RecvTimeoutError::Timeout) => Err(ProbeError::Timeout(timeout, "partner thread did not start".into())),
            Err(RecvTimeoutError::Disconnected) => {
                Err(ProbeError::Failed("partner thread exited before it started".into()))
            }
        }
    }

    /// Releases and joins the partner, reporting a panic in it as a failure.
    pub fn finish(mut self) -> Result<(), ProbeError> {
        (self.release)();
        match self.handle.take().map(JoinHandle::join) {
            Some(Err(_)) => Err(ProbeError::Failed("partner thread panicked".into())),
            _ => Ok(()),
        }
    }
}

impl Drop for Partner {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            (self.release)();
            let _ = h.join();
        }
    }
}

/// Calls `kick` if the run is still going after `timeout`, and then every few
/// milliseconds until disarmed: one kick could land just before a thread re-blocks.
pub struct Watchdog {
    disarm: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

/// Interval between kicks once the watchdog has fired.
const KICK_INTERVAL: Duration = Duration::from_millis(5);

impl Watchdog {
    pub fn arm<K>(timeout: Duration, kick: K) -> Result<Self, ProbeError>
    where
        K: Fn() + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("ivbench-watchdog".into())
            .spawn(move || {
                let mut wait = timeout;
                // Either a disarm message or a dropped sender ends the watch.
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(wait) {
                    kick();
                    wait = KICK_INTERVAL;
                }
            })
            .map_err(|e| ProbeError::io("spawning the watchdog thread", e))?;
        Ok(Watchdog { disarm: Some(tx), handle: Some(handle) })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.disarm.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
