//! The REST API: Patroni-compatible health endpoints, status, metrics and management calls.
//!
//! The agent publishes its state as a [`NodeSnapshot`] on a `tokio::sync::watch` channel;
//! [`router`]/[`serve`] answer Patroni's GET/HEAD/OPTIONS endpoints from it with Patroni 3.0.2's
//! status codes and bodies (docs/compat.md#rest-api). Documented differences:
//! - a path no rule recognises is a 404 `{"error": "not found", "path": ..}` (Patroni: 503);
//! - `/sync/`, `/async/`, `/read-only-sync/` accept a trailing slash;
//! - `patroni_postgres_server_version` has no stray space before its labels;
//! - status bodies carry an extra `pgherd: {version}` key.
//!
//!
//! Management endpoints (docs/compat.md#management-endpoints): `POST /switchover`,
//! `POST /failover`, `DELETE /switchover`, `PATCH /config`, `PUT /config` are DCS writes done here;
//! `POST /restart`, `DELETE /restart`, `POST /reload`, `POST /reinitialize` are validated here
//! and carried out by the agent ([`ApiCommand`]). Unsafe calls go through Patroni's access
//! control (allowlist, client certificate, basic auth with a constant-time comparison); the
//! server speaks HTTPS with rustls when `restapi.certfile` is set ([`ApiSettings`]).
//! Documented differences from Patroni 3.0.2:
//! - refusals are JSON `{"error": "<Patroni's message>"}` (Patroni: plain text or an HTML
//!   error page); successful calls keep Patroni's plain-text messages;
//! - a request body with a non-JSON media type (e.g. `multipart/form-data`) is refused with
//!   415; no media type, JSON, `text/plain` and `application/x-www-form-urlencoded` (curl's
//!   default) are read as JSON;
//! - a chunked request body is read (Patroni requires `Content-Length`);
//! - a switchover/failover to the current leader is refused with 412 `candidate is already
//!   the leader` (Patroni writes it and answers 503 once its leader cleared it);
//! - `restart_pending: false` means "no filter" (Patroni: any value enables the filter);
//! - `POST /citus`, `/sigterm` answer 501.

#![forbid(unsafe_code)]

mod access;
mod cluster_view;
mod commands;
mod error;
mod health;
mod json;
mod manage;
mod metrics;
mod pyvalue;
mod routing;
pub mod schedule;
mod server;
mod settings;
mod size;
mod snapshot;
mod status;
pub mod tls;

pub use commands::{
    postgres_version_num, ApiCommand, CommandResult, Refusal, RestartRequest, RestartRole,
};
pub use error::ServeError;
pub use manage::{FailsafeLeader, FailsafePings, SwitchoverAction};
pub use server::{
    router, serve, ApiContext, LivePostgres, LiveStatus, PeerStatus, SettingsUpdater,
};
pub use settings::ApiSettings;
pub use snapshot::{ClusterView, NodeSnapshot, PostgresStatus, ReplicationRow, Xlog};

/// The Patroni version we are compatible with and report as `patroni.version`: peers and
/// patronictl compare it to decide which protocol features to use.
pub const PATRONI_COMPAT_VERSION: &str = "3.0.2";

/// pgherd's own version, reported under `pgherd.version`.
pub const PGHERD_VERSION: &str = env!("CARGO_PKG_VERSION");
