//! What the parent and a VM worker say to each other over the control socket (a
//! SOCK_STREAM socketpair): first one byte carrying the shared-memory fds (SCM_RIGHTS),
//! then frames of a little-endian u32 length and a JSON [`ToWorker`] / [`FromWorker`].

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Largest frame either side accepts (1.5 M samples as JSON fit well below it).
pub const MAX_FRAME: usize = 64 << 20;

/// One shared region as the worker maps it: the n-th fd of the first message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SharedSpec {
    pub size: u64,
    pub huge: bool,
    /// Memslot and guest-physical address in the worker's VM.
    pub slot: u32,
    pub gpa: u64,
}

/// What the worker's vCPU runs once the barrier opens.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Role {
    /// `poll_ping` for `samples` samples of `batch` round trips on the lines at `lines`.
    PollPing { samples: u64, batch: u64, lines: u64 },
    /// `poll_pong` on the lines at `lines` until the parent says [`ToWorker::Stop`].
    PollPong { lines: u64 },
    /// `token_ring`: `passes` passes as participant `index` of `participants`.
    TokenRing { passes: u64, participants: u64, index: u64, token: u64 },
    /// `hang_loop` (`jmp .`): for the supervision tests.
    Hang,
    /// `path_gen`: the generator end of a packet path; its kick eventfd (halt, hybrid,
    /// exit) is the first extra fd.
    PathGen(Box<super::path_block::PathEnd>),
    /// `path_sink`: the sink end; its wake-up eventfd (an irqfd) is the first extra fd.
    PathSink(Box<super::path_block::PathEnd>),
    /// `path_fwd`: a middle box; the eventfds its ports name are extra fds.
    PathFwd(Box<super::path_block::FwdSpec>),
}

/// The job of one worker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Job {
    /// The group (probe or test) the worker belongs to: its VM's label.
    pub group: String,
    /// The worker's name in errors (`vm0`, `ping`, ...).
    pub name: String,
    /// Host CPU the vCPU thread is pinned to.
    pub cpu: Option<usize>,
    pub shared: Vec<SharedSpec>,
    /// The barrier: a u64 at this byte offset of shared region 0 that every worker
    /// increments once ready; all start when it reaches `parties`.
    pub barrier_offset: u64,
    pub parties: u64,
    /// Milliseconds from the job's receipt after which the worker's watchdog stops its
    /// vCPU (and the barrier wait gives up).
    pub deadline_ms: u64,
    pub role: Role,
    /// Fds sent after the shared regions' (eventfds).
    #[serde(default)]
    pub extra_fds: usize,
}

/// Parent -> worker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum ToWorker {
    Job(Job),
    /// Set the vCPU's STOP word (ends `poll_pong`, aborts any wait loop).
    Stop,
}

/// What a vCPU preparation measured (the `Prepared` of the one-process probes).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Prepared {
    pub cycles_per_iter: f64,
    pub native_iterations: u64,
    pub overhead: u64,
    pub tsc_khz: u64,
    pub setup: String,
}

/// Userspace exits of the worker's measured run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Exits {
    /// Exits that reached the VMM with work to do (see `ExitStats::userspace_exits`).
    pub userspace: u64,
    /// Of those, writes to the done port.
    pub done: u64,
    /// KVM_RUN interruptions (EINTR, KVM_EXIT_INTR).
    pub intr: u64,
    /// Sample-buffer chunks (done exits the sampling loop expects).
    pub chunks: u64,
}

/// A worker's result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub prepared: Prepared,
    /// Raw per-sample TSC cycles (sampling roles).
    pub samples: Vec<u64>,
    /// The status words of the vCPU after the run (`COUNT`, ...).
    pub status: BTreeMap<String, u64>,
    pub exits: Exits,
    /// KVM's statistics of the vCPU around the run (KVM_GET_STATS_FD), when available.
    pub kvm_before: Option<BTreeMap<String, u64>>,
    pub kvm_after: Option<BTreeMap<String, u64>>,
    /// The host CPU the vCPU thread ran on.
    pub cpu: Option<usize>,
    pub pid: u32,
    /// Path roles: the path block's counters (`path_block::counters`), and what the VMM
    /// itself did (`VMM_SIGNALS`: peer wake-ups it sent for the exit mode).
    #[serde(default)]
    pub path: BTreeMap<String, u64>,
    /// Path sink: the received count at each mark.
    #[serde(default)]
    pub marks: Vec<u64>,
    /// Guest TSC minus host TSC and the half width of the bracket it was read in.
    #[serde(default)]
    pub tsc_offset: Option<(i64, u64)>,
}

/// Worker -> parent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum FromWorker {
    /// VM created and verified native; waiting on the barrier.
    Ready,
    /// The barrier opened; the vCPU runs its role.
    Started,
    Done(Box<Report>),
    /// The worker's own error (a VMM error as text); `timeout` when its watchdog fired.
    Error {
        what: String,
        timeout: bool,
    },
}

/// Writes one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {} bytes", body.len())));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)
}

/// Reads one frame; `Ok(None)` at a clean end of stream before a frame starts.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes announced (limit {MAX_FRAME})"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_lengths_are_refused() {
        let msg = ToWorker::Job(Job {
            group: "g".into(),
            name: "vm0".into(),
            cpu: Some(1),
            shared: vec![SharedSpec { size: 2 << 20, huge: false, slot: 1, gpa: 0x1000_0000 }],
            barrier_offset: 512,
            parties: 3,
            deadline_ms: 1000,
            role: Role::TokenRing { passes: 10, participants: 3, index: 0, token: 0x1000_0100 },
            extra_fds: 0,
        });
        let mut buf = Vec::new();
        write_frame(&mut buf, &msg).unwrap();
        write_frame(&mut buf, &ToWorker::Stop).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame::<ToWorker>(&mut r).unwrap(), Some(msg));
        assert_eq!(read_frame::<ToWorker>(&mut r).unwrap(), Some(ToWorker::Stop));
        assert_eq!(read_frame::<ToWorker>(&mut r).unwrap(), None);
        let huge = (MAX_FRAME as u32 + 1).to_le_bytes();
        assert!(read_frame::<ToWorker>(&mut &huge[..]).is_err());
        let truncated = [5u8, 0, 0, 0, b'{'];
        assert!(read_frame::<ToWorker>(&mut &truncated[..]).is_err());
    }
}
