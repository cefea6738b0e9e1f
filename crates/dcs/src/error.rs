use thiserror::Error;

/// Why a DCS operation failed. `Unavailable` errors are retried by the backend within
/// `retry_timeout` before they reach the caller; whatever reaches the caller means the HA loop
/// must treat the DCS as unreachable for this cycle.
#[derive(Debug, Error)]
pub enum DcsError {
    /// `cause` is part of the message (not a `source`), so that logs showing the error alone
    /// and reports walking the chain both show it exactly once.
    #[error("etcd at {endpoints} is unreachable while {doing}: {cause}; is etcd running? check the etcd3.hosts setting")]
    Unavailable {
        endpoints: String,
        doing: &'static str,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The ZooKeeper counterpart of `Unavailable` (its message names the right setting).
    #[error("ZooKeeper at {hosts} is unreachable while {doing}: {cause}; is ZooKeeper running? check the zookeeper.hosts setting")]
    ZookeeperUnavailable {
        hosts: String,
        doing: &'static str,
        cause: String,
    },
    #[error("DCS operation {doing} timed out after {seconds:.1}s (retry_timeout)")]
    Timeout { doing: &'static str, seconds: f64 },
    #[error("DCS rejected {doing}: {message}")]
    Rejected {
        doing: &'static str,
        message: String,
    },
    #[error("malformed value at {key}: {message}")]
    Malformed { key: String, message: String },
    #[error("DCS not supported yet: {0}")]
    Unsupported(String),
    /// The configuration names no usable store (message names file and key).
    #[error("{0}")]
    Config(String),
}

impl DcsError {
    /// The store could not be reached within `retry_timeout` (any backend).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DcsError::Unavailable { .. }
                | DcsError::ZookeeperUnavailable { .. }
                | DcsError::Timeout { .. }
        )
    }
}
