//! What the agent remembers about its PostgreSQL between cycles, and how each cycle's
//! [`Facts`] become the engine's [`LocalPg`] with that memory: crash detection, how long a
//! standby has not been streaming, the configuration as written, the role Patroni reports.

use crate::observe::Facts;
use pgherd_dcs::{Cluster, Role};
use pgherd_ha::{parse_standby_names, DataDir, LocalPg, LocalWal, Replication, StandbyLink};
use pgherd_postgres::{ClusterState, DataDirState, PgState};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// pg_rewind attempts before the node stays stopped for a human.
pub const MAX_REWIND_ATTEMPTS: u32 = 3;

pub struct PgRuntime {
    /// How postgresql.conf is written now (primary, standby of a member, or detached).
    pub replication: Replication,
    role: Role,
    sysid: Option<String>,
    /// The last answer to the status query (when it answered).
    state: Option<PgState>,
    /// What the status query said while PostgreSQL last ran: `server_version_num` and
    /// `pending_restart`, which a restart of a stopped server is checked against (Patroni
    /// keeps both from its last connection).
    last_seen: Option<(u32, bool)>,
    /// PostgreSQL was running at the previous cycle.
    was_running: bool,
    /// We saw PostgreSQL running and it stopped without us stopping it.
    crashed: bool,
    /// Since when our standby's WAL receiver has not been streaming.
    not_streaming_since: Option<Instant>,
    /// Consecutive pg_rewind failures; reset when the data directory changes.
    rewind_failures: u32,
    /// Parameters written to postgresql.conf last time.
    applied_params: Option<BTreeMap<String, String>>,
    /// `synchronous_standby_names` as set for synchronous mode (`None`: not managed).
    sync_standby_names: Option<String>,
}

impl PgRuntime {
    pub fn new(configured_as_standby: bool) -> PgRuntime {
        PgRuntime {
            replication: if configured_as_standby {
                Replication::Detached
            } else {
                Replication::Primary
            },
            role: Role::Uninitialized,
            sysid: None,
            state: None,
            last_seen: None,
            was_running: false,
            crashed: false,
            not_streaming_since: None,
            rewind_failures: 0,
            applied_params: None,
            sync_standby_names: None,
        }
    }

    pub fn state(&self) -> Option<&PgState> {
        self.state.as_ref()
    }

    /// `(server_version, pending_restart)` from the last status query that answered.
    pub fn last_seen(&self) -> Option<(u32, bool)> {
        self.last_seen
    }

    pub fn sysid(&self) -> Option<&str> {
        self.sysid.as_deref()
    }

    pub fn crashed(&self) -> bool {
        self.crashed
    }

    pub fn was_running(&self) -> bool {
        self.was_running
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn set_role(&mut self, role: Role) {
        self.role = role;
    }

    pub fn rewind_exhausted(&self) -> bool {
        self.rewind_failures >= MAX_REWIND_ATTEMPTS
    }

    pub fn rewind_failed(&mut self) {
        self.rewind_failures += 1;
    }

    /// A new or replaced data directory: forget what belonged to the old one.
    pub fn data_changed(&mut self) {
        self.rewind_failures = 0;
        self.applied_params = None;
    }

    /// We stopped PostgreSQL ourselves: its absence next cycle is no crash.
    pub fn stopped_by_us(&mut self) {
        self.was_running = false;
    }

    pub fn applied_params(&self) -> Option<&BTreeMap<String, String>> {
        self.applied_params.as_ref()
    }

    pub fn params_written(&mut self, params: BTreeMap<String, String>) {
        self.applied_params = Some(params);
    }

    pub fn forget_params(&mut self) {
        self.applied_params = None;
    }

    pub fn sync_standby_names(&self) -> Option<&str> {
        self.sync_standby_names.as_deref()
    }

    pub fn set_sync_standby_names(&mut self, names: Option<String>) {
        self.sync_standby_names = names;
    }

    /// This cycle's facts with what we remember: the engine's view of the local PostgreSQL.
    /// `task_running`: a background action owns PostgreSQL (a stop is not a crash);
    /// `stream_patience`: how long a standby may fail to stream before it is checked for
    /// divergence (its timeline lags while it switches, a new leader needs a cycle to create
    /// its slot).
    pub fn record(
        &mut self,
        facts: Facts,
        me: &str,
        cluster: Option<&Cluster>,
        sync_mode: bool,
        task_running: bool,
        stream_patience: Duration,
    ) -> LocalPg {
        let data_dir = match facts.data_dir {
            DataDirState::Missing | DataDirState::Empty => DataDir::Empty,
            DataDirState::Initialized { sysid } => {
                self.sysid = Some(sysid.clone());
                DataDir::Initialized { sysid }
            }
            DataDirState::Invalid(why) => DataDir::Invalid(why),
        };
        let mut pg = LocalPg::stopped(data_dir);
        pg.running = facts.running;
        self.state = facts.state;
        if let Some(s) = &self.state {
            self.last_seen = Some((s.server_version, s.pending_restart));
        }
        if pg.running {
            self.crashed = false;
            if let Some(state) = &self.state {
                pg.queryable = true;
                pg.in_recovery = state.in_recovery;
                pg.wal_position = state.wal_lsn;
                pg.timeline = state.timeline;
                pg.replication = state
                    .replication
                    .iter()
                    .map(|r| StandbyLink {
                        name: r.application_name.clone(),
                        streaming: r.state == "streaming",
                        synchronous: r.sync_state == "sync" || r.sync_state == "quorum",
                        lsn: r.flush_lsn.unwrap_or(0),
                    })
                    .collect();
                pg.sync_standby_names = parse_standby_names(&state.synchronous_standby_names);
                // After an agent restart, keep what the running primary waits for.
                if sync_mode && self.sync_standby_names.is_none() && !state.in_recovery {
                    self.sync_standby_names = Some(state.synchronous_standby_names.clone());
                }
            }
            if pg.in_recovery || !pg.queryable {
                pg.following = Some(self.replication.clone());
            }
            let streaming = self
                .state
                .as_ref()
                .and_then(|s| s.wal_receiver.as_ref())
                .is_some_and(pgherd_postgres::WalReceiver::is_streaming);
            pg.streaming = streaming && pg.in_recovery;
            let now = Instant::now();
            let stuck_since = if streaming || !pg.in_recovery {
                self.not_streaming_since = None;
                now
            } else {
                *self.not_streaming_since.get_or_insert(now)
            };
            // A standby that streams is on the leader's history by definition.
            if pg.queryable && pg.in_recovery && now.duration_since(stuck_since) >= stream_patience
            {
                pg.diverged = cluster.and_then(|c| {
                    pgherd_ha::diverged(c, me, pg.timeline, LocalWal::Running(pg.wal_position))
                });
            }
        } else {
            if self.was_running && !task_running {
                self.crashed = true;
            }
            if let Some(cd) = facts.control {
                pg.timeline = cd.timeline;
                pg.wal_position = cd.checkpoint_lsn.max(cd.min_recovery_lsn);
                pg.stopped_cleanly_as_primary = cd.state == ClusterState::ShutDown;
                let wal = LocalWal::Stopped {
                    checkpoint: cd.checkpoint_lsn,
                    min_recovery: cd.min_recovery_lsn,
                    // After a crash the end of WAL is unknown (past the last checkpoint):
                    // assume the worst and let pg_rewind find out.
                    crashed_primary: cd.state == ClusterState::InProduction,
                };
                pg.diverged = cluster.and_then(|c| pgherd_ha::diverged(c, me, cd.timeline, wal));
            }
        }
        self.was_running = pg.running;
        self.role = reported_role(self.role, &pg);
        pg
    }
}

/// The role Patroni reports for what we see: from the server when it answers, the last one
/// otherwise.
fn reported_role(last: Role, pg: &LocalPg) -> Role {
    if matches!(pg.data_dir, DataDir::Empty) {
        Role::Uninitialized
    } else if pg.queryable {
        if pg.in_recovery {
            Role::Replica
        } else {
            Role::Primary
        }
    } else if last == Role::Uninitialized {
        Role::Replica
    } else {
        last
    }
}
