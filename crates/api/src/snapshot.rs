//! What the agent publishes for the API: one immutable [`NodeSnapshot`] per change, sent over a
//! `tokio::sync::watch` channel. Requests read it for everything the HA loop knows (the lock,
//! the cluster view, tags); PostgreSQL's own state is queried per request when the agent
//! provides a [`crate::LiveStatus`], so no answer is staler than the request.

use chrono::{DateTime, FixedOffset};
use pgherd_dcs::{Cluster, Role};
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The agent's state as the REST API sees it.
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    /// This member's name (`name:` in the configuration).
    pub name: String,
    /// The cluster name (`scope:`).
    pub scope: String,
    /// PostgreSQL state string (docs/compat.md#postgresql-states): `running`, `starting`,
    /// `stopped`, `crashed`, `creating replica`, ...
    pub state: String,
    /// Patroni's role for the local PostgreSQL (`master`, `replica`, `standby_leader`, ...).
    /// Reported as is when PostgreSQL cannot be queried, and as the role of a recovering node in
    /// a standby cluster.
    pub role: Role,
    /// Result of the last status query; `None` if PostgreSQL is not running or not queryable.
    pub postgres: Option<PostgresStatus>,
    /// We hold the leader key and refreshed it successfully; we count as leader until this
    /// instant (last refresh + ttl). Independent of what PostgreSQL is doing.
    pub leader_until: Option<Instant>,
    /// The last cluster read from the DCS. It is trusted for `ttl` after `read_at` only.
    pub cluster: Option<ClusterView>,
    /// Epoch seconds of the last successful DCS read (0: never).
    pub dcs_last_seen: i64,
    /// The PostgreSQL system identifier of the local data directory, when known.
    pub database_system_identifier: Option<String>,
    /// Effective tags: configured tags with falsy built-in tags (`nofailover`, `noloadbalance`,
    /// `clonefrom`, `nosync`) removed, plus `nosync: true` while leaving sync duty.
    pub tags: Map<String, Value>,
    /// A restart is needed to apply changed PostgreSQL parameters.
    pub pending_restart: bool,
    /// The cluster is paused (maintenance mode), per the DCS config or the locally cached
    /// dynamic configuration when the DCS config is unknown.
    pub paused: bool,
    /// The dynamic configuration describes a standby cluster (`standby_cluster` with a host,
    /// port or restore_command).
    pub standby_cluster: bool,
    /// The locally scheduled restart as stored in our member key
    /// (`{"schedule": iso, "postmaster_start_time": .., ...}`).
    pub scheduled_restart: Option<Value>,
    /// `failsafe_mode` is on in the dynamic configuration.
    pub failsafe_mode: bool,
    /// Failsafe mode is keeping us primary without a DCS (on a replica: the leader pinged us
    /// within ttl).
    pub failsafe_mode_is_active: bool,
    /// The watchdog could not be armed or failed.
    pub watchdog_failed: bool,
    /// Leader key TTL (`ttl`).
    pub ttl: Duration,
    /// Pause between HA cycles (`loop_wait`).
    pub loop_wait: Duration,
    /// When the HA loop last completed a cycle; the next one is due `loop_wait` later. Drives
    /// `GET /liveness`.
    pub last_cycle_at: Instant,
}

/// A DCS read and when it happened.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub cluster: Arc<Cluster>,
    pub read_at: Instant,
}

/// The result of the agent's status query against the local PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresStatus {
    pub postmaster_start_time: DateTime<FixedOffset>,
    /// `server_version_num`, e.g. `150018`.
    pub server_version: u32,
    /// Current timeline; on a replica the one learnt from `IDENTIFY_SYSTEM`, `None` if unknown.
    pub timeline: Option<u64>,
    pub xlog: Xlog,
    /// One row per walsender (`pg_stat_replication`).
    pub replication: Vec<ReplicationRow>,
    /// A replica's WAL receiver: `streaming`, or `in archive recovery` when it is not
    /// streaming (later Patroni's field and values); `None` on a primary.
    pub replication_state: Option<String>,
}

/// WAL positions (LSNs as byte offsets from `0/0`).
#[derive(Debug, Clone, PartialEq)]
pub enum Xlog {
    /// Not in recovery: the current WAL write position.
    Primary { location: u64 },
    /// In recovery.
    Replica {
        /// `None` while nothing was streamed yet (then the replayed position is reported).
        received_location: Option<u64>,
        replayed_location: u64,
        replayed_timestamp: Option<DateTime<FixedOffset>>,
        /// WAL replay is paused (`pg_is_wal_replay_paused()`).
        paused: bool,
    },
}

/// A walsender as reported in `replication` (field names are Patroni's JSON keys).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicationRow {
    pub usename: Option<String>,
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: String,
    pub sync_state: String,
    pub sync_priority: i32,
}

impl NodeSnapshot {
    /// A node that has not done anything yet: PostgreSQL stopped, no DCS view, not leader,
    /// Patroni's default timings (ttl 30 s, loop_wait 10 s), last cycle "now".
    pub fn new(name: impl Into<String>, scope: impl Into<String>) -> NodeSnapshot {
        NodeSnapshot {
            name: name.into(),
            scope: scope.into(),
            state: "stopped".to_string(),
            role: Role::Uninitialized,
            postgres: None,
            leader_until: None,
            cluster: None,
            dcs_last_seen: 0,
            database_system_identifier: None,
            tags: Map::new(),
            pending_restart: false,
            paused: false,
            standby_cluster: false,
            scheduled_restart: None,
            failsafe_mode: false,
            failsafe_mode_is_active: false,
            watchdog_failed: false,
            ttl: Duration::from_secs(30),
            loop_wait: Duration::from_secs(10),
            last_cycle_at: Instant::now(),
        }
    }

    /// Patroni's `ha.is_leader()`: the leader key was ours at the last refresh and that refresh
    /// is younger than `ttl`.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.leader_until.is_some_and(|until| now < until)
    }

    /// Patroni's `dcs.cluster`: the cached view while it is younger than `ttl`, else nothing.
    pub fn valid_cluster(&self, now: Instant) -> Option<&Cluster> {
        self.cluster
            .as_ref()
            .filter(|view| now < view.read_at + self.ttl)
            .map(|view| view.cluster.as_ref())
    }
}
