//! Test and demo harness: a temporary etcd and pgherd agents on loopback, started and
//! stopped by PID. Used by the integration tests, the benchmarks and `pgherd demo`.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod etcd;
#[cfg(feature = "pki")]
pub mod pki;
pub mod ports;
pub mod procs;
pub mod proxy;
pub mod wait;
pub mod writer;
