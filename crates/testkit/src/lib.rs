//! What only tests and benchmarks need, on top of `pgherd-localcluster` (the loopback cluster
//! that `pgherd demo` also runs): a writer that records acknowledged writes, generated
//! certificates. The cluster modules are re-exported, with the cluster under its test name.

#![forbid(unsafe_code)]

/// The loopback cluster, as tests call it.
pub mod cluster {
    pub use pgherd_localcluster::cluster::LocalCluster as TestCluster;
    pub use pgherd_localcluster::cluster::*;
}
pub use pgherd_localcluster::{etcd, ports, procs, proxy, wait, zookeeper};
#[cfg(feature = "pki")]
pub mod pki;
pub mod writer;
