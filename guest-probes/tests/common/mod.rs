//! Helpers the integration tests share (each test crate uses some of them).
#![allow(dead_code)]

use guest_probes::probes;
use probe_api::{Probe, Samples};

/// Prints the loud `SKIPPED` line on stdout and stderr; with `IVBENCH_REQUIRE_KVM=1`
/// (set by `.ci/run` where /dev/kvm exists) a skip is a failure instead, so that a broken
/// KVM set-up cannot pass CI silently.
fn skipped(why: &str) {
    if std::env::var("IVBENCH_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("{why}, but IVBENCH_REQUIRE_KVM=1: this KVM test must not skip");
    }
    println!("SKIPPED: {why}");
    eprintln!("SKIPPED: {why}");
}

/// Whether /dev/kvm exists (prints `SKIPPED: no /dev/kvm` otherwise).
pub fn have_kvm_device() -> bool {
    if std::path::Path::new("/dev/kvm").exists() {
        return true;
    }
    skipped("no /dev/kvm");
    false
}

/// Whether /dev/kvm exists and opens read-write (prints why it is SKIPPED otherwise).
pub fn have_kvm() -> bool {
    if !have_kvm_device() {
        return false;
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        skipped(&format!("/dev/kvm cannot be opened ({e})"));
        return false;
    }
    true
}

/// The probe of the table called `name`.
pub fn probe(name: &str) -> Box<dyn Probe> {
    probes().into_iter().find(|p| p.name() == name).unwrap_or_else(|| panic!("no probe {name}"))
}

/// The value of metric `name` (panics when there is none).
pub fn metric(s: &Samples, name: &str) -> f64 {
    s.metrics.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no metric {name} in {:?}", s.metrics)).value
}
