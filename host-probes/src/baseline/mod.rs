//! The baselines path.* is measured beside, as external programs or kernel paths the
//! harness sets up, supervises and always tears down: DPDK's vhost-user and memif
//! (dpdk-testpmd), and a veth pair between two network namespaces.

pub mod dpdk;
pub mod supervise;
pub mod veth;
