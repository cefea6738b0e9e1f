//! What the agent sees and says: the observation of PostgreSQL (crates/agent/src/observe.rs),
//! the member key and the REST snapshot peers probe (report.rs), and the parameters it writes.

use crate::agent::Agent;
use crate::pg::Control;
use crate::world::World;
use pgherd_dcs::{Cluster, MemberData, Role};
use pgherd_ha::{
    parse_standby_names, AsyncAction, DataDir, LocalPg, LocalWal, PeerReply, StandbyLink,
};

/// The `synchronous_standby_names` the agent writes into postgresql.conf (agent.rs
/// `parameters`): its managed value in synchronous mode, else nothing (= asynchronous).
pub(crate) fn sync_param(w: &World, n: usize) -> String {
    let node = &w.nodes[n];
    if !node.settings.synchronous_mode {
        return String::new();
    }
    node.agent
        .as_ref()
        .and_then(|a| a.sync_standby_names.clone())
        .unwrap_or_default()
}

pub(crate) fn observe(w: &mut World, n: usize, cluster: Option<&Cluster>) -> LocalPg {
    let links: Vec<StandbyLink> = if w.nodes[n].pg.running && w.nodes[n].pg.accepting {
        w.walsenders(n)
            .into_iter()
            .map(|(m, lsn, streaming, synchronous)| StandbyLink {
                name: w.nodes[m].name.clone(),
                streaming,
                // pg_stat_replication's sync_state: "sync" as soon as PostgreSQL waits for
                // it, caught up or not (the engine confirms it once caught up).
                synchronous,
                lsn,
            })
            .collect()
    } else {
        Vec::new()
    };
    let receiving = wal_receiver_streaming(w, n);
    let now = w.now;
    let node = &mut w.nodes[n];
    let pg = &node.pg;
    let name = node.name.as_str();
    let sync_mode = node.settings.synchronous_mode;
    // The agent's patience before it judges a standby that cannot stream.
    let patience = (node.settings.loop_wait * 2).max(5_000);
    let Some(a) = node.agent.as_mut() else {
        return LocalPg::stopped(pg.data.clone());
    };
    let mut local = LocalPg::stopped(pg.data.clone());
    local.running = pg.running;
    if pg.running {
        if pg.accepting {
            local.queryable = true;
            local.in_recovery = pg.in_recovery;
            local.wal_position = pg.wal.end;
            local.timeline = pg.wal.timeline();
            local.replication = links;
            local.sync_standby_names = parse_standby_names(&pg.sync_active);
            // After an agent restart, keep what the running primary waits for.
            if sync_mode && a.sync_standby_names.is_none() && !pg.in_recovery {
                a.sync_standby_names = Some(pg.sync_active.clone());
            }
            a.pg_state = Some((pg.in_recovery, pg.wal.end, pg.wal.timeline()));
        } else {
            a.pg_state = None;
        }
        if local.in_recovery || !local.queryable {
            local.following = a.upstream.clone();
        }
        // A standby that streams is on the leader's history; one that has not been able to
        // stream for a while is checked for divergence.
        local.streaming = receiving && local.in_recovery;
        let stuck_since = if receiving || !local.in_recovery {
            a.not_streaming_since = None;
            now
        } else {
            *a.not_streaming_since.get_or_insert(now)
        };
        if local.queryable && local.in_recovery && now.saturating_sub(stuck_since) >= patience {
            local.diverged = cluster.and_then(|c| {
                pgherd_ha::diverged(
                    c,
                    name,
                    local.timeline,
                    LocalWal::Running(local.wal_position),
                )
            });
        }
        a.crashed = false;
    } else {
        a.pg_state = None;
        if a.was_running && a.task.is_none() {
            a.crashed = true;
        }
        if pg.initialized() {
            local.timeline = pg.wal.timeline();
            local.wal_position = pg.wal.end;
            local.stopped_cleanly_as_primary = pg.control == Control::ShutDown;
            // The model knows the true end of WAL: a clean former primary's ends with its
            // shutdown checkpoint, a standby's is where it replayed to.
            let end = local.wal_position;
            let wal = LocalWal::Stopped {
                checkpoint: if pg.control == Control::ShutDown {
                    end
                } else {
                    0
                },
                min_recovery: if pg.control == Control::ShutDown {
                    0
                } else {
                    end
                },
                crashed_primary: pg.control == Control::InProduction,
            };
            let tl = local.timeline;
            local.diverged = cluster.and_then(|c| pgherd_ha::diverged(c, name, tl, wal));
        }
    }
    a.was_running = pg.running;
    local
}

/// `pg_stat_wal_receiver.status = 'streaming'`: connected to the upstream's current
/// postmaster (a paused upstream keeps the connection) and not refused as diverged.
fn wal_receiver_streaming(w: &World, n: usize) -> bool {
    let pg = &w.nodes[n].pg;
    let Some((up, epoch)) = pg.streaming_from.as_ref() else {
        return false;
    };
    pg.running
        && pg.in_recovery
        && pg.upstream.as_ref() == Some(up)
        && w.index_of(up).is_some_and(|u| {
            let source = &w.nodes[u].pg;
            source.running && source.epoch == *epoch
        })
}

fn state_string(a: &Agent, pg: &LocalPg) -> &'static str {
    match a.task.as_ref().map(|t| t.kind) {
        Some(AsyncAction::Bootstrap) => "initializing new cluster",
        Some(AsyncAction::Clone | AsyncAction::Reinitialize) => "creating replica",
        _ if pg.running && pg.queryable => "running",
        _ if pg.running => "starting",
        Some(AsyncAction::Start | AsyncAction::Restart | AsyncAction::Promote) => "starting",
        Some(AsyncAction::Stop) => "stopping",
        Some(AsyncAction::Rewind) => "stopped",
        None if a.crashed => "crashed",
        None => "stopped",
    }
}

fn role(a: &mut Agent, pg: &LocalPg) -> Role {
    if matches!(pg.data_dir, DataDir::Empty) {
        a.role = Role::Uninitialized;
    } else if pg.queryable {
        a.role = if pg.in_recovery {
            Role::Replica
        } else {
            Role::Primary
        };
    } else if a.role == Role::Uninitialized {
        a.role = Role::Replica;
    }
    a.role
}

pub(crate) fn member_data(
    w: &mut World,
    n: usize,
    pg: &LocalPg,
    cluster: Option<&Cluster>,
) -> MemberData {
    let node = &mut w.nodes[n];
    let name = node.name.clone();
    let mut tags = serde_json::Map::new();
    if node.settings.nofailover {
        tags.insert("nofailover".into(), true.into());
    }
    if node.settings.failover_priority != 1 {
        tags.insert(
            "failover_priority".into(),
            node.settings.failover_priority.into(),
        );
    }
    let Some(a) = node.agent.as_mut() else {
        return MemberData::default();
    };
    MemberData {
        conn_url: format!("postgres://{name}:5432/postgres"),
        api_url: format!("http://{name}:8008/patroni"),
        state: state_string(a, pg).to_string(),
        role: Some(role(a, pg)),
        version: "3.0.2".into(),
        xlog_location: pg.queryable.then_some(pg.wal_position),
        timeline: pg.queryable.then_some(pg.timeline),
        tags,
        pause: cluster.is_some_and(Cluster::is_paused),
        ..MemberData::default()
    }
}

pub(crate) fn publish_snapshot(a: &mut Agent, pg: &LocalPg) {
    let state = state_string(a, pg);
    let running = state == "running";
    a.snapshot.starting = PeerReply::is_starting_state(state);
    let (is_primary, wal, tl) = match a.pg_state {
        Some((in_recovery, wal, tl)) => (!in_recovery, Some(wal), Some(tl)),
        None => (false, None, None),
    };
    a.snapshot.running = running;
    a.snapshot.is_primary = is_primary;
    a.snapshot.wal_position = wal;
    a.snapshot.timeline = tl;
}
