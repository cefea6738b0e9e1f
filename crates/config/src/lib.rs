//! Patroni-compatible configuration for pgherd.
//!
//! - [`load`] reads a member's YAML file (or a directory of them), applies `PATRONI_*`
//!   environment overrides and returns a typed [`Config`] plus warnings; errors name the file,
//!   the key and what was expected.
//! - [`DynamicConfig`] is the cluster-wide configuration kept in the DCS `config` key.
//! - [`effective_parameters`] combines both into PostgreSQL's server parameters.
//! - Durations accept Patroni's plain seconds and `500ms`/`3s`/`1m`; sizes accept bytes and
//!   `16kB`/`64MB`/`1GB` ([`parse_duration`], [`parse_size`]).
//! - [`reader`] reads a section of the tree with key paths in every message; other crates use
//!   it for their own sections (the proxy's `proxy:`).
//!
//! Every default lives in [`defaults`]; pgherd's timing defaults are faster than Patroni's.

#![forbid(unsafe_code)]

mod address;
pub mod defaults;
mod dynamic;
mod env;
mod error;
mod load;
mod local;
mod parameters;
pub mod reader;
mod redact;
mod tree;
mod units;

pub use address::{HostPort, ListenAddress};
pub use dynamic::{DynamicConfig, DynamicPostgresql};
pub use error::ConfigError;
pub use load::{load, load_from_process_env, load_str, Loaded};
pub use local::*;
pub use parameters::effective_parameters;
pub use redact::{redact_secrets, REDACTED};
pub use units::{parse_duration, parse_size};
