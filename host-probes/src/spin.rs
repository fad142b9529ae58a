//! `host.spin`: spins until `cycles` TSC cycles have passed. Its true cost is known in
//! advance, so it checks the harness end to end (the figure must come out at `cycles`),
//! and it is the regression gate's test subject: `IVBENCH_SPIN_SCALE=2` (test-only)
//! makes it deliberately twice as slow, a regression the gate must catch, while repeated
//! unchanged runs must never be flagged.

use probe_api::tsc::rdtsc;
use probe_api::{Budget, Methods, Point, Probe, ProbeError, Samples, Support};

use crate::pinning::PinnedHere;
use crate::sampling;

pub struct Spin;

/// The environment variable of the deliberate slow-down, for the gate's tests.
pub const SCALE_VAR: &str = "IVBENCH_SPIN_SCALE";
const DEFAULT_CYCLES: u64 = 2_000;
const MAX_CYCLES: u64 = 1 << 32;

#[inline(always)]
fn spin(cycles: u64) {
    let t0 = rdtsc();
    while rdtsc().wrapping_sub(t0) < cycles {
        std::hint::spin_loop();
    }
}

/// The slow-down factor asked for, if any: 1.0 when unset.
fn scale() -> Result<f64, ProbeError> {
    match std::env::var(SCALE_VAR) {
        Err(_) => Ok(1.0),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 && x <= 1000.0 => Ok(x),
            _ => Err(ProbeError::Failed(format!("{SCALE_VAR}={v:?} is not a factor in (0, 1000]"))),
        },
    }
}

impl Probe for Spin {
    fn name(&self) -> &'static str {
        "host.spin"
    }
    fn description(&self) -> &'static str {
        "spin until `cycles` TSC cycles have passed: a cost known in advance (checks the harness; the regression gate's test subject)"
    }
    fn group(&self) -> &'static str {
        "calibration"
    }
    fn support(&self) -> Support {
        Support::Supported
    }
    fn methods(&self) -> Methods {
        Methods::Both
    }
    fn points(&self) -> Vec<Point> {
        vec![Point::none().with("cycles", DEFAULT_CYCLES)]
    }
    fn run(&self, point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
        let asked = match point.get("cycles") {
            None => DEFAULT_CYCLES,
            Some(v) => v.parse().ok().filter(|c| (1..=MAX_CYCLES).contains(c)).ok_or_else(|| {
                ProbeError::Failed(format!("host.spin: cycles={v} is not a whole number in 1..={MAX_CYCLES}"))
            })?,
        };
        let scale = scale()?;
        let cycles = ((asked as f64) * scale).round() as u64;
        let _pin = PinnedHere::measuring_thread(budget)?;
        let recorded = sampling::record(budget, Methods::Both, self.name(), || {
            spin(cycles);
            Ok(())
        })?;
        let mut s = recorded.into_samples(sampling::HOST_CLOCK);
        if scale != 1.0 {
            s.notes.push(format!("deliberately slowed: {SCALE_VAR}={scale} spins {cycles} cycles where {asked} were asked for"));
        }
        Ok(s)
    }
}
