//! `path.a`: the seed's path A, VM1 -> VM2 directly. VM1 runs the open-loop generator
//! (`path_gen`), VM2 the verifying sink (`path_sink`), each VM in its own worker process
//! with one vCPU pinned to its own CPU, over the packet ring of `packet_ring` in one memfd
//! that both VMs map (memslot 1 at [`layout::SHARED_GPA`]). `path.host-ring` runs the same
//! ring, frames and logic in two host threads: the ceiling this is judged against.
//!
//! Parameters: `size` (64..1518 or imix), `copy` (copy | zero-copy), `rate` (max or Mpps
//! offered), `batch` (packets per index publication and per sink poll), `notify` (poll |
//! hybrid | halt | exit | mwait; see `worker::path` for the wiring), `poll_us` (hybrid:
//! how long the sink polls an empty ring before it halts), `sink_delay_us` (fault
//! injection: the sink pauses this long after each poll that found frames).
//!
//! A trial offers `iterations` packets or runs for the budget's duration, at most
//! [`MAX_TRIAL`] when the budget sets none. The counters are exact: the generator counts
//! every packet offered and every one that found the ring full, the sink every frame it
//! took out; `sent = received + dropped` is checked on the row. Latency samples are
//! one-way: the sink's rdtsc minus the generator's stamp, both guest TSCs; each worker
//! measures its guest's TSC offset from the host TSC and the row records the difference
//! (and corrects for it when it exceeds the measurement's bracket).

use std::time::{Duration, Instant};

use packet_ring::{CopyMode, FrameSize, Layout, Rate, RingView};
use probe_api::{Budget, Method, Methods, Metric, Point, ProbeError, Samples, Support, Throughput};

use super::multi::{irqchip_support, push_exit_stats, push_halt_stats, two_vcpu_support, EXIT_COUNTERS};
use super::notify::mwait_support;
use super::{invalid, VmProbe};
use crate::abi::ctrl;
use crate::vmm::{self, layout, SharedMemory};
use crate::worker::path_block::{Notify, PathEnd, Size};
use crate::worker::proto::Report;
use crate::worker::{Group, Role, Shared, WorkerSpec};

const NAME: &str = "path.a";
/// The memfd the two VMs share: the ring at 0, the control lines at [`CTRL_OFFSET`], the
/// worker barrier at [`BARRIER_OFFSET`].
const SHARED_SIZE: usize = 2 << 20;
const CTRL_OFFSET: u64 = 1 << 20;
const BARRIER_OFFSET: u64 = CTRL_OFFSET + 4096;
/// The generator's kick port (an ioeventfd, or a userspace exit in mode `exit`).
const KICK_PORT: u16 = 0xf8;
/// One-way latency samples kept per trial at most.
const MAX_LATENCY_SAMPLES: u64 = 100_000;
/// The longest trial when the budget sets no duration.
pub const MAX_TRIAL: Duration = Duration::from_secs(2);
/// Received-count marks: the trial's own rate spread.
const MARK: Duration = Duration::from_millis(10);
/// The rate a `max` trial's latency stride assumes.
const ASSUMED_MAX_MPPS: f64 = 30.0;
/// Hybrid's default polling time before the sink halts.
const DEFAULT_POLL_US: u64 = 50;

const _: () = {
    assert!(packet_ring::layout::DEFAULT_REGION_SIZE as u64 <= CTRL_OFFSET);
    assert!(CTRL_OFFSET + ctrl::SIZE <= BARRIER_OFFSET);
    assert!(BARRIER_OFFSET + 8 <= SHARED_SIZE as u64);
};

pub(crate) const PATH_A: VmProbe = VmProbe {
    name: NAME,
    description: "VM1 -> VM2 over a shared-memory packet ring (two VMs, two worker processes): open-loop generator -> \
                  verifying sink; Mpps, loss, one-way latency, in every notification mode",
    group: "path",
    methods: Methods::PerOpOnly,
    support: two_vcpu_support,
    points,
    run,
    extra_keys: &["poll_us", "sink_delay_us"],
};

fn points() -> Vec<Point> {
    let p = |size: &str, copy: &str, notify: &str| {
        Point::none().with("size", size).with("copy", copy).with("rate", "max").with("batch", 32).with("notify", notify)
    };
    let mut v = Vec::new();
    for notify in ["poll", "hybrid", "halt", "exit", "mwait"] {
        v.push(p("64", "copy", notify));
        v.push(p("1518", "copy", notify));
    }
    v.push(p("64", "zero-copy", "poll"));
    v.push(p("imix", "copy", "poll"));
    v
}

/// The parameters of one point, parsed where they enter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathParams {
    pub size: FrameSize,
    pub copy: CopyMode,
    pub rate: Rate,
    pub batch: u32,
    /// None: mwait (never runnable without an exit-free MWAIT).
    pub notify: Option<Notify>,
    pub poll_us: u64,
    /// Fault injection: the sink pauses this long after each poll that found frames.
    pub sink_delay_us: u64,
}

impl PathParams {
    pub fn parse(p: &Point) -> Result<PathParams, ProbeError> {
        let bad = |e: String| ProbeError::Failed(format!("{NAME}: {e}"));
        let notify = match p.get("notify").unwrap_or("poll") {
            "mwait" => None,
            n => Some(Notify::parse(n).map_err(bad)?),
        };
        let micros = |key: &str, default: u64| match p.get(key) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n <= 1_000_000 => Ok(n),
                _ => Err(bad(format!("{key} must be 0..=1000000 microseconds, got {v}"))),
            },
        };
        let poll_us = micros("poll_us", DEFAULT_POLL_US)?;
        let sink_delay_us = micros("sink_delay_us", 0)?;
        Ok(PathParams {
            size: FrameSize::parse(p.get("size").unwrap_or("64")).map_err(bad)?,
            copy: CopyMode::parse(p.get("copy").unwrap_or("copy")).map_err(bad)?,
            rate: Rate::parse(p.get("rate").unwrap_or("max")).map_err(bad)?,
            batch: packet_ring::traffic::parse_batch(p.get("batch").unwrap_or("32")).map_err(bad)?,
            notify,
            poll_us,
            sink_delay_us,
        })
    }
}

/// Support of one point: the modes whose sink halts need the irqchip; mwait needs an
/// exit-free MWAIT.
fn point_support(notify: Option<Notify>) -> Support {
    match notify {
        None => match mwait_support() {
            Support::Supported => Support::Unsupported(
                "notify=mwait: the host has an exit-free MWAIT, but path_sink has no MWAIT wait yet".into(),
            ),
            Support::Unsupported(r) => Support::Unsupported(format!("notify=mwait: {r}")),
        },
        Some(n) if n.sink_sleeps() => irqchip_support(),
        Some(_) => two_vcpu_support(),
    }
}

/// The expected packets of a trial, for the latency stride.
fn expected_packets(params: &PathParams, packets: u64, trial: Duration) -> u64 {
    let mpps = match params.rate {
        Rate::Mpps(m) => m,
        Rate::Max => ASSUMED_MAX_MPPS,
    };
    ((mpps * 1e6 * trial.as_secs_f64()) as u64).min(packets)
}

/// The TSC cycles of a guest reading converted to host TSC cycles.
fn to_host(guest: u64, offset: i64) -> u64 {
    guest.wrapping_sub(offset as u64)
}

fn run(p: &VmProbe, point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    let params = PathParams::parse(point)?;
    if let Support::Unsupported(r) = point_support(params.notify) {
        return Err(ProbeError::Unsupported(r));
    }
    let notify = params.notify.expect("mwait is unsupported above");
    if budget.method != Method::PerOp {
        return Err(ProbeError::Failed(format!(
            "{NAME}: a trial has no batched method; {} requested",
            budget.method.label()
        )));
    }
    let cpus = [budget.cpu(0), budget.cpu(1)];
    if let [Some(a), Some(b)] = cpus {
        if a == b {
            return Err(ProbeError::Failed(format!(
                "{NAME}: the two VMs' vCPUs need two distinct CPUs, got {a} twice"
            )));
        }
    }
    let trial = budget.duration.unwrap_or(MAX_TRIAL);
    let packets = budget.iterations;
    let stride = (expected_packets(&params, packets, trial) / MAX_LATENCY_SAMPLES).max(1).next_power_of_two();

    let shm = SharedMemory::new(SHARED_SIZE)?;
    let ring = Layout::new(packet_ring::layout::DEFAULT_SLOTS).map_err(|e| ProbeError::Failed(e.into()))?;
    // SAFETY: the memfd mapping is fresh, page aligned and larger than the ring; it
    // outlives the workers, which the group reaps before `shm` is dropped.
    unsafe { RingView::init(shm.host_addr(), CTRL_OFFSET as usize, ring) }
        .map_err(|e| ProbeError::Failed(e.to_string()))?;
    let end = PathEnd {
        ring_gpa: layout::SHARED_GPA,
        ctrl_gpa: layout::SHARED_GPA + CTRL_OFFSET,
        slots: ring.slots,
        batch: params.batch,
        size: Size::from(params.size),
        notify,
        kick_port: KICK_PORT,
        poll_ns: params.poll_us * 1000,
        limit: packets,
        duration_ns: trial.as_nanos() as u64,
        rate_mpps: match params.rate {
            Rate::Max => None,
            Rate::Mpps(m) => Some(m),
        },
        stride,
        max_samples: MAX_LATENCY_SAMPLES,
        zero_copy: params.copy == CopyMode::ZeroCopy,
        mark_ns: MARK.as_nanos() as u64,
        sink_delay_ns: params.sink_delay_us * 1000,
    };
    let eventfd = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK)
        .map_err(|e| ProbeError::io("eventfd for the path's wake-ups", e))?;
    // SAFETY: the eventfd lives until the end of this function, after the group that
    // sends it to the workers was reaped.
    let evt_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&eventfd)) };
    let extra = if notify.sink_sleeps() { vec![evt_fd] } else { vec![] };
    // The group's deadline: the trial, the VMs' set-up and the drain, within the timeout.
    let deadline = Instant::now() + budget.timeout.min(trial + Duration::from_secs(30));
    let spec =
        |who: &str, cpu, role| WorkerSpec { name: who.into(), cpu, role, stops_when_done: vec![], deadline: None };
    let specs = vec![
        spec("VM1 (generator)", cpus[0], Role::PathGen(Box::new(end.clone()))),
        spec("VM2 (sink)", cpus[1], Role::PathSink(Box::new(end))),
    ];
    let shared = [Shared { memory: &shm, slot: 1, gpa: layout::SHARED_GPA }];
    // before the workers exist: their own threads are not "other" load
    let free_at_start = probe_api::cpu::free_cpus();
    let mut group = Group::spawn_with_fds(NAME, &shared, &extra, BARRIER_OFFSET, specs, deadline)?;
    let pids = group.pids();
    let mut reports = group.supervise(&|| budget.stop.is_requested())?;
    drop(group);
    let (sink, gen) = (reports.remove(1), reports.remove(0));
    assemble(p, &params, notify, stride, &gen, &sink, cpus, &pids, free_at_start)
}

fn word(r: &Report, name: &str) -> u64 {
    r.path.get(name).copied().unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    p: &VmProbe,
    params: &PathParams,
    notify: Notify,
    stride: u64,
    gen: &Report,
    sink: &Report,
    cpus: [Option<usize>; 2],
    pids: &[i32],
    free_at_start: usize,
) -> Result<Samples, ProbeError> {
    let name = p.name;
    if word(sink, "ERROR") != 0 {
        return Err(invalid(
            name,
            "the sink saw the producer index more than a ring ahead of its own: the ring protocol broke",
        ));
    }
    let tsc_khz = gen.prepared.tsc_khz;
    let hz = tsc_khz as f64 * 1e3;
    let (off_g, w_g) = gen.tsc_offset.unwrap_or((0, 0));
    let (off_s, w_s) = sink.tsc_offset.unwrap_or((0, 0));
    let delta = off_s - off_g;
    let bracket = (w_g + w_s) as i64;
    let correct = delta.abs() > bracket.max(1);
    let (sent, dropped) = (word(gen, "SENT"), word(gen, "DROPPED"));
    let received = word(sink, "RECEIVED");
    // Every packet that entered the ring got the next sequence number; a drained sink that
    // saw no corrupted frame expects exactly the number after the last one.
    if word(sink, "CORRUPTED") == 0 && word(sink, "NEXT_SEQ") != sent.saturating_sub(dropped) {
        return Err(invalid(
            name,
            format!(
                "{} packets entered the ring but the sink expects sequence number {} next",
                sent.saturating_sub(dropped),
                word(sink, "NEXT_SEQ")
            ),
        ));
    }
    let start = to_host(word(gen, "T_FIRST"), off_g);
    let end = to_host(word(sink, "T_LAST"), off_s);
    let duration_s = end.saturating_sub(start) as f64 / hz;
    let busy = |r: &Report| word(r, "T_LAST").saturating_sub(word(r, "T_FIRST")).saturating_sub(word(r, "IDLE"));
    let marks_mpps: Vec<f64> =
        sink.marks.windows(2).map(|w| w[1].saturating_sub(w[0]) as f64 / MARK.as_secs_f64() / 1e6).collect();
    let polls = word(sink, "POLLS");
    let t = Throughput {
        sent,
        received,
        dropped,
        lost: word(sink, "LOST"),
        duplicated: word(sink, "DUPLICATED"),
        reordered: word(sink, "REORDERED"),
        corrupted: word(sink, "CORRUPTED"),
        offered_mpps: match params.rate {
            Rate::Max => None,
            Rate::Mpps(m) => Some(m),
        },
        duration_s,
        frame_bytes: params.size.mean_len(),
        tx_cycles_per_packet: (sent > 0).then(|| busy(gen) as f64 / sent as f64),
        rx_cycles_per_packet: (received > 0).then(|| busy(sink) as f64 / received as f64),
        empty_poll_share: (polls > 0).then(|| word(sink, "EMPTY_POLLS") as f64 / polls as f64),
        interval_mpps: marks_mpps,
    };
    let lat: Vec<u64> = if correct {
        sink.samples.iter().map(|&l| (l as i64 - delta).max(0) as u64).collect()
    } else {
        sink.samples.clone()
    };
    let mut s = Samples::new(
        lat,
        Method::PerOp,
        0,
        "guest rdtsc: send stamp in the frame (VM1) -> sink rdtsc (VM2), cross-VM and cross-CPU",
    );
    s.tsc_khz = Some(tsc_khz);
    s.metrics.push(Metric::new("latency_stride", stride as f64, "frames per sample"));
    s.metrics.push(Metric::new("publications_tx", word(gen, "PUBLICATIONS") as f64, "index stores"));
    s.metrics.push(Metric::new("kicks_tx", word(gen, "KICKS") as f64, "kicks"));
    s.metrics.push(Metric::new("vmm_signals", word(gen, "VMM_SIGNALS") as f64, "eventfd writes"));
    s.metrics.push(Metric::new("sink_halts", word(sink, "SLEEPS") as f64, "hlt"));
    s.metrics.push(Metric::new("sink_wakes", word(sink, "WAKES") as f64, "interrupts"));
    let sink_span = word(sink, "T_LAST").saturating_sub(word(sink, "T_FIRST"));
    if sink_span > 0 {
        s.metrics.push(Metric::new("rx_busy_share", busy(sink) as f64 / sink_span as f64, "of the sink's time"));
        // what the sink's vCPU took of its CPU: all but the time it sat in HLT
        let halted = word(sink, "HALTED") as f64 / sink_span as f64;
        s.metrics.push(Metric::new("rx_vcpu_cpu_share", (1.0 - halted).max(0.0), "of the sink's time"));
    }
    s.metrics.push(Metric::new("tsc_offset_delta", delta as f64, "cycles"));
    let mut exits_total = 0u64;
    let mut exits_known = true;
    for (who, tag, r) in [("VM1's vCPU", "tx", gen), ("VM2's vCPU", "rx", sink)] {
        push_exit_stats(&mut s, who, tag, &(r.kvm_before.clone(), r.kvm_after.clone()));
        match (&r.kvm_before, &r.kvm_after) {
            (Some(b), Some(a)) => {
                let d = vmm::kvmstats::delta(b, a, &EXIT_COUNTERS);
                exits_total += d.iter().find(|(k, _)| k == "exits").map_or(0, |(_, v)| *v);
            }
            _ => exits_known = false,
        }
    }
    if notify.sink_sleeps() {
        push_halt_stats(&mut s, "VM2's vCPU (sink)", &(sink.kvm_before.clone(), sink.kvm_after.clone()));
    }
    if exits_known && received > 0 {
        s.metrics.push(Metric::new("exits_per_packet", exits_total as f64 / received as f64, "exits"));
    }
    let userspace = |r: &Report| r.exits.userspace - r.exits.done;
    s.metrics.push(Metric::new("userspace_exits_tx", userspace(gen) as f64, "exits"));
    s.metrics.push(Metric::new("userspace_exits_rx", userspace(sink) as f64, "exits"));
    if notify != Notify::Exit && userspace(gen) + userspace(sink) > 0 {
        return Err(invalid(
            name,
            format!(
                "notify={} must not exit to userspace, but VM1 had {} and VM2 {} exits beyond their done port",
                notify.label(),
                userspace(gen),
                userspace(sink)
            ),
        ));
    }
    s.notes.push(format!(
        "two VMs in two worker processes (pids {} and {}), one vCPU each (VM1 generator on {}, VM2 sink on {}); memslot 1 \
         of both maps one {} MiB memfd: a ring of {} slots x {} B at +0, control lines at {:#x}; notify={}{}",
        pids.first().copied().unwrap_or(0),
        pids.get(1).copied().unwrap_or(0),
        cpus[0].map_or("any CPU".into(), |c| format!("CPU {c}")),
        cpus[1].map_or("any CPU".into(), |c| format!("CPU {c}")),
        SHARED_SIZE >> 20,
        packet_ring::layout::DEFAULT_SLOTS,
        packet_ring::layout::BUF_SIZE,
        CTRL_OFFSET,
        notify.label(),
        if notify == Notify::Hybrid { format!(" (the sink polls {} us before it halts)", params.poll_us) } else { String::new() }
    ));
    s.notes.push(format!(
        "backend {}; native execution verified: VM1 {:.2}, VM2 {:.2} cycles per dec;jnz iteration",
        vmm::host().backend()?.name(),
        gen.prepared.cycles_per_iter,
        sink.prepared.cycles_per_iter
    ));
    s.notes.push(format!(
        "TSC check: guest minus host TSC is {off_g} cycles in VM1 (+-{w_g}) and {off_s} in VM2 (+-{w_s}); difference \
         {delta} cycles: {}",
        if correct {
            "beyond the brackets, so one-way latencies were corrected by it"
        } else {
            "within the brackets: both VMs read the same TSC"
        }
    ));
    s.notes.push("one-way latency: timer cost not subtracted (one rdtsc on each side)".into());
    if word(sink, "NEGATIVE") > 0 {
        s.notes.push(format!("{} receive stamps were below their send stamps: recorded as 0", word(sink, "NEGATIVE")));
    }
    let busy_vcpus = if notify == Notify::Poll { 2 } else { 1 };
    s.metrics.push(Metric::new("free_cpus", free_at_start as f64, "CPUs"));
    s.metrics.push(Metric::new("busy_vcpus", busy_vcpus as f64, "vCPUs"));
    if busy_vcpus > free_at_start {
        s.notes.push(format!(
            "oversubscribed: {busy_vcpus} vCPU(s) always busy in this mode, {free_at_start} CPU(s) free when the trial \
             started ({} usable, the rest taken by other runnable threads): the figures include waiting for a CPU",
            probe_api::cpu::allowed_cpus().len()
        ));
    }
    s.throughput = Some(t);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_default_and_refuse_nonsense() {
        let p = PathParams::parse(&Point::none()).unwrap();
        assert_eq!(p.notify, Some(Notify::Poll));
        assert_eq!((p.batch, p.poll_us), (32, DEFAULT_POLL_US));
        assert_eq!(PathParams::parse(&Point::parse("notify=mwait").unwrap()).unwrap().notify, None);
        for bad in ["size=63", "copy=maybe", "rate=0", "batch=0", "notify=napi", "poll_us=x", "poll_us=2000000"] {
            assert!(PathParams::parse(&Point::parse(bad).unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_default_point_parses_and_covers_every_mode_at_64_and_1518() {
        let pts = points();
        for pt in &pts {
            PathParams::parse(pt).unwrap();
        }
        for notify in ["poll", "hybrid", "halt", "exit", "mwait"] {
            for size in ["64", "1518"] {
                assert!(
                    pts.iter().any(|p| p.get("notify") == Some(notify) && p.get("size") == Some(size)),
                    "{notify} {size}"
                );
            }
        }
    }

    #[test]
    fn mwait_is_unsupported_with_a_reason_here() {
        // No host this runs on has an exit-free MWAIT path in path_sink.
        match point_support(None) {
            Support::Unsupported(r) => assert!(r.starts_with("notify=mwait: "), "{r}"),
            Support::Supported => panic!("mwait cannot be supported"),
        }
    }
}
