//! Host-side probes: the physical floor that every VM figure is compared against, and
//! `path.host-ring`, the packet ring between two host threads.
//! Each module is one probe family; `probes()` is their table.

pub mod baseline;
pub mod cacheline;
pub mod memcpy;
mod partner;
pub mod perf;
mod pinning;
pub mod ring;
mod sampling;
pub mod spin;
pub mod syscall;
pub mod timer;
pub mod wake;

use probe_api::Probe;

pub use perf::perf_availability;

/// Every host probe, in the order `ivbench list` shows them.
pub fn probes() -> Vec<Box<dyn Probe>> {
    vec![
        Box::new(timer::TimerOverhead),
        Box::new(syscall::Getppid),
        Box::new(cacheline::Roundtrip),
        Box::new(wake::EventfdRoundtrip),
        Box::new(wake::FutexRoundtrip),
        Box::new(memcpy::Memcpy),
        Box::new(spin::Spin),
        Box::new(ring::HostRing),
        Box::new(baseline::dpdk::Dpdk(baseline::dpdk::Kind::Vhost)),
        Box::new(baseline::dpdk::Dpdk(baseline::dpdk::Kind::Memif)),
        Box::new(baseline::veth::Veth),
    ]
}
