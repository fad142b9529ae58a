//! The open-loop generator and the verifying sink: the logic both ends of every path.*
//! probe run, in host threads or (later) inside guests. Neither reads a clock itself: the
//! caller passes TSC readings in, so tests can drive both ends step by step.
//!
//! Accounting. Every packet the generator offers is counted in `sent`; one that finds the
//! ring full is counted in `dropped` and never enters the ring (open loop: the generator
//! never waits for space). Sequence numbers are given to the packets that enter the ring,
//! so a gap at the sink is a packet the ring itself lost (`lost`), which a correct ring
//! never does. After the sink drained the ring, `sent = received + dropped` exactly.

use crate::frame::{Check, FrameSize, Templates};
use crate::layout::BUF_SIZE;
use probe_api::Throughput;

use crate::ring::{Consumer, Producer, RingError};

/// How the sink reads a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMode {
    /// Copies the frame out of the shared buffer into its own, then verifies the copy.
    Copy,
    /// Verifies the frame in the shared buffer and hands the buffer back.
    ZeroCopy,
}

impl CopyMode {
    pub fn parse(text: &str) -> Result<CopyMode, String> {
        match text {
            "copy" => Ok(CopyMode::Copy),
            "zero-copy" => Ok(CopyMode::ZeroCopy),
            other => Err(format!("copy must be `copy` or `zero-copy`, got `{other}`")),
        }
    }
    pub fn label(&self) -> &'static str {
        match self {
            CopyMode::Copy => "copy",
            CopyMode::ZeroCopy => "zero-copy",
        }
    }
}

/// Offered rate: as fast as the generator can, or a fixed packet rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    Max,
    Mpps(f64),
}

/// The largest offered rate a point may ask for: beyond 100GbE's 148.8 Mpps.
pub const MAX_OFFERED_MPPS: f64 = 1000.0;

impl Rate {
    pub fn parse(text: &str) -> Result<Rate, String> {
        if text == "max" {
            return Ok(Rate::Max);
        }
        let v: f64 = text.trim().parse().map_err(|_| format!("rate `{text}` is neither `max` nor a number of Mpps"))?;
        if !v.is_finite() || v <= 0.0 || v > MAX_OFFERED_MPPS {
            return Err(format!("rate must be `max` or Mpps in (0, {MAX_OFFERED_MPPS}], got {text}"));
        }
        Ok(Rate::Mpps(v))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Max => f.write_str("max"),
            Rate::Mpps(v) => write!(f, "{v}"),
        }
    }
}

/// The most packets one index publication may cover.
pub const MAX_BATCH: u32 = 256;

pub fn parse_batch(text: &str) -> Result<u32, String> {
    let n: u32 = text.trim().parse().map_err(|_| format!("batch `{text}` is not a whole number"))?;
    if n == 0 || n > MAX_BATCH {
        return Err(format!("batch must be 1..={MAX_BATCH} packets per index publication, got {n}"));
    }
    Ok(n)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenStats {
    /// Packets offered (entered the ring or dropped).
    pub sent: u64,
    /// Packets that found the ring full.
    pub dropped: u64,
    /// Index publications.
    pub publications: u64,
    /// TSC cycles spent waiting for the next packet's due time (pacing), not sending.
    pub idle_cycles: u64,
}

/// The open-loop generator. Packet `n` is due at `start + n * interval`; every call to
/// [`Generator::step`] offers all packets due by then (at most `batch`), stamping them
/// with the reading passed in, and publishes when `batch` slots are filled or when no
/// packet is due (so that a paced trickle is not held back waiting for a full batch).
pub struct Generator {
    prod: Producer,
    templates: Templates,
    size: FrameSize,
    batch: u32,
    /// Cycles between packets, 0 for `Rate::Max`.
    interval: f64,
    start: u64,
    /// Sequence number of the next packet that enters the ring.
    seq: u64,
    pub stats: GenStats,
}

impl Generator {
    pub fn new(prod: Producer, size: FrameSize, rate: Rate, batch: u32, tsc_hz: f64, start: u64) -> Generator {
        let interval = match rate {
            Rate::Max => 0.0,
            Rate::Mpps(m) => tsc_hz / (m * 1e6),
        };
        Generator {
            prod,
            templates: Templates::new(size),
            size,
            batch: batch.max(1),
            interval,
            start,
            seq: 0,
            stats: GenStats::default(),
        }
    }

    /// When packet `n` is due.
    #[inline]
    fn due(&self, n: u64) -> u64 {
        self.start.wrapping_add((n as f64 * self.interval) as u64)
    }

    /// Offers the packets due at `now` (up to `batch` of them and never beyond `limit`
    /// [`Generator::counted`] in all); returns how many it offered. `now` is the send stamp.
    #[inline]
    pub fn step(&mut self, now: u64, limit: u64) -> u32 {
        let mut n = 0;
        while n < self.batch && self.counted() < limit && (self.interval == 0.0 || self.due(self.stats.sent) <= now) {
            self.offer(now);
            n += 1;
        }
        if self.prod.unpublished() >= self.batch || (n == 0 && self.prod.unpublished() > 0) {
            self.prod.publish();
            self.stats.publications += 1;
        }
        n
    }

    #[inline]
    fn offer(&mut self, now: u64) {
        let len = self.size.len_of(self.seq);
        let t = self.templates.get(len as usize).expect("a template per length of the size");
        let seq = self.seq;
        // SAFETY: try_push hands out a buffer of BUF_SIZE >= MAX_FRAME bytes that the
        // producer owns until it publishes it.
        let pushed = self.prod.try_push(len, |buf| unsafe { t.write_to(buf, seq, now) });
        self.stats.sent += 1;
        if pushed {
            self.seq += 1;
        } else {
            self.stats.dropped += 1;
        }
    }

    /// Whether the next packet is not yet due at `now` (the caller may count the wait).
    #[inline]
    pub fn waiting(&self, now: u64) -> bool {
        self.interval != 0.0 && self.due(self.stats.sent) > now
    }

    /// Publishes what is left; call once the trial ended.
    pub fn finish(&mut self) {
        if self.prod.unpublished() > 0 {
            self.prod.publish();
            self.stats.publications += 1;
        }
    }

    /// Packets that entered the ring.
    pub fn enqueued(&self) -> u64 {
        self.seq
    }

    /// What a trial's packet budget counts: packets offered at a paced rate; at `max`,
    /// where nearly every offer beyond the ring's capacity finds it full, packets that
    /// entered the ring (a budget of offers would end a trial within milliseconds, long
    /// before the path reaches its steady state).
    #[inline]
    pub fn counted(&self) -> u64 {
        if self.interval == 0.0 {
            self.seq
        } else {
            self.stats.sent
        }
    }
}

/// Sequence tracking over a window of recent sequence numbers: a frame below the next
/// expected one is `reordered` when it was missing (counted lost until then), and
/// `duplicated` when it was already seen or is older than the window.
#[derive(Clone, Debug)]
pub struct SeqTracker {
    next: u64,
    seen: Vec<u64>,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

/// Sequence numbers the tracker remembers (bits).
pub const SEQ_WINDOW: u64 = 1 << 16;

impl Default for SeqTracker {
    fn default() -> Self {
        SeqTracker { next: 0, seen: vec![0; (SEQ_WINDOW / 64) as usize], lost: 0, duplicated: 0, reordered: 0 }
    }
}

impl SeqTracker {
    #[inline]
    fn bit(&mut self, s: u64) -> (&mut u64, u64) {
        let i = s % SEQ_WINDOW;
        (&mut self.seen[(i / 64) as usize], 1u64 << (i % 64))
    }

    #[inline]
    pub fn record(&mut self, s: u64) {
        if s == self.next {
            let (w, m) = self.bit(s);
            *w |= m;
            self.next += 1;
        } else if s > self.next {
            let gap = s - self.next;
            self.lost += gap;
            // The skipped numbers are missing: clear their bits (all, for a wide gap).
            if gap >= SEQ_WINDOW {
                self.seen.iter_mut().for_each(|w| *w = 0);
            } else {
                for x in self.next..s {
                    let (w, m) = self.bit(x);
                    *w &= !m;
                }
            }
            let (w, m) = self.bit(s);
            *w |= m;
            self.next = s + 1;
        } else if self.next - s > SEQ_WINDOW {
            self.duplicated += 1;
        } else {
            let (w, m) = self.bit(s);
            if *w & m != 0 {
                self.duplicated += 1;
            } else {
                *w |= m;
                self.reordered += 1;
                self.lost -= 1;
            }
        }
    }

    /// The sequence number the tracker expects next: frames it saw up to here.
    pub fn next(&self) -> u64 {
        self.next
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Frames taken out of the ring (good or not).
    pub received: u64,
    pub corrupted: u64,
    /// Polls in all, and those that found the ring empty.
    pub polls: u64,
    pub empty_polls: u64,
    /// Index publications (slot releases).
    pub releases: u64,
    /// Latency samples whose receive stamp was before the send stamp (TSCs out of step);
    /// recorded as 0.
    pub negative_latency: u64,
}

/// The multiplier of the latency-sampling hash (2^64 / the golden ratio).
pub const SAMPLE_HASH: u64 = 0x9E37_79B9_7F4A_7C15;

/// Whether the frame with sequence number `seq` has its latency sampled at a stride of
/// `mask + 1` (a power of two): bits 32.. of `seq x SAMPLE_HASH` under `mask` are zero.
/// One in `mask + 1` frames on average, spread so that the sample does not alias with a
/// periodic pattern such as the IMIX length cycle (`seq & mask == 0` at a stride of 4 or
/// more would never pick a 1518-byte IMIX frame). The guest payloads use the same rule.
#[inline]
pub fn sampled(seq: u64, mask: u64) -> bool {
    (seq.wrapping_mul(SAMPLE_HASH) >> 32) & mask == 0
}

/// The verifying sink: reads up to `batch` frames per poll, verifies every byte, tracks
/// sequence numbers and keeps the one-way latency of the frames [`sampled`] picks (receive TSC minus
/// send stamp, in cycles), up to `max_samples`.
pub struct Sink {
    cons: Consumer,
    templates: Templates,
    mode: CopyMode,
    batch: u32,
    copy: Box<[u8; BUF_SIZE]>,
    stride_mask: u64,
    max_samples: usize,
    pub latency: Vec<u64>,
    pub seq: SeqTracker,
    pub stats: SinkStats,
}

impl Sink {
    /// `stride` is rounded up to a power of two.
    pub fn new(cons: Consumer, size: FrameSize, mode: CopyMode, batch: u32, stride: u64, max_samples: usize) -> Sink {
        Sink {
            cons,
            templates: Templates::new(size),
            mode,
            batch: batch.max(1),
            copy: Box::new([0u8; BUF_SIZE]),
            stride_mask: stride.max(1).next_power_of_two() - 1,
            max_samples,
            latency: Vec::with_capacity(max_samples.min(1 << 20)),
            seq: SeqTracker::default(),
            stats: SinkStats::default(),
        }
    }

    /// One poll: handles up to `batch` frames, then releases their slots. `clock` is read
    /// for each frame whose latency is sampled. Returns the frames handled (0: empty poll).
    #[inline]
    pub fn poll(&mut self, clock: impl Fn() -> u64) -> Result<u32, RingError> {
        self.stats.polls += 1;
        let avail = self.cons.available()?;
        if avail == 0 {
            self.stats.empty_polls += 1;
            return Ok(0);
        }
        let n = avail.min(self.batch);
        for _ in 0..n {
            let check = match self.cons.peek() {
                None => Check::Corrupt(crate::frame::Corruption::Length),
                Some(f) => match self.mode {
                    CopyMode::Copy => {
                        // SAFETY: peek checked that the frame lies inside the buffer
                        // pool; the producer does not write the slot before it is
                        // released below; the copy buffer holds BUF_SIZE >= f.len bytes.
                        unsafe { std::ptr::copy_nonoverlapping(f.ptr, self.copy.as_mut_ptr(), f.len) };
                        self.templates.verify(&self.copy[..f.len])
                    }
                    // SAFETY: as above: inside the pool, not written until released.
                    CopyMode::ZeroCopy => self.templates.verify(unsafe { std::slice::from_raw_parts(f.ptr, f.len) }),
                },
            };
            self.cons.advance();
            self.stats.received += 1;
            match check {
                Check::Good { seq, tsc } => {
                    self.seq.record(seq);
                    if sampled(seq, self.stride_mask) && self.latency.len() < self.max_samples {
                        let now = clock();
                        if now < tsc {
                            self.stats.negative_latency += 1;
                        }
                        self.latency.push(now.saturating_sub(tsc));
                    }
                }
                Check::Corrupt(_) => self.stats.corrupted += 1,
            }
        }
        self.cons.release();
        self.stats.releases += 1;
        Ok(n)
    }
}

/// Both ends' counters after a trial, in the harness's throughput contract (rates,
/// duration and frame length are the caller's to fill in).
pub fn counters(g: &GenStats, s: &Sink) -> Throughput {
    Throughput {
        sent: g.sent,
        received: s.stats.received,
        dropped: g.dropped,
        lost: s.seq.lost,
        duplicated: s.seq.duplicated,
        reordered: s.seq.reordered,
        corrupted: s.stats.corrupted,
        ..Default::default()
    }
}

/// Why the counters of a drained trial cannot be right: every offered packet is either
/// received or dropped.
pub fn imbalance(t: &Throughput) -> Option<String> {
    Throughput { duration_s: 1.0, frame_bytes: 64.0, ..t.clone() }.violation()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use crate::region::Region;
    use crate::ring::RingView;

    fn ends(slots: u32) -> (Region, Producer, Consumer, RingView) {
        let l = Layout::new(slots).unwrap();
        let r = Region::anonymous(l.region_size).unwrap();
        // SAFETY: a fresh region of the layout's size.
        let v = unsafe { RingView::init(r.base(), r.len(), l) }.unwrap();
        (r, Producer::new(v), Consumer::new(v), v)
    }

    #[test]
    fn a_slow_sink_makes_drops_that_balance_exactly() {
        for size in [FrameSize::Fixed(64), FrameSize::Fixed(1518), FrameSize::Imix] {
            for mode in [CopyMode::Copy, CopyMode::ZeroCopy] {
                let (_r, p, c, _) = ends(16);
                let mut g = Generator::new(p, size, Rate::Max, 4, 1e9, 0);
                let mut s = Sink::new(c, size, mode, 3, 1, 1000);
                let mut t = 0u64;
                while g.stats.sent < 10_000 {
                    g.step(t, 10_000);
                    t += 10;
                    // The sink polls only every other step: the ring fills, packets drop.
                    if t % 20 == 0 {
                        s.poll(|| t + 5).unwrap();
                    }
                }
                g.finish();
                while s.poll(|| t).unwrap() > 0 {}
                let a = counters(&g.stats, &s);
                assert_eq!(imbalance(&a), None, "{size} {mode:?}: {a:?}");
                assert!(a.dropped > 0, "the slow sink must cause drops: {a:?}");
                assert_eq!((a.lost, a.duplicated, a.reordered, a.corrupted), (0, 0, 0, 0), "{a:?}");
                assert_eq!(s.seq.next(), g.enqueued());
                assert!(!s.latency.is_empty() && s.latency.iter().all(|&l| l < 1_000_000));
            }
        }
    }

    #[test]
    fn pacing_offers_exactly_the_rate() {
        let (_r, p, c, _) = ends(256);
        // 1 Mpps at a 1 GHz TSC: one packet per 1000 cycles.
        let mut g = Generator::new(p, FrameSize::Fixed(64), Rate::Mpps(1.0), 32, 1e9, 0);
        let mut s = Sink::new(c, FrameSize::Fixed(64), CopyMode::Copy, 32, 1, 100);
        for t in (0..1_000_000u64).step_by(100) {
            g.step(t, u64::MAX);
            s.poll(|| t).unwrap();
        }
        // Packets 0..=999 are due before t = 1e6.
        assert_eq!(g.stats.sent, 1000);
        assert_eq!(g.stats.dropped, 0);
        g.finish();
        while s.poll(|| 0).unwrap() > 0 {}
        assert_eq!(s.stats.received, 1000);
        // A trickle is published as soon as nothing more is due, not held for a batch.
        assert!(g.stats.publications >= 999, "{}", g.stats.publications);
        assert!(g.waiting(999_999) && !g.waiting(1_000_000), "packet 1000 is due at 1e6 cycles");
    }

    #[test]
    fn batch_sets_the_publication_count_at_full_speed() {
        let (_r, p, c, _) = ends(1024);
        let mut g = Generator::new(p, FrameSize::Fixed(64), Rate::Max, 32, 1e9, 0);
        let mut s = Sink::new(c, FrameSize::Fixed(64), CopyMode::ZeroCopy, 32, 1, 0);
        for _ in 0..100 {
            g.step(0, 3200);
            s.poll(|| 0).unwrap();
        }
        assert_eq!(g.stats.sent, 3200);
        assert_eq!(g.stats.publications, 100);
        assert_eq!(s.stats.received, 3200);
        assert_eq!(s.stats.empty_polls, 0);
    }

    #[test]
    fn corrupted_frames_are_counted_and_never_pass() {
        let (_r, p, c, v) = ends(8);
        let mut g = Generator::new(p, FrameSize::Fixed(256), Rate::Max, 8, 1e9, 0);
        let mut s = Sink::new(c, FrameSize::Fixed(256), CopyMode::Copy, 8, 1, 100);
        g.step(0, 8);
        // Damage frame 3's payload and frame 5's descriptor length.
        let l = *v.layout();
        // SAFETY: test-only writes inside the region, before the sink reads.
        unsafe {
            *_r.base().add(l.buf(3) + 100) ^= 1;
            _r.base().add(l.desc(5) + crate::layout::DESC_LEN_FIELD).cast::<u32>().write(255);
        }
        while s.poll(|| 0).unwrap() > 0 {}
        let a = counters(&g.stats, &s);
        assert_eq!(a.corrupted, 2);
        assert_eq!(a.received, 8);
        assert_eq!(imbalance(&a), None);
        // The two damaged sequence numbers look like a ring loss to the tracker.
        assert_eq!(a.lost, 2);
    }

    #[test]
    fn sequence_tracker_tells_loss_duplicates_and_reordering_apart() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 2, 5, 3, 3, 6, 4, 4, 1] {
            t.record(s);
        }
        assert_eq!((t.lost, t.reordered, t.duplicated), (0, 2, 3));
        t.record(100);
        assert_eq!(t.lost, 93);
        t.record(100 + SEQ_WINDOW + 10);
        t.record(50);
        assert_eq!(t.duplicated, 4, "older than the window");
    }

    #[test]
    fn sampling_does_not_alias_with_the_imix_cycle() {
        for mask in [0u64, 1, 3, 15, 1023] {
            let n = 120_000u64;
            let picked: Vec<u64> = (0..n).filter(|&s| sampled(s, mask)).collect();
            let share = picked.len() as f64 / n as f64;
            let want = 1.0 / (mask + 1) as f64;
            assert!((share - want).abs() < want * 0.2, "mask {mask}: {share} of frames, want {want}");
            if mask >= 3 {
                // every position of the 12-frame IMIX cycle is picked, 1518 B included
                let mut at = [0u32; 12];
                for s in &picked {
                    at[(s % 12) as usize] += 1;
                }
                assert!(at.iter().all(|&c| c > 0), "mask {mask}: positions {at:?}");
            }
        }
        assert!((0..100).all(|s| sampled(s, 0)), "a stride of 1 samples every frame");
    }

    #[test]
    fn the_identity_fails_when_a_packet_is_unaccounted() {
        let a = Throughput { sent: 10, received: 8, dropped: 1, ..Default::default() };
        assert!(imbalance(&a).unwrap().contains("sent 10 != received 8 + dropped 1"));
    }

    #[test]
    fn parameters_parse_with_their_ranges() {
        assert_eq!(Rate::parse("max"), Ok(Rate::Max));
        assert_eq!(Rate::parse("2.5"), Ok(Rate::Mpps(2.5)));
        for bad in ["0", "-1", "nan", "inf", "2000", "fast"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_batch("32"), Ok(32));
        assert!(parse_batch("0").is_err() && parse_batch("257").is_err());
        assert_eq!(CopyMode::parse("zero-copy"), Ok(CopyMode::ZeroCopy));
        assert!(CopyMode::parse("zerocopy").is_err());
    }
}
