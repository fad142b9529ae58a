//! Thread placement. Probes that need two CPUs pin each thread explicitly, so that a
//! figure always says which cores it was taken between.

use std::io;

/// Pins the calling thread to one CPU. A CPU beyond the affinity mask is an error (the
/// mask macros would index out of bounds).
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {cpu} is beyond the affinity mask (CPUs 0..{})", libc::CPU_SETSIZE),
        ));
    }
    // SAFETY: `set` is a plain bit mask owned by this frame, `cpu` was checked to lie
    // inside it, and sched_setaffinity reads exactly size_of::<cpu_set_t>() bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// CPUs this process may run on, ascending.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size into it
    // and CPU_ISSET reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// Threads runnable right now on the whole machine (`procs_running` of /proc/stat, which
/// counts the reader itself), if /proc says.
pub fn runnable_threads() -> Option<u64> {
    std::fs::read_to_string("/proc/stat").ok().and_then(|t| parse_procs_running(&t))
}

/// The `procs_running N` line of a /proc/stat text.
pub fn parse_procs_running(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("procs_running ")).and_then(|v| v.trim().parse().ok())
}

/// CPUs free for a probe's busy threads: the CPUs this process may use less the threads
/// already runnable besides the caller (a busy host counts against them).
pub fn free_cpus() -> usize {
    let cpus = allowed_cpus().len();
    let others = runnable_threads().unwrap_or(1).saturating_sub(1) as usize;
    cpus.saturating_sub(others)
}

#[cfg(test)]
mod runnable_tests {
    use super::*;

    #[test]
    fn procs_running_is_read_from_its_line() {
        let stat = "cpu  1 2 3\nintr 5\nprocs_running 3\nprocs_blocked 0\n";
        assert_eq!(parse_procs_running(stat), Some(3));
        assert_eq!(parse_procs_running("cpu 1\n"), None);
        assert!(runnable_threads().unwrap_or(1) >= 1, "the reader itself runs");
        assert!(free_cpus() <= allowed_cpus().len());
    }
}
