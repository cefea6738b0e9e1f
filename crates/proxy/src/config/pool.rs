//! A listener's pooling keys (pgbouncer's names): `pool_mode` turns pooling on; the others
//! are only allowed with it.

use super::defaults::{
    DEFAULT_AUTH_QUERY, DEFAULT_MAX_CLIENT_CONN, DEFAULT_POOL_SIZE, DEFAULT_QUERY_WAIT_TIMEOUT,
    DEFAULT_SERVER_IDLE_TIMEOUT, DEFAULT_SERVER_LIFETIME, DEFAULT_SERVER_RESET_QUERY,
};
use super::values::count;
use crate::pool::auth::{AuthType, AUTH_TYPE_EXPECTED};
use pgherd_config::reader::{Ctx, Section};
use pgherd_config::ConfigError;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// `pool_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection per client session.
    Session,
    /// A server connection per transaction.
    Transaction,
}

impl PoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// `tls: {cert, key}`: PEM files of the certificate (chain) and key clients are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `max_prepared_statements` when unset: pgbouncer 1.22's default, so that drivers that name
/// their statements (tokio-postgres, JDBC, asyncpg) work through a transaction pool as they
/// do through current pgbouncer; 0 refuses named statements.
const DEFAULT_MAX_PREPARED_STATEMENTS: usize = 200;

/// `server_tls.mode`, libpq's `sslmode` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    Disable,
    /// TLS when the server accepts it, not verified.
    Prefer,
    /// TLS always, not verified.
    Require,
    /// TLS always, verified with `server_tls.ca` and the server's address.
    VerifyFull,
}

/// The pooling settings of one listener.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub mode: PoolMode,
    /// Server connections per (server, user, database).
    pub pool_size: usize,
    /// Server connections kept open per pool once a client logged in.
    pub min_pool_size: usize,
    /// Clients of this listener at once.
    pub max_client_conn: usize,
    pub server_idle_timeout: Duration,
    pub server_lifetime: Duration,
    /// How long a client waits for a server connection of its pool.
    pub query_wait_timeout: Duration,
    /// Run on a session-mode server connection before another client gets it.
    pub server_reset_query: String,
    pub auth_type: AuthType,
    pub auth_file: PathBuf,
    /// Startup parameters clients may send that the proxy ignores (others are refused).
    pub ignore_startup_parameters: Vec<String>,
    /// Named prepared statements kept per client in transaction mode (0: refused).
    pub max_prepared_statements: usize,
    /// Looks up users missing from `auth_file` with `auth_query`, logged in as this user
    /// (whose secret is in `auth_file`).
    pub auth_user: Option<String>,
    pub auth_query: String,
    /// TLS to clients (terminated at the proxy).
    pub tls: Option<TlsFiles>,
    /// TLS to servers, and the CA file for `verify-full`.
    pub server_tls: ServerTlsMode,
    pub server_tls_ca: Option<PathBuf>,
}

/// Reads the pooling keys of listener section `l`; `None` without `pool_mode`.
pub(super) fn pool(l: &mut Section, ctx: &Ctx) -> Result<Option<PoolConfig>, ConfigError> {
    let mode = match l.string(ctx, "pool_mode")?.as_deref() {
        None => None,
        Some("session") => Some(PoolMode::Session),
        Some("transaction") => Some(PoolMode::Transaction),
        Some(other) => {
            return Err(l.invalid(
                ctx,
                "pool_mode",
                format!("expected session or transaction, found {other:?}"),
            ))
        }
    };
    let pool_size = count(l, ctx, "pool_size", 1)?;
    let min_pool_size = count(l, ctx, "min_pool_size", 0)?;
    let max_client_conn = count(l, ctx, "max_client_conn", 1)?;
    let server_idle_timeout = l.duration(ctx, "server_idle_timeout")?;
    let server_lifetime = l.duration(ctx, "server_lifetime")?;
    let query_wait_timeout = l.duration(ctx, "query_wait_timeout")?;
    let server_reset_query = l.string(ctx, "server_reset_query")?;
    let auth_type = l.string(ctx, "auth_type")?;
    let auth_file = l.string(ctx, "auth_file")?;
    let ignore = l.get(ctx, "ignore_startup_parameters", names)?;
    let max_prepared_statements = count(l, ctx, "max_prepared_statements", 0)?;
    let auth_user = l.string(ctx, "auth_user")?;
    let auth_query = l.string(ctx, "auth_query")?;
    let tls = tls_files(l, ctx)?;
    let (server_tls, server_tls_ca) = server_tls(l, ctx)?;
    let Some(mode) = mode else {
        let set = [
            ("pool_size", pool_size.is_some()),
            ("min_pool_size", min_pool_size.is_some()),
            ("max_client_conn", max_client_conn.is_some()),
            ("server_idle_timeout", server_idle_timeout.is_some()),
            ("server_lifetime", server_lifetime.is_some()),
            ("query_wait_timeout", query_wait_timeout.is_some()),
            ("server_reset_query", server_reset_query.is_some()),
            ("auth_type", auth_type.is_some()),
            ("auth_file", auth_file.is_some()),
            ("ignore_startup_parameters", ignore.is_some()),
            ("max_prepared_statements", max_prepared_statements.is_some()),
            ("auth_user", auth_user.is_some()),
            ("auth_query", auth_query.is_some()),
            ("tls", tls.is_some()),
            ("server_tls", server_tls != ServerTlsMode::Disable),
        ];
        if let Some((key, _)) = set.iter().find(|(_, s)| *s) {
            return Err(l.invalid(
                ctx,
                key,
                "only applies to a pooled listener (set pool_mode: session or transaction)",
            ));
        }
        return Ok(None);
    };
    let pool_size = pool_size.unwrap_or(DEFAULT_POOL_SIZE);
    let min_pool_size = min_pool_size.unwrap_or(0);
    if min_pool_size > pool_size {
        return Err(l.invalid(
            ctx,
            "min_pool_size",
            format!("expected at most pool_size ({pool_size}), found {min_pool_size}"),
        ));
    }
    let auth_type = match auth_type.as_deref() {
        None => AuthType::ScramSha256,
        Some(t) => AuthType::parse(t).ok_or_else(|| {
            l.invalid(
                ctx,
                "auth_type",
                format!("expected {AUTH_TYPE_EXPECTED}, found {t:?}"),
            )
        })?,
    };
    let Some(auth_file) = auth_file.filter(|f| !f.trim().is_empty()) else {
        return Err(l.invalid(
            ctx,
            "auth_file",
            "missing (a pooled listener authenticates clients: expected the path of a pgbouncer-format userlist, \"user\" \"secret\" per line)",
        ));
    };
    Ok(Some(PoolConfig {
        mode,
        pool_size,
        min_pool_size,
        max_client_conn: max_client_conn.unwrap_or(DEFAULT_MAX_CLIENT_CONN),
        server_idle_timeout: server_idle_timeout.unwrap_or(DEFAULT_SERVER_IDLE_TIMEOUT),
        server_lifetime: server_lifetime.unwrap_or(DEFAULT_SERVER_LIFETIME),
        query_wait_timeout: query_wait_timeout.unwrap_or(DEFAULT_QUERY_WAIT_TIMEOUT),
        server_reset_query: server_reset_query
            .unwrap_or_else(|| DEFAULT_SERVER_RESET_QUERY.to_string()),
        auth_type,
        auth_file: PathBuf::from(auth_file),
        ignore_startup_parameters: ignore.unwrap_or_default(),
        max_prepared_statements: max_prepared_statements.unwrap_or(DEFAULT_MAX_PREPARED_STATEMENTS),
        auth_user,
        auth_query: auth_query.unwrap_or_else(|| DEFAULT_AUTH_QUERY.to_string()),
        tls,
        server_tls,
        server_tls_ca,
    }))
}

/// `tls: {cert, key}` (both required when the section is there).
fn tls_files(l: &mut Section, ctx: &Ctx) -> Result<Option<TlsFiles>, ConfigError> {
    let mut t = l.section(ctx, "tls")?;
    if !t.is_present() {
        return Ok(None);
    }
    let cert = t.required_string(ctx, "cert", "the path of a PEM certificate (chain)")?;
    let key = t.required_string(ctx, "key", "the path of a PEM private key")?;
    t.finish_strict(ctx)?;
    Ok(Some(TlsFiles {
        cert: PathBuf::from(cert),
        key: PathBuf::from(key),
    }))
}

/// `server_tls: {mode, ca}`; `verify-full` needs `ca`.
fn server_tls(l: &mut Section, ctx: &Ctx) -> Result<(ServerTlsMode, Option<PathBuf>), ConfigError> {
    let mut t = l.section(ctx, "server_tls")?;
    if !t.is_present() {
        return Ok((ServerTlsMode::Disable, None));
    }
    let mode = match t.string(ctx, "mode")?.as_deref() {
        None | Some("prefer") => ServerTlsMode::Prefer,
        Some("disable") => ServerTlsMode::Disable,
        Some("require") => ServerTlsMode::Require,
        Some("verify-full") => ServerTlsMode::VerifyFull,
        Some(other) => {
            return Err(t.invalid(
                ctx,
                "mode",
                format!("expected disable, prefer, require or verify-full, found {other:?}"),
            ))
        }
    };
    let ca = t.string(ctx, "ca")?.map(PathBuf::from);
    if mode == ServerTlsMode::VerifyFull && ca.is_none() {
        return Err(t.invalid(
            ctx,
            "ca",
            "missing (verify-full checks the servers' certificates against this CA file)",
        ));
    }
    t.finish_strict(ctx)?;
    Ok((mode, ca))
}

/// A list of names, or one comma-separated string (pgbouncer's form).
fn names(v: &Value) -> Result<Vec<String>, String> {
    let expected = || "a list of parameter names".to_string();
    match v {
        Value::String(s) => Ok(s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(expected))
            .collect(),
        _ => Err(expected()),
    }
}
