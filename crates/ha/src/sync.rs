//! Synchronous replication on the leader (docs/compat.md#synchronous-replication).
//!
//! The `sync` key may only name standbys that really have every acknowledged commit, since
//! only they may be promoted. So a standby leaves `sync` *before* PostgreSQL stops waiting
//! for it, and joins `sync` only *after* PostgreSQL reports it synchronous.

use crate::action::Action;
use crate::observation::Observation;
use pgherd_dcs::Cluster;
use std::collections::BTreeSet;

/// The leader's synchronous-replication step: actions plus a note for the reason sentence.
/// `since`: the standby names PostgreSQL waits for and our WAL position when we first saw it
/// wait for them (engine memory).
pub fn plan(
    obs: &Observation<'_>,
    cluster: &Cluster,
    since: &mut Option<(BTreeSet<String>, u64)>,
) -> (Vec<Action>, Option<String>) {
    let s = obs.settings;
    let pg = obs.pg;
    if !s.synchronous_mode {
        return match &cluster.sync {
            Some(sync) => (
                vec![Action::DeleteSync { index: sync.index }],
                Some("synchronous mode is off: removed the sync key".into()),
            ),
            None => (Vec::new(), None),
        };
    }

    // Healthy candidates: streaming members without nosync, most advanced first,
    // already-synchronous ones preferred so a working setup is not reshuffled.
    let mut candidates: Vec<_> = pg
        .replication
        .iter()
        .filter(|l| l.streaming && l.name != s.name)
        .filter(|l| {
            cluster
                .members
                .get(&l.name)
                .is_some_and(|m| m.data.is_running() && !m.data.nosync())
        })
        .collect();
    candidates.sort_by(|a, b| {
        b.synchronous
            .cmp(&a.synchronous)
            .then(b.lsn.cmp(&a.lsn))
            .then(a.name.cmp(&b.name))
    });
    // `maximum_lag_on_syncnode`: a standby further behind the most advanced one (ourselves
    // when there is only one) is not healthy enough to stay or become synchronous, so a hung
    // synchronous standby is replaced (Patroni's `current_state`).
    if let Ok(max_lag) = u64::try_from(s.maximum_lag_on_syncnode) {
        if max_lag > 0 {
            let max_lsn = match candidates.len() {
                0 | 1 => pg.wal_position,
                _ => candidates.iter().map(|l| l.lsn).max().unwrap_or(0),
            };
            candidates.retain(|l| max_lsn.saturating_sub(l.lsn) <= max_lag);
        }
    }
    let desired: BTreeSet<String> = candidates
        .iter()
        .take(s.synchronous_node_count.max(1))
        .map(|l| l.name.clone())
        .collect();

    let ours = cluster
        .sync
        .as_ref()
        .filter(|k| k.value.leader.as_deref() == Some(s.name.as_str()));
    let listed: BTreeSet<String> = ours
        .map(|k| k.value.standbys().into_iter().collect())
        .unwrap_or_default();
    let index = cluster.sync.as_ref().map(|k| k.index);
    let keep: BTreeSet<String> = listed.intersection(&desired).cloned().collect();

    let mut actions = Vec::new();
    let mut note = None;
    if ours.is_none() || keep != listed {
        actions.push(Action::WriteSync {
            standbys: keep.iter().cloned().collect(),
            index,
        });
        let dropped: Vec<_> = listed.difference(&desired).cloned().collect();
        if !dropped.is_empty() {
            note = Some(format!(
                "removed {} from the synchronous standbys",
                dropped.join(",")
            ));
        }
    }
    let configured: BTreeSet<String> = pg.sync_standby_names.iter().cloned().collect();
    if configured != desired {
        if desired.is_empty() {
            note = Some(if s.synchronous_mode_strict {
                "no synchronous standby available: commits wait (synchronous_mode_strict)".into()
            } else {
                "no synchronous standby available: falling back to asynchronous replication".into()
            });
        } else {
            note = Some(format!(
                "setting synchronous standbys to {}",
                desired.iter().cloned().collect::<Vec<_>>().join(",")
            ));
        }
        actions.push(Action::SetSynchronousStandbys {
            names: desired.iter().cloned().collect(),
            strict: s.synchronous_mode_strict,
        });
    } else if actions.is_empty() {
        // PostgreSQL reports a standby "sync" as soon as it waits for it, before it has the
        // commits acknowledged through the previous synchronous standby. Confirm it only once
        // it has flushed up to where we first saw PostgreSQL wait for it
        // (docs/compat.md#synchronous-replication).
        let from = match since {
            Some((names, lsn)) if *names == configured => *lsn,
            _ => {
                *since = Some((configured.clone(), pg.wal_position));
                pg.wal_position
            }
        };
        let confirmed: BTreeSet<String> = pg
            .replication
            .iter()
            .filter(|l| l.synchronous && desired.contains(&l.name) && l.lsn >= from)
            .map(|l| l.name.clone())
            .collect();
        let grown: BTreeSet<String> = keep.union(&confirmed).cloned().collect();
        if grown != listed {
            note = Some(format!(
                "synchronous standbys confirmed: {}",
                grown.iter().cloned().collect::<Vec<_>>().join(",")
            ));
            actions.push(Action::WriteSync {
                standbys: grown.into_iter().collect(),
                index,
            });
        }
    }
    (actions, note)
}

/// Names in a `synchronous_standby_names` value: `a`, `"a"`, `N (a, b)`, `FIRST N (..)`,
/// `ANY N (..)`, `*`. Empty string: none.
pub fn parse_standby_names(value: &str) -> Vec<String> {
    let v = value.trim();
    if v.is_empty() {
        return Vec::new();
    }
    let inner = match (v.find('('), v.rfind(')')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v,
    };
    inner
        .split(',')
        .map(|n| n.trim().trim_matches('"').to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_standby_names() {
        assert!(parse_standby_names("").is_empty());
        assert_eq!(parse_standby_names("\"node2\""), vec!["node2"]);
        assert_eq!(parse_standby_names("2 (\"a\",\"b\")"), vec!["a", "b"]);
        assert_eq!(parse_standby_names("ANY 1 (a, b)"), vec!["a", "b"]);
        assert_eq!(parse_standby_names("*"), vec!["*"]);
    }
}
