//! What a throughput probe hands back beside (or instead of) latency samples: the trial's
//! counters and the rates derived from them. The derived figures are computed here, once,
//! so that the summary, the report and compare never disagree about them.

use serde::{Deserialize, Serialize};

/// Bytes each frame occupies on the wire beyond itself: 7 B preamble, 1 B start-of-frame
/// delimiter and a 12 B inter-frame gap (RFC 2544's line-rate arithmetic).
pub const PREAMBLE_AND_GAP_BYTES: f64 = 20.0;
/// The Ethernet line rates figures are put beside, Gbit/s.
pub const LINE_RATES_GBPS: [f64; 4] = [10.0, 25.0, 40.0, 100.0];
/// The zero-loss search's partial-drop threshold (CSIT's PDR): 0.5% loss.
pub const PDR_LOSS_RATIO: f64 = 0.005;

/// Counters of one trial. `sent = received + dropped` must hold exactly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Packets the generator offered.
    pub sent: u64,
    /// Packets the sink took in (good or not).
    pub received: u64,
    /// Offered packets that never entered the path (found it full).
    pub dropped: u64,
    /// Packets that entered the path and never came out (sequence gaps at the sink).
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
    /// The offered rate asked for, Mpps; None for "as fast as the generator can".
    pub offered_mpps: Option<f64>,
    /// Wall time of the trial: from the first offered packet to the last received one.
    pub duration_s: f64,
    /// Mean frame length, bytes (the frame as RFC 2544 sizes count it).
    pub frame_bytes: f64,
    /// TSC cycles each side spent per packet it handled, idle time excluded.
    pub tx_cycles_per_packet: Option<f64>,
    pub rx_cycles_per_packet: Option<f64>,
    /// Share of the sink's polls that found nothing to read.
    pub empty_poll_share: Option<f64>,
    /// Received rate of each equal interval of the trial (Mpps): the trial's own spread,
    /// which compare uses as throughput noise.
    pub interval_mpps: Vec<f64>,
}

impl Throughput {
    /// Received packets per second, in millions.
    pub fn mpps(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.received as f64 / self.duration_s / 1e6
        } else {
            0.0
        }
    }
    /// The rate actually offered (sent / duration), Mpps.
    pub fn achieved_offered_mpps(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.sent as f64 / self.duration_s / 1e6
        } else {
            0.0
        }
    }
    /// Frame bits per second received, Gbit/s, without preamble and gap.
    pub fn gbit_s(&self) -> f64 {
        self.mpps() * self.frame_bytes * 8.0 / 1e3
    }
    /// The same with each frame's 20 B preamble and gap: what a link of that speed carries.
    pub fn gbit_s_wire(&self) -> f64 {
        self.mpps() * (self.frame_bytes + PREAMBLE_AND_GAP_BYTES) * 8.0 / 1e3
    }
    /// Percent of a `gbps` link's line rate at this frame length.
    pub fn line_rate_percent(&self, gbps: f64) -> f64 {
        100.0 * self.mpps() / line_rate_mpps(gbps, self.frame_bytes)
    }
    /// Offered packets not delivered intact, over sent: dropped (never received) or
    /// received corrupted. (`lost` packets are never received, so a path that counts
    /// them has them in `dropped` too; on the host ring they would break the identity.)
    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            (self.dropped + self.corrupted) as f64 / self.sent as f64
        }
    }
    /// Why these counters cannot be right, if they cannot.
    pub fn violation(&self) -> Option<String> {
        if self.received.checked_add(self.dropped) != Some(self.sent) {
            return Some(format!(
                "accounting broken: sent {} != received {} + dropped {}",
                self.sent, self.received, self.dropped
            ));
        }
        if !(self.duration_s.is_finite() && self.duration_s > 0.0) {
            return Some(format!("trial duration {} s is not a positive number", self.duration_s));
        }
        if !(self.frame_bytes.is_finite() && self.frame_bytes > 0.0) {
            return Some(format!("frame length {} B is not a positive number", self.frame_bytes));
        }
        None
    }
    /// p75/p25 of the interval rates: the trial's own relative spread (None with fewer
    /// than four intervals or a zero quartile).
    pub fn interval_spread(&self) -> Option<f64> {
        let mut v: Vec<f64> = self.interval_mpps.iter().copied().filter(|x| x.is_finite()).collect();
        if v.len() < 4 {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        let (lo, hi) = (q(0.25), q(0.75));
        (lo > 0.0).then(|| hi / lo)
    }
}

/// Packets per second (millions) a `gbps` link carries at `frame_bytes` per frame.
pub fn line_rate_mpps(gbps: f64, frame_bytes: f64) -> f64 {
    gbps * 1e3 / ((frame_bytes + PREAMBLE_AND_GAP_BYTES) * 8.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_rates_match_the_textbook_figures() {
        let r = |g, b| (line_rate_mpps(g, b) * 1000.0).round() / 1000.0;
        assert_eq!([r(10.0, 64.0), r(25.0, 64.0), r(40.0, 64.0), r(100.0, 64.0)], [14.881, 37.202, 59.524, 148.81]);
        assert_eq!([r(10.0, 1518.0), r(40.0, 1518.0), r(100.0, 1518.0)], [0.813, 3.251, 8.127]);
    }

    #[test]
    fn rates_and_ratios_follow_from_the_counters() {
        let t = Throughput {
            sent: 2_000_000,
            received: 1_990_000,
            dropped: 10_000,
            duration_s: 0.1,
            frame_bytes: 64.0,
            ..Default::default()
        };
        assert_eq!(t.violation(), None);
        assert!((t.mpps() - 19.9).abs() < 1e-9);
        assert!((t.gbit_s() - 19.9 * 512.0 / 1e3).abs() < 1e-9);
        assert!((t.gbit_s_wire() - 19.9 * 672.0 / 1e3).abs() < 1e-9);
        assert!((t.line_rate_percent(10.0) - 100.0 * 19.9 / line_rate_mpps(10.0, 64.0)).abs() < 1e-9);
        assert!((t.loss_ratio() - 0.005).abs() < 1e-12);
        let bad = Throughput { received: 1_990_001, ..t.clone() };
        assert!(bad.violation().unwrap().contains("sent 2000000 != received 1990001 + dropped 10000"));
        assert!(Throughput { duration_s: 0.0, ..t.clone() }.violation().is_some());
        assert!(Throughput { sent: u64::MAX, received: u64::MAX, dropped: 1, ..t }.violation().is_some());
    }

    #[test]
    fn spread_needs_four_intervals() {
        let mut t = Throughput { interval_mpps: vec![10.0, 10.0, 10.0], ..Default::default() };
        assert_eq!(t.interval_spread(), None);
        t.interval_mpps = vec![8.0, 10.0, 10.0, 12.0, 10.0];
        assert!((t.interval_spread().unwrap() - 1.0).abs() < 1e-9);
        t.interval_mpps = vec![5.0, 8.0, 10.0, 12.0, 20.0];
        assert!((t.interval_spread().unwrap() - 1.5).abs() < 1e-9);
    }
}
