//! The worker process side: one VM with one vCPU, its shared regions mapped from the fds
//! the parent sent, the vCPU thread pinned, started on the barrier, results sent back.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::path;
use super::proto::{self, Exits, FromWorker, Job, Prepared, Report, Role, ToWorker};
use crate::abi::status;
use crate::payloads::args::{Args, HangLoop, PollPing, PollPong, TokenRing};
use crate::vmm::layout::{self, GuestLayout};
use crate::vmm::{kvmstats, native, Backing, Handled, SharedMemory, Vcpu, Vm, VmmError};

/// The fd number the parent puts the control socket on before exec.
pub const CONTROL_FD: RawFd = 3;
/// Extra fds (eventfds) a job may carry beside its shared regions'.
pub const MAX_EXTRA_FDS: usize = 8;

/// Runs the worker whose control socket is [`CONTROL_FD`]; returns the exit status.
pub fn serve() -> i32 {
    // SAFETY: the parent dup2()ed its end of the socketpair onto CONTROL_FD right before
    // exec; nothing else in this fresh process owns or closes that fd.
    let sock = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    // A terminal's Ctrl-C (and a SIGTERM or SIGHUP to the process group) reaches the
    // workers too; the parent decides what an interruption means for them and tears them
    // down itself, and PR_SET_PDEATHSIG ends them if it dies.
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let (fds, job) = match receive_job(&sock) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("ivbench VM worker: {e}");
            return 2;
        }
    };
    let mut out = match sock.try_clone() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ivbench VM worker {}: {e}", job.name);
            return 2;
        }
    };
    match run(&job, fds, sock) {
        Ok(report) => match proto::write_frame(&mut out, &FromWorker::Done(Box::new(report))) {
            Ok(()) => 0,
            Err(_) => 3,
        },
        Err(e) => {
            let timeout = matches!(e, VmmError::Timeout { .. });
            let _ = proto::write_frame(&mut out, &FromWorker::Error { what: e.to_string(), timeout });
            1
        }
    }
}

fn receive_job(sock: &UnixStream) -> Result<(Vec<OwnedFd>, Job), String> {
    let mut byte = [0u8; 1];
    let mut raw = [-1 as RawFd; layout::MAX_SHARED as usize + MAX_EXTRA_FDS];
    let mut iov = [libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 }];
    // SAFETY: the iovec points at `byte`, one writable byte that outlives the call.
    let (n, nfds) =
        unsafe { sock.recv_with_fds(&mut iov, &mut raw) }.map_err(|e| format!("receive the shared fds: {e}"))?;
    // SAFETY: recvmsg installed `nfds` new descriptors in `raw[..nfds]`; they are owned
    // by nobody else in this process.
    let fds: Vec<OwnedFd> = raw[..nfds].iter().map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect();
    if n != 1 {
        return Err("the parent closed the control socket before sending the job".into());
    }
    let mut r = sock;
    match proto::read_frame::<ToWorker>(&mut r) {
        Ok(Some(ToWorker::Job(job))) => Ok((fds, job)),
        Ok(other) => Err(format!("expected a job, got {other:?}")),
        Err(e) => Err(format!("read the job: {e}")),
    }
}

fn send(sock: &UnixStream, msg: &FromWorker) -> Result<(), VmmError> {
    let mut w = sock;
    proto::write_frame(&mut w, msg).map_err(|e| VmmError::setup("worker", format!("write to the parent: {e}")))
}

fn run(job: &Job, mut fds: Vec<OwnedFd>, sock: UnixStream) -> Result<Report, VmmError> {
    let start = Instant::now();
    let deadline = start + Duration::from_millis(job.deadline_ms);
    let label = job.group.as_str();
    if job.extra_fds > MAX_EXTRA_FDS || fds.len() != job.shared.len() + job.extra_fds {
        return Err(VmmError::setup(
            label,
            format!(
                "{} fds received; the job has {} shared regions and {} extra fds (at most {MAX_EXTRA_FDS})",
                fds.len(),
                job.shared.len(),
                job.extra_fds
            ),
        ));
    }
    let extra = fds.split_off(job.shared.len());
    if let Some(cpu) = job.cpu {
        super::pin_current_thread(cpu).map_err(|e| VmmError::setup(label, e))?;
    }
    let sizes: Vec<u64> = job.shared.iter().map(|s| s.size).collect();
    let layout = GuestLayout::new(1, &sizes).map_err(|e| VmmError::setup(label, e.to_string()))?;
    let vm = Vm::with_layout(label, layout)?;
    let mut regions = Vec::new();
    for (spec, fd) in job.shared.iter().zip(fds) {
        let backing = if spec.huge { Backing::Huge2M } else { Backing::Pages4K };
        let shm = SharedMemory::from_fd(fd, spec.size as usize, backing)?;
        if path::view_of(&job.role).is_none() {
            vm.add_shared(spec.slot, spec.gpa, &shm)?;
        }
        regions.push(shm);
    }
    if let Some(view) = path::view_of(&job.role) {
        path::build_view(&vm, view, &regions, &job.shared)?;
    }
    let barrier = regions
        .first()
        .ok_or_else(|| VmmError::setup(label, "no shared region for the barrier"))?
        .atomic(job.barrier_offset as usize);
    let wiring = path::Wiring::before_vcpu(&vm, &job.role, extra)?;
    let mut vcpu = vm.create_vcpu(0)?;
    vm.write_bytes(layout::params(0), &[0u8; status::SIZE as usize])?;
    wiring.after_vcpu(&vcpu)?;
    let check = native::verify(&mut vcpu, deadline)?;
    let overhead = vcpu.timer_overhead(deadline)?;
    let tsc_khz = vcpu.tsc_khz()?;
    let prepared = Prepared {
        cycles_per_iter: check.cycles_per_iter,
        native_iterations: check.iterations,
        overhead,
        tsc_khz,
        setup: vcpu.setup().to_string(),
    };
    let tsc_offset = match &job.role {
        Role::PathGen(_) | Role::PathSink(_) | Role::PathFwd(_) => {
            path::write_block(&vcpu, &job.role, tsc_khz)?;
            // The VMs of a path compare TSCs: where KVM lets the VMM, every guest TSC is
            // the host's (KVM_VCPU_TSC_OFFSET 0); the measured offset is the check.
            let _ = crate::vmm::irqchip::zero_tsc_offset(&vcpu);
            Some(crate::vmm::irqchip::tsc_offset(&vcpu)?)
        }
        _ => None,
    };
    listen_for_stop(&vm, &sock)?;
    send(&sock, &FromWorker::Ready)?;
    wait_on_barrier(label, barrier, job.parties, deadline)?;
    send(&sock, &FromWorker::Started)?;
    vcpu.stats.reset();
    let kvm_before = kvmstats::vcpu_stats(vcpu.fd()).ok();
    let (samples, chunks, path_counters, marks) = match &job.role {
        Role::PathGen(_) | Role::PathSink(_) | Role::PathFwd(_) => {
            let r = path::run(&mut vcpu, &job.role, &wiring, &regions, &job.shared, deadline)?;
            (r.samples, 1, r.counters, r.marks)
        }
        role => {
            let (s, c) = run_role(&mut vcpu, role, deadline)?;
            (s, c, BTreeMap::new(), Vec::new())
        }
    };
    let kvm_after = kvmstats::vcpu_stats(vcpu.fd()).ok();
    let s = &vcpu.stats;
    let exits = Exits { userspace: s.userspace_exits(), done: s.io_out_on(layout::PORT_DONE), intr: s.intr, chunks };
    let words = vm.read_u64s(layout::params(0), (status::SIZE / 8) as usize)?;
    let names =
        ["STAMP", "COUNT", "READY", "SRC", "STOP", "EARLY", "HLTS", "FIXUPS", "KICKS", "SPURIOUS", "MWAITS", "SENT"];
    let status: BTreeMap<String, u64> = names.iter().zip(words).map(|(n, w)| (n.to_string(), w)).collect();
    Ok(Report {
        prepared,
        samples,
        status,
        exits,
        kvm_before,
        kvm_after,
        cpu: job.cpu,
        pid: std::process::id(),
        path: path_counters,
        marks,
        tsc_offset,
    })
}

/// A thread that sets the vCPU's STOP word when the parent says so, and ends the process
/// when the parent's end of the socket closes (the parent is gone or tore the group down).
fn listen_for_stop(vm: &Vm, sock: &UnixStream) -> Result<(), VmmError> {
    let mut r = sock.try_clone().map_err(|e| VmmError::setup(vm.label(), format!("control socket: {e}")))?;
    let vm = vm.clone();
    std::thread::Builder::new()
        .name("ivb-worker-control".into())
        .spawn(move || loop {
            match proto::read_frame::<ToWorker>(&mut r) {
                Ok(Some(ToWorker::Stop)) => {
                    let _ = vm.write_u64(layout::params(0) + status::STOP, 1);
                }
                Ok(Some(ToWorker::Job(_))) => {}
                // SAFETY: _exit ends the process at once; nothing needs unwinding: the
                // parent is gone, and the VM and its memory go with the process.
                Ok(None) | Err(_) => unsafe { libc::_exit(4) },
            }
        })
        .map(drop)
        .map_err(|e| VmmError::setup("worker", format!("spawn the control thread: {e}")))
}

fn wait_on_barrier(
    label: &str,
    barrier: &std::sync::atomic::AtomicU64,
    parties: u64,
    deadline: Instant,
) -> Result<(), VmmError> {
    use std::sync::atomic::Ordering;
    barrier.fetch_add(1, Ordering::SeqCst);
    let mut spins = 0u64;
    while barrier.load(Ordering::SeqCst) < parties {
        spins += 1;
        if spins.is_multiple_of(1024) {
            if Instant::now() >= deadline {
                return Err(VmmError::setup(
                    label,
                    format!("barrier: {} of {parties} workers arrived by the deadline", barrier.load(Ordering::SeqCst)),
                ));
            }
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
    Ok(())
}

/// Runs the role; returns the samples (sampling roles) and the sample-buffer chunks.
fn run_role(vcpu: &mut Vcpu, role: &Role, deadline: Instant) -> Result<(Vec<u64>, u64), VmmError> {
    let status_area = layout::params(0);
    match *role {
        Role::PollPing { samples, batch, lines } => {
            let s = vcpu.run_sampling_until(
                &PollPing { lines, status: status_area },
                samples,
                batch,
                deadline,
                &crate::vmm::SampleStop::default(),
                &mut |_| Handled::No,
            )?;
            Ok((s.cycles, s.chunks))
        }
        Role::PollPong { lines } => {
            run_entry(vcpu, &PollPong { lines, status: status_area }, deadline)?;
            Ok((Vec::new(), 1))
        }
        Role::TokenRing { passes, participants, index, token } => {
            run_entry(vcpu, &TokenRing { passes, participants, token, index, status: status_area }, deadline)?;
            Ok((Vec::new(), 1))
        }
        Role::Hang => {
            run_entry(vcpu, &HangLoop {}, deadline)?;
            Ok((Vec::new(), 1))
        }
        Role::PathGen(_) | Role::PathSink(_) | Role::PathFwd(_) => {
            Err(VmmError::setup(vcpu.label(), "path roles run in worker::path"))
        }
    }
}

fn run_entry(vcpu: &mut Vcpu, args: &dyn Args, deadline: Instant) -> Result<(), VmmError> {
    vcpu.enter(args)?;
    vcpu.run(deadline, &mut |_| Handled::No)
}
