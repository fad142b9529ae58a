//! ivbench: measures what communication between virtual machines on KVM really costs.
//!
//! Data flows one way: registry (what to run) -> runner (how) -> samples -> stats
//! (histogram + summary, overhead subtracted once) -> store (run directory) -> show /
//! compare / report, which read only the store.

#[macro_use]
pub mod out;

pub mod cmd;
pub mod config;
pub mod contention;
pub mod fingerprint;
pub mod history;
pub mod machine;
pub mod ndr;
pub mod publish;
pub mod registry;
pub mod report;
pub mod runner;
pub mod stats;
pub mod store;
pub mod table;
pub mod timing;
