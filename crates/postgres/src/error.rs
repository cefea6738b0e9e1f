//! Errors of PostgreSQL control, each carrying enough context to act on without the logs.

use std::path::PathBuf;
use std::time::Duration;

pub type Result<T, E = PgError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "PostgreSQL refuses to run as root; create the OS user '{user}' or set postgresql.run_as"
    )]
    RunAsUserMissing { user: String },

    #[error("cannot look up OS user '{user}': {source}")]
    UserLookup { user: String, source: nix::Error },

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },

    #[error("{command} failed ({status}): {output}")]
    CommandFailed {
        command: String,
        status: String,
        /// The last lines of stderr (or of the server log for `pg_ctl start`).
        output: String,
    },

    #[error("PostgreSQL did not finish starting within {timeout:?} and is still starting; log tail: {log_tail}")]
    StartTimeout { timeout: Duration, log_tail: String },

    #[error("PostgreSQL is already running (postmaster pid {pid})")]
    AlreadyRunning { pid: i32 },

    #[error("{action} needs PostgreSQL stopped, but it is running (postmaster pid {pid})")]
    Running { action: &'static str, pid: i32 },

    #[error("PostgreSQL is not running")]
    NotRunning,

    #[error("PostgreSQL (postmaster pid {pid}) runs in single-user mode; refusing to signal it")]
    SingleUser { pid: i32 },

    #[error("PostgreSQL (postmaster pid {pid}) did not stop even after SIGKILL")]
    StopFailed { pid: i32 },

    #[error("data directory {path} is not empty; refusing to {action}")]
    DataDirNotEmpty { path: PathBuf, action: &'static str },

    #[error("data directory {path} holds no initialized cluster; {action} needs one")]
    NotInitialized { path: PathBuf, action: &'static str },

    #[error("{tool} option '{option}' is not allowed: {reason}")]
    InvalidOption {
        tool: &'static str,
        option: String,
        reason: &'static str,
    },

    #[error("invalid {what} '{name}': {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },

    #[error("cannot parse pg_controldata output of {data_dir}: {reason}")]
    ControlData { data_dir: PathBuf, reason: String },

    #[error("cannot parse timeline history {path}: {reason}")]
    History { path: PathBuf, reason: String },

    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect {
        target: String,
        source: tokio_postgres::Error,
    },

    #[error("SQL {what} failed: {source}")]
    Sql {
        what: &'static str,
        source: tokio_postgres::Error,
    },

    #[error("unexpected SQL result for {what}: {reason}")]
    SqlResult { what: &'static str, reason: String },

    #[error("callback command '{command}' cannot be parsed into arguments")]
    Callback { command: String },

    /// `bootstrap.post_bootstrap` failed (Patroni: "post_init script ... returned non-zero
    /// code N").
    #[error("post_bootstrap script '{command}' {reason}")]
    PostBootstrap { command: String, reason: String },
}

impl PgError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        PgError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| PgError::Sql { what, source }
    }
}
