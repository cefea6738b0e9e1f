//! Leader housekeeping after each successful lock renewal: `status`, `history`, slots.

use crate::agent::Agent;
use anyhow::Result;
use pgherd_dcs::{history_to_json, Cluster, HistoryEntry, Status};
use pgherd_ha::LocalPg;
use tracing::{info, warn};

pub async fn publish(a: &mut Agent, cluster: &Cluster, pg: &LocalPg) -> Result<bool> {
    // Also while paused (a new leader after a switchover in pause needs its members'
    // slots), but then nothing unknown is dropped (Patroni's `_drop_incorrect_slots`).
    let role = if pg.in_recovery {
        crate::slots::Role::StandbyLeader
    } else {
        crate::slots::Role::Primary
    };
    let slots = crate::slots::sync(a, cluster, role).await.positions;
    let status = Status {
        optime: pg.wal_position,
        slots,
    };
    if cluster.status.as_ref() != Some(&status) {
        a.world.dcs.write_status(&status).await?;
    }
    publish_history(a, cluster, pg).await;
    Ok(true)
}

/// `history` gains our timeline's parents after a promotion (docs/compat.md#history-key).
async fn publish_history(a: &mut Agent, cluster: &Cluster, pg: &LocalPg) {
    let covered = |h: Option<&Cluster>, tl: u64| {
        tl <= 1
            || h.and_then(|c| c.history.as_ref())
                .and_then(|h| h.value.last())
                .is_some_and(|e| e.timeline + 1 >= tl)
    };
    // Steady state: the observation is a primary's and the stored history covers it.
    if !pg.in_recovery && covered(Some(cluster), pg.timeline) {
        return;
    }
    // The cycle's observation may predate a promotion done in the same cycle: ask again.
    let timeline = match a.world.pg.query_state().await {
        Ok(state) if !state.in_recovery => state.timeline,
        _ => pg.timeline,
    };
    // Re-read too: the history key may have changed since the cycle began.
    let fresh = a.world.dcs.get_cluster().await.ok();
    let stored: Vec<HistoryEntry> = fresh
        .as_ref()
        .unwrap_or(cluster)
        .history
        .as_ref()
        .map(|h| h.value.clone())
        .unwrap_or_default();
    if timeline <= 1 || stored.last().is_some_and(|e| e.timeline + 1 >= timeline) {
        return;
    }
    let pg = &LocalPg {
        timeline,
        ..pg.clone()
    };
    let file = match a.world.pg.read_timeline_history(pg.timeline).await {
        Ok(Some(f)) => f,
        Ok(None) => return,
        Err(e) => {
            warn!("reading the timeline history file failed: {e:#}");
            return;
        }
    };
    let modified: chrono::DateTime<chrono::Local> = file.modified.into();
    let count = file.entries.len();
    let entries: Vec<HistoryEntry> = file
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            // Older lines keep what the DCS already says; the newest is ours.
            let known = stored.iter().find(|s| s.timeline == e.timeline);
            let newest = i + 1 == count;
            HistoryEntry {
                timeline: e.timeline,
                switch_lsn: e.switch_lsn,
                reason: e.reason.clone(),
                timestamp: if newest {
                    Some(modified.to_rfc3339_opts(chrono::SecondsFormat::Micros, false))
                } else {
                    known.and_then(|k| k.timestamp.clone())
                },
                new_leader: if newest {
                    Some(a.me.name.clone())
                } else {
                    known.and_then(|k| k.new_leader.clone())
                },
            }
        })
        .collect();
    let max = a.dynamic.config.max_timelines_history as usize;
    let entries = if max > 0 && entries.len() > max {
        entries[entries.len() - max..].to_vec()
    } else {
        entries
    };
    match a
        .world
        .dcs
        .set_history_value(&history_to_json(&entries))
        .await
    {
        Ok(()) => info!("published timeline history up to timeline {}", pg.timeline),
        Err(e) => warn!("writing history failed: {e}"),
    }
}
