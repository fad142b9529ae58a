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
//! injection: the sink pauses this long after each poll that found frames), `transport`
//! (path.a: `memslot`, both VMs map the ring; `vmfunc`, the seed's protected memory view:
//! VM1 has no memslot for the ring and enters a VMFUNC view that maps it in every step
//! that touches it, which needs the kvm-patch; see `worker::path::build_view`).
//!
//! A trial offers `iterations` packets or runs for the budget's duration, at most
//! [`MAX_TRIAL`] when the budget sets none. The counters are exact: the generator counts
//! every packet offered and every one that found the ring full, the sink every frame it
//! took out; `sent = received + dropped` is checked on the row. Latency samples are
//! one-way: the sink's rdtsc minus the generator's stamp, both guest TSCs; each worker
//! measures its guest's TSC offset from the host TSC and the row records the difference
//! (and corrects for it when it exceeds the measurement's bracket).

use std::time::{Duration, Instant};

use packet_ring::{frame, CopyMode, FrameSize, Layout, Rate, RingView};
use probe_api::{Budget, Method, Methods, Metric, Point, ProbeError, Samples, Support, Throughput};

use super::multi::{irqchip_support, push_exit_stats, push_halt_stats, two_vcpu_support, EXIT_COUNTERS};
use super::notify::mwait_support;
use super::{invalid, VmProbe};
use crate::abi::ctrl;
use crate::vmm::{self, layout, SharedMemory};
use crate::worker::path_block::{FwdPort, FwdSpec, Notify, PathEnd, Size};
use crate::worker::proto::Report;
use crate::worker::{Group, Role, Shared, WorkerSpec};

const NAME: &str = "path.a";
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
/// The VMFUNC view VM1's generator reaches the ring through (transport=vmfunc).
const GEN_VIEW: u32 = 2;

/// How VM1 reaches the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A memslot of both VMs maps the ring.
    Memslot,
    /// VM1 has no memslot for it: it enters a VMFUNC view that maps it (kvm-patch).
    Vmfunc,
}

impl Transport {
    pub fn parse(s: &str) -> Result<Transport, String> {
        match s {
            "memslot" => Ok(Transport::Memslot),
            "vmfunc" => Ok(Transport::Vmfunc),
            _ => Err(format!("transport must be memslot or vmfunc, got {s}")),
        }
    }
}

pub(crate) const PATH_A: VmProbe = VmProbe {
    name: NAME,
    description: "VM1 -> VM2 over a shared-memory packet ring (two VMs, two worker processes): open-loop generator -> \
                  verifying sink; Mpps, loss, one-way latency, in every notification mode",
    group: "path",
    methods: Methods::PerOpOnly,
    support: two_vcpu_support,
    points,
    run,
    extra_keys: &["poll_us", "sink_delay_us", "transport"],
};

pub(crate) const PATH_B: VmProbe = VmProbe {
    name: "path.b",
    description: "VM1 -> VM0 (a switch VM: one port per peer VM, forwarding by destination MAC) -> VM2: Mpps, loss and \
                  latency end to end and per hop, in every notification mode; oversubscribed polling falls back to hybrid",
    group: "path",
    methods: Methods::PerOpOnly,
    support: two_vcpu_support,
    points: points_b,
    run,
    extra_keys: &["poll_us", "sink_delay_us"],
};

pub(crate) const PATH_CHAIN: VmProbe = VmProbe {
    name: "path.chain",
    description:
        "VM1 -> MB1 -> ... -> MBn -> VM2, n = 1..4 middle-box VMs that copy and touch every frame: Mpps, loss, \
                  latency end to end and per hop",
    group: "path",
    methods: Methods::PerOpOnly,
    support: two_vcpu_support,
    points: points_chain,
    run,
    extra_keys: &["poll_us", "sink_delay_us"],
};

fn points_b() -> Vec<Point> {
    let p = |size: &str, notify: &str| {
        Point::none()
            .with("size", size)
            .with("copy", "copy")
            .with("rate", "max")
            .with("batch", 32)
            .with("notify", notify)
    };
    let mut v = Vec::new();
    for notify in ["poll", "hybrid", "halt", "exit", "mwait"] {
        v.push(p("64", notify));
        v.push(p("1518", notify));
    }
    v.push(p("imix", "poll"));
    v.push(p("64", "poll").with("copy", "zero-copy"));
    v
}

fn points_chain() -> Vec<Point> {
    let mut v: Vec<Point> = (1..=MAX_CHAIN)
        .map(|n| {
            Point::none()
                .with("length", n)
                .with("size", "64")
                .with("copy", "copy")
                .with("rate", "max")
                .with("batch", 32)
                .with("notify", "poll")
        })
        .collect();
    v.push(Point::parse("length=2,size=64,copy=copy,rate=max,batch=32,notify=halt").expect("a valid point"));
    v
}

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
    v.push(p("64", "copy", "poll").with("transport", "vmfunc"));
    v.push(p("64", "copy", "hybrid").with("transport", "vmfunc"));
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
    pub transport: Transport,
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
            transport: Transport::parse(p.get("transport").unwrap_or("memslot")).map_err(bad)?,
        })
    }
}

/// Support of one point: the modes whose sink halts need the irqchip; mwait needs an
/// exit-free MWAIT; transport=vmfunc needs the kvm-patch's views.
fn point_support(notify: Option<Notify>, transport: Transport) -> Support {
    if transport == Transport::Vmfunc {
        if let Support::Unsupported(r) = super::view::vmfunc_support() {
            return Support::Unsupported(format!("transport=vmfunc: {r}"));
        }
    }
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

/// Which path a probe runs: its middle boxes and rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// VM1 -> VM2 over one ring.
    A,
    /// VM1 -> VM0 (a switch with one port per peer VM, an input and an output ring each)
    /// -> VM2.
    B,
    /// VM1 -> MB1 -> ... -> MBn -> VM2, n = 1..=[`MAX_CHAIN`].
    Chain(u32),
}

/// The longest chain of middle boxes.
pub const MAX_CHAIN: u32 = 4;
// every ring of the longest chain (and path.b's four) has an eventfd the job can carry,
// and the memfd of the most rings fits one shared region of the guest layout
const _: () = {
    assert!(crate::worker::child::MAX_EXTRA_FDS as u32 > MAX_CHAIN && crate::worker::child::MAX_EXTRA_FDS >= 4);
    assert!((MAX_CHAIN as u64 + 2) * RING_STRIDE <= layout::SHARED_STRIDE);
};

impl Topology {
    fn of(name: &str, point: &Point) -> Result<Topology, ProbeError> {
        match name {
            "path.b" => Ok(Topology::B),
            "path.chain" => match point.get("length").unwrap_or("1").parse::<u32>() {
                Ok(n) if (1..=MAX_CHAIN).contains(&n) => Ok(Topology::Chain(n)),
                _ => Err(ProbeError::Failed(format!(
                    "path.chain: length must be 1..={MAX_CHAIN} middle boxes, got {}",
                    point.get("length").unwrap_or("")
                ))),
            },
            _ => Ok(Topology::A),
        }
    }
    pub fn middle_boxes(self) -> u32 {
        match self {
            Topology::A => 0,
            Topology::B => 1,
            Topology::Chain(n) => n,
        }
    }
    /// Rings in the shared memfd (path.b: VM1 -> switch, switch -> VM2, switch -> VM1,
    /// VM2 -> switch).
    pub fn rings(self) -> u32 {
        match self {
            Topology::A => 1,
            Topology::B => 4,
            Topology::Chain(n) => n + 1,
        }
    }
    /// The ring the sink takes frames from.
    pub fn sink_ring(self) -> u32 {
        match self {
            Topology::A => 0,
            Topology::B => 1,
            Topology::Chain(n) => n,
        }
    }
}

/// Where ring k and its control lines sit in the shared memfd, and how large it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedPlan {
    pub rings: u32,
    pub ctrl_base: u64,
    pub barrier: u64,
    pub size: u64,
}

const RING_STRIDE: u64 = 1 << 20;
/// The kick port of ring k's producer is KICK_BASE + k (clear of the done and error ports).
const KICK_BASE: u16 = 0xe0;

const _: () = {
    assert!(packet_ring::layout::DEFAULT_REGION_SIZE as u64 <= RING_STRIDE);
    assert!(KICK_BASE as u32 + 2 * MAX_CHAIN + 4 < crate::abi::port::DONE as u32);
};

impl SharedPlan {
    pub fn new(rings: u32) -> SharedPlan {
        let ctrl_base = u64::from(rings) * RING_STRIDE;
        let barrier = ctrl_base + 4096;
        let size = (barrier + 4096).div_ceil(2 << 20) * (2 << 20);
        SharedPlan { rings, ctrl_base, barrier, size }
    }
    pub fn ring(&self, k: u32) -> u64 {
        u64::from(k) * RING_STRIDE
    }
    pub fn ctrl(&self, k: u32) -> u64 {
        self.ctrl_base + u64::from(k) * ctrl::SIZE
    }
}

/// The notification the roles run with: on path.b and path.chain, polling that needs
/// more CPUs than are free falls back to hybrid (the boxes and the sink halt when idle),
/// so that three or more busy vCPUs on two CPUs never livelock. Returns the mode and why
/// it changed, if it did.
pub fn effective_notify(topo: Topology, asked: Notify, free: usize) -> (Notify, Option<String>) {
    let busy = busy_vcpus(topo, asked);
    if topo != Topology::A && asked == Notify::Poll && busy > free {
        let why = format!(
            "oversubscribed: notify=poll keeps {busy} vCPUs busy but {free} CPU(s) were free: ran as notify=hybrid (the \
             middle boxes and the sink halt when idle, the generator kicks them)"
        );
        return (Notify::Hybrid, Some(why));
    }
    (asked, None)
}

/// vCPUs that never halt: the generator, and with polling every other VM too.
pub fn busy_vcpus(topo: Topology, notify: Notify) -> usize {
    if notify == Notify::Poll {
        2 + topo.middle_boxes() as usize
    } else {
        1
    }
}

/// The host CPU of each VM in order (generator, middle boxes, sink): the budget's first
/// CPU for the generator, its second for the sink, the other usable CPUs for the middle
/// boxes in turn, or the sink's CPU when there are none.
fn placement(budget: &Budget, middle: u32) -> Vec<Option<usize>> {
    let (c0, c1) = (budget.cpu(0), budget.cpu(1));
    let others: Vec<usize> =
        probe_api::cpu::allowed_cpus().into_iter().filter(|c| Some(*c) != c0 && Some(*c) != c1).collect();
    let mut v = vec![c0];
    for i in 0..middle as usize {
        v.push(if others.is_empty() { c1 } else { Some(others[i % others.len()]) });
    }
    v.push(c1);
    v
}

fn run(p: &VmProbe, point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    let name = p.name;
    let topo = Topology::of(name, point)?;
    let params = PathParams::parse(point)?;
    if params.transport == Transport::Vmfunc && topo != Topology::A {
        return Err(ProbeError::Failed(format!(
            "{name}: transport=vmfunc is path.a's (VM1 -> VM2); {name} has memslots"
        )));
    }
    if let Support::Unsupported(r) = point_support(params.notify, params.transport) {
        return Err(ProbeError::Unsupported(r));
    }
    let asked = params.notify.expect("mwait is unsupported above");
    if budget.method != Method::PerOp {
        return Err(ProbeError::Failed(format!(
            "{name}: a trial has no batched method; {} requested",
            budget.method.label()
        )));
    }
    if let [Some(a), Some(b)] = [budget.cpu(0), budget.cpu(1)] {
        if a == b {
            return Err(ProbeError::Failed(format!(
                "{name}: the generator's and the sink's vCPUs need two distinct CPUs, got {a} twice"
            )));
        }
    }
    // before the workers exist: their own threads are not "other" load
    let free_at_start = probe_api::cpu::free_cpus();
    let (notify, fallback) = effective_notify(topo, asked, free_at_start);
    debug_assert!(notify == asked || fallback.is_some());
    let trial = budget.duration.unwrap_or(MAX_TRIAL);
    let packets = budget.iterations;
    let stride = (expected_packets(&params, packets, trial) / MAX_LATENCY_SAMPLES).max(1).next_power_of_two();

    let plan = SharedPlan::new(topo.rings());
    let shm = SharedMemory::new(plan.size as usize)?;
    let ring = Layout::new(packet_ring::layout::DEFAULT_SLOTS).map_err(|e| ProbeError::Failed(e.into()))?;
    for k in 0..plan.rings {
        // SAFETY: ring k's slice of the fresh memfd mapping is page aligned, RING_STRIDE
        // long (at least the ring's size) and used by no other ring; the mapping outlives
        // the workers, which the group reaps before `shm` is dropped.
        unsafe { RingView::init(shm.host_addr().add(plan.ring(k) as usize), RING_STRIDE as usize, ring) }
            .map_err(|e| ProbeError::Failed(e.to_string()))?;
    }
    if topo == Topology::B {
        // the switch's input from VM2 has no producer in this direction: done from the start
        shm.atomic((plan.ctrl(3) + ctrl::DONE) as usize).store(1, std::sync::atomic::Ordering::SeqCst);
    }
    let gpa = |off: u64| layout::SHARED_GPA + off;
    let end = |k: u32| PathEnd {
        ring_gpa: gpa(plan.ring(k)),
        ctrl_gpa: gpa(plan.ctrl(k)),
        slots: ring.slots,
        batch: params.batch,
        size: Size::from(params.size),
        notify,
        kick_port: KICK_BASE + k as u16,
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
        eventfd: k as usize,
        view: 0,
    };
    let input = |k: u32| Some((gpa(plan.ring(k)), gpa(plan.ctrl(k)), k as usize));
    let output = |k: u32| Some((gpa(plan.ring(k)), gpa(plan.ctrl(k)), KICK_BASE + k as u16, k as usize));
    let fwd = |ports: Vec<FwdPort>| FwdSpec {
        ports,
        slots: ring.slots,
        batch: params.batch,
        notify,
        poll_ns: params.poll_us * 1000,
        stride,
        max_samples: MAX_LATENCY_SAMPLES,
        src_mac: frame::SRC_MAC,
    };
    let cpus = placement(budget, topo.middle_boxes());
    let spec = |who: String, cpu, role| WorkerSpec { name: who, cpu, role, stops_when_done: vec![], deadline: None };
    let gen_end = PathEnd { view: if params.transport == Transport::Vmfunc { GEN_VIEW } else { 0 }, ..end(0) };
    let mut specs = vec![spec("VM1 (generator)".into(), cpus[0], Role::PathGen(Box::new(gen_end)))];
    match topo {
        Topology::A => {}
        Topology::B => specs.push(spec(
            "VM0 (switch)".into(),
            cpus[1],
            Role::PathFwd(Box::new(fwd(vec![
                FwdPort { input: input(0), output: output(2), mac: frame::SRC_MAC },
                FwdPort { input: input(3), output: output(1), mac: frame::DST_MAC },
            ]))),
        )),
        Topology::Chain(n) => {
            for i in 0..n {
                specs.push(spec(
                    format!("MB{} (middle box)", i + 1),
                    cpus[1 + i as usize],
                    Role::PathFwd(Box::new(fwd(vec![FwdPort {
                        input: input(i),
                        output: output(i + 1),
                        mac: frame::DST_MAC,
                    }]))),
                ));
            }
        }
    }
    specs.push(spec(
        "VM2 (sink)".into(),
        *cpus.last().expect("a sink CPU"),
        Role::PathSink(Box::new(end(topo.sink_ring()))),
    ));
    let eventfds: Vec<vmm_sys_util::eventfd::EventFd> = if notify.sink_sleeps() {
        (0..plan.rings)
            .map(|_| vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK))
            .collect::<Result<_, _>>()
            .map_err(|e| ProbeError::io("eventfds for the path's wake-ups", e))?
    } else {
        Vec::new()
    };
    let extra: Vec<std::os::fd::BorrowedFd<'_>> = eventfds
        .iter()
        // SAFETY: the eventfds live until the end of this function, after the group that
        // sends them to the workers was reaped.
        .map(|e| unsafe { std::os::fd::BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(e)) })
        .collect();
    // The group's deadline: the trial, the VMs' set-up and the drain, within the timeout.
    let deadline = Instant::now() + budget.timeout.min(trial + Duration::from_secs(30));
    let shared = [Shared { memory: &shm, slot: 1, gpa: layout::SHARED_GPA }];
    let mut group = Group::spawn_with_fds(name, &shared, &extra, plan.barrier, specs, deadline)?;
    let pids = group.pids();
    // Ctrl-C stops the generator only: it publishes what it has and sets DONE, the path
    // drains, every end reports and the counts still balance (a partial row).
    let reports = group.supervise_with(&|| budget.stop.is_requested(), Some(&[0]))?;
    let interrupted = group.interrupted();
    drop(group);
    let ctx = Trial { topo, params, notify, fallback, stride, cpus, pids, free_at_start, plan, interrupted };
    assemble(p, &ctx, &reports)
}

fn word(r: &Report, name: &str) -> u64 {
    r.path.get(name).copied().unwrap_or(0)
}

/// What a trial was, for its row.
struct Trial {
    topo: Topology,
    params: PathParams,
    notify: Notify,
    fallback: Option<String>,
    stride: u64,
    cpus: Vec<Option<usize>>,
    pids: Vec<i32>,
    free_at_start: usize,
    plan: SharedPlan,
    /// Ctrl-C stopped the generator early.
    interrupted: bool,
}

/// Frames a middle box dropped (full output, unknown destination, bad descriptor).
fn box_drops(r: &Report) -> u64 {
    r.path
        .iter()
        .filter(|(k, _)| {
            k.starts_with("PORT")
                && (k.ends_with("_DROP_FULL") || k.ends_with("_DROP_UNKNOWN") || k.ends_with("_CORRUPT"))
        })
        .map(|(_, v)| *v)
        .sum()
}

fn box_sum(r: &Report, suffix: &str) -> u64 {
    r.path.iter().filter(|(k, _)| k.starts_with("PORT") && k.ends_with(suffix)).map(|(_, v)| *v).sum()
}

fn percentile(v: &[u64], q: f64) -> Option<u64> {
    let mut s = v.to_vec();
    s.sort_unstable();
    (!s.is_empty()).then(|| s[((s.len() as f64 * q) as usize).min(s.len() - 1)])
}

fn assemble(p: &VmProbe, t: &Trial, reports: &[Report]) -> Result<Samples, ProbeError> {
    let name = p.name;
    let (gen, sink) = (&reports[0], &reports[reports.len() - 1]);
    let hops = &reports[1..reports.len() - 1];
    let notify = t.notify;
    if word(sink, "ERROR") != 0 || hops.iter().any(|h| word(h, "ERROR") != 0) {
        return Err(invalid(
            name,
            "a consumer saw its producer's index more than a ring ahead: the ring protocol broke",
        ));
    }
    let tsc_khz = gen.prepared.tsc_khz;
    let hz = tsc_khz as f64 * 1e3;
    let (off_g, w_g) = gen.tsc_offset.unwrap_or((0, 0));
    let (off_s, w_s) = sink.tsc_offset.unwrap_or((0, 0));
    let delta = off_s - off_g;
    let bracket = (w_g + w_s) as i64;
    let correct = delta.abs() > bracket.max(1);
    let (sent, gen_dropped) = (word(gen, "SENT"), word(gen, "DROPPED"));
    let hop_drops: u64 = hops.iter().map(box_drops).sum();
    let received = word(sink, "RECEIVED");
    let entered = sent.saturating_sub(gen_dropped);
    // Every packet that entered the first ring got the next sequence number, and every
    // middle box either forwarded it or dropped and counted it. A drained sink that saw no
    // corrupted frame has seen gaps (LOST) plus a tail (entered - NEXT_SEQ) adding up to
    // exactly the boxes' drops: anything else is a packet a ring lost.
    if word(sink, "CORRUPTED") == 0 {
        let unseen = word(sink, "LOST") + entered.saturating_sub(word(sink, "NEXT_SEQ"));
        if unseen != hop_drops || word(sink, "NEXT_SEQ") > entered {
            return Err(invalid(
                name,
                format!(
                    "{entered} packets entered the first ring, the middle boxes dropped {hop_drops}, but the sink missed \
                     {unseen} and expects sequence number {} next: a ring lost or invented packets",
                    word(sink, "NEXT_SEQ")
                ),
            ));
        }
    }
    let start = to_host(word(gen, "T_FIRST"), off_g);
    let end = to_host(word(sink, "T_LAST"), off_s);
    let duration_s = end.saturating_sub(start) as f64 / hz;
    let busy = |r: &Report| word(r, "T_LAST").saturating_sub(word(r, "T_FIRST")).saturating_sub(word(r, "IDLE"));
    let marks_mpps: Vec<f64> =
        sink.marks.windows(2).map(|w| w[1].saturating_sub(w[0]) as f64 / MARK.as_secs_f64() / 1e6).collect();
    let polls = word(sink, "POLLS");
    let tp = Throughput {
        sent,
        received,
        dropped: gen_dropped + hop_drops,
        lost: word(sink, "LOST"),
        duplicated: word(sink, "DUPLICATED"),
        reordered: word(sink, "REORDERED"),
        corrupted: word(sink, "CORRUPTED"),
        offered_mpps: match t.params.rate {
            Rate::Max => None,
            Rate::Mpps(m) => Some(m),
        },
        duration_s,
        frame_bytes: t.params.size.mean_len(),
        tx_cycles_per_packet: (sent > 0).then(|| busy(gen) as f64 / sent as f64),
        rx_cycles_per_packet: (received > 0).then(|| busy(sink) as f64 / received as f64),
        empty_poll_share: (polls > 0).then(|| word(sink, "EMPTY_POLLS") as f64 / polls as f64),
        interval_mpps: marks_mpps,
    };
    // The guests store receive TSC minus send stamp, wrapping; VM r's reading of VM1's
    // stamp is off by the difference of their TSC offsets, corrected where it exceeds the
    // two measurements' brackets; what is still negative then is counted and clamped to 0.
    let mut negative = 0u64;
    let mut corrected = |r: &Report, v: &[u64]| -> Vec<u64> {
        let (off, w) = r.tsc_offset.unwrap_or((0, 0));
        let d = off - off_g;
        let d = if d.abs() > (w_g + w) as i64 { d } else { 0 };
        v.iter()
            .map(|&raw| {
                let l = (raw as i64).wrapping_sub(d);
                if l < 0 {
                    negative += 1;
                }
                l.max(0) as u64
            })
            .collect()
    };
    let lat = corrected(sink, &sink.samples);
    let mut s = Samples::new(
        lat.clone(),
        Method::PerOp,
        0,
        "guest rdtsc: send stamp in the frame (VM1) -> sink rdtsc (VM2), cross-VM and cross-CPU",
    );
    s.tsc_khz = Some(tsc_khz);
    let ns = |c: u64| c as f64 / hz * 1e9;
    s.metrics.push(Metric::new("latency_stride", t.stride as f64, "frames per sample"));
    s.metrics.push(Metric::new("publications_tx", word(gen, "PUBLICATIONS") as f64, "index stores"));
    s.metrics.push(Metric::new("kicks_tx", word(gen, "KICKS") as f64, "kicks"));
    s.metrics.push(Metric::new(
        "vmm_signals",
        reports.iter().map(|r| word(r, "VMM_SIGNALS")).sum::<u64>() as f64,
        "eventfd writes",
    ));
    s.metrics.push(Metric::new("sink_halts", word(sink, "SLEEPS") as f64, "hlt"));
    s.metrics.push(Metric::new("sink_wakes", word(sink, "WAKES") as f64, "interrupts"));
    s.metrics.push(Metric::new("dropped_tx", gen_dropped as f64, "packets"));
    let span = |r: &Report| word(r, "T_LAST").saturating_sub(word(r, "T_FIRST"));
    if span(sink) > 0 {
        s.metrics.push(Metric::new("rx_busy_share", busy(sink) as f64 / span(sink) as f64, "of the sink's time"));
        // what the sink's vCPU took of its CPU: all but the time it sat in HLT
        let halted = word(sink, "HALTED") as f64 / span(sink) as f64;
        s.metrics.push(Metric::new("rx_vcpu_cpu_share", (1.0 - halted).max(0.0), "of the sink's time"));
    }
    let mut prev_p50 = 0.0;
    for (i, h) in hops.iter().enumerate() {
        let k = i + 1;
        let tx = box_sum(h, "_TX");
        s.metrics.push(Metric::new(&format!("hop{k}_rx"), box_sum(h, "_RX") as f64, "packets"));
        s.metrics.push(Metric::new(&format!("hop{k}_tx"), tx as f64, "packets"));
        s.metrics.push(Metric::new(&format!("hop{k}_drop_full"), box_sum(h, "_DROP_FULL") as f64, "packets"));
        s.metrics.push(Metric::new(&format!("hop{k}_drop_unknown"), box_sum(h, "_DROP_UNKNOWN") as f64, "packets"));
        if duration_s > 0.0 {
            s.metrics.push(Metric::new(&format!("hop{k}_mpps"), tx as f64 / duration_s / 1e6, "Mpps"));
        }
        // per frame the box handled (forwarded or dropped): a flooded box drops most
        let rx = box_sum(h, "_RX");
        if rx > 0 {
            s.metrics.push(Metric::new(&format!("hop{k}_cycles_per_packet"), busy(h) as f64 / rx as f64, "cycles"));
        }
        if span(h) > 0 {
            let halted = word(h, "HALTED") as f64 / span(h) as f64;
            s.metrics.push(Metric::new(&format!("hop{k}_vcpu_cpu_share"), (1.0 - halted).max(0.0), "of its time"));
        }
        let cum = corrected(h, &h.samples);
        if let (Some(p50), Some(p99)) = (percentile(&cum, 0.5), percentile(&cum, 0.99)) {
            s.metrics.push(Metric::new(&format!("hop{k}_cum_p50_ns"), ns(p50), "ns"));
            s.metrics.push(Metric::new(&format!("hop{k}_cum_p99_ns"), ns(p99), "ns"));
            s.metrics.push(Metric::new(&format!("hop{k}_p50_delta_ns"), ns(p50) - prev_p50, "ns"));
            prev_p50 = ns(p50);
        }
    }
    if !hops.is_empty() {
        if let Some(p50) = percentile(&lat, 0.5) {
            s.metrics.push(Metric::new("last_hop_p50_delta_ns", ns(p50) - prev_p50, "ns"));
        }
        if t.topo == Topology::B {
            for (key, v) in &hops[0].path {
                if key.starts_with("PORT") && !key.ends_with("IN_DONE") {
                    s.metrics.push(Metric::new(&format!("switch_{}", key.to_lowercase()), *v as f64, "packets"));
                }
            }
        }
    }
    s.metrics.push(Metric::new("tsc_offset_delta", delta as f64, "cycles"));
    let mut exits_total = 0u64;
    let mut exits_known = true;
    let who = |i: usize| -> String {
        if i == 0 {
            "VM1's vCPU (generator)".into()
        } else if i == reports.len() - 1 {
            "VM2's vCPU (sink)".into()
        } else if t.topo == Topology::B {
            "VM0's vCPU (switch)".into()
        } else {
            format!("MB{i}'s vCPU")
        }
    };
    let tag = |i: usize| -> String {
        if i == 0 {
            "tx".into()
        } else if i == reports.len() - 1 {
            "rx".into()
        } else {
            format!("hop{i}")
        }
    };
    for (i, r) in reports.iter().enumerate() {
        push_exit_stats(&mut s, &who(i), &tag(i), &(r.kvm_before.clone(), r.kvm_after.clone()));
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
    for (i, h) in hops.iter().enumerate() {
        s.metrics.push(Metric::new(&format!("userspace_exits_hop{}", i + 1), userspace(h) as f64, "exits"));
    }
    if notify != Notify::Exit {
        if let Some((i, r)) = reports.iter().enumerate().find(|(_, r)| userspace(r) > 0) {
            return Err(invalid(
                name,
                format!(
                    "notify={} must not exit to userspace, but {} had {} exits beyond its done port",
                    notify.label(),
                    who(i),
                    userspace(r)
                ),
            ));
        }
    }
    let placed: Vec<String> = (0..reports.len())
        .map(|i| {
            format!(
                "{} pid {} on {}",
                who(i).trim_end_matches("'s vCPU"),
                t.pids.get(i).copied().unwrap_or(0),
                t.cpus.get(i).copied().flatten().map_or("any CPU".into(), |c| format!("CPU {c}"))
            )
        })
        .collect();
    let mapping = match t.params.transport {
        Transport::Memslot => "memslot 1 of every VM maps".to_string(),
        Transport::Vmfunc => format!(
            "transport=vmfunc: VM1 has no memslot for it and writes it only inside VMFUNC view {GEN_VIEW} (kvm-patch: \
             the ring and control lines R+W, its code R+X, its path block and stack page), entered {} times ({:.3} per \
             packet sent), each with its VMFUNC back; memslot 1 of VM2 maps",
            word(gen, "VIEW_ENTRIES"),
            word(gen, "VIEW_ENTRIES") as f64 / sent.max(1) as f64
        ),
    };
    if t.params.transport == Transport::Vmfunc {
        s.metrics.push(Metric::new("view_entries", word(gen, "VIEW_ENTRIES") as f64, "VMFUNC round trips"));
        s.metrics.push(Metric::new("view_forced_default", word(gen, "VIEW_FORCED_DEFAULT") as f64, "returns"));
        if word(gen, "VIEW_ENTRIES") == 0 {
            return Err(invalid(name, "transport=vmfunc, but the generator never entered its view"));
        }
        if word(gen, "VIEW_UD") != 0 || word(gen, "VIEW_FAULTS") != 0 {
            return Err(invalid(
                name,
                format!(
                    "KVM_VMFUNC_VCPU_STATS of VM1: {} VMFUNC #UDs and {} faults in its view (both must be 0)",
                    word(gen, "VIEW_UD"),
                    word(gen, "VIEW_FAULTS")
                ),
            ));
        }
    }
    s.notes.push(format!(
        "{} VMs in {} worker processes, one vCPU each: {}; {mapping} one {} MiB memfd holding {} ring(s) of \
         {} slots x {} B (ring k at k MiB, control lines at {:#x}); notify={}{}",
        reports.len(),
        reports.len(),
        placed.join(", "),
        t.plan.size >> 20,
        t.plan.rings,
        packet_ring::layout::DEFAULT_SLOTS,
        packet_ring::layout::BUF_SIZE,
        t.plan.ctrl_base,
        notify.label(),
        if notify == Notify::Hybrid {
            format!(" (an idle consumer polls {} us before it halts)", t.params.poll_us)
        } else {
            String::new()
        }
    ));
    if !hops.is_empty() {
        s.notes.push(
            "middle boxes copy every frame into the next ring (a box that passed descriptors into a shared pool would expose \
             one VM's buffers to the next, so the trust model allows copying only) and write the source MAC (their header \
             touch; the value is the path's source address, so the sink's byte-exact check still holds); a full output \
             ring drops the frame at that box, counted in dropped and in hopK_drop_full, and never blocks its input; \
             every VM maps the whole memfd here (a deployment maps each ring into its two VMs only)"
                .into(),
        );
    }
    s.notes.push(format!(
        "backend {}; native execution verified: {}",
        vmm::host().backend()?.name(),
        reports
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{} {:.2}", tag(i), r.prepared.cycles_per_iter))
            .collect::<Vec<_>>()
            .join(", ")
            + " cycles per dec;jnz iteration"
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
    if negative > 0 {
        s.notes.push(format!(
            "{negative} latency samples (sink and middle boxes) were below 0 after the TSC correction (TSCs out of \
             step): recorded as 0"
        ));
    }
    let busy_vcpus = busy_vcpus(t.topo, notify);
    let vcpus = reports.len();
    s.metrics.push(Metric::new("free_cpus", t.free_at_start as f64, "CPUs"));
    s.metrics.push(Metric::new("busy_vcpus", busy_vcpus as f64, "vCPUs"));
    s.metrics.push(Metric::new("oversubscribed", f64::from(u8::from(vcpus > t.free_at_start)), "flag"));
    if let Some(why) = &t.fallback {
        s.notes.push(why.clone());
    } else if vcpus > t.free_at_start {
        s.notes.push(format!(
            "oversubscribed: {vcpus} vCPUs ({busy_vcpus} never halting in this mode) on {} CPU(s) free when the trial \
             started ({} usable, the rest taken by other runnable threads): vCPUs wait for a CPU, and a flood keeps \
             every one of them busy",
            t.free_at_start,
            probe_api::cpu::allowed_cpus().len()
        ));
    }
    s.throughput = Some(tp);
    if t.interrupted {
        s.partial = Some(format!(
            "interrupted: the generator was stopped after {sent} packets offered; the path drained, so the counts \
             still balance"
        ));
    }
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
        assert_eq!(p.transport, Transport::Memslot);
        assert_eq!(PathParams::parse(&Point::parse("transport=vmfunc").unwrap()).unwrap().transport, Transport::Vmfunc);
        for bad in [
            "size=63",
            "copy=maybe",
            "rate=0",
            "batch=0",
            "notify=napi",
            "poll_us=x",
            "poll_us=2000000",
            "transport=ept",
        ] {
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
        match point_support(None, Transport::Memslot) {
            Support::Unsupported(r) => assert!(r.starts_with("notify=mwait: "), "{r}"),
            Support::Supported => panic!("mwait cannot be supported"),
        }
    }

    #[test]
    fn vmfunc_transport_is_supported_exactly_where_views_are() {
        match (crate::probes::view::vmfunc_support(), point_support(Some(Notify::Poll), Transport::Vmfunc)) {
            (Support::Unsupported(why), Support::Unsupported(r)) => assert_eq!(r, format!("transport=vmfunc: {why}")),
            // a host with views: only the two-vCPU requirement may still refuse the point
            (Support::Supported, got) => assert_eq!(got, two_vcpu_support()),
            (Support::Unsupported(why), Support::Supported) => {
                panic!("transport=vmfunc supported without views: {why}")
            }
        }
    }
}
