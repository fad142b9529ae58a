//! Pinning the calling thread for the length of a run, and handing the harness its
//! thread back as it was: probes run on whatever thread the harness calls them from.

use std::io;

use probe_api::{cpu, Budget, ProbeError};

/// Restores the previous CPU affinity of the calling thread when dropped.
pub struct PinnedHere {
    previous: Option<libc::cpu_set_t>,
}

impl PinnedHere {
    pub fn to(cpu_id: usize) -> Result<Self, ProbeError> {
        let previous = current_affinity().ok();
        cpu::pin_current_thread(cpu_id)
            .map_err(|e| ProbeError::io(format!("pinning the measuring thread to cpu {cpu_id}"), e))?;
        Ok(PinnedHere { previous })
    }

    /// Pins to `budget.cpu(0)`, or stays unpinned when the budget names no CPU.
    pub fn measuring_thread(budget: &Budget) -> Result<Self, ProbeError> {
        match budget.cpu(0) {
            Some(c) => Self::to(c),
            None => Ok(PinnedHere { previous: None }),
        }
    }
}

impl Drop for PinnedHere {
    fn drop(&mut self) {
        if let Some(set) = &self.previous {
            // Best effort: failing to widen the mask again is not worth a panic in drop.
            // SAFETY: `set` is an initialised cpu_set_t; sched_setaffinity only reads it.
            unsafe {
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set);
            }
        }
    }
}

fn current_affinity() -> io::Result<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid value and sched_getaffinity
    // writes at most size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(set)
    }
}

/// The two distinct CPUs a two-thread probe runs on: (measuring, partner).
pub fn cpu_pair(budget: &Budget, probe: &str) -> Result<(usize, usize), ProbeError> {
    let (Some(a), Some(b)) = (budget.cpu(0), budget.cpu(1)) else {
        return Err(ProbeError::Unsupported(format!("{probe} needs two CPUs; the budget names none")));
    };
    if a == b {
        return Err(ProbeError::Unsupported(format!(
            "{probe} needs two different CPUs; the budget gives only cpu {a}"
        )));
    }
    Ok((a, b))
}

/// Support check shared by the two-thread probes.
pub fn two_cpus_support(probe: &str) -> probe_api::Support {
    let allowed = cpu::allowed_cpus();
    if allowed.len() < 2 {
        probe_api::Support::Unsupported(format!(
            "{probe} needs two CPUs; this process may run on {} ({:?})",
            allowed.len(),
            allowed
        ))
    } else {
        probe_api::Support::Supported
    }
}
