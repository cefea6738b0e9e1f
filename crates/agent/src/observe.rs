//! Observing the local PostgreSQL: the facts the engine decides on.

use crate::agent::Agent;
use pgherd_dcs::Cluster;
use pgherd_ha::{parse_standby_names, DataDir, LocalPg, LocalWal, StandbyLink};
use pgherd_postgres::{ClusterState, DataDirState};
use std::time::Duration;

/// The status query must not stall a cycle: a server that does not answer in time counts as
/// "running but not accepting connections".
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn local_pg(a: &mut Agent, cluster: Option<&Cluster>) -> LocalPg {
    let data_dir = match a.pg.data_dir_state() {
        DataDirState::Missing | DataDirState::Empty => DataDir::Empty,
        DataDirState::Initialized { sysid } => {
            a.sysid = Some(sysid.clone());
            DataDir::Initialized { sysid }
        }
        DataDirState::Invalid(why) => DataDir::Invalid(why),
    };
    let initialized = matches!(data_dir, DataDir::Initialized { .. });
    let mut pg = LocalPg::stopped(data_dir);
    pg.running = a.pg.is_running().is_some();
    if pg.running {
        match tokio::time::timeout(QUERY_TIMEOUT, a.pg.query_state()).await {
            Ok(Ok(state)) => {
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
                if a.dynamic.synchronous_mode
                    && a.sync_standby_names.is_none()
                    && !state.in_recovery
                {
                    a.sync_standby_names = Some(state.synchronous_standby_names.clone());
                }
                a.pg_state = Some(state);
            }
            _ => a.pg_state = None,
        }
        if pg.in_recovery || !pg.queryable {
            pg.following = a.upstream.clone();
        }
        // A standby that streams is on the leader's history by definition. Its reported
        // timeline lags while it switches timelines, and a new leader needs a cycle to create
        // its slot, so only a standby that has not been able to stream for a while is checked.
        let streaming = a
            .pg_state
            .as_ref()
            .and_then(|s| s.wal_receiver.as_ref())
            .is_some_and(|w| w.status == "streaming");
        pg.streaming = streaming && pg.in_recovery;
        let now = tokio::time::Instant::now();
        let stuck_since = if streaming || !pg.in_recovery {
            a.not_streaming_since = None;
            now
        } else {
            *a.not_streaming_since.get_or_insert(now)
        };
        let patience = Duration::from_millis(a.settings.loop_wait * 2).max(Duration::from_secs(5));
        if pg.queryable && pg.in_recovery && now.duration_since(stuck_since) >= patience {
            pg.diverged = cluster.and_then(|c| {
                pgherd_ha::diverged(c, &a.name, pg.timeline, LocalWal::Running(pg.wal_position))
            });
        }
        a.crashed = false;
    } else {
        a.pg_state = None;
        if a.was_running && a.task.is_none() {
            a.crashed = true;
        }
        if initialized {
            if let Ok(cd) = a.pg.controldata().await {
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
                pg.diverged =
                    cluster.and_then(|c| pgherd_ha::diverged(c, &a.name, cd.timeline, wal));
            }
        }
    }
    a.was_running = pg.running;
    pg
}
