//! Guest probes: a micro-VMM and one tiny guest payload per probe.
//!
//! - [`probes()`]: every VM probe (`vm.*`), for the harness registry.
//! - [`backend_report()`]: which KVM backend serves `/dev/kvm` and whether (and how) native
//!   guest execution was verified; the harness records it with every result.
//! - [`vmm`]: the VMM the probes are built on (documented for multi-vCPU / irqchip probes).
//! - [`worker`]: VM worker processes (one VM each, sharing memfds), supervised by the parent.

#[macro_use]
pub mod abi;
pub mod payloads;
pub mod probes;
pub mod vmm;
pub mod worker;

pub use probes::{backend_report, probes, BackendReport};
