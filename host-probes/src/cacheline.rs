//! `host.cacheline.roundtrip`: two threads on two CPUs bounce a value through the cache
//! coherence protocol. This is the cheapest possible cross-CPU signal, the floor under
//! every shared-memory notification between vCPUs.
//!
//! Layout choice: each direction has its own line (main writes `ping`, the partner
//! writes `pong`), so each line has a single writer. A round trip is then exactly two
//! ownership transfers, and the spinning reader never competes with the other side's
//! write for the same line. Lines are 128-byte aligned because the adjacent-line
//! prefetcher on Intel parts fetches 64-byte lines in pairs; at 64 bytes the two flags
//! would still drag each other around.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use probe_api::{Budget, Methods, Metric, Point, Probe, ProbeError, Samples, Support};

use crate::partner::Partner;
use crate::pinning::{cpu_pair, two_cpus_support, PinnedHere};
use crate::sampling;

pub struct Roundtrip;

const NAME: &str = "host.cacheline.roundtrip";
/// Written to `ping` to tell the partner to leave. Sequence numbers never reach it.
const STOP: u64 = u64::MAX;
/// Spins between deadline checks: keeps `Instant::now` out of nearly every wait.
const SPINS_PER_CHECK: u32 = 1 << 12;

#[repr(align(128))]
struct Line(AtomicU64);

struct PingPong {
    ping: Line,
    pong: Line,
}

/// Spins (with PAUSE) until `line` differs from `old`; `None` once `deadline` passed.
#[inline(always)]
fn wait_change(line: &AtomicU64, old: u64, deadline: Instant) -> Option<u64> {
    let mut spins = 0u32;
    loop {
        let v = line.load(Ordering::Acquire);
        if v != old {
            return Some(v);
        }
        spin_loop();
        spins += 1;
        if spins == SPINS_PER_CHECK {
            spins = 0;
            if Instant::now() > deadline {
                return None;
            }
        }
    }
}

fn partner_loop(pp: &PingPong, deadline: Instant) {
    let mut last = 0;
    // A partner that outlives the deadline gives up on its own, even if nobody stops it.
    while let Some(v) = wait_change(&pp.ping.0, last, deadline) {
        if v == STOP {
            return;
        }
        pp.pong.0.store(v, Ordering::Release);
        last = v;
    }
}

impl Probe for Roundtrip {
    fn name(&self) -> &'static str {
        NAME
    }
    fn description(&self) -> &'static str {
        "cache-line ping-pong between two pinned host threads on different CPUs (one round trip)"
    }
    fn group(&self) -> &'static str {
        "cacheline"
    }
    fn support(&self) -> Support {
        two_cpus_support(NAME)
    }
    fn methods(&self) -> Methods {
        Methods::Both
    }
    fn run(&self, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
        let (main_cpu, partner_cpu) = cpu_pair(budget, NAME)?;
        let _pin = PinnedHere::to(main_cpu)?;
        let deadline = Instant::now() + budget.timeout;
        let pp = Arc::new(PingPong { ping: Line(AtomicU64::new(0)), pong: Line(AtomicU64::new(0)) });

        let for_partner = Arc::clone(&pp);
        let for_release = Arc::clone(&pp);
        let partner = Partner::spawn(
            "ivbench-cacheline",
            partner_cpu,
            budget.timeout,
            move || partner_loop(&for_partner, deadline),
            move || for_release.ping.0.store(STOP, Ordering::Release),
        )?;

        let mut seq = 0u64;
        let recorded = sampling::record(budget, Methods::Both, NAME, || {
            seq += 1;
            pp.ping.0.store(seq, Ordering::Release);
            match wait_change(&pp.pong.0, seq - 1, deadline) {
                Some(_) => Ok(()),
                None => Err(ProbeError::Timeout(budget.timeout, "cache-line partner stopped answering".into())),
            }
        })?;
        partner.finish()?;

        let one_way = recorded.net_median_per_op().map(|rt| rt / 2.0);
        let mut s = recorded.into_samples(sampling::HOST_CLOCK);
        s.notes.push(format!(
            "measuring thread on cpu {main_cpu}, partner on cpu {partner_cpu}; one writer per 128-byte-aligned line; PAUSE in spin loops"
        ));
        match one_way {
            Some(v) => {
                s.metrics.push(Metric::new("one_way", v, "cycles"));
                s.notes.push(
                    "one_way = half the median round trip after subtracting the timer overhead (per-op: median - overhead; batched: (median total - overhead) / batch)".into(),
                );
            }
            None => s.notes.push("one_way omitted: median round trip not above the timer overhead".into()),
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn partner_gives_up_at_the_deadline_without_a_stop() {
        let pp = PingPong { ping: Line(AtomicU64::new(0)), pong: Line(AtomicU64::new(0)) };
        partner_loop(&pp, Instant::now() + Duration::from_millis(20));
    }

    #[test]
    fn partner_answers_then_stops() {
        let pp = Arc::new(PingPong { ping: Line(AtomicU64::new(0)), pong: Line(AtomicU64::new(0)) });
        let p = Arc::clone(&pp);
        let h = std::thread::spawn(move || partner_loop(&p, Instant::now() + Duration::from_secs(60)));
        let deadline = Instant::now() + Duration::from_secs(60);
        for seq in 1..=100u64 {
            pp.ping.0.store(seq, Ordering::Release);
            assert_eq!(wait_change(&pp.pong.0, seq - 1, deadline), Some(seq));
        }
        pp.ping.0.store(STOP, Ordering::Release);
        h.join().unwrap();
        assert_eq!(std::mem::align_of::<Line>(), 128);
    }
}
