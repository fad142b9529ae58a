//! The ranges every budget number must lie in, checked where a number is parsed (the
//! command line and the sweep config) so that a typo is an exit-2 message, never an
//! abort, an out-of-memory kill or a backtrace. One definition for both parsers.

use std::time::Duration;

/// Samples per point. A sample is 8 bytes while it is measured, so this caps a point's
/// sample buffer at 800 MB; buffers grow with what is measured, never up front.
pub const MAX_ITERATIONS: u64 = 100_000_000;
/// Operations per timestamp pair (`--batch`): beyond this one sample would take seconds
/// and the figure is a mean over a window, not a per-operation cost.
pub const MAX_BATCH: u32 = 1_000_000;
/// The longest a point may run (`--timeout`, `timeout_s`): one day.
pub const MAX_TIMEOUT_S: u64 = 86_400;
/// The longest wall-clock duration a point may be asked for (`--duration`): one day.
pub const MAX_DURATION_S: f64 = 86_400.0;

pub fn iterations(n: u64) -> Result<u64, String> {
    if n == 0 || n > MAX_ITERATIONS {
        return Err(format!(
            "iterations must be 1..={MAX_ITERATIONS} (one sample is kept in memory per iteration), got {n}"
        ));
    }
    Ok(n)
}

pub fn batch(n: u64) -> Result<u32, String> {
    if n == 0 || n > u64::from(MAX_BATCH) {
        return Err(format!("batch must be 1..={MAX_BATCH} operations per timestamp pair, got {n}"));
    }
    Ok(n as u32)
}

pub fn timeout_s(s: u64) -> Result<Duration, String> {
    if s == 0 || s > MAX_TIMEOUT_S {
        return Err(format!("timeout must be 1..={MAX_TIMEOUT_S} seconds, got {s}"));
    }
    Ok(Duration::from_secs(s))
}

pub fn duration_s(s: f64) -> Result<Duration, String> {
    if !s.is_finite() || s <= 0.0 || s > MAX_DURATION_S {
        return Err(format!("duration must be a number of seconds in (0, {MAX_DURATION_S}], got {s}"));
    }
    Ok(Duration::from_secs_f64(s))
}

/// A CPU number the affinity calls can express. Whether this process may run there is a
/// question for the machine (`cpu::allowed_cpus`), asked by the caller.
pub fn cpu(c: usize) -> Result<usize, String> {
    let size = libc::CPU_SETSIZE as usize;
    if c >= size {
        return Err(format!("cpu {c} is beyond the affinity mask (CPUs 0..{size})"));
    }
    Ok(c)
}

/// Parses an unsigned decimal with a range check, for the command line: the message says
/// the range rather than "number too large to fit in target type".
pub fn parse_u64(text: &str, check: impl Fn(u64) -> Result<u64, String>) -> Result<u64, String> {
    let t = text.trim().replace('_', "");
    let n: u64 = t.parse().map_err(|_| format!("`{text}` is not a whole number"))?;
    check(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_has_both_edges() {
        assert!(iterations(0).is_err());
        assert_eq!(iterations(1), Ok(1));
        assert_eq!(iterations(MAX_ITERATIONS), Ok(MAX_ITERATIONS));
        assert!(iterations(MAX_ITERATIONS + 1).is_err());
        assert!(iterations(u64::MAX).is_err());
        assert!(batch(0).is_err());
        assert_eq!(batch(u64::from(MAX_BATCH)), Ok(MAX_BATCH));
        assert!(batch(u64::from(MAX_BATCH) + 1).is_err());
        assert!(batch(u64::MAX).is_err());
        assert!(timeout_s(0).is_err());
        assert!(timeout_s(u64::MAX).is_err());
        assert_eq!(timeout_s(5), Ok(Duration::from_secs(5)));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 0.0, 1e300] {
            assert!(duration_s(bad).is_err(), "{bad}");
        }
        assert_eq!(duration_s(0.5), Ok(Duration::from_millis(500)));
        assert!(cpu(libc::CPU_SETSIZE as usize).is_err());
        assert!(cpu(usize::MAX).is_err());
        assert_eq!(cpu(1), Ok(1));
    }

    #[test]
    fn parse_u64_names_the_text() {
        assert_eq!(parse_u64("1_000", iterations), Ok(1000));
        assert!(parse_u64("18446744073709551616", iterations).unwrap_err().contains("not a whole number"));
        assert!(parse_u64("-3", iterations).unwrap_err().contains("`-3`"));
        assert!(parse_u64("18446744073709551615", iterations).unwrap_err().contains("1..="));
    }
}
