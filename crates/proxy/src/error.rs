//! One error type for the proxy: where the failure came from and what we were doing.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration cannot be used (names the file and the key).
    #[error(transparent)]
    Config(#[from] pgherd_config::ConfigError),
    /// A listening socket could not be opened.
    #[error("cannot listen on {addr} ({key}): {source}; is another process using the port?")]
    Bind {
        addr: SocketAddr,
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// The DCS client could not be built or used.
    #[error("DCS: {0}")]
    Dcs(#[from] pgherd_dcs::DcsError),
    /// A pooled listener's `auth_file` cannot be used.
    #[error("cannot use {} ({key}): {why}; expected a pgbouncer userlist, \"user\" \"secret\" per line", path.display())]
    AuthFile {
        path: std::path::PathBuf,
        key: String,
        why: String,
    },
    /// A pooled listener's TLS files cannot be used.
    #[error("{key}: {why}")]
    Tls { key: String, why: String },
    /// Anything else that stops the proxy from starting.
    #[error("{doing}: {source}")]
    Io {
        doing: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Why one client session ended without being proxied. None of these reached a server with
/// client bytes, so a client may safely retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// No server became routable within `hold_timeout`.
    HoldTimeout,
    /// The listener's wait queue was full.
    QueueFull,
    /// No slot freed within `queue_timeout`.
    QueueTimeout,
    /// Connecting to the chosen servers kept failing until the hold deadline.
    ConnectFailed,
    /// `accept_proxy` listener: no valid PROXY protocol header.
    ProxyHeader,
}
