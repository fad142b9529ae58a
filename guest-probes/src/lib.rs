//! Guest probes: a micro-VMM and one tiny guest payload per probe.
use probe_api::Probe;

/// Every VM probe, in the order `ivbench list` shows them.
pub fn probes() -> Vec<Box<dyn Probe>> {
    Vec::new()
}
