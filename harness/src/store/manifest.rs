//! `manifest.json`: what ran, on what, when, and whether the run finished.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Still running, interrupted or crashed: what is in the store finished, the rest did not run.
    Partial,
    Complete,
}

/// One probe x point as the manifest lists it (the figures live in summary.csv).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeEntry {
    pub probe: String,
    pub params: String,
    pub method: String,
    /// What tells this entry apart from another of the same probe, point and method.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    pub status: String,
    /// Why the point stopped short, when it did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub partial: String,
    /// Relative path of the probe's interval log, when samples were recorded.
    pub hlog: Option<String>,
    pub tag: Option<String>,
    pub started_utc: String,
    pub wall_seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub run_id: String,
    pub ivbench_version: String,
    pub started_utc: String,
    pub finished_utc: Option<String>,
    pub status: RunStatus,
    /// Why a partial run stopped, when known (Ctrl-C, a fatal error).
    pub stop_reason: Option<String>,
    pub command_line: Vec<String>,
    /// `sweep` or `run`, and the configuration text that drove it.
    pub kind: String,
    pub config: String,
    /// Histogram values are TSC cycles times this.
    pub hist_units_per_cycle: u64,
    /// The environment fingerprint (`ivbench env`), kept as JSON so that a run written by
    /// another ivbench version still loads.
    pub fingerprint: serde_json::Value,
    /// Facts discovered while running (e.g. the KVM backend and how native guest execution
    /// was verified), keyed by who found them.
    #[serde(default)]
    pub discovered: BTreeMap<String, serde_json::Value>,
    /// Facts about the run as a whole: output that could not be written, contention.
    #[serde(default)]
    pub notes: Vec<String>,
    pub probes: Vec<ProbeEntry>,
}
