//! A whole pgherd cluster on loopback: a temporary etcd, `pgherd agent` processes with their
//! PostgreSQL servers and a `pgherd proxy`, each with its own files and ports, started and
//! stopped by PID. `pgherd demo` runs one; the integration tests and benchmarks run many
//! (through `pgherd-testkit`, which adds what only tests need).

#![forbid(unsafe_code)]

pub mod cluster;
pub mod etcd;
pub mod ports;
pub mod procs;
pub mod proxy;
mod server;
pub mod wait;
pub mod zookeeper;
