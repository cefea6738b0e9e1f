//! Replication slots, as Patroni's `sync_replication_slots` (docs/compat.md#replication-slots):
//! which slots a member wants ([`wanted`], pure) and the pass that makes PostgreSQL match
//! ([`sync`]): create what is missing, drop what is neither wanted nor ignored.

use crate::agent::Agent;
use pgherd_dcs::{slot_name_for_member, Cluster};
use pgherd_postgres::{LogicalSlot, SlotDrop, SlotInfo};
use serde_json::Value;
use std::collections::BTreeMap;
use tracing::{debug, error, info, warn};

/// What a member is, for its slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the leader key, a primary: member slots and every permanent slot.
    Primary,
    /// Holds the leader key of a standby cluster: member slots and permanent physical slots.
    StandbyLeader,
    /// A replica: slots of the members that replicate from it (`replicatefrom`), and the
    /// permanent logical slots (kept, not created here: docs/compat.md#replication-slots).
    Replica,
}

/// A wanted slot: `None` physical, else logical with its database and plugin.
pub type Spec = Option<LogicalSlot>;

/// The slots `me` wants in its role (Patroni's `Cluster.get_replication_slots`).
pub fn wanted(
    cluster: &Cluster,
    me: &str,
    role: Role,
    nofailover: bool,
    permanent: Option<&Value>,
) -> BTreeMap<String, Spec> {
    let members: Vec<&str> = cluster
        .members
        .values()
        .filter(|m| m.name != me)
        .filter(|m| {
            let from = m.data.replicatefrom();
            match role {
                // Not for members streaming from another member, unless that one is us, or
                // is gone or not running: they then stream from the leader (the engine's
                // upstream_for; Patroni looks only at whether the member key exists).
                Role::Primary | Role::StandbyLeader => from.is_none_or(|r| {
                    r == me || !cluster.members.get(r).is_some_and(|m| m.data.is_running())
                }),
                // Only our downstream members, except one that became the leader.
                Role::Replica => from == Some(me) && cluster.leader_name() != Some(&m.name),
            }
        })
        .map(|m| m.name.as_str())
        .collect();
    let mut slots: BTreeMap<String, Spec> = BTreeMap::new();
    for name in &members {
        if let Some(other) = slots.insert(slot_name_for_member(name), None).map(|_| name) {
            error!(
                "cluster members share a replication slot name: {other} maps to {}",
                slot_name_for_member(other)
            );
        }
    }
    let Some(permanent) = permanent.and_then(Value::as_object) else {
        return slots;
    };
    let my_slot = slot_name_for_member(me);
    for (name, value) in permanent {
        if !valid_slot_name(name) {
            error!(
                "invalid permanent replication slot name '{name}': only lower case letters, \
                 digits and '_' are allowed"
            );
            continue;
        }
        match permanent_spec(value) {
            Some(None) => {
                let here = matches!(role, Role::Primary | Role::StandbyLeader);
                // Never a permanent physical slot for ourselves.
                if here && *name != my_slot {
                    slots.insert(name.clone(), None);
                }
            }
            Some(Some(logical)) => {
                let here = role == Role::Primary || (role == Role::Replica && !nofailover);
                if !here {
                    continue;
                }
                if slots.contains_key(name) {
                    error!(
                        "permanent logical replication slot '{name}' conflicts with the physical \
                         slot of a cluster member"
                    );
                } else {
                    slots.insert(name.clone(), Some(logical));
                }
            }
            None => error!("bad value for slot '{name}' in permanent slots: {value}"),
        }
    }
    slots
}

/// Permanent logical slots are configured: replicas that keep copies of them need
/// `hot_standby_feedback` (Patroni enforces it), or the primary may remove catalog rows
/// their decoding needs after a failover.
pub fn wants_logical_copies(use_slots: bool, nofailover: bool, permanent: Option<&Value>) -> bool {
    use_slots
        && !nofailover
        && permanent.and_then(Value::as_object).is_some_and(|slots| {
            slots
                .values()
                .any(|v| matches!(permanent_spec(v), Some(Some(_))))
        })
}

/// A permanent slot's value: `null`/`{}`/`{type: physical}` physical; `{type: logical,
/// database, plugin}` (the type may be left out when both are given) logical; `None` when
/// it is neither.
fn permanent_spec(value: &Value) -> Option<Spec> {
    let obj = match value {
        Value::Null => return Some(None),
        Value::Object(o) => o,
        // Patroni: any other false-y value means physical.
        Value::Bool(false) => return Some(None),
        Value::String(s) if s.is_empty() => return Some(None),
        _ => return None,
    };
    let text = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let (database, plugin) = (text("database"), text("plugin"));
    let kind = match obj.get("type") {
        Some(t) => t.as_str()?.to_string(),
        None if database.is_some() && plugin.is_some() => "logical".into(),
        None => "physical".into(),
    };
    match (kind.as_str(), database, plugin) {
        ("physical", _, _) => Some(None),
        ("logical", Some(database), Some(plugin)) => Some(Some(LogicalSlot { database, plugin })),
        _ => None,
    }
}

fn valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `ignore_slots` matches `slot` when one matcher's given fields (`name`, `type`,
/// `database`, `plugin`) all equal the slot's (Patroni's `ignore_replication_slot`).
pub fn ignored(ignore_slots: Option<&Value>, slot: &SlotInfo) -> bool {
    let Some(matchers) = ignore_slots.and_then(Value::as_array) else {
        return false;
    };
    let field = |k: &str| -> Option<&str> {
        match (k, &slot.logical) {
            ("name", _) => Some(&slot.name),
            ("type", None) => Some("physical"),
            ("type", Some(_)) => Some("logical"),
            ("database", Some(l)) => Some(&l.database),
            ("plugin", Some(l)) => Some(&l.plugin),
            _ => None,
        }
    };
    matchers.iter().filter_map(Value::as_object).any(|m| {
        ["name", "type", "database", "plugin"].iter().all(|k| {
            let want = match m.get(*k) {
                None | Some(Value::Null) => return true,
                // Patroni skips empty values except for the name.
                Some(Value::String(s)) if s.is_empty() && *k != "name" => return true,
                Some(v) => v,
            };
            want.as_str().is_some_and(|w| field(k) == Some(w))
        })
    })
}

/// What a pass found.
#[derive(Debug, Default)]
pub struct Synced {
    /// The `confirmed_flush_lsn` of the permanent logical slots that exist (what a primary
    /// publishes in `status`, as Patroni's `update_leader`).
    pub positions: BTreeMap<String, u64>,
    /// On a replica: permanent logical slots it lacks that the primary has (published in
    /// `status`): to be copied from the primary ([`crate::tasks::TaskContext::copy_logical_slots`]).
    pub to_copy: BTreeMap<String, LogicalSlot>,
}

/// How long a replica's `pg_replication_slot_advance` may take in one pass (Patroni runs it in
/// a thread of its own; here the next pass goes on from where it got).
const ADVANCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// One pass: drop slots that are neither wanted nor ignored (never while paused), drop and
/// recreate a wanted slot whose type, database or plugin changed, create missing physical
/// slots and, on a primary, missing logical ones; on a replica, advance its copies of the
/// permanent logical slots to the positions the primary published and name the ones to copy.
/// Errors are logged; the next pass retries.
pub async fn sync(a: &mut Agent, cluster: &Cluster, role: Role) -> Synced {
    let mut synced = Synced::default();
    let cfg = &a.dynamic.config;
    if !cfg.postgresql.use_slots {
        return synced;
    }
    let published = cluster
        .status
        .as_ref()
        .map(|s| s.slots.clone())
        .unwrap_or_default();
    let wanted = wanted(
        cluster,
        &a.me.name,
        role,
        a.dynamic.settings.nofailover,
        cfg.slots.as_ref(),
    );
    let ignore = cfg.ignore_slots.clone();
    let paused = cluster.is_paused();
    let existing = match a.world.pg.list_slots().await {
        Ok(slots) => slots,
        Err(e) => {
            warn!("listing replication slots failed: {e:#}");
            return synced;
        }
    };
    let mut present: Vec<&str> = Vec::new();
    for slot in &existing {
        let reason = match wanted.get(&slot.name) {
            Some(spec) if *spec == slot.logical => {
                present.push(&slot.name);
                if let (Some(l), Some(lsn)) = (spec, slot.confirmed_flush_lsn) {
                    synced.positions.insert(slot.name.clone(), lsn);
                    let target = published.get(&slot.name).copied().unwrap_or(0);
                    if role == Role::Replica && target > lsn {
                        let advance = a.world.pg.advance_slot(&slot.name, &l.database, target);
                        match tokio::time::timeout(ADVANCE_TIMEOUT, advance).await {
                            Ok(Ok(true)) => debug!("advanced logical slot '{}' to {target}", slot.name),
                            Ok(Ok(false)) => {
                                debug!(
                                    "logical slot '{}' needs WAL this replica no longer has: to be copied from the primary again",
                                    slot.name
                                );
                                synced.to_copy.insert(slot.name.clone(), l.clone());
                            }
                            Ok(Err(e)) => error!(
                                "failed to advance logical replication slot '{}': {e:#}",
                                slot.name
                            ),
                            Err(_) => warn!(
                                "advancing logical replication slot '{}' takes longer than {ADVANCE_TIMEOUT:?}; going on next time",
                                slot.name
                            ),
                        }
                    }
                }
                continue;
            }
            Some(spec) => format!(
                "its definition changes from {} to {}",
                describe(&slot.logical),
                describe(spec)
            ),
            None if paused || ignored(ignore.as_ref(), slot) => continue,
            None => "unknown".to_string(),
        };
        match a.world.pg.drop_slot(&slot.name).await {
            Ok(SlotDrop::Dropped) => info!("dropped replication slot '{}' ({reason})", slot.name),
            Ok(SlotDrop::Missing) => {}
            Ok(SlotDrop::Active) => {
                // Kept: the definition change waits too (not recreated while it exists).
                present.push(&slot.name);
                debug!(
                    "unable to drop replication slot '{}' ({reason}): still active",
                    slot.name
                );
            }
            Err(e) => {
                present.push(&slot.name);
                error!("failed to drop replication slot '{}': {e:#}", slot.name);
            }
        }
    }
    for (name, spec) in &wanted {
        if present.contains(&name.as_str()) {
            continue;
        }
        match spec {
            None => match a.world.pg.create_physical_slot(name).await {
                Ok(_) => info!("created physical replication slot '{name}'"),
                Err(e) => error!("failed to create physical replication slot '{name}': {e:#}"),
            },
            Some(l) if role == Role::Primary => {
                match a
                    .world
                    .pg
                    .create_logical_slot(name, &l.database, &l.plugin)
                    .await
                {
                    Ok(_) => info!(
                        "created logical replication slot '{name}' (database '{}', plugin '{}')",
                        l.database, l.plugin
                    ),
                    Err(e) => error!(
                        "failed to create logical replication slot '{name}' plugin='{}': {e:#}",
                        l.plugin
                    ),
                }
            }
            // A replica cannot create a logical slot (PostgreSQL 15): it copies the
            // primary's, once the primary publishes its position (Patroni copies only slots
            // with feedback in the DCS).
            Some(l) => {
                if role == Role::Replica && published.contains_key(name) {
                    synced.to_copy.insert(name.clone(), l.clone());
                }
            }
        }
    }
    synced
}

fn describe(spec: &Spec) -> String {
    match spec {
        None => "physical".into(),
        Some(l) => format!("logical (database '{}', plugin '{}')", l.database, l.plugin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Members named `stopped*` say they are stopped.
    fn cluster(leader: &str, members: &[(&str, Option<&str>)]) -> Cluster {
        let mut rows: Vec<(String, String)> = vec![("leader".into(), leader.into())];
        for (name, from) in members {
            let state = if name.starts_with("stopped") {
                "stopped"
            } else {
                "running"
            };
            let mut data = json!({"conn_url": format!("postgres://127.0.0.1:5432/{name}"),
                "api_url": "http://127.0.0.1:8008/patroni", "state": state, "role": "replica", "version": "3.0.2"});
            if let Some(f) = from {
                data["tags"] = json!({"replicatefrom": f});
            }
            rows.push((format!("members/{name}"), data.to_string()));
        }
        Cluster::from_rows(rows.iter().map(|(k, v)| (k.as_str(), v.as_str(), 1, 0)), 1)
    }

    fn names(m: &BTreeMap<String, Spec>) -> Vec<&str> {
        m.keys().map(String::as_str).collect()
    }

    #[test]
    fn leader_skips_members_streaming_from_a_replica() {
        let c = cluster(
            "n1",
            &[
                ("n1", None),
                ("n2", None),
                ("n3", Some("n2")),
                ("n4", Some("gone")),
                ("n5", Some("n1")),
                ("stopped6", None),
                ("n7", Some("stopped6")),
            ],
        );
        // n3 streams from n2; n4 and n7 fall back to the leader (their upstream is gone or
        // not running), n5 names the leader.
        let w = wanted(&c, "n1", Role::Primary, false, None);
        assert_eq!(names(&w), ["n2", "n4", "n5", "n7", "stopped6"]);
    }

    #[test]
    fn replica_wants_its_downstream_members_but_not_the_leader() {
        let c = cluster(
            "n1",
            &[
                ("n1", Some("n2")),
                ("n2", None),
                ("n3", Some("n2")),
                ("n4", None),
            ],
        );
        let w = wanted(&c, "n2", Role::Replica, false, None);
        assert_eq!(names(&w), ["n3"]);
        assert!(wanted(&c, "n4", Role::Replica, false, None).is_empty());
    }

    #[test]
    fn permanent_slots_by_role() {
        let c = cluster("n1", &[("n1", None), ("n2", None)]);
        let permanent = json!({
            "phys": {"type": "physical"},
            "bare": null,
            "n1": {"type": "physical"},
            "logi": {"type": "logical", "database": "postgres", "plugin": "test_decoding"},
            "implied": {"database": "postgres", "plugin": "pgoutput"},
            "n2": {"type": "logical", "database": "postgres", "plugin": "pgoutput"},
            "bad": {"type": "logical", "database": "postgres"},
            "Bad-Name": null,
        });
        let w = wanted(&c, "n1", Role::Primary, false, Some(&permanent));
        // Not our own name as a physical slot, not a logical slot that clashes with n2's.
        assert_eq!(names(&w), ["bare", "implied", "logi", "n2", "phys"]);
        assert_eq!(w["n2"], None);
        assert_eq!(
            w["logi"].as_ref().map(|l| l.plugin.as_str()),
            Some("test_decoding")
        );
        let w = wanted(&c, "n1", Role::StandbyLeader, false, Some(&permanent));
        assert_eq!(names(&w), ["bare", "n2", "phys"]);
        let w = wanted(&c, "n2", Role::Replica, false, Some(&permanent));
        assert_eq!(names(&w), ["implied", "logi", "n2"]);
        assert!(wanted(&c, "n2", Role::Replica, true, Some(&permanent)).is_empty());
    }

    #[test]
    fn ignore_slots_matchers() {
        let logical = SlotInfo {
            name: "cdc".into(),
            active: false,
            restart_lsn: None,
            confirmed_flush_lsn: None,
            logical: Some(LogicalSlot {
                database: "app".into(),
                plugin: "pgoutput".into(),
            }),
        };
        let physical = SlotInfo {
            name: "backup".into(),
            logical: None,
            ..logical.clone()
        };
        let m = json!([{"name": "cdc", "type": "logical"}]);
        assert!(ignored(Some(&m), &logical));
        assert!(!ignored(Some(&m), &physical));
        let m = json!([{"plugin": "pgoutput"}, {"type": "physical", "name": "other"}]);
        assert!(ignored(Some(&m), &logical));
        assert!(!ignored(Some(&m), &physical));
        let m = json!([{"type": "physical"}]);
        assert!(ignored(Some(&m), &physical));
        let m = json!([{"database": "app", "type": "physical"}]);
        assert!(!ignored(Some(&m), &physical) && !ignored(Some(&m), &logical));
        assert!(!ignored(None, &physical));
    }
}
