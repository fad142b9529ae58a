//! Host-side probes. Each module is one probe family; `probes()` is their table.
use probe_api::Probe;

/// Every host probe, in the order `ivbench list` shows them.
pub fn probes() -> Vec<Box<dyn Probe>> {
    Vec::new()
}
