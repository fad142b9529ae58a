//! The parent side: [`Group`] starts VM worker processes, hands each its shared-memory
//! fds and its job, and supervises them until all reported or one failed.
//!
//! Supervision: a reader thread per worker turns its socket into messages on one channel;
//! the supervising thread waits on it in 10 ms steps and watches
//! - a worker's error report (its VMM error: ioctl, guest exit with RIP, watchdog),
//! - a worker's death: its socket ends before its report; it is reaped and named with its
//!   exit status or signal,
//! - the group deadline (plus a grace period for the workers' own watchdogs): a worker
//!   that has not reported by then is named as hung with the last thing it said,
//! - the caller's cancel check (interruption).
//!
//! On any failure every other worker is killed (SIGKILL) and reaped at once, well within
//! a second. Workers also die with their parent: PR_SET_PDEATHSIG(SIGKILL), set between
//! fork and exec. (The death signal follows the *thread* that forked, so a group must be
//! spawned and supervised on one thread, as [`Group::spawn`] + [`Group::supervise`] are.)

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::child::CONTROL_FD;
use super::proto::{self, FromWorker, Job, Report, Role, SharedSpec, ToWorker};
use crate::vmm::{Backing, SharedMemory, VmmError};

/// How long after the group deadline the parent still waits for the workers' own
/// watchdogs (which fire at the deadline) before it calls a worker hung.
pub const GRACE: Duration = Duration::from_secs(2);

/// One worker to start.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    pub name: String,
    pub cpu: Option<usize>,
    pub role: Role,
    /// Workers (by index) the parent tells to stop once this one has reported.
    pub stops_when_done: Vec<usize>,
    /// This worker's own deadline, when earlier than the group's.
    pub deadline: Option<Instant>,
}

/// A region every worker maps, at the same slot and GPA.
pub struct Shared<'a> {
    pub memory: &'a SharedMemory,
    pub slot: u32,
    pub gpa: u64,
}

struct Worker {
    name: String,
    child: Child,
    sock: UnixStream,
    /// The last message it sent (for a hung worker's error).
    last: &'static str,
    report: Option<Report>,
    reaped: bool,
}

/// What a reader thread saw.
enum Event {
    Msg(usize, FromWorker),
    /// The socket ended or failed (the worker exited or was killed).
    Closed(usize, String),
}

/// A running group of VM workers. Dropping it kills and reaps whatever still runs.
pub struct Group {
    name: String,
    workers: Vec<Worker>,
    events: mpsc::Receiver<Event>,
    readers: Vec<std::thread::JoinHandle<()>>,
    deadline: Instant,
    /// Per worker: the workers to stop once it reported.
    stops: Vec<Vec<usize>>,
    /// The run was cancelled and the group stopped early (see [`Group::supervise_with`]).
    interrupted: bool,
}

/// How long stopped workers get to report after a cancel before they are torn down.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Text for an exit status: "exit status 3", "killed by signal 9 (SIGKILL)".
pub fn describe_status(status: std::process::ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        // SAFETY: strsignal returns a pointer to a static (or thread-local) string for any
        // signal number; it is copied at once.
        let name = unsafe { std::ffi::CStr::from_ptr(libc::strsignal(sig)) }.to_string_lossy().into_owned();
        let abbrev = match sig {
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGABRT => " (SIGABRT)",
            libc::SIGTERM => " (SIGTERM)",
            libc::SIGINT => " (SIGINT)",
            _ => "",
        };
        format!("killed by signal {sig}{abbrev}: {name}")
    } else {
        format!("exit status {}", status.code().unwrap_or(-1))
    }
}

impl Group {
    /// Starts one worker process per spec, all mapping `shared` (region 0 holds the
    /// barrier at `barrier_offset`, which is zeroed here); each must report by `deadline`.
    pub fn spawn(
        name: &str,
        shared: &[Shared<'_>],
        barrier_offset: u64,
        specs: Vec<WorkerSpec>,
        deadline: Instant,
    ) -> Result<Group, VmmError> {
        Group::spawn_with_fds(name, shared, &[], barrier_offset, specs, deadline)
    }

    /// As [`Group::spawn`], and every worker also gets `extra` (eventfds, say) after the
    /// shared regions' fds, in that order (its job's `extra_fds` says how many).
    pub fn spawn_with_fds(
        name: &str,
        shared: &[Shared<'_>],
        extra: &[BorrowedFd<'_>],
        barrier_offset: u64,
        specs: Vec<WorkerSpec>,
        deadline: Instant,
    ) -> Result<Group, VmmError> {
        let exe = super::worker_exe().map_err(|e| VmmError::setup(name, e))?;
        let first = shared.first().ok_or_else(|| VmmError::setup(name, "a worker group needs a shared region"))?;
        first.memory.atomic(barrier_offset as usize).store(0, std::sync::atomic::Ordering::SeqCst);
        let specs_shared: Vec<SharedSpec> = shared
            .iter()
            .map(|s| SharedSpec {
                size: s.memory.size() as u64,
                huge: s.memory.backing() == Backing::Huge2M,
                slot: s.slot,
                gpa: s.gpa,
            })
            .collect();
        let fds: Vec<RawFd> =
            shared.iter().map(|s| s.memory.fd().as_raw_fd()).chain(extra.iter().map(|f| f.as_raw_fd())).collect();
        let (tx, events) = mpsc::channel();
        let stops = specs.iter().map(|s| s.stops_when_done.clone()).collect();
        let mut group = Group {
            name: name.to_string(),
            workers: Vec::new(),
            events,
            readers: Vec::new(),
            deadline,
            stops,
            interrupted: false,
        };
        let parties = specs.len() as u64;
        for (index, spec) in specs.iter().enumerate() {
            let own = spec.deadline.map_or(deadline, |d| d.min(deadline));
            let left = own.saturating_duration_since(Instant::now());
            let job = Job {
                group: name.to_string(),
                name: spec.name.clone(),
                cpu: spec.cpu,
                shared: specs_shared.clone(),
                barrier_offset,
                parties,
                deadline_ms: left.as_millis() as u64,
                role: spec.role.clone(),
                extra_fds: extra.len(),
            };
            let worker = group.start(&exe, &spec.name, &job, &fds)?;
            let mut r = worker.sock.try_clone().map_err(|e| VmmError::setup(name, format!("control socket: {e}")))?;
            group.workers.push(worker);
            let tx = tx.clone();
            let reader = std::thread::Builder::new()
                .name(format!("ivb-worker-{index}"))
                .spawn(move || loop {
                    match proto::read_frame::<FromWorker>(&mut r) {
                        Ok(Some(m)) => {
                            if tx.send(Event::Msg(index, m)).is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            let _ = tx.send(Event::Closed(index, "its control socket closed".into()));
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Event::Closed(index, format!("its control socket failed: {e}")));
                            return;
                        }
                    }
                })
                .map_err(|e| VmmError::setup(name, format!("spawn a reader thread: {e}")))?;
            group.readers.push(reader);
        }
        Ok(group)
    }

    fn start(&self, exe: &PathBuf, worker: &str, job: &Job, fds: &[RawFd]) -> Result<Worker, VmmError> {
        let name = &self.name;
        let (parent, child) = UnixStream::pair().map_err(|e| VmmError::setup(name, format!("socketpair: {e}")))?;
        let child_fd = child.as_raw_fd();
        // SAFETY: getpid has no preconditions.
        let parent_pid = unsafe { libc::getpid() };
        let mut cmd = Command::new(exe);
        cmd.arg(super::WORKER_ARG).arg(worker).stdin(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (prctl, getppid, dup2, fcntl, _exit) on plain integers.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // the parent may have died before the death signal was armed
                if libc::getppid() != parent_pid {
                    libc::_exit(5);
                }
                // dup2 clears FD_CLOEXEC on the copy: the socket survives exec as CONTROL_FD.
                // When it already is CONTROL_FD, dup2 does nothing: clear the flag instead.
                if child_fd == CONTROL_FD {
                    if libc::fcntl(child_fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(child_fd, CONTROL_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let proc = cmd
            .spawn()
            .map_err(|e| VmmError::setup(name, format!("start VM worker {worker} ({}): {e}", exe.display())))?;
        drop(child);
        let mut w = Worker {
            name: worker.to_string(),
            child: proc,
            sock: parent,
            last: "nothing yet",
            report: None,
            reaped: false,
        };
        let sent = w
            .sock
            .send_with_fds(&[&[b'F'][..]], fds)
            .map_err(|e| e.to_string())
            .and_then(|_| proto::write_frame(&mut &w.sock, &ToWorker::Job(job.clone())).map_err(|e| e.to_string()));
        if let Err(e) = sent {
            let _ = w.child.kill();
            let _ = w.child.wait();
            return Err(VmmError::setup(name, format!("send VM worker {worker} its job: {e}")));
        }
        Ok(w)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    /// Process ids of the workers, in spec order.
    pub fn pids(&self) -> Vec<i32> {
        self.workers.iter().map(|w| w.child.id() as i32).collect()
    }
    /// Tells worker `index` to set its STOP word.
    pub fn stop(&self, index: usize) {
        if let Some(w) = self.workers.get(index) {
            let _ = proto::write_frame(&mut &w.sock, &ToWorker::Stop);
        }
    }

    /// Waits until every worker reported (returns the reports in spec order), or fails
    /// naming the worker that failed, died or hung; the others are torn down first.
    /// A worker that reported makes the parent stop its `stops_when_done`; `cancel` is
    /// polled every 10 ms.
    pub fn supervise(&mut self, cancel: &dyn Fn() -> bool) -> Result<Vec<Report>, VmmError> {
        self.supervise_with(cancel, None)
    }

    /// [`Group::supervise`], where a cancel first stops only the workers `on_cancel`
    /// (their STOP words; e.g. a path's generator, after which the path drains and every
    /// worker reports on its own) and waits up to [`STOP_GRACE`] for the reports, which
    /// then come back with [`Group::interrupted`] set; without `on_cancel`, or when the
    /// reports do not come, a cancel ends the group with `VmmError::Interrupted`.
    pub fn supervise_with(
        &mut self,
        cancel: &dyn Fn() -> bool,
        on_cancel: Option<&[usize]>,
    ) -> Result<Vec<Report>, VmmError> {
        let result = self.supervise_inner(cancel, on_cancel);
        self.teardown();
        result
    }

    /// Whether a cancel stopped the group early (its reports are of a shortened run).
    pub fn interrupted(&self) -> bool {
        self.interrupted
    }

    fn supervise_inner(
        &mut self,
        cancel: &dyn Fn() -> bool,
        on_cancel: Option<&[usize]>,
    ) -> Result<Vec<Report>, VmmError> {
        let mut hard_deadline = self.deadline + GRACE;
        while self.workers.iter().any(|w| w.report.is_none()) {
            if !self.interrupted && cancel() {
                let Some(first) = on_cancel else {
                    return Err(VmmError::Interrupted { group: self.name.clone() });
                };
                self.interrupted = true;
                for &i in first {
                    self.stop(i);
                }
                hard_deadline = hard_deadline.min(Instant::now() + STOP_GRACE);
            }
            if self.interrupted && Instant::now() >= hard_deadline {
                return Err(VmmError::Interrupted { group: self.name.clone() });
            }
            if Instant::now() >= hard_deadline {
                let w = self.workers.iter().find(|w| w.report.is_none()).expect("one has not reported");
                return Err(VmmError::WorkerHung {
                    group: self.name.clone(),
                    worker: w.name.clone(),
                    pid: w.child.id() as i32,
                    what: format!(
                        "no report {GRACE:?} after the deadline, although its own watchdog stops the vCPU at the deadline \
                         (last message: {})",
                        w.last
                    ),
                });
            }
            match self.events.recv_timeout(Duration::from_millis(10)) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(VmmError::setup(&self.name, "every worker reader ended before all reports"));
                }
                Ok(Event::Msg(i, FromWorker::Ready)) => {
                    self.workers[i].last = "ready (VM verified native, at the barrier)"
                }
                Ok(Event::Msg(i, FromWorker::Started)) => {
                    self.workers[i].last = "started (past the barrier, vCPU running)"
                }
                Ok(Event::Msg(i, FromWorker::Done(report))) => {
                    self.workers[i].last = "its report";
                    self.workers[i].report = Some(*report);
                    for j in self.stops[i].clone() {
                        self.stop(j);
                    }
                }
                Ok(Event::Msg(i, FromWorker::Error { what, timeout })) => {
                    return Err(VmmError::Worker {
                        group: self.name.clone(),
                        worker: self.workers[i].name.clone(),
                        what,
                        timeout,
                    });
                }
                Ok(Event::Closed(i, why)) => {
                    if self.workers[i].report.is_some() {
                        continue;
                    }
                    let w = &mut self.workers[i];
                    // The socket ends when the process does; give it a moment to be reaped.
                    let until = Instant::now() + Duration::from_secs(1);
                    let how = loop {
                        match w.child.try_wait() {
                            Ok(Some(st)) => {
                                w.reaped = true;
                                break describe_status(st);
                            }
                            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(2)),
                            Ok(None) => break format!("{why}, but the process still runs"),
                            Err(e) => break format!("{why}; waitpid: {e}"),
                        }
                    };
                    return Err(VmmError::WorkerDied {
                        group: self.name.clone(),
                        worker: w.name.clone(),
                        pid: w.child.id() as i32,
                        how: format!("{how} (last message: {})", w.last),
                    });
                }
            }
        }
        Ok(self.workers.iter_mut().map(|w| w.report.take().expect("all reported")).collect())
    }

    /// Kills (SIGKILL) and reaps every worker that has not been reaped, closes the
    /// sockets and joins the reader threads.
    fn teardown(&mut self) {
        for w in &mut self.workers {
            if !w.reaped {
                if !matches!(w.child.try_wait(), Ok(Some(_))) {
                    let _ = w.child.kill();
                    let _ = w.child.wait();
                }
                w.reaped = true;
            }
            let _ = w.sock.shutdown(std::net::Shutdown::Both);
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.teardown();
    }
}
