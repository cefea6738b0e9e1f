//! What the engine sees in one cycle.

use pgherd_dcs::Cluster;

/// Milliseconds on a monotonic clock chosen by the caller (the agent: since process start;
/// the simulator: simulated time). Only differences matter.
pub type Millis = u64;

/// Static and dynamic settings the engine needs, already merged by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub name: String,
    pub ttl: Millis,
    pub loop_wait: Millis,
    pub retry_timeout: Millis,
    /// The leader stops being writable this long before its lease could expire.
    pub fencing_margin: Millis,
    pub maximum_lag_on_failover: u64,
    /// `primary_start_timeout` (alias `master_start_timeout`); 0 = fail over at once.
    pub primary_start_timeout: Millis,
    pub check_timeline: bool,
    pub synchronous_mode: bool,
    pub synchronous_mode_strict: bool,
    /// `failsafe_mode`: only members of the `failsafe` topology may become leader.
    pub failsafe_mode: bool,
    pub synchronous_node_count: usize,
    /// `maximum_lag_on_syncnode` in bytes; 0 or less: no limit.
    pub maximum_lag_on_syncnode: i64,
    pub use_pg_rewind: bool,
    pub remove_data_directory_on_rewind_failure: bool,
    pub remove_data_directory_on_diverged_timelines: bool,
    pub nofailover: bool,
    pub failover_priority: i64,
    pub replicatefrom: Option<String>,
    /// The local configuration has a `bootstrap` section (may initialize a new cluster).
    pub can_bootstrap: bool,
}

impl Settings {
    /// Test/simulation defaults for a member called `name`.
    pub fn for_member(name: &str) -> Settings {
        Settings {
            name: name.to_string(),
            ttl: 10_000,
            loop_wait: 1_000,
            retry_timeout: 3_000,
            fencing_margin: 2_000,
            maximum_lag_on_failover: 1_048_576,
            primary_start_timeout: 300_000,
            check_timeline: false,
            synchronous_mode: false,
            synchronous_mode_strict: false,
            failsafe_mode: false,
            synchronous_node_count: 1,
            maximum_lag_on_syncnode: -1,
            use_pg_rewind: true,
            remove_data_directory_on_rewind_failure: false,
            remove_data_directory_on_diverged_timelines: false,
            nofailover: false,
            failover_priority: 1,
            replicatefrom: None,
            can_bootstrap: true,
        }
    }
}

/// The data directory as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDir {
    /// Missing or empty: this node must bootstrap or clone.
    Empty,
    Initialized {
        sysid: String,
    },
    /// Present but unusable; never touched automatically.
    Invalid(String),
}

/// Local PostgreSQL as observed this cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPg {
    pub data_dir: DataDir,
    /// The postmaster is alive.
    pub running: bool,
    /// It answered the state query (accepting connections).
    pub queryable: bool,
    pub in_recovery: bool,
    /// Primary: current WAL LSN; replica: max(received, replayed).
    pub wal_position: u64,
    pub timeline: u64,
    /// How a running standby (or a server not answering yet) is configured; `None` as a
    /// primary.
    pub following: Option<crate::Replication>,
    /// A standby whose WAL receiver is streaming from its upstream.
    pub streaming: bool,
    /// Stopped, and `pg_control` says a primary shut down cleanly ("shut down"): starting it
    /// as a primary continues its timeline with nothing lost or rewritten.
    pub stopped_cleanly_as_primary: bool,
    /// Stopped, with a leader present: our timeline diverged from the leader's (rewind needed).
    /// `None` when unknown or not checked.
    pub diverged: Option<bool>,
    /// Primary: its walsenders (`pg_stat_replication`).
    pub replication: Vec<StandbyLink>,
    /// Primary: the standbys named in `synchronous_standby_names` (`["*"]` for any).
    pub sync_standby_names: Vec<String>,
}

/// One walsender on the primary, as `pg_stat_replication` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyLink {
    /// `application_name`: the member name.
    pub name: String,
    pub streaming: bool,
    /// `sync_state` is `sync` or `quorum`: commits wait for this standby now.
    pub synchronous: bool,
    /// Flush position reported by the standby.
    pub lsn: u64,
}

impl LocalPg {
    pub fn stopped(data_dir: DataDir) -> LocalPg {
        LocalPg {
            data_dir,
            running: false,
            queryable: false,
            in_recovery: false,
            wal_position: 0,
            timeline: 0,
            following: None,
            streaming: false,
            stopped_cleanly_as_primary: false,
            diverged: None,
            replication: Vec::new(),
            sync_standby_names: Vec::new(),
        }
    }

    pub fn is_primary(&self) -> bool {
        self.running && self.queryable && !self.in_recovery
    }
}

/// A peer's `GET /patroni` answer (only gathered while the cluster has no leader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerProbe {
    pub name: String,
    /// `None`: unreachable or not answering within the probe timeout.
    pub reply: Option<PeerReply>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReply {
    pub running: bool,
    /// Its PostgreSQL is starting (or restarting): its WAL position is not known yet. See
    /// [`PeerReply::is_starting_state`].
    pub starting: bool,
    pub is_primary: bool,
    pub wal_position: Option<u64>,
    pub timeline: Option<u64>,
    pub nofailover: bool,
    pub failover_priority: i64,
}

impl PeerReply {
    /// The member `state`s (`GET /patroni`) of a PostgreSQL that is coming up.
    pub fn is_starting_state(state: &str) -> bool {
        matches!(state, "starting" | "restarting")
    }
}

/// A long-running operation the agent is executing in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncAction {
    Bootstrap,
    Clone,
    Start,
    Stop,
    Restart,
    Promote,
    Rewind,
    Reinitialize,
}

impl AsyncAction {
    pub fn describe(self) -> &'static str {
        match self {
            AsyncAction::Bootstrap => "bootstrap",
            AsyncAction::Clone => "replica creation",
            AsyncAction::Start => "starting",
            AsyncAction::Stop => "stopping",
            AsyncAction::Restart => "restart",
            AsyncAction::Promote => "promote",
            AsyncAction::Rewind => "rewind",
            AsyncAction::Reinitialize => "reinitialize",
        }
    }
}

/// Everything the engine may look at in one cycle.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    pub now: Millis,
    pub settings: &'a Settings,
    /// `None`: the DCS could not be read within `retry_timeout`.
    pub cluster: Option<&'a Cluster>,
    pub pg: &'a LocalPg,
    /// Probes of the other members; empty unless the cluster has no leader.
    pub peers: &'a [PeerProbe],
    pub in_progress: Option<AsyncAction>,
    /// Last time (sent-at, conservative) our leader lease was confirmed by the DCS.
    pub lock_confirmed_at: Option<Millis>,
    /// A `pre_promote` script refused a promotion: do not race for the lock before this.
    pub promotion_blocked_until: Option<Millis>,
    /// Wall-clock time (Unix epoch, milliseconds), for `scheduled_at` of switchovers only.
    pub wall_clock_ms: i64,
    /// `false` in `watchdog.mode: required` without a safe, working device: no race for the
    /// lock, and a leader demotes.
    pub watchdog_allows_leadership: bool,
    /// The DCS could not be read, and every member of the failsafe topology acknowledged us
    /// as their leader (`POST /failsafe`) this cycle: stay primary.
    pub failsafe_confirmed: bool,
}
