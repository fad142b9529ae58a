//! `host.syscall.getppid`: the cost of entering and leaving the kernel for the cheapest
//! syscall there is, the floor under every exit-to-userspace path.

use probe_api::{Budget, Methods, Point, Probe, ProbeError, Samples, Support};

use crate::pinning::PinnedHere;
use crate::sampling;

pub struct Getppid;

/// The raw syscall, not glibc's `getppid()`, which a libc may answer from a cache.
#[inline(always)]
fn raw_getppid() -> libc::c_long {
    // SAFETY: getppid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_getppid) }
}

impl Probe for Getppid {
    fn name(&self) -> &'static str {
        "host.syscall.getppid"
    }
    fn description(&self) -> &'static str {
        "raw getppid syscall round trip (user -> kernel -> user) on the host"
    }
    fn group(&self) -> &'static str {
        "syscall"
    }
    fn support(&self) -> Support {
        Support::Supported
    }
    fn methods(&self) -> Methods {
        Methods::Both
    }
    fn run(&self, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
        let _pin = PinnedHere::measuring_thread(budget)?;
        // SAFETY: getppid has no preconditions.
        let expected = unsafe { libc::getppid() } as libc::c_long;
        if raw_getppid() != expected {
            return Err(ProbeError::Failed("raw getppid disagrees with libc getppid".into()));
        }
        let recorded = sampling::record(budget, Methods::Both, self.name(), || {
            std::hint::black_box(raw_getppid());
            Ok(())
        })?;
        let mut s = recorded.into_samples(sampling::HOST_CLOCK);
        s.notes.push(format!("syscall(SYS_getppid); {}", mitigation_summary()));
        Ok(s)
    }
}

/// The kernel's own view of the speculation mitigations that tax every kernel entry
/// (page-table isolation, retpolines...): a syscall figure is meaningless without it.
fn mitigation_summary() -> String {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/sys/devices/system/cpu/vulnerabilities/{f}"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into())
    };
    format!("meltdown: {}; spectre_v2: {}", read("meltdown"), read("spectre_v2"))
}
