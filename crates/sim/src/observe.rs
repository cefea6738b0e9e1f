//! What the agent sees and says: the observation of PostgreSQL (crates/agent/src/observe.rs),
//! the member key and the REST snapshot peers probe (report.rs), and the parameters it writes.

use crate::agent::Agent;
use crate::pg::Control;
use crate::world::World;
use pgherd_dcs::{Cluster, MemberData, Role};
use pgherd_ha::{parse_standby_names, AsyncAction, DataDir, LocalPg, StandbyLink};

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
    let caught_up_from = if w.opts.workarounds.sync_confirm_after_catch_up {
        w.nodes[n].pg.sync_changed_at
    } else {
        0
    };
    let links: Vec<StandbyLink> = if w.nodes[n].pg.running && w.nodes[n].pg.accepting {
        w.walsenders(n)
            .into_iter()
            .map(|(m, lsn, streaming, synchronous)| StandbyLink {
                name: w.nodes[m].name.clone(),
                streaming,
                // The patched confirmation: synchronous *and* caught up since the change.
                synchronous: synchronous && lsn >= caught_up_from,
                lsn,
            })
            .collect()
    } else {
        Vec::new()
    };
    let fixes = (
        w.opts.workarounds.orphan_timeline_is_diverged,
        w.opts.workarounds.higher_timeline_is_diverged,
    );
    let node = &mut w.nodes[n];
    let pg = &node.pg;
    let name = node.name.as_str();
    let sync_mode = node.settings.synchronous_mode;
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
        if local.queryable && local.in_recovery {
            local.diverged = cluster.and_then(|c| {
                diverged(
                    c,
                    name,
                    local.timeline,
                    local.wal_position,
                    false,
                    false,
                    fixes,
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
            local.shutdown_as_primary = pg.control == Control::ShutDown;
            let crashed_primary = pg.control == Control::InProduction;
            let clean_primary = pg.control == Control::ShutDown;
            let (tl, lsn) = (local.timeline, local.wal_position);
            local.diverged = cluster
                .and_then(|c| diverged(c, name, tl, lsn, clean_primary, crashed_primary, fixes));
        }
    }
    a.was_running = pg.running;
    local
}

/// observe.rs `diverged`: whether our WAL went past where the leader's timeline forked from
/// ours, judged from the DCS `history`; `None` without a leader.
fn diverged(
    c: &Cluster,
    me: &str,
    our_tl: u64,
    our_lsn: u64,
    clean_primary: bool,
    crashed_primary: bool,
    (orphan_fix, higher_fix): (bool, bool),
) -> Option<bool> {
    let leader = c.leader_member().filter(|l| l.name != me)?;
    let leader_tl = leader.data.timeline.unwrap_or(0).max(c.timeline());
    if higher_fix && leader_tl < our_tl && leader.data.timeline.is_some() {
        return Some(true);
    }
    if leader_tl <= our_tl {
        return Some(false);
    }
    if crashed_primary {
        return Some(true);
    }
    let switch = c
        .history
        .as_ref()
        .and_then(|h| h.value.iter().find(|e| e.timeline == our_tl))
        .map(|e| e.switch_lsn);
    // The leader published its own history (its newest line names it) and our timeline is
    // not in it: ours is not an ancestor of the leader's. (Skipped timeline ids make
    // "last entry + 1" unreliable, so the author is what tells a current history.)
    let current = c
        .history
        .as_ref()
        .and_then(|h| h.value.last())
        .is_some_and(|e| e.new_leader.as_deref() == Some(leader.name.as_str()));
    Some(match switch {
        Some(fork) => our_lsn > fork || (clean_primary && our_lsn >= fork),
        None if orphan_fix && current => true,
        None => clean_primary,
    })
}

fn state_string(a: &Agent, pg: &LocalPg) -> &'static str {
    if pg.running {
        return if pg.queryable { "running" } else { "starting" };
    }
    match a.task.as_ref().map(|t| t.kind) {
        Some(AsyncAction::Bootstrap) => "initializing new cluster",
        Some(AsyncAction::Clone | AsyncAction::Reinitialize) => "creating replica",
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
    let running = state_string(a, pg) == "running";
    let (is_primary, wal, tl) = match a.pg_state {
        Some((in_recovery, wal, tl)) => (!in_recovery, Some(wal), Some(tl)),
        None => (false, None, None),
    };
    a.snapshot.running = running;
    a.snapshot.is_primary = is_primary;
    a.snapshot.wal_position = wal;
    a.snapshot.timeline = tl;
}
