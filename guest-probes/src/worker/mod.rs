//! VM worker processes: one VM per process, sharing memory with the others through
//! memfds.
//!
//! - The parent ([`Group`]) creates the shared regions ([`crate::vmm::SharedMemory`]),
//!   starts one worker per VM (`<exe> __ivbench-vm-worker <name>`, with its end of a
//!   socketpair on fd 3), sends it the memfds (SCM_RIGHTS) and its [`proto::Job`], and
//!   supervises: reports, errors, deaths, hangs, the deadline, interruption.
//! - A worker ([`child::serve`]) builds its VM (one vCPU) with the shared regions as
//!   memslots, pins its vCPU thread, verifies native execution, measures its timer, then
//!   waits on a barrier in shared memory so that all VMs start together, runs its role and
//!   sends its samples, status words, exit counts and KVM statistics back.
//!
//! The worker executable is the running program when it takes the worker argument
//! ([`serve_if_worker`] at the top of `main`, as `ivbench` does), else
//! `ivbench-vm-worker` (this crate's small binary) or `ivbench` found next to the running
//! program or one directory up (test binaries live in `target/<profile>/deps`), or the
//! path in `IVBENCH_VM_WORKER`.

pub mod child;
pub mod group;
mod path;
pub mod path_block;
pub mod proto;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

pub use group::{describe_status, Group, Shared, WorkerSpec};
pub use proto::{Report, Role};

/// The hidden first argument that makes a program a VM worker.
pub const WORKER_ARG: &str = "__ivbench-vm-worker";

static SELF_IS_WORKER: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main`: when the program was started as a VM worker, serves the
/// job and exits; otherwise records that this program can be started as one.
pub fn serve_if_worker() {
    SELF_IS_WORKER.store(true, Ordering::SeqCst);
    if std::env::args_os().nth(1).is_some_and(|a| a == WORKER_ARG) {
        std::process::exit(child::serve());
    }
}

/// The executable to start workers with (see the module documentation).
pub fn worker_exe() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("IVBENCH_VM_WORKER") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    if SELF_IS_WORKER.load(Ordering::SeqCst) {
        return Ok(me);
    }
    let dir = me.parent().map(PathBuf::from).unwrap_or_default();
    let mut tried = Vec::new();
    for d in [dir.clone(), dir.parent().map(PathBuf::from).unwrap_or_default()] {
        for name in ["ivbench-vm-worker", "ivbench"] {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
            tried.push(p.display().to_string());
        }
    }
    Err(format!("no VM worker executable: set IVBENCH_VM_WORKER or build it (tried {})", tried.join(", ")))
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> Result<(), String> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(format!("CPU {cpu} is beyond CPU_SETSIZE"));
    }
    // SAFETY: cpu_set_t is plain data, zeroed then filled by CPU_SET (cpu is in range);
    // sched_setaffinity only reads it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(format!("sched_setaffinity(cpu {cpu}): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
