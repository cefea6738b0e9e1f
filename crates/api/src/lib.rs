//! The REST API: Patroni-compatible health endpoints, status, metrics and management calls.
//!
//! The agent publishes its state as a [`NodeSnapshot`] on a `tokio::sync::watch` channel;
//! [`router`]/[`serve`] answer Patroni's GET/HEAD/OPTIONS endpoints from it with Patroni 3.0.2's
//! status codes and bodies (`shared/reference/patroni-compat.md` §3). Documented differences:
//! - a path no rule recognises is a 404 `{"error": "not found", "path": ..}` (Patroni: 503);
//! - `/sync/`, `/async/`, `/read-only-sync/` accept a trailing slash;
//! - `patroni_postgres_server_version` has no stray space before its labels;
//! - status bodies carry an extra `pgherd: {version}` key.
//!
//! Management endpoints (POST/PATCH/PUT/DELETE) answer 501 for now.

mod cluster_view;
mod error;
mod health;
mod json;
mod metrics;
mod pyvalue;
mod routing;
mod server;
mod size;
mod snapshot;
mod status;

pub use error::ServeError;
pub use server::{router, serve, ApiContext};
pub use snapshot::{ClusterView, NodeSnapshot, PostgresStatus, ReplicationRow, Xlog};

/// The Patroni version we are compatible with and report as `patroni.version`: peers and
/// patronictl compare it to decide which protocol features to use.
pub const PATRONI_COMPAT_VERSION: &str = "3.0.2";

/// pgherd's own version, reported under `pgherd.version`.
pub const PGHERD_VERSION: &str = env!("CARGO_PKG_VERSION");
