//! `summary.csv`: one row per probe x parameter point. The column names are a contract
//! that notebooks, CI and other tools read; add columns at the end, never rename.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::stats::CycleStats;

/// Outcome of one probe at one point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Unsupported(String),
    Failed(String),
}

impl Status {
    pub fn is_ok(&self) -> bool {
        matches!(self, Status::Ok)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Ok => f.write_str("ok"),
            Status::Unsupported(r) => write!(f, "unsupported: {r}"),
            Status::Failed(r) => write!(f, "failed: {r}"),
        }
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "ok" {
            Ok(Status::Ok)
        } else if let Some(r) = s.strip_prefix("unsupported: ") {
            Ok(Status::Unsupported(r.to_string()))
        } else if let Some(r) = s.strip_prefix("failed: ") {
            Ok(Status::Failed(r.to_string()))
        } else {
            Err(format!("unknown status `{s}`"))
        }
    }
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One line of summary.csv. Latency columns are empty unless `status` is ok.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub probe: String,
    /// `key=value,...` or empty.
    pub params: String,
    pub status: Status,
    pub count: u64,
    pub min_ns: Option<f64>,
    pub p50_ns: Option<f64>,
    pub p90_ns: Option<f64>,
    pub p99_ns: Option<f64>,
    pub p999_ns: Option<f64>,
    pub max_ns: Option<f64>,
    pub mean_ns: Option<f64>,
    pub stddev_ns: Option<f64>,
    pub min_cycles: Option<f64>,
    pub p50_cycles: Option<f64>,
    pub p90_cycles: Option<f64>,
    pub p99_cycles: Option<f64>,
    pub p999_cycles: Option<f64>,
    pub max_cycles: Option<f64>,
    pub mean_cycles: Option<f64>,
    pub stddev_cycles: Option<f64>,
    /// Timer cost subtracted from each per-op sample (divided by the batch for batched).
    pub overhead_cycles: u64,
    pub tsc_khz: u64,
    /// `per-op` or `batched/K`.
    pub method: String,
    /// Which clock took the samples (`host lfence;rdtsc`, `guest lfence;rdtsc`).
    pub clock: String,
    /// Side figures: `name=value unit; ...` (throughput, bytes/cycle, perf counters).
    pub metrics: String,
    /// Facts needed to read the figure, `; `-separated.
    pub notes: String,
    /// Tag of this point's histogram in `hlog/<probe>.hlog`; empty when none was written.
    pub hlog_tag: String,
}

impl SummaryRow {
    /// A row without latency figures (unsupported or failed).
    pub fn without_samples(probe: &str, params: &str, status: Status, method: &str) -> Self {
        SummaryRow {
            probe: probe.into(),
            params: params.into(),
            status,
            count: 0,
            min_ns: None,
            p50_ns: None,
            p90_ns: None,
            p99_ns: None,
            p999_ns: None,
            max_ns: None,
            mean_ns: None,
            stddev_ns: None,
            min_cycles: None,
            p50_cycles: None,
            p90_cycles: None,
            p99_cycles: None,
            p999_cycles: None,
            max_cycles: None,
            mean_cycles: None,
            stddev_cycles: None,
            overhead_cycles: 0,
            tsc_khz: 0,
            method: method.into(),
            clock: String::new(),
            metrics: String::new(),
            notes: String::new(),
            hlog_tag: String::new(),
        }
    }

    pub fn with_stats(mut self, c: &CycleStats, tsc_khz: u64) -> Self {
        let n = c.to_ns(tsc_khz);
        self.count = c.count;
        self.tsc_khz = tsc_khz;
        (self.min_cycles, self.p50_cycles, self.p90_cycles, self.p99_cycles) = (Some(c.min), Some(c.p50), Some(c.p90), Some(c.p99));
        (self.p999_cycles, self.max_cycles, self.mean_cycles, self.stddev_cycles) = (Some(c.p999), Some(c.max), Some(c.mean), Some(c.stddev));
        (self.min_ns, self.p50_ns, self.p90_ns, self.p99_ns) = (Some(n.min), Some(n.p50), Some(n.p90), Some(n.p99));
        (self.p999_ns, self.max_ns, self.mean_ns, self.stddev_ns) = (Some(n.p999), Some(n.max), Some(n.mean), Some(n.stddev));
        self
    }

    /// The key that identifies this row across runs (for compare).
    pub fn key(&self) -> String {
        if self.params.is_empty() {
            format!("{} [{}]", self.probe, self.method)
        } else {
            format!("{} {{{}}} [{}]", self.probe, self.params, self.method)
        }
    }
}

pub fn write_csv(rows: &[SummaryRow]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

pub fn read_csv(path: &Path) -> Result<Vec<SummaryRow>, csv::Error> {
    let mut r = csv::Reader::from_path(path)?;
    r.deserialize().collect()
}

/// The header line of summary.csv, for documentation and tests.
pub fn csv_header() -> Vec<String> {
    let row = SummaryRow::without_samples("", "", Status::Ok, "");
    let mut w = csv::Writer::from_writer(Vec::new());
    w.serialize(&row).expect("serializing into memory");
    let bytes = w.into_inner().expect("flushing into memory");
    let text = String::from_utf8(bytes).expect("csv is utf-8");
    text.lines().next().unwrap_or("").split(',').map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_text() {
        for s in [Status::Ok, Status::Unsupported("no MONITOR".into()), Status::Failed("KVM_RUN: EINTR, rip=0x10000".into())] {
            assert_eq!(s.to_string().parse::<Status>().unwrap(), s);
        }
        assert!("weird".parse::<Status>().is_err());
    }

    #[test]
    fn header_holds_the_contract_columns() {
        let h = csv_header();
        for col in [
            "probe", "params", "status", "count", "min_ns", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns", "mean_ns",
            "stddev_ns", "p50_cycles", "p90_cycles", "p99_cycles", "p999_cycles", "overhead_cycles", "tsc_khz", "method",
        ] {
            assert!(h.iter().any(|c| c == col), "missing column {col} in {h:?}");
        }
    }

    #[test]
    fn rows_round_trip_through_csv() {
        let c = CycleStats { count: 5, min: 1.0, p50: 2.0, p90: 3.0, p99: 4.0, p999: 5.0, max: 6.0, mean: 2.5, stddev: 1.0 };
        let a = SummaryRow::without_samples("host.x", "size=64", Status::Ok, "per-op").with_stats(&c, 2_000_000);
        let b = SummaryRow::without_samples("vm.y", "", Status::Unsupported("no VMX, here, \"quoted\"".into()), "per-op");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.csv");
        std::fs::write(&p, write_csv(&[a.clone(), b.clone()]).unwrap()).unwrap();
        assert_eq!(read_csv(&p).unwrap(), vec![a, b]);
    }
}
