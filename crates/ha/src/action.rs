//! What the engine asks the agent to do.

/// What the local server is configured to be: a primary, or a standby streaming from a
/// member, or a standby without upstream (no leader to follow yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// No recovery settings (only while holding the lock).
    Primary,
    /// `standby.signal` without `primary_conninfo`.
    Detached,
    /// Streaming from this member.
    From(String),
}

impl Replication {
    /// The member streamed from, if any.
    pub fn upstream(&self) -> Option<&str> {
        match self {
            Replication::From(m) => Some(m),
            _ => None,
        }
    }

    pub fn is_standby(&self) -> bool {
        !matches!(self, Replication::Primary)
    }
}

/// Demotion modes (docs/compat.md#demotion-modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoteMode {
    /// Switchover: checkpoint, fast shutdown, release the lock, follow the new leader.
    Graceful,
    /// Start timeout / crash with failover preferred: immediate stop, release the lock.
    Immediate,
    /// Lost the lock: immediate stop, nothing to release.
    ImmediateNoLock,
    /// DCS unreachable: stop at once, restart read-only without upstream.
    Offline,
    /// A standby whose WAL left the leader's history: fast shutdown, so `pg_control` records
    /// a restartpoint ("shut down in recovery") and pg_rewind needs no crash recovery, which
    /// fails once the leader's newer timeline history has been fetched into `pg_wal`.
    StandbyForRewind,
}

impl DemoteMode {
    /// PostgreSQL stops with a fast shutdown (else immediate).
    pub fn fast_stop(self) -> bool {
        matches!(
            self,
            DemoteMode::Graceful | DemoteMode::Offline | DemoteMode::StandbyForRewind
        )
    }

    /// We hold the leader key and delete it once PostgreSQL is down.
    pub fn releases_lock(self) -> bool {
        matches!(self, DemoteMode::Graceful | DemoteMode::Immediate)
    }
}

/// One step for the agent. Actions in a [`Decision`] run in order; if one fails (an error, or
/// a lock operation answering "no"), the rest are skipped and the agent runs a new cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Atomically create `initialize` (the bootstrap race), then initdb and start as primary,
    /// create users, run post_init, write `initialize`=sysid and `config`, take the lock.
    Bootstrap,
    /// Write our system identifier into `initialize` (key missing, cluster unlocked).
    WriteInitialize {
        sysid: String,
    },
    /// pg_basebackup from `source`, then start as a replica of `upstream`.
    Clone {
        source: String,
        upstream: String,
    },
    /// Atomically create the leader key.
    AcquireLock,
    /// Keep the lease alive and check the key still holds our name.
    RenewLock,
    /// Delete the leader key if it is ours.
    ReleaseLock,
    StartPostgres(Replication),
    Promote,
    Demote(DemoteMode),
    /// Point `primary_conninfo` at `upstream` (reload; no basebackup).
    Follow {
        upstream: String,
    },
    /// pg_rewind from `source`, then start as a replica of it.
    Rewind {
        source: String,
    },
    /// Remove the data directory (configuration allows it) and clone again from `source`.
    Reinitialize {
        source: String,
    },
    /// Leader housekeeping after a successful renewal: `status`, slots, history, failover key.
    PublishLeaderState,
    /// Clear a stale or completed `failover` request (CAS on its index).
    ClearFailover {
        index: i64,
    },
    /// Set `synchronous_standby_names` to these members (empty: `*` when strict, else off)
    /// and reload.
    SetSynchronousStandbys {
        names: Vec<String>,
        strict: bool,
    },
    /// Write `sync` = `{"leader": me, "sync_standby": names}` (CAS on `index`).
    WriteSync {
        standbys: Vec<String>,
        index: Option<i64>,
    },
    /// Synchronous mode was turned off: delete `sync` (CAS on `index`).
    DeleteSync {
        index: i64,
    },
    /// Stop here: the local data belongs to another cluster; never deleted.
    Fatal {
        message: String,
    },
}

/// The outcome of one cycle: what to do and why, as one sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub reason: String,
}

impl Decision {
    pub fn idle(reason: impl Into<String>) -> Decision {
        Decision {
            actions: Vec::new(),
            reason: reason.into(),
        }
    }

    pub fn act(actions: Vec<Action>, reason: impl Into<String>) -> Decision {
        Decision {
            actions,
            reason: reason.into(),
        }
    }
}
