//! `summary.csv`: one row per probe x parameter point. The column names are a contract
//! that notebooks, CI and other tools read; add columns at the end, never rename.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::read::{read_bounded, ReadError, MAX_SUMMARY_BYTES};
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
    /// What tells this row apart from another of the same probe, point and method in
    /// one run (a sweep entry listed twice, e.g. on other CPUs): `cpus=2+3` or
    /// `entry=4`. Empty for the usual one-row-per-key case. Part of the row's key.
    #[serde(default)]
    pub variant: String,
    /// Why the point stopped before it had every sample (`interrupted after 1200 of
    /// 10000 samples`, `timed out ...`); empty when it completed.
    #[serde(default)]
    pub partial: String,
    /// What else was competing for the machine while the point ran (another ivbench,
    /// steal time); empty when nothing was seen.
    #[serde(default)]
    pub contention: String,
    /// Throughput rows (path.*): packets per second received, in millions.
    #[serde(default)]
    pub mpps: Option<f64>,
    /// Frame bits per second received, Gbit/s, without the 20 B per-frame preamble and
    /// gap (the `metrics` column has it with them, as `gbit_s_wire`).
    #[serde(default)]
    pub gbit_s: Option<f64>,
    /// Packets offered, received and dropped: `sent = received + dropped` on every row.
    #[serde(default)]
    pub sent: Option<u64>,
    #[serde(default)]
    pub received: Option<u64>,
    #[serde(default)]
    pub dropped: Option<u64>,
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
            variant: String::new(),
            partial: String::new(),
            contention: String::new(),
            mpps: None,
            gbit_s: None,
            sent: None,
            received: None,
            dropped: None,
        }
    }

    pub fn with_stats(mut self, c: &CycleStats, tsc_khz: u64) -> Self {
        let n = c.to_ns(tsc_khz);
        self.count = c.count;
        self.tsc_khz = tsc_khz;
        (self.min_cycles, self.p50_cycles, self.p90_cycles, self.p99_cycles) =
            (Some(c.min), Some(c.p50), Some(c.p90), Some(c.p99));
        (self.p999_cycles, self.max_cycles, self.mean_cycles, self.stddev_cycles) =
            (Some(c.p999), Some(c.max), Some(c.mean), Some(c.stddev));
        (self.min_ns, self.p50_ns, self.p90_ns, self.p99_ns) = (Some(n.min), Some(n.p50), Some(n.p90), Some(n.p99));
        (self.p999_ns, self.max_ns, self.mean_ns, self.stddev_ns) =
            (Some(n.p999), Some(n.max), Some(n.mean), Some(n.stddev));
        self
    }

    /// The key that identifies this row across runs (for compare).
    pub fn key(&self) -> String {
        let mut k = if self.params.is_empty() {
            format!("{} [{}]", self.probe, self.method)
        } else {
            format!("{} {{{}}} [{}]", self.probe, self.params, self.method)
        };
        if !self.variant.is_empty() {
            k.push_str(&format!(" <{}>", self.variant));
        }
        k
    }

    /// Whether this row carries throughput figures.
    pub fn is_throughput(&self) -> bool {
        self.mpps.is_some()
    }

    /// A side figure from the `metrics` column by name (`name=value unit; ...`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.split("; ").find_map(|m| {
            let (k, rest) = m.split_once('=')?;
            (k == name).then(|| rest.split(' ').next()?.parse().ok()).flatten()
        })
    }

    /// The figures a reader does arithmetic with, by column name.
    fn figures(&self) -> [(&'static str, Option<f64>); 18] {
        [
            ("mpps", self.mpps),
            ("gbit_s", self.gbit_s),
            ("min_ns", self.min_ns),
            ("p50_ns", self.p50_ns),
            ("p90_ns", self.p90_ns),
            ("p99_ns", self.p99_ns),
            ("p999_ns", self.p999_ns),
            ("max_ns", self.max_ns),
            ("mean_ns", self.mean_ns),
            ("stddev_ns", self.stddev_ns),
            ("min_cycles", self.min_cycles),
            ("p50_cycles", self.p50_cycles),
            ("p90_cycles", self.p90_cycles),
            ("p99_cycles", self.p99_cycles),
            ("p999_cycles", self.p999_cycles),
            ("max_cycles", self.max_cycles),
            ("mean_cycles", self.mean_cycles),
            ("stddev_cycles", self.stddev_cycles),
        ]
    }

    /// Why this row cannot be a measurement ivbench wrote, if it cannot: a percentile
    /// that is NaN, infinite or negative, or figures on a row that is not ok.
    pub fn implausible(&self) -> Option<String> {
        for (name, v) in self.figures() {
            match v {
                Some(x) if !x.is_finite() || x < 0.0 => return Some(format!("{name} is {x}")),
                Some(_) if !self.status.is_ok() => {
                    return Some(format!("{name} is set on a row with status `{}`", self.status))
                }
                _ => {}
            }
        }
        let counters = [self.sent, self.received, self.dropped];
        if counters.iter().any(Option::is_some) && !self.status.is_ok() {
            return Some(format!("packet counters are set on a row with status `{}`", self.status));
        }
        if let [Some(s), Some(r), Some(d)] = counters {
            if r.checked_add(d) != Some(s) {
                return Some(format!("sent {s} != received {r} + dropped {d}"));
            }
        }
        None
    }
}

pub fn write_csv(rows: &[SummaryRow]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("{0}")]
    Read(#[from] ReadError),
    #[error("{}:{line}: {message}", path.display())]
    Row { path: std::path::PathBuf, line: u64, message: String },
}

/// Reads summary.csv: bounded in size, every row checked, every error naming the file
/// and line.
pub fn read_csv(path: &Path) -> Result<Vec<SummaryRow>, SummaryError> {
    let bytes = read_bounded(path, MAX_SUMMARY_BYTES)?;
    let row_err = |line: u64, message: String| SummaryError::Row { path: path.to_path_buf(), line, message };
    let mut r = csv::Reader::from_reader(bytes.as_slice());
    let mut rows = Vec::new();
    for rec in r.deserialize::<SummaryRow>() {
        match rec {
            Ok(row) => {
                // Line of the record just read: header is line 1.
                let line = rows.len() as u64 + 2;
                if let Some(why) = row.implausible() {
                    return Err(row_err(line, format!("row for {}: {why}", row.probe)));
                }
                rows.push(row);
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(rows.len() as u64 + 2);
                let message = match e.kind() {
                    csv::ErrorKind::Deserialize { err, .. } => match err.field() {
                        Some(f) => format!("column {}: {}", f + 1, err.kind()),
                        None => err.kind().to_string(),
                    },
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        format!("{len} fields where the header has {expected_len}")
                    }
                    csv::ErrorKind::Utf8 { .. } => "not UTF-8".to_string(),
                    _ => e.to_string(),
                };
                return Err(row_err(line, message));
            }
        }
    }
    Ok(rows)
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
        for s in
            [Status::Ok, Status::Unsupported("no MONITOR".into()), Status::Failed("KVM_RUN: EINTR, rip=0x10000".into())]
        {
            assert_eq!(s.to_string().parse::<Status>().unwrap(), s);
        }
        assert!("weird".parse::<Status>().is_err());
    }

    #[test]
    fn header_holds_the_contract_columns() {
        let h = csv_header();
        for col in [
            "probe",
            "params",
            "status",
            "count",
            "min_ns",
            "p50_ns",
            "p90_ns",
            "p99_ns",
            "p999_ns",
            "max_ns",
            "mean_ns",
            "stddev_ns",
            "p50_cycles",
            "p90_cycles",
            "p99_cycles",
            "p999_cycles",
            "overhead_cycles",
            "tsc_khz",
            "method",
        ] {
            assert!(h.iter().any(|c| c == col), "missing column {col} in {h:?}");
        }
    }

    #[test]
    fn rows_round_trip_through_csv() {
        let c = CycleStats {
            count: 5,
            min: 1.0,
            p50: 2.0,
            p90: 3.0,
            p99: 4.0,
            p999: 5.0,
            max: 6.0,
            mean: 2.5,
            stddev: 1.0,
        };
        let a = SummaryRow::without_samples("host.x", "size=64", Status::Ok, "per-op").with_stats(&c, 2_000_000);
        let b =
            SummaryRow::without_samples("vm.y", "", Status::Unsupported("no VMX, here, \"quoted\"".into()), "per-op");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.csv");
        std::fs::write(&p, write_csv(&[a.clone(), b.clone()]).unwrap()).unwrap();
        assert_eq!(read_csv(&p).unwrap(), vec![a, b]);
    }

    #[test]
    fn implausible_figures_are_refused_naming_file_and_line() {
        let c = CycleStats {
            count: 5,
            min: 1.0,
            p50: 2.0,
            p90: 3.0,
            p99: 4.0,
            p999: 5.0,
            max: 6.0,
            mean: 2.5,
            stddev: 1.0,
        };
        let good = SummaryRow::without_samples("host.x", "", Status::Ok, "per-op").with_stats(&c, 2_000_000);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("summary.csv");
        for (what, bad) in [
            ("p50_ns is NaN", SummaryRow { p50_ns: Some(f64::NAN), ..good.clone() }),
            ("p99_ns is inf", SummaryRow { p99_ns: Some(f64::INFINITY), ..good.clone() }),
            ("min_cycles is -1", SummaryRow { min_cycles: Some(-1.0), ..good.clone() }),
        ] {
            std::fs::write(&p, write_csv(&[good.clone(), bad]).unwrap()).unwrap();
            let e = read_csv(&p).unwrap_err().to_string();
            assert!(e.contains(&format!("{}:3:", p.display())) && e.contains(what), "{e}");
        }
        std::fs::write(&p, "probe,params\nx\n").unwrap();
        let e = read_csv(&p).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:", p.display())), "{e}");
    }

    #[test]
    fn rows_written_before_the_appended_columns_still_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("summary.csv");
        let row = SummaryRow::without_samples("host.x", "", Status::Ok, "per-op");
        let text = String::from_utf8(write_csv(std::slice::from_ref(&row)).unwrap()).unwrap();
        // Drop the appended columns (variant, partial, contention, then mpps, gbit_s,
        // sent, received, dropped) from both lines: the files older ivbenches wrote.
        for appended in [5, 8] {
            let old: String =
                text.lines().map(|l| l.rsplitn(appended + 1, ',').last().unwrap().to_string() + "\n").collect();
            std::fs::write(&p, old).unwrap();
            assert_eq!(read_csv(&p).unwrap(), vec![row.clone()], "without the last {appended} columns");
        }
    }

    #[test]
    fn throughput_columns_are_appended_last_and_checked() {
        let h = csv_header();
        assert_eq!(
            &h[h.len() - 8..],
            ["variant", "partial", "contention", "mpps", "gbit_s", "sent", "received", "dropped"]
        );
        let mut row = SummaryRow::without_samples("path.host-ring", "size=64", Status::Ok, "per-op");
        (row.mpps, row.gbit_s, row.sent, row.received, row.dropped) =
            (Some(20.0), Some(10.24), Some(100), Some(90), Some(10));
        row.metrics = "gbit_s_wire=13.44 Gbit/s; loss_ratio=0.1 ratio".into();
        assert_eq!(row.implausible(), None);
        assert_eq!(row.metric("loss_ratio"), Some(0.1));
        assert_eq!(row.metric("gbit_s"), None);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("summary.csv");
        std::fs::write(&p, write_csv(std::slice::from_ref(&row)).unwrap()).unwrap();
        assert_eq!(read_csv(&p).unwrap(), vec![row.clone()]);
        row.received = Some(91);
        assert!(row.implausible().unwrap().contains("sent 100 != received 91 + dropped 10"));
        std::fs::write(&p, write_csv(std::slice::from_ref(&row)).unwrap()).unwrap();
        assert!(read_csv(&p).unwrap_err().to_string().contains(":2:"));
    }
}
