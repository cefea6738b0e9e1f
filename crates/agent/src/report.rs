//! What the agent tells others: its member key and the REST API snapshot.

use crate::agent::Agent;
use chrono::DateTime;
use pgherd_api::{ClusterView, LivePostgres, NodeSnapshot, PostgresStatus, ReplicationRow, Xlog};
use pgherd_dcs::{Cluster, MemberData};
use pgherd_ha::{AsyncAction, LocalPg};
use std::sync::Arc;
use std::time::Duration;

pub fn state_string(a: &Agent, pg: &LocalPg) -> String {
    // A clone or bootstrap starts PostgreSQL before it is done: the member is not `running`
    // (and takes no restart) until the task has finished, as in Patroni.
    match a.tasks.kind() {
        Some(AsyncAction::Bootstrap) => "initializing new cluster",
        Some(AsyncAction::Clone | AsyncAction::Reinitialize) => "creating replica",
        _ if pg.running && pg.queryable => "running",
        _ if pg.running => "starting",
        Some(AsyncAction::Start | AsyncAction::Restart | AsyncAction::Promote) => "starting",
        Some(AsyncAction::Stop) => "stopping",
        Some(AsyncAction::Rewind) => "stopped",
        // Paused, a server that went away is `stopped` (Patroni's pause path sets that
        // state; docs/compat.md#ha-cycle, step 11).
        None if a.pg.crashed() && !a.dynamic.config.pause => "crashed",
        None => "stopped",
    }
    .to_string()
}

pub fn member_data(a: &Agent, pg: &LocalPg, cluster: Option<&Cluster>) -> MemberData {
    MemberData {
        conn_url: a.me.conn_url.clone(),
        api_url: a.me.api_url.clone(),
        state: state_string(a, pg),
        role: Some(a.pg.role()),
        version: pgherd_api::PATRONI_COMPAT_VERSION.to_string(),
        xlog_location: pg.queryable.then_some(pg.wal_position),
        timeline: pg.queryable.then_some(pg.timeline),
        tags: a.cfg.effective_tags(),
        pending_restart: a.pg.state().is_some_and(|s| s.pending_restart),
        pause: cluster.is_some_and(Cluster::is_paused),
        replication_state: (pg.queryable && pg.in_recovery).then(|| {
            if pg.streaming {
                pgherd_dcs::REPLICATION_STREAMING
            } else {
                pgherd_dcs::REPLICATION_NOT_STREAMING
            }
            .to_string()
        }),
        scheduled_restart: a.schedules.restart.as_ref().map(|r| {
            let started = a.pg.state().map(|s| s.postmaster_start_time.as_str());
            r.to_member_value(started)
        }),
        ..MemberData::default()
    }
}

fn parse_ts(s: &str) -> Option<DateTime<chrono::FixedOffset>> {
    DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z").ok()
}

pub fn publish_snapshot(a: &Agent, pg: &LocalPg, cluster: Option<Arc<Cluster>>) {
    let now = tokio::time::Instant::now();
    let ttl = Duration::from_millis(a.dynamic.settings.ttl);
    let view = cluster.map(|c| ClusterView {
        cluster: c,
        read_at: now,
    });
    let previous_view = a.snapshot_tx.borrow().cluster.clone();
    let snapshot = NodeSnapshot {
        name: a.me.name.clone(),
        scope: a.cfg.scope.clone(),
        state: state_string(a, pg),
        role: a.pg.role(),
        postgres: a.pg.state().map(postgres_status),
        leader_until: a.lease.valid_until(a.dynamic.settings.ttl),
        paused: view
            .as_ref()
            .map(|v| v.cluster.is_paused())
            .unwrap_or(a.dynamic.config.pause),
        cluster: view.or(previous_view),
        dcs_last_seen: a.view.last_seen,
        database_system_identifier: a.pg.sysid().map(str::to_string),
        tags: a.cfg.effective_tags(),
        pending_restart: a.pg.state().is_some_and(|s| s.pending_restart),
        standby_cluster: a.dynamic.config.standby_cluster.is_some(),
        scheduled_restart: a
            .schedules
            .restart
            .as_ref()
            .map(|r| r.to_member_value(None)),
        failsafe_mode: a.dynamic.config.failsafe_mode,
        failsafe_mode_is_active: a.dynamic.config.failsafe_mode
            && a.failsafe.is_active(a.lease.now(), a.dynamic.settings.ttl),
        watchdog_failed: !a.watchdog.with(|w| w.allows_leadership()),
        ttl,
        loop_wait: Duration::from_millis(a.dynamic.settings.loop_wait),
        last_cycle_at: now,
    };
    let _ = a.snapshot_tx.send(Arc::new(snapshot));
}

/// The REST API's view of one status query.
pub fn postgres_status(s: &pgherd_postgres::PgState) -> PostgresStatus {
    PostgresStatus {
        postmaster_start_time: parse_ts(&s.postmaster_start_time).unwrap_or_else(|| {
            DateTime::from_timestamp(0, 0)
                .unwrap_or_default()
                .fixed_offset()
        }),
        server_version: s.server_version,
        timeline: Some(s.timeline),
        xlog: if s.in_recovery {
            Xlog::Replica {
                received_location: s.received_lsn,
                replayed_location: s.replayed_lsn.unwrap_or(0),
                replayed_timestamp: s.replayed_timestamp.as_deref().and_then(parse_ts),
                paused: s.replay_paused,
            }
        } else {
            Xlog::Primary {
                location: s.wal_lsn,
            }
        },
        replication: s
            .replication
            .iter()
            .map(|r| ReplicationRow {
                usename: Some(r.usename.clone()),
                application_name: r.application_name.clone(),
                client_addr: r.client_addr.clone(),
                state: r.state.clone(),
                sync_state: r.sync_state.clone(),
                sync_priority: r.sync_priority,
            })
            .collect(),
        replication_state: s.in_recovery.then(|| {
            let streaming = s
                .wal_receiver
                .as_ref()
                .is_some_and(pgherd_postgres::WalReceiver::is_streaming);
            if streaming {
                pgherd_dcs::REPLICATION_STREAMING
            } else {
                pgherd_dcs::REPLICATION_NOT_STREAMING
            }
            .to_string()
        }),
    }
}

/// The REST API looks at PostgreSQL at request time (see `pgherd_api::LiveStatus`): a pid
/// check, then the status query, through the agent's [`crate::world::PgControl`].
pub struct LiveStatus(pub Arc<dyn crate::world::PgControl>);

impl pgherd_api::LiveStatus for LiveStatus {
    fn status(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = LivePostgres> + Send + '_>> {
        Box::pin(async move {
            if self.0.postmaster().is_none() {
                return LivePostgres::Down;
            }
            match self.0.query_state().await {
                Ok(s) => LivePostgres::Answered(postgres_status(&s)),
                Err(_) => LivePostgres::NoAnswer,
            }
        })
    }
}
