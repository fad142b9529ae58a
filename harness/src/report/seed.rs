//! The 2014 figures the project is measured against, and the "seed table" that sets this
//! run's measurements beside them.
//!
//! Source of every constant here: the 2014 Intel talk on fast inter-VM communication on
//! KVM (the project's seed text). Its cycle counts are "TSC Cycles (Haswell 3.2GHz),
//! Round Trip", Intel internal measurements; its ns figures are the talk's own roundings.

use crate::stats::cycles_to_ns;
use crate::store::{Status, SummaryRow};

/// Time budget per 64-byte packet at 10GbE line rate: (64 B + 20 B preamble and
/// inter-frame gap) x 8 bit / 10 Gbit/s. The talk: "Recall 67.2ns, 16.8ns".
pub const BUDGET_10GBE_NS: f64 = 67.2;
/// The same at 40GbE.
pub const BUDGET_40GBE_NS: f64 = 16.8;

/// TSC frequency of the talk's Haswell, used only to show its ns roundings.
pub const SEED_TSC_GHZ: f64 = 3.2;

/// A figure from the talk: a cycle range (low == high for a single value) and the talk's
/// own ns rounding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeedFigure {
    pub cycles_low: f64,
    pub cycles_high: f64,
    pub ns_approx: f64,
}

impl SeedFigure {
    /// The single value a ratio is taken against: the middle of the talk's range.
    pub fn cycles_mid(&self) -> f64 {
        (self.cycles_low + self.cycles_high) / 2.0
    }

    pub fn label(&self) -> String {
        if self.cycles_low == self.cycles_high {
            format!("{:.0} cycles ≈ {:.0} ns", self.cycles_low, self.ns_approx)
        } else {
            format!("{:.0}-{:.0} cycles ≈ {:.0} ns", self.cycles_low, self.cycles_high, self.ns_approx)
        }
    }
}

/// "getppid() in VM: 1300 (≈ 400ns)".
pub const SEED_GETPPID_IN_VM: SeedFigure = SeedFigure { cycles_low: 1300.0, cycles_high: 1300.0, ns_approx: 400.0 };
/// "Null Hypercall: 1500-1600 (≈ 500ns)".
pub const SEED_NULL_HYPERCALL: SeedFigure = SeedFigure { cycles_low: 1500.0, cycles_high: 1600.0, ns_approx: 500.0 };
/// "Cost of VMFUNC is about 150 TSC cycles (Haswell, 3.2 GHz) ... Around 50ns".
pub const SEED_VMFUNC: SeedFigure = SeedFigure { cycles_low: 150.0, cycles_high: 150.0, ns_approx: 50.0 };

/// One line of the seed table: which probe answers which question of the talk.
pub struct SeedSpec {
    pub operation: &'static str,
    pub probe: &'static str,
    pub seed: Option<SeedFigure>,
    /// Why the 2014 figure is shown on a row that measures something else.
    pub seed_note: &'static str,
}

pub const SEED_ROWS: &[SeedSpec] = &[
    SeedSpec { operation: "System call in VM (getppid)", probe: "vm.syscall.getppid", seed: Some(SEED_GETPPID_IN_VM), seed_note: "" },
    SeedSpec { operation: "System call on the host (getppid)", probe: "host.syscall.getppid", seed: None, seed_note: "" },
    SeedSpec { operation: "Null hypercall", probe: "vm.hypercall.null", seed: Some(SEED_NULL_HYPERCALL), seed_note: "" },
    SeedSpec { operation: "View switch: VMFUNC (EPTP switching)", probe: "vm.view.vmfunc", seed: Some(SEED_VMFUNC), seed_note: "" },
    SeedSpec {
        operation: "View switch: hypercall fallback",
        probe: "vm.view.hypercall",
        seed: Some(SEED_VMFUNC),
        seed_note: "2014 figure is VMFUNC's, the operation this fallback replaces",
    },
    SeedSpec { operation: "Wake-up: MONITOR/MWAIT", probe: "vm.notify.mwait", seed: None, seed_note: "" },
    SeedSpec { operation: "Wake-up: polling (PAUSE loop)", probe: "vm.notify.poll", seed: None, seed_note: "" },
    SeedSpec { operation: "Wake-up: polling between VMs", probe: "vm.notify.poll-intervm", seed: None, seed_note: "" },
    SeedSpec { operation: "Wake-up: HLT + interrupt", probe: "vm.notify.halt", seed: None, seed_note: "" },
    SeedSpec { operation: "Interrupt delivery: injection", probe: "vm.irq.inject", seed: None, seed_note: "" },
    SeedSpec { operation: "Interrupt delivery: IPI round trip", probe: "vm.ipi.roundtrip", seed: None, seed_note: "" },
];

/// Probes drawn in the budget chart: the seed table's, plus host operations a packet path
/// is built from. A `params` of `Some` picks one point (a 64-byte copy is one packet).
pub const BUDGET_PROBES: &[(&str, Option<&str>)] = &[
    ("host.syscall.getppid", None),
    ("host.memcpy", Some("size=64")),
    ("host.cacheline.roundtrip", None),
    ("host.futex.roundtrip", None),
    ("host.eventfd.roundtrip", None),
    ("vm.syscall.getppid", None),
    ("vm.hypercall.null", None),
    ("vm.view.vmfunc", None),
    ("vm.view.hypercall", None),
    ("vm.notify.mwait", None),
    ("vm.notify.poll", None),
    ("vm.notify.poll-intervm", None),
    ("vm.notify.halt", None),
    ("vm.irq.inject", None),
    ("vm.ipi.roundtrip", None),
];

/// The row that stands for `probe` in the seed table and budget chart: the talk's figures
/// are round trips of single operations, so a per-op ok row wins, then any ok row, then
/// whatever row exists (to show why it did not run).
pub fn pick_row<'a>(rows: &'a [SummaryRow], probe: &str, params: Option<&str>) -> Option<&'a SummaryRow> {
    let cands: Vec<&SummaryRow> = rows
        .iter()
        .filter(|r| {
            r.probe == probe
                && match params {
                    None => true,
                    Some(p) => r.params == p,
                }
        })
        .collect();
    cands
        .iter()
        .find(|r| r.status.is_ok() && r.method == "per-op")
        .or_else(|| cands.iter().find(|r| r.status.is_ok()))
        .or_else(|| cands.first())
        .copied()
}

/// What the seed table shows for one line.
#[derive(Clone, Debug, PartialEq)]
pub enum Measured {
    NotInRun,
    NotOk(Status),
    Ok { p50_cycles: f64, p99_cycles: f64, p50_ns: f64, p99_ns: f64, tsc_khz: u64, method: String, params: String },
}

pub struct SeedLine {
    pub operation: &'static str,
    pub probe: &'static str,
    pub seed: Option<SeedFigure>,
    pub seed_note: &'static str,
    pub measured: Measured,
}

impl SeedLine {
    /// Measured p50 cycles over the talk's cycles (middle of its range).
    pub fn ratio(&self) -> Option<f64> {
        match (&self.measured, self.seed) {
            (Measured::Ok { p50_cycles, .. }, Some(s)) => Some(p50_cycles / s.cycles_mid()),
            _ => None,
        }
    }

    /// Cores that would each have to spend one such operation per 64-byte packet to keep
    /// up with line rate: p50 / budget (the talk's "400/67.2 = 5.9").
    pub fn cores_needed(&self, budget_ns: f64) -> Option<f64> {
        match &self.measured {
            Measured::Ok { p50_ns, .. } => Some(p50_ns / budget_ns),
            _ => None,
        }
    }
}

pub fn seed_table(rows: &[SummaryRow]) -> Vec<SeedLine> {
    SEED_ROWS
        .iter()
        .map(|spec| {
            let measured = match pick_row(rows, spec.probe, None) {
                None => Measured::NotInRun,
                Some(r) if !r.status.is_ok() => Measured::NotOk(r.status.clone()),
                Some(r) => match (r.p50_cycles, r.p99_cycles) {
                    (Some(p50), Some(p99)) => Measured::Ok {
                        p50_cycles: p50,
                        p99_cycles: p99,
                        // Re-derived with this run's TSC rate through the one conversion.
                        p50_ns: cycles_to_ns(p50, r.tsc_khz),
                        p99_ns: cycles_to_ns(p99, r.tsc_khz),
                        tsc_khz: r.tsc_khz,
                        method: r.method.clone(),
                        params: r.params.clone(),
                    },
                    _ => Measured::NotOk(Status::Failed("row is ok but has no latency figures".into())),
                },
            };
            SeedLine { operation: spec.operation, probe: spec.probe, seed: spec.seed, seed_note: spec.seed_note, measured }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::CycleStats;

    fn ok_row(probe: &str, method: &str, p50: f64) -> SummaryRow {
        let c = CycleStats { count: 10, min: p50, p50, p90: p50, p99: p50 * 2.0, p999: p50 * 2.0, max: p50 * 2.0, mean: p50, stddev: 0.0 };
        SummaryRow::without_samples(probe, "", Status::Ok, method).with_stats(&c, 3_200_000)
    }

    #[test]
    fn budgets_follow_from_line_rate() {
        // 84 bytes on the wire per 64-byte frame.
        assert!((84.0 * 8.0 / 10.0 - BUDGET_10GBE_NS).abs() < 1e-9);
        assert!((84.0 * 8.0 / 40.0 - BUDGET_40GBE_NS).abs() < 1e-9);
    }

    #[test]
    fn seed_ns_roundings_match_the_talks_clock() {
        for s in [SEED_GETPPID_IN_VM, SEED_NULL_HYPERCALL, SEED_VMFUNC] {
            let ns = s.cycles_mid() / SEED_TSC_GHZ;
            assert!((ns - s.ns_approx).abs() / s.ns_approx < 0.1, "{ns} vs {}", s.ns_approx);
        }
    }

    #[test]
    fn the_talks_core_count_is_reproduced() {
        // A getppid measured exactly as in 2014 must give the talk's 400/67.2 = 5.9 cores.
        let rows = vec![ok_row("vm.syscall.getppid", "per-op", 1280.0)];
        let t = seed_table(&rows);
        let l = &t[0];
        assert_eq!(l.probe, "vm.syscall.getppid");
        assert!((l.cores_needed(BUDGET_10GBE_NS).unwrap() - 400.0 / 67.2).abs() < 0.01);
        assert!((l.ratio().unwrap() - 1280.0 / 1300.0).abs() < 1e-9);
    }

    #[test]
    fn per_op_rows_are_preferred_and_missing_probes_say_so() {
        let mut batched = ok_row("vm.hypercall.null", "batched/100", 10.0);
        batched.params = String::new();
        let rows = vec![batched, ok_row("vm.hypercall.null", "per-op", 1600.0)];
        let t = seed_table(&rows);
        let hc = t.iter().find(|l| l.probe == "vm.hypercall.null").unwrap();
        assert!(matches!(&hc.measured, Measured::Ok { method, .. } if method == "per-op"));
        let mwait = t.iter().find(|l| l.probe == "vm.notify.mwait").unwrap();
        assert_eq!(mwait.measured, Measured::NotInRun);
        assert!(mwait.ratio().is_none());
    }

    #[test]
    fn unsupported_rows_keep_their_reason() {
        let rows = vec![SummaryRow::without_samples("vm.view.vmfunc", "", Status::Unsupported("no VMFUNC".into()), "per-op")];
        let t = seed_table(&rows);
        let v = t.iter().find(|l| l.probe == "vm.view.vmfunc").unwrap();
        assert_eq!(v.measured, Measured::NotOk(Status::Unsupported("no VMFUNC".into())));
    }
}

/// The seed table as data, for scripts and notebooks (`ivbench show --format json`): the
/// talk's figures come from here only, never from a copy.
pub fn seed_json(rows: &[SummaryRow]) -> serde_json::Value {
    let lines: Vec<serde_json::Value> = seed_table(rows)
        .iter()
        .map(|l| {
            let (status, measured) = match &l.measured {
                Measured::NotInRun => ("not in run".to_string(), serde_json::Value::Null),
                Measured::NotOk(s) => (s.to_string(), serde_json::Value::Null),
                Measured::Ok { p50_cycles, p99_cycles, p50_ns, p99_ns, tsc_khz, method, params } => (
                    "ok".to_string(),
                    serde_json::json!({"p50_cycles": p50_cycles, "p99_cycles": p99_cycles, "p50_ns": p50_ns, "p99_ns": p99_ns,
                                       "tsc_khz": tsc_khz, "method": method, "params": params}),
                ),
            };
            serde_json::json!({
                "operation": l.operation,
                "probe": l.probe,
                "status": status,
                "measured": measured,
                "seed": l.seed.map(|s| serde_json::json!({"cycles_low": s.cycles_low, "cycles_high": s.cycles_high, "ns_approx": s.ns_approx, "label": s.label()})),
                "seed_note": l.seed_note,
                "ratio_to_seed_cycles": l.ratio(),
                "cores_needed_10gbe": l.cores_needed(BUDGET_10GBE_NS),
                "cores_needed_40gbe": l.cores_needed(BUDGET_40GBE_NS),
            })
        })
        .collect();
    serde_json::json!({
        "budgets_ns": {"10GbE": BUDGET_10GBE_NS, "40GbE": BUDGET_40GBE_NS},
        "seed_tsc_ghz": SEED_TSC_GHZ,
        "lines": lines,
    })
}
