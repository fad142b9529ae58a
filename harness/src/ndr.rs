//! The zero-loss search: NDR (no drop rate: the highest offered rate with no loss) and
//! PDR (partial drop rate: loss at most 0.5%), in the style of RFC 2544's binary search
//! and FD.io CSIT's MLRsearch. Short trials narrow the interval; a bound is final only
//! once a full-length trial at it passed (a full trial that fails makes it the new upper
//! bound and the search goes on below it). Every trial is kept.
//!
//! [`search`] is pure: it asks a closure for each trial and decides on the results alone,
//! so its logic is tested against simulated paths. [`run`] drives it with a probe that
//! takes a `rate` parameter, records every trial as a row, the final bounds, and latency
//! at no load and at 10/50/90% of the PDR.

use std::time::Duration;

use probe_api::throughput::PDR_LOSS_RATIO;
use probe_api::{Budget, Metric, Point, Throughput};

use crate::config::Job;
use crate::runner::{self, Outcome};
use crate::store::{Status, SummaryRow};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Short,
    Full,
}

/// What one trial at an offered rate found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Found {
    pub loss_ratio: f64,
    /// Received rate, Mpps.
    pub mpps: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trial {
    pub rate_mpps: f64,
    pub kind: Kind,
    pub found: Found,
}

#[derive(Clone, Copy, Debug)]
pub struct SearchConfig {
    /// The highest rate the search may offer (what the generator reaches at `max`).
    pub max_mpps: f64,
    /// Below this the search gives up: no rate of interest passes.
    pub min_mpps: f64,
    /// The search ends when (upper - lower) / upper is at most this.
    pub precision: f64,
    /// A cap on trials per target, so a path whose loss flips at random still ends.
    pub max_trials: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig { max_mpps: 100.0, min_mpps: 0.01, precision: 0.02, max_trials: 24 }
    }
}

/// Final bounds for one loss target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bound {
    /// The highest rate a full trial passed at (None: not even `min_mpps` passed).
    pub lower: Option<f64>,
    /// The lowest rate any trial failed at (None: `max_mpps` passed).
    pub upper: Option<f64>,
    /// The search met its precision (false: it hit the trial cap).
    pub converged: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SearchResult {
    pub trials: Vec<Trial>,
    pub ndr: Bound,
    pub pdr: Bound,
}

fn passes(t: &Trial, loss: f64) -> bool {
    t.found.loss_ratio <= loss
}

/// The tightest interval the trials so far give for `loss`: the lowest failing rate
/// (any trial) and the highest passing rate below it (only full trials once `full_only`),
/// with whether a full trial passed there.
fn interval(trials: &[Trial], loss: f64, full_only: bool) -> (Option<f64>, Option<(f64, bool)>) {
    let upper = trials.iter().filter(|t| !passes(t, loss)).map(|t| t.rate_mpps).min_by(f64::total_cmp);
    let below = |r: f64| upper.is_none() || upper.is_some_and(|u| r < u);
    let lower = trials
        .iter()
        .filter(|t| passes(t, loss) && below(t.rate_mpps) && (!full_only || t.kind == Kind::Full))
        .map(|t| t.rate_mpps)
        .max_by(f64::total_cmp);
    let full = lower.map(|l| (l, trials.iter().any(|t| t.rate_mpps == l && t.kind == Kind::Full && passes(t, loss))));
    (upper, full)
}

/// Searches one loss target, adding trials to `trials`. Short trials narrow the interval
/// until a full trial refutes one: from then on (MLRsearch's final phase) only full trials
/// count as passes and only full trials are run, so a rate a short burst sustains but a
/// long trial does not can never become the bound.
fn find<E>(
    cfg: &SearchConfig,
    loss: f64,
    trials: &mut Vec<Trial>,
    trial: &mut impl FnMut(f64, Kind) -> Result<Found, E>,
) -> Result<Bound, E> {
    let full_failed = |trials: &[Trial]| trials.iter().any(|t| t.kind == Kind::Full && !passes(t, loss));
    for _ in 0..cfg.max_trials {
        let full_only = full_failed(trials);
        let narrow = if full_only { Kind::Full } else { Kind::Short };
        let (upper, lower) = interval(trials, loss, full_only);
        let next = match (upper, lower) {
            // Nothing failed: confirm the top with a full trial, then stop.
            (None, Some((l, true))) => return Ok(Bound { lower: Some(l), upper: None, converged: true }),
            (None, Some((l, false))) => (l, Kind::Full),
            (None, None) => (cfg.max_mpps, narrow),
            (Some(u), None) => {
                if u <= cfg.min_mpps {
                    return Ok(Bound { lower: None, upper: Some(u), converged: true });
                }
                // Below the lowest failure, aim just under what came out of it (the
                // path's own forwarding rate), at least a quarter lower each time.
                let failed =
                    trials.iter().filter(|t| t.rate_mpps == u).map(|t| t.found.mpps).fold(f64::INFINITY, f64::min);
                ((failed * (1.0 - loss) * 0.99).min(u * 0.75).max(cfg.min_mpps), narrow)
            }
            (Some(u), Some((l, full))) => {
                if (u - l) / u <= cfg.precision {
                    if full {
                        return Ok(Bound { lower: Some(l), upper: Some(u), converged: true });
                    }
                    (l, Kind::Full)
                } else {
                    ((l + u) / 2.0, narrow)
                }
            }
        };
        let found = trial(next.0, next.1)?;
        trials.push(Trial { rate_mpps: next.0, kind: next.1, found });
    }
    let (upper, lower) = interval(trials, loss, true);
    Ok(Bound { lower: lower.filter(|l| l.1).map(|l| l.0), upper, converged: false })
}

/// NDR then PDR; the PDR search starts from every trial the NDR search made.
pub fn search<E>(
    cfg: &SearchConfig,
    seed: Vec<Trial>,
    mut trial: impl FnMut(f64, Kind) -> Result<Found, E>,
) -> Result<SearchResult, E> {
    let mut trials = seed;
    let ndr = find(cfg, 0.0, &mut trials, &mut trial)?;
    let pdr = find(cfg, PDR_LOSS_RATIO, &mut trials, &mut trial)?;
    Ok(SearchResult { trials, ndr, pdr })
}

/// Where latency is measured after the search: no load (the search's minimum rate) and
/// 10/50/90% of the PDR, as CSIT does.
pub fn latency_rates(cfg: &SearchConfig, pdr: f64) -> Vec<(&'static str, f64)> {
    vec![
        ("latency@noload", cfg.min_mpps),
        ("latency@10%pdr", (pdr * 0.1).max(cfg.min_mpps)),
        ("latency@50%pdr", (pdr * 0.5).max(cfg.min_mpps)),
        ("latency@90%pdr", (pdr * 0.9).max(cfg.min_mpps)),
    ]
}

/// Trial lengths of a search.
#[derive(Clone, Copy, Debug)]
pub struct Durations {
    pub short: Duration,
    pub full: Duration,
}

impl Durations {
    /// Full trials of `full`, short ones a tenth of that (at least 50 ms).
    pub fn from_full(full: Duration) -> Durations {
        Durations { short: (full / 10).max(Duration::from_millis(50)), full }
    }
}

fn rate_text(mpps: f64) -> String {
    // Enough digits that neighbouring trials differ; no float noise in the params.
    format!("{:.4}", mpps).trim_end_matches('0').trim_end_matches('.').to_string()
}

fn point_at(point: &Point, rate: &str) -> Point {
    point.clone().with("rate", rate)
}

fn point_without_rate(point: &Point) -> Point {
    let mut p = point.clone();
    p.0.remove("rate");
    p
}

fn budget_for(budget: &Budget, d: Duration) -> Budget {
    let mut b = budget.clone();
    b.duration = Some(d);
    b.iterations = probe_api::limits::MAX_ITERATIONS;
    b
}

/// What a trial row found. The loss ratio is taken from the row's counters (through
/// `Throughput::loss_ratio`, its one definition), not from the `loss_ratio` metric, whose
/// four decimals read 5 drops in 160,000 as no loss and 0.50276% as 0.5%.
fn found_of(row: &SummaryRow) -> Option<Found> {
    let counters = Throughput {
        sent: row.sent?,
        received: row.received?,
        dropped: row.dropped?,
        corrupted: row.metric("corrupted")? as u64,
        ..Throughput::default()
    };
    Some(Found { loss_ratio: counters.loss_ratio(), mpps: row.mpps? })
}

/// Runs the search for one job and returns every row it made, in order: the trials, the
/// NDR and PDR rows, then the latency rows. `on_row` sees each as it is made (progress).
pub fn run(job: &Job<'_>, host_khz: u64, durations: Durations, mut on_row: impl FnMut(&Outcome)) -> Vec<Outcome> {
    let probe = job.probe;
    let base = point_without_rate(&job.point);
    let method = job.budget.method.label();
    let bare = |variant: &str, status: Status| {
        let mut row = SummaryRow::without_samples(probe.name(), &base.to_string(), status, &method);
        row.variant = variant.into();
        Outcome { row, histogram: None }
    };
    if !probe.param_keys().iter().any(|k| k == "rate") {
        return vec![bare(
            "ndr",
            Status::Unsupported(format!(
                "the zero-loss search needs a probe with a `rate` parameter; {} has none",
                probe.name()
            )),
        )];
    }
    let mut out: Vec<Outcome> = Vec::new();
    let mut n = 0;
    let mut measure = |rate: &str, kind: Kind, out: &mut Vec<Outcome>| -> Result<Found, String> {
        n += 1;
        let d = if kind == Kind::Full { durations.full } else { durations.short };
        let mut o = runner::run_point(probe, &point_at(&job.point, rate), &budget_for(&job.budget, d), host_khz);
        o.row.variant = format!("ndr-trial-{n:02}-{}", if kind == Kind::Full { "full" } else { "short" });
        on_row(&o);
        let f = if o.row.status.is_ok() && o.row.partial.is_empty() { found_of(&o.row) } else { None };
        let why = format!(
            "trial {n} at rate={rate}: {}{}",
            o.row.status,
            if o.row.partial.is_empty() { String::new() } else { format!(" (partial: {})", o.row.partial) }
        );
        out.push(o);
        f.ok_or(why)
    };
    // The top of the range: what the generator reaches when it is not paced.
    let top = match measure("max", Kind::Short, &mut out) {
        Ok(f) => f,
        Err(why) => {
            out.push(bare("ndr", Status::Failed(format!("search not started: {why}"))));
            return out;
        }
    };
    let achieved = out.last().and_then(|o| o.row.metric("achieved_offered_mpps")).unwrap_or(top.mpps);
    let cfg = SearchConfig { max_mpps: achieved.max(top.mpps), ..SearchConfig::default() };
    let result = search(&cfg, Vec::new(), |rate, kind| measure(&rate_text(rate), kind, &mut out));
    let result = match result {
        Ok(r) => r,
        Err(why) => {
            out.push(bare("ndr", Status::Failed(format!("search stopped: {why}"))));
            return out;
        }
    };
    let mut pdr_rate = None;
    for (name, bound) in [("ndr", result.ndr), ("pdr", result.pdr)] {
        let Some(lower) = bound.lower else {
            let why = if bound.converged {
                format!("no rate down to {} Mpps passed {name}'s loss limit", cfg.min_mpps)
            } else {
                format!("no full trial passed {name}'s loss limit within {} trials (loss varies from trial to trial: a loaded machine?)", cfg.max_trials)
            };
            out.push(bare(name, Status::Failed(why)));
            continue;
        };
        // The confirming full trial at the lower bound is this bound's row.
        let text = rate_text(lower);
        let confirming = out
            .iter()
            .rev()
            .find(|o| o.row.variant.ends_with("-full") && o.row.params == point_at(&job.point, &text).to_string());
        let Some(c) = confirming else {
            out.push(bare(name, Status::Failed(format!("no full trial recorded at the {name} bound {text} Mpps"))));
            continue;
        };
        let mut row = c.row.clone();
        row.params = base.to_string();
        row.variant = name.into();
        let mut extra = vec![Metric::new("bound_lower_mpps", lower, "Mpps")];
        if let Some(u) = bound.upper {
            extra.push(Metric::new("bound_upper_mpps", u, "Mpps"));
        }
        extra.push(Metric::new("trials", result.trials.len() as f64 + 1.0, "trials"));
        let extra: Vec<String> = extra.iter().map(|m| format!("{}={} {}", m.name, m.value, m.unit)).collect();
        row.metrics =
            if row.metrics.is_empty() { extra.join("; ") } else { format!("{}; {}", row.metrics, extra.join("; ")) };
        if !bound.converged {
            row.notes = format!(
                "{}{}search hit its trial cap before {}% precision",
                row.notes,
                if row.notes.is_empty() { "" } else { "; " },
                cfg.precision * 100.0
            );
        }
        let o = Outcome { row, histogram: c.histogram.clone() };
        on_row(&o);
        out.push(o);
        if name == "pdr" {
            pdr_rate = Some(lower);
        }
    }
    if let Some(pdr) = pdr_rate {
        for (name, rate) in latency_rates(&cfg, pdr) {
            let mut o = runner::run_point(
                probe,
                &point_at(&job.point, &rate_text(rate)),
                &budget_for(&job.budget, durations.full),
                host_khz,
            );
            o.row.params = base.to_string();
            o.row.variant = name.into();
            o.row.metrics = format!("{}; pdr_mpps={} Mpps", o.row.metrics, pdr);
            on_row(&o);
            out.push(o);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated path: lossless up to `capacity`, then it delivers `capacity` and drops
    /// the rest; short trials see `short_bonus` more capacity (a burst a long trial does
    /// not sustain).
    fn path(capacity: f64, short_bonus: f64) -> impl FnMut(f64, Kind) -> Result<Found, String> {
        move |rate, kind| {
            let c = if kind == Kind::Short { capacity * (1.0 + short_bonus) } else { capacity };
            let delivered = rate.min(c);
            Ok(Found { loss_ratio: (rate - delivered) / rate, mpps: delivered })
        }
    }

    fn cfg(max: f64) -> SearchConfig {
        SearchConfig { max_mpps: max, ..SearchConfig::default() }
    }

    #[test]
    fn ndr_converges_onto_the_capacity_within_precision() {
        let r = search(&cfg(40.0), Vec::new(), path(12.0, 0.0)).unwrap();
        let (l, u) = (r.ndr.lower.unwrap(), r.ndr.upper.unwrap());
        assert!(l <= 12.0 && u > 12.0 && (u - l) / u <= 0.02, "{:?}", r.ndr);
        assert!(r.ndr.converged && r.pdr.converged);
        // PDR allows 0.5% loss: it sits at or above NDR, within 0.5% + precision above capacity.
        let p = r.pdr.lower.unwrap();
        assert!(p >= l && p <= 12.0 / (1.0 - PDR_LOSS_RATIO) * 1.0001, "{:?}", r.pdr);
        // Every bound was confirmed by a full trial that passed.
        for (b, loss) in [(r.ndr, 0.0), (r.pdr, PDR_LOSS_RATIO)] {
            assert!(r
                .trials
                .iter()
                .any(|t| t.kind == Kind::Full && t.rate_mpps == b.lower.unwrap() && t.found.loss_ratio <= loss));
        }
        assert!(r.trials.len() < 30, "{} trials", r.trials.len());
    }

    #[test]
    fn a_short_trial_pass_that_a_full_trial_refutes_moves_the_bound_down() {
        // Short trials see 10% more capacity: the first candidate fails its full trial.
        let r = search(&cfg(40.0), Vec::new(), path(10.0, 0.10)).unwrap();
        let l = r.ndr.lower.unwrap();
        assert!(l <= 10.0, "a bound above the sustained capacity: {:?}", r.ndr);
        assert!(
            r.trials.iter().any(|t| t.kind == Kind::Full && t.found.loss_ratio > 0.0),
            "a refuted full trial is kept"
        );
    }

    #[test]
    fn a_path_that_never_loses_ends_at_the_top() {
        let r = search(&cfg(5.0), Vec::new(), path(100.0, 0.0)).unwrap();
        assert_eq!(r.ndr, Bound { lower: Some(5.0), upper: None, converged: true });
        assert_eq!(r.trials.len(), 2, "one short, one full at the top: {:?}", r.trials);
    }

    #[test]
    fn a_path_that_always_loses_has_no_lower_bound() {
        let always = |rate: f64, _| Ok::<_, String>(Found { loss_ratio: 0.5, mpps: rate / 2.0 });
        let r = search(&cfg(10.0), Vec::new(), always).unwrap();
        assert_eq!(r.ndr.lower, None);
        assert_eq!(r.pdr.lower, None);
        assert!(r.trials.iter().any(|t| t.rate_mpps <= SearchConfig::default().min_mpps));
    }

    #[test]
    fn a_flapping_path_stops_at_the_trial_cap() {
        let mut k = 0u32;
        let flaps = move |rate: f64, _| {
            k += 1;
            Ok::<_, String>(Found { loss_ratio: if k & 1 == 0 { 0.0 } else { 0.2 }, mpps: rate })
        };
        let c = SearchConfig { max_trials: 8, ..cfg(10.0) };
        let r = search(&c, Vec::new(), flaps).unwrap();
        assert!(r.trials.len() <= 16, "{}", r.trials.len());
    }

    #[test]
    fn a_failing_trial_ends_the_search_with_its_error() {
        let e = search(&cfg(10.0), Vec::new(), |_, _| Err::<Found, _>("probe broke".to_string())).unwrap_err();
        assert_eq!(e, "probe broke");
    }

    #[test]
    fn a_trial_is_judged_on_its_counters_not_the_rounded_metric() {
        let trial = |sent: u64, dropped: u64, corrupted: u64, loss_text: &str| {
            let mut r = SummaryRow::without_samples("path.x", "rate=1", Status::Ok, "per-op");
            (r.mpps, r.sent, r.received, r.dropped) = (Some(1.0), Some(sent), Some(sent - dropped), Some(dropped));
            r.metrics = format!("loss_ratio={loss_text} ratio; corrupted={corrupted} packets");
            found_of(&r).unwrap()
        };
        // 5 drops in 163,000 print as 0.0000: still a loss, so no NDR pass.
        let f = trial(163_000, 5, 0, "0.0000");
        assert!(f.loss_ratio > 0.0, "{f:?}");
        // 0.50276% prints as 0.0050: above the PDR limit.
        assert!(trial(1_000_000, 5028, 0, "0.0050").loss_ratio > PDR_LOSS_RATIO);
        // Corrupted frames count as lost.
        assert_eq!(trial(1000, 0, 10, "0.0100").loss_ratio, 0.01);
        assert_eq!(trial(1000, 0, 0, "0").loss_ratio, 0.0);
    }

    #[test]
    fn latency_points_are_fractions_of_the_pdr() {
        let l = latency_rates(&SearchConfig::default(), 10.0);
        assert_eq!(l.iter().map(|x| x.1).collect::<Vec<_>>(), vec![0.01, 1.0, 5.0, 9.0]);
        assert_eq!(rate_text(1.0), "1");
        assert_eq!(rate_text(12.345678), "12.3457");
        let d = Durations::from_full(Duration::from_secs(1));
        assert_eq!(d.short, Duration::from_millis(100));
    }
}
