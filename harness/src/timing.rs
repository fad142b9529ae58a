//! How fast the TSC ticks, and how sure we are of it.
//!
//! Every probe returns raw TSC cycles; this rate is what turns them into nanoseconds, so a
//! wrong figure here silently scales every result. The rate is therefore taken from the most
//! authoritative source available and cross-checked against a short calibration, and every
//! doubt is written into `notes` so that it ends up in the run manifest.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use probe_api::tsc::rdtsc_serialized;
use serde::{Deserialize, Serialize};

/// Where [`TscInfo::khz`] came from, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TscSource {
    /// The rate KVM gives a fresh vCPU: by default the kernel's own `tsc_khz`, i.e. the
    /// figure the host kernel itself converts TSC cycles with.
    KvmGetTscKhz,
    /// Crystal clock × ratio: exact when the CPU (or hypervisor) enumerates it.
    Cpuid15h,
    /// Nominal base frequency in MHz: only 1 MHz resolution, and only equal to the TSC
    /// rate on parts where the TSC runs at base frequency.
    Cpuid16h,
    /// `tsc_freq_khz` in sysfs, exported by some kernels.
    KernelTscKhz,
    /// rdtsc against CLOCK_MONOTONIC; the last resort.
    Calibrated,
}

impl fmt::Display for TscSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TscSource::KvmGetTscKhz => "KVM_GET_TSC_KHZ",
            TscSource::Cpuid15h => "CPUID 0x15",
            TscSource::Cpuid16h => "CPUID 0x16",
            TscSource::KernelTscKhz => "sysfs tsc_freq_khz",
            TscSource::Calibrated => "calibrated against CLOCK_MONOTONIC",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TscInfo {
    pub khz: u64,
    pub source: TscSource,
    /// CPUID 0x80000007 EDX bit 8.
    pub invariant: bool,
    /// `constant_tsc` in /proc/cpuinfo flags.
    pub constant_tsc: bool,
    /// `nonstop_tsc` in /proc/cpuinfo flags.
    pub nonstop_tsc: bool,
    /// The cross-check calibration; None only if it could not be taken at all.
    pub calibrated_khz: Option<u64>,
    pub notes: Vec<String>,
}

/// A disagreement above this between the chosen source and the calibration is reported.
const DISAGREEMENT_NOTE: f64 = 0.01;

/// Detects the TSC rate once per process; later calls return the cached result, because
/// creating a VM and calibrating costs tens of milliseconds.
pub fn detect_tsc() -> TscInfo {
    static CACHE: OnceLock<TscInfo> = OnceLock::new();
    CACHE.get_or_init(detect_uncached).clone()
}

fn detect_uncached() -> TscInfo {
    let mut notes = Vec::new();

    let cpuid = raw_cpuid::CpuId::new();
    let invariant = cpuid.get_advanced_power_mgmt_info().map(|apm| apm.has_invariant_tsc()).unwrap_or(false);
    let flags = cpuinfo_flags();
    let constant_tsc = flags.iter().any(|f| f == "constant_tsc");
    let nonstop_tsc = flags.iter().any(|f| f == "nonstop_tsc");

    let mut candidates: Vec<(TscSource, u64)> = Vec::new();
    match kvm_tsc_khz() {
        Ok(khz) if khz > 0 => candidates.push((TscSource::KvmGetTscKhz, khz)),
        Ok(_) => notes.push("KVM_GET_TSC_KHZ returned 0".into()),
        Err(e) => notes.push(format!("KVM_GET_TSC_KHZ unavailable: {e}")),
    }
    match cpuid.get_tsc_info() {
        Some(info) => match info.tsc_frequency() {
            Some(hz) if hz >= 1000 => candidates.push((TscSource::Cpuid15h, hz / 1000)),
            _ => notes.push(format!(
                "CPUID 0x15 does not enumerate the TSC rate (crystal {} Hz, ratio {}/{})",
                info.nominal_frequency(),
                info.numerator(),
                info.denominator()
            )),
        },
        None => notes.push("CPUID 0x15 not supported".into()),
    }
    // The kernel's figure ranks above 0x16: it is what the kernel itself converts with,
    // whereas 0x16 is a nominal base frequency rounded to whole MHz.
    if let Some(khz) = sysfs_tsc_khz() {
        candidates.push((TscSource::KernelTscKhz, khz));
    }
    match cpuid.get_processor_frequency_info() {
        Some(info) if info.processor_base_frequency() > 0 => {
            candidates.push((TscSource::Cpuid16h, info.processor_base_frequency() as u64 * 1000))
        }
        Some(_) => notes.push("CPUID 0x16 reports a base frequency of 0".into()),
        None => notes.push("CPUID 0x16 not supported".into()),
    }

    let chosen = candidates.first().copied();
    // With nothing to cross-check against, the calibration is the result and gets more time.
    let calibration = if chosen.is_some() {
        calibrate(3, Duration::from_millis(10))
    } else {
        calibrate(5, Duration::from_millis(20))
    };
    let calibrated_khz = match &calibration {
        Ok(k) => Some(*k),
        Err(e) => {
            notes.push(format!("calibration failed: {e}"));
            None
        }
    };

    let (source, khz) = match (chosen, calibrated_khz) {
        (Some(c), _) => c,
        (None, Some(k)) => (TscSource::Calibrated, k),
        (None, None) => {
            notes.push("WARNING: no TSC rate could be determined; cycle-to-ns conversion is impossible".into());
            (TscSource::Calibrated, 0)
        }
    };

    if let (Some(cal), true) = (calibrated_khz, source != TscSource::Calibrated) {
        let rel = (cal as f64 - khz as f64) / khz as f64;
        if rel.abs() > DISAGREEMENT_NOTE {
            notes.push(format!("{source} says {khz} kHz but calibration measured {cal} kHz ({:+.2}%)", rel * 100.0));
        }
    }
    for &(other, other_khz) in candidates.iter().skip(1) {
        let rel = (other_khz as f64 - khz as f64) / khz as f64;
        if rel.abs() > DISAGREEMENT_NOTE {
            notes.push(format!("{other} says {other_khz} kHz ({:+.2}% from {source})", rel * 100.0));
        }
    }

    if current_clocksource().as_deref() == Some("tsc") {
        // CLOCK_MONOTONIC is then computed from the TSC with the kernel's own rate, so the
        // calibration only confirms the kernel's figure, it is no independent reference.
        notes.push("clocksource is tsc: the calibration checks the kernel's TSC rate, not an independent clock".into());
    }
    if !invariant {
        notes.push(
            "WARNING: TSC NOT INVARIANT (CPUID 0x80000007 EDX[8] clear): its rate may change with \
             P-/C-states, so cycle counts may not convert to time"
                .into(),
        );
    }
    if !(constant_tsc && nonstop_tsc) {
        notes.push(format!(
            "WARNING: /proc/cpuinfo lacks {}{}",
            if constant_tsc { "" } else { "constant_tsc " },
            if nonstop_tsc { "" } else { "nonstop_tsc" }
        ));
    }

    TscInfo { khz, source, invariant, constant_tsc, nonstop_tsc, calibrated_khz, notes }
}

fn kvm_tsc_khz() -> Result<u64, String> {
    guest_probes::vmm::host().tsc_khz()
}

fn sysfs_tsc_khz() -> Option<u64> {
    std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&k| k > 0)
}

pub(crate) fn current_clocksource() -> Option<String> {
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Flags of the first processor in /proc/cpuinfo; empty when unreadable.
pub(crate) fn cpuinfo_flags() -> Vec<String> {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("flags"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.split_whitespace().map(str::to_string).collect())
        })
        .unwrap_or_default()
}

fn monotonic_ns() -> Option<u128> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128)
}

/// One (tsc, ns) reference point. The clock read is bracketed by two TSC reads and the
/// tightest of several brackets is kept, so that an interrupt or preemption between the
/// reads cannot shift the pair.
fn reference_point() -> Option<(u64, u128)> {
    let mut best: Option<(u64, u64, u128)> = None; // (width, tsc midpoint, ns)
    for _ in 0..32 {
        let t0 = rdtsc_serialized();
        let ns = monotonic_ns()?;
        let t1 = rdtsc_serialized();
        let width = t1.wrapping_sub(t0);
        if t1 < t0 {
            continue;
        }
        if !matches!(best, Some((w, _, _)) if w <= width) {
            best = Some((width, t0 + width / 2, ns));
        }
    }
    best.map(|(_, tsc, ns)| (tsc, ns))
}

/// Median over `rounds` windows of `window` each. A window may straddle a migration or a
/// long preemption; the median discards such outliers without having to detect them.
fn calibrate(rounds: usize, window: Duration) -> Result<u64, String> {
    let mut rates = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (tsc0, ns0) = reference_point().ok_or("clock_gettime(CLOCK_MONOTONIC) failed")?;
        std::thread::sleep(window);
        let (tsc1, ns1) = reference_point().ok_or("clock_gettime(CLOCK_MONOTONIC) failed")?;
        if tsc1 <= tsc0 || ns1 <= ns0 {
            // The TSC went backwards (unsynchronized across CPUs after a migration).
            continue;
        }
        let khz = (tsc1 - tsc0) as f64 * 1e6 / (ns1 - ns0) as f64;
        rates.push(khz);
    }
    if rates.is_empty() {
        return Err("the TSC never advanced monotonically across a calibration window".into());
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    Ok(rates[rates.len() / 2].round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_display_names() {
        assert_eq!(TscSource::KvmGetTscKhz.to_string(), "KVM_GET_TSC_KHZ");
        assert_eq!(TscSource::Cpuid15h.to_string(), "CPUID 0x15");
        assert_eq!(TscSource::Cpuid16h.to_string(), "CPUID 0x16");
    }

    #[test]
    fn calibration_is_positive_and_repeatable() {
        let a = calibrate(3, Duration::from_millis(10)).unwrap();
        let b = calibrate(3, Duration::from_millis(10)).unwrap();
        assert!(a > 0);
        let rel = (a as f64 - b as f64).abs() / a as f64;
        assert!(rel < 0.05, "two calibrations differ by {:.2}%: {a} vs {b}", rel * 100.0);
    }
}
