//! `path.host-ring`: the packet ring of the path.* probes between two pinned host threads,
//! an open-loop generator on the first CPU and a verifying sink on the second. No
//! virtualization is in the way, so this is the ceiling `path.a` is judged against.
//!
//! A trial offers `iterations` packets (at `max`: until `iterations` packets entered the
//! ring; see `Generator::counted`), or runs for `--duration`, at `rate` Mpps or as fast as
//! the generator can (`max`), publishing the producer index every `batch`
//! packets; `copy` says whether the sink copies each frame out or verifies it in place.
//! Its latency samples are one-way times: the sink's TSC at receipt minus the send stamp
//! in the frame, for every k-th frame (k chosen to keep at most MAX_LATENCY_SAMPLES).
//! Both threads read the same host TSC (invariant, synchronised across CPUs on the hosts
//! this runs on); a receive stamp below its send stamp would show TSCs out of step and
//! is counted and noted.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use packet_ring::{counters, CopyMode, FrameSize, Generator, Layout, Rate, Region, RingView, Sink};
use probe_api::{cpu, tsc, Budget, Metric, Point, Probe, ProbeError, Samples, Stop, Support, Throughput};

use crate::pinning::{cpu_pair, two_cpus_support};

pub struct HostRing;

const NAME: &str = "path.host-ring";
/// One-way latency samples kept per trial at most.
pub const MAX_LATENCY_SAMPLES: u64 = 100_000;
/// Length of the intervals whose rates give the trial's own spread.
const INTERVAL: Duration = Duration::from_millis(10);
/// Generator steps between checks of the stop flag and the deadline.
const STEPS_PER_CHECK: u32 = 1 << 10;
/// The rate a `max` trial's sample stride assumes.
const ASSUMED_MAX_MPPS: f64 = 50.0;

/// The parameters of one point, parsed where they enter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RingParams {
    pub size: FrameSize,
    pub copy: CopyMode,
    pub rate: Rate,
    pub batch: u32,
}

impl RingParams {
    pub fn parse(p: &Point) -> Result<RingParams, ProbeError> {
        let bad = |e: String| ProbeError::Failed(format!("{NAME}: {e}"));
        Ok(RingParams {
            size: FrameSize::parse(p.get("size").unwrap_or("64")).map_err(bad)?,
            copy: CopyMode::parse(p.get("copy").unwrap_or("copy")).map_err(bad)?,
            rate: Rate::parse(p.get("rate").unwrap_or("max")).map_err(bad)?,
            batch: packet_ring::traffic::parse_batch(p.get("batch").unwrap_or("32")).map_err(bad)?,
        })
    }
}

/// TSC ticks per second, calibrated once against the monotonic clock: what pacing needs.
/// (The figures are converted by the harness at its own, recorded TSC rate.)
pub(crate) fn tsc_hz() -> f64 {
    static HZ: OnceLock<f64> = OnceLock::new();
    *HZ.get_or_init(|| {
        let (t0, c0) = (Instant::now(), tsc::rdtsc_serialized());
        while t0.elapsed() < Duration::from_millis(20) {
            spin_loop();
        }
        let c1 = tsc::rdtsc_serialized();
        (c1 - c0) as f64 / t0.elapsed().as_secs_f64()
    })
}

/// Sets its flag when dropped, so the sink learns that the generator ended even when the
/// generator panicked.
pub(crate) struct Done<'a>(pub(crate) &'a AtomicBool);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// One side's loop bookkeeping: TSC cycles spent idle (a step that did no work), and when
/// the next periodic check is due.
struct LoopClock {
    start: u64,
    prev: u64,
    idle: u64,
    steps: u32,
}

impl LoopClock {
    fn new() -> LoopClock {
        let t = tsc::rdtsc();
        LoopClock { start: t, prev: t, idle: 0, steps: 0 }
    }
    /// Accounts the step that ended at `now`; true every STEPS_PER_CHECK steps.
    #[inline]
    fn tick(&mut self, now: u64, worked: bool) -> bool {
        if !worked {
            self.idle += now - self.prev;
            spin_loop();
        }
        self.prev = now;
        self.steps += 1;
        if self.steps == STEPS_PER_CHECK {
            self.steps = 0;
            return true;
        }
        false
    }
    /// Cycles of work from the start to the last step.
    fn busy(&self) -> u64 {
        self.prev.saturating_sub(self.start).saturating_sub(self.idle)
    }
}

struct TxSide {
    stats: packet_ring::GenStats,
    /// What the packet budget counted (`Generator::counted`).
    counted: u64,
    busy_cycles: u64,
    started: Instant,
    stopped: Option<Stop>,
}

struct RxSide {
    sink: Sink,
    busy_cycles: u64,
    finished: Instant,
    interval_mpps: Vec<f64>,
}

/// One trial on two pinned threads; the counters, the latency samples and the timings.
pub fn trial(params: RingParams, budget: &Budget) -> Result<Samples, ProbeError> {
    let (tx_cpu, rx_cpu) = cpu_pair(budget, NAME)?;
    let layout = Layout::new(packet_ring::layout::DEFAULT_SLOTS).map_err(|e| ProbeError::Failed(e.into()))?;
    let region = Region::anonymous(layout.region_size).map_err(|e| ProbeError::io("mapping the ring region", e))?;
    // SAFETY: the region is fresh, page aligned and as large as the layout; it outlives
    // both threads, which the scope joins before it is unmapped.
    let view = unsafe { RingView::init(region.base(), region.len(), layout) }
        .map_err(|e| ProbeError::Failed(e.to_string()))?;
    let hz = tsc_hz();
    let packets = budget.iterations;
    let expected = match (params.rate, budget.duration) {
        (Rate::Mpps(m), Some(d)) => (m * 1e6 * d.as_secs_f64()) as u64,
        (Rate::Max, Some(d)) => (ASSUMED_MAX_MPPS * 1e6 * d.as_secs_f64()) as u64,
        _ => packets,
    }
    .min(packets);
    let stride = (expected / MAX_LATENCY_SAMPLES).max(1);
    let done = AtomicBool::new(false);
    let started = Instant::now();

    let (tx, rx) = std::thread::scope(|s| {
        let tx = s.spawn(|| -> Result<TxSide, ProbeError> {
            let _done = Done(&done);
            cpu::pin_current_thread(tx_cpu)
                .map_err(|e| ProbeError::io(format!("pinning the generator to cpu {tx_cpu}"), e))?;
            let mut clock = LoopClock::new();
            let mut g = Generator::new(
                packet_ring::Producer::new(view),
                params.size,
                params.rate,
                params.batch,
                hz,
                clock.start,
            );
            let deadline = budget.duration.map(|d| Instant::now() + d);
            let begun = Instant::now();
            let mut stopped = None;
            while g.counted() < packets {
                let now = tsc::rdtsc();
                let worked = g.step(now, packets) > 0;
                if clock.tick(now, worked) {
                    if let Some(why) = budget.should_stop(started) {
                        stopped = Some(why);
                        break;
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                }
            }
            g.finish();
            Ok(TxSide { stats: g.stats, counted: g.counted(), busy_cycles: clock.busy(), started: begun, stopped })
        });
        let rx = s.spawn(|| -> Result<RxSide, ProbeError> {
            cpu::pin_current_thread(rx_cpu)
                .map_err(|e| ProbeError::io(format!("pinning the sink to cpu {rx_cpu}"), e))?;
            let mut sink = Sink::new(
                packet_ring::Consumer::new(view),
                params.size,
                params.copy,
                params.batch,
                stride,
                MAX_LATENCY_SAMPLES as usize,
            );
            let mut clock = LoopClock::new();
            let mut intervals = Vec::new();
            let (mut next_mark, mut at_mark) = (Instant::now() + INTERVAL, 0u64);
            loop {
                // Read before polling: once the generator is done, one more empty poll
                // proves the ring drained.
                let finished = done.load(Ordering::Acquire);
                let n = sink.poll(tsc::rdtsc).map_err(|e| ProbeError::Failed(e.to_string()))?;
                if n == 0 && finished {
                    break;
                }
                if clock.tick(tsc::rdtsc(), n > 0) {
                    let t = Instant::now();
                    if t >= next_mark {
                        intervals.push((sink.stats.received - at_mark) as f64 / INTERVAL.as_secs_f64() / 1e6);
                        at_mark = sink.stats.received;
                        next_mark += INTERVAL;
                    }
                }
            }
            Ok(RxSide { sink, busy_cycles: clock.busy(), finished: Instant::now(), interval_mpps: intervals })
        });
        (tx.join(), rx.join())
    });
    let tx = tx.map_err(|_| ProbeError::Failed("the generator thread panicked".into()))??;
    let rx = rx.map_err(|_| ProbeError::Failed("the sink thread panicked".into()))??;

    let mut t: Throughput = counters(&tx.stats, &rx.sink);
    t.offered_mpps = match params.rate {
        Rate::Max => None,
        Rate::Mpps(m) => Some(m),
    };
    t.duration_s = rx.finished.duration_since(tx.started).as_secs_f64();
    t.frame_bytes = params.size.mean_len();
    t.tx_cycles_per_packet = (t.sent > 0).then(|| tx.busy_cycles as f64 / t.sent as f64);
    t.rx_cycles_per_packet = (t.received > 0).then(|| rx.busy_cycles as f64 / t.received as f64);
    let st = rx.sink.stats;
    t.empty_poll_share = (st.polls > 0).then(|| st.empty_polls as f64 / st.polls as f64);
    t.interval_mpps = rx.interval_mpps;

    let mut samples =
        Samples::new(rx.sink.latency, budget.method, 0, "host rdtsc: send stamp in the frame -> sink rdtsc, cross-CPU");
    samples.metrics.push(Metric::new("latency_stride", stride.next_power_of_two() as f64, "frames per sample"));
    samples.metrics.push(Metric::new("publications_tx", tx.stats.publications as f64, "index stores"));
    samples.metrics.push(Metric::new("pacing_tsc_mhz", hz / 1e6, "MHz"));
    samples.notes.push(format!(
        "generator cpu {tx_cpu}, sink cpu {rx_cpu}; ring of {} slots x {} B",
        layout.slots,
        packet_ring::layout::BUF_SIZE
    ));
    samples.notes.push("one-way latency: timer cost not subtracted (one rdtsc on each side)".into());
    if st.negative_latency > 0 {
        samples.notes.push(format!(
            "{} receive stamps were below their send stamps (TSCs out of step across CPUs): recorded as 0",
            st.negative_latency
        ));
    }
    if let Some(why) = tx.stopped {
        samples.partial = Some(format!("{why} after {} of {packets} packets", tx.counted));
    }
    samples.throughput = Some(t);
    Ok(samples)
}

impl Probe for HostRing {
    fn name(&self) -> &'static str {
        NAME
    }
    fn description(&self) -> &'static str {
        "packet ring between two pinned host threads: open-loop generator -> verifying sink (Mpps, loss, one-way latency)"
    }
    fn group(&self) -> &'static str {
        "path"
    }
    fn support(&self) -> Support {
        two_cpus_support(NAME)
    }
    fn points(&self) -> Vec<Point> {
        let p = |size: &str, copy: &str, batch: u32| {
            Point::none().with("size", size).with("copy", copy).with("rate", "max").with("batch", batch)
        };
        let mut v: Vec<Point> = packet_ring::frame::STANDARD_SIZES.iter().map(|s| p(s, "copy", 32)).collect();
        v.push(p("64", "zero-copy", 32));
        v.push(p("64", "copy", 1));
        v
    }
    fn param_keys(&self) -> Vec<String> {
        ["batch", "copy", "rate", "size"].map(String::from).to_vec()
    }
    fn run(&self, point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
        trial(RingParams::parse(point)?, budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trials of these tests each want both CPUs: run them one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn parameters_default_and_refuse_nonsense() {
        let p = RingParams::parse(&Point::none()).unwrap();
        assert_eq!(p, RingParams { size: FrameSize::Fixed(64), copy: CopyMode::Copy, rate: Rate::Max, batch: 32 });
        for bad in ["size=63", "copy=maybe", "rate=0", "batch=0"] {
            assert!(RingParams::parse(&Point::parse(bad).unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_trial_balances_and_samples_latency() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        if cpu::allowed_cpus().len() < 2 {
            println!("SKIPPED: path.host-ring needs two CPUs");
            return;
        }
        for point in
            ["size=64,copy=copy,batch=32", "size=imix,copy=zero-copy,batch=1", "size=1518,copy=copy,batch=8,rate=0.5"]
        {
            let s = HostRing.run(&Point::parse(point).unwrap(), &Budget::quick(50_000)).unwrap();
            let t = s.throughput.as_ref().unwrap();
            assert_eq!(t.violation(), None, "{point}: {t:?}");
            // a paced point offers its budget; at max the budget counts packets that
            // entered the ring, which all arrive
            if point.contains("rate=") {
                assert_eq!(t.sent, 50_000, "{point}");
            } else {
                assert_eq!(t.received, 50_000, "{point}");
            }
            assert_eq!((t.lost, t.duplicated, t.reordered, t.corrupted), (0, 0, 0, 0), "{point}: {t:?}");
            assert!(!s.cycles.is_empty() && t.mpps() > 0.0, "{point}");
            assert!(s.partial.is_none());
        }
    }

    #[test]
    fn a_paced_trial_offers_its_rate() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        if cpu::allowed_cpus().len() < 2 {
            println!("SKIPPED: path.host-ring needs two CPUs");
            return;
        }
        // 0.2 Mpps for 20000 packets: 0.1 s; a loaded machine may stretch it, never shrink it.
        let s = HostRing.run(&Point::parse("size=64,rate=0.2,batch=4").unwrap(), &Budget::quick(20_000)).unwrap();
        let t = s.throughput.unwrap();
        assert!(t.duration_s >= 0.095, "{t:?}");
        assert!(t.achieved_offered_mpps() <= 0.21, "{t:?}");
        // Drops are possible even here: the sink's CPU may be taken away for longer than
        // the ring's 256 slots last at 0.2 Mpps (1.3 ms) on a shared machine.
        assert_eq!(t.violation(), None, "{t:?}");
    }

    #[test]
    fn a_stop_request_ends_the_trial_partial_with_balanced_counters() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let b = Budget::quick(u64::MAX / 2);
        b.stop.request();
        if cpu::allowed_cpus().len() < 2 {
            println!("SKIPPED: path.host-ring needs two CPUs");
            return;
        }
        let s = HostRing.run(&Point::parse("size=64,rate=1").unwrap(), &b).unwrap();
        assert!(s.partial.as_deref().unwrap_or("").starts_with("interrupted"), "{:?}", s.partial);
        assert_eq!(s.throughput.unwrap().violation(), None);
    }
}
