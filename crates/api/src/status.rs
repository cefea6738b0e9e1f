//! The status body (docs/compat.md#status-body): `GET /patroni` and every GET health endpoint.
//! Built once per request from the snapshot; health rules and metrics read the same values.

use crate::pyvalue::parse_bool;
use crate::snapshot::{NodeSnapshot, ReplicationRow, Xlog};
use crate::{PATRONI_COMPAT_VERSION, PGHERD_VERSION};
use chrono::{DateTime, FixedOffset, Timelike};
use pgherd_dcs::{Cluster, Role};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

/// Field order is Patroni's (Python dict insertion order), so bodies read the same.
#[derive(Debug, Serialize)]
pub(crate) struct StatusBody<'a> {
    pub state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postmaster_start_time: Option<String>,
    pub role: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xlog: Option<XlogBody>,
    #[serde(skip_serializing_if = "is_false")]
    pub sync_standby: bool,
    /// Present (possibly `null`) whenever PostgreSQL answered the status query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<&'a [ReplicationRow]>,
    #[serde(skip_serializing_if = "is_false")]
    pub cluster_unlocked: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub failsafe_mode_is_active: bool,
    pub dcs_last_seen: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<&'a Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_system_identifier: Option<&'a str>,
    #[serde(skip_serializing_if = "is_false")]
    pub pending_restart: bool,
    pub patroni: PatroniInfo<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_restart: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "is_false")]
    pub watchdog_failed: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub pause: bool,
    /// Not in Patroni: which pgherd answered. Peers and patronictl ignore unknown keys.
    pub pgherd: PgherdInfo,
}

#[derive(Debug, Serialize)]
pub(crate) struct PatroniInfo<'a> {
    pub version: &'static str,
    pub scope: &'a str,
}

#[derive(Debug, Serialize)]
pub(crate) struct PgherdInfo {
    pub version: &'static str,
}

/// Peers decide "primary" by the presence of `xlog.location`, so the two forms must not mix.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum XlogBody {
    Primary {
        location: u64,
    },
    Replica {
        received_location: u64,
        replayed_location: u64,
        replayed_timestamp: Option<String>,
        paused: bool,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl<'a> StatusBody<'a> {
    /// Patroni's `get_postgresql_status()` + `_write_status_response()` for `snap` at `now`.
    pub(crate) fn build(snap: &'a NodeSnapshot, now: Instant) -> StatusBody<'a> {
        let cluster = snap.valid_cluster(now);
        let mut body = StatusBody {
            state: &snap.state,
            postmaster_start_time: None,
            role: snap.role.as_str(),
            server_version: None,
            xlog: None,
            sync_standby: false,
            timeline: None,
            replication_state: None,
            replication: None,
            cluster_unlocked: cluster.is_none_or(|c| c.leader.is_none()),
            failsafe_mode_is_active: snap.failsafe_mode_is_active,
            dcs_last_seen: snap.dcs_last_seen,
            tags: Some(&snap.tags).filter(|t| !t.is_empty()),
            database_system_identifier: snap.database_system_identifier.as_deref(),
            pending_restart: snap.pending_restart,
            patroni: PatroniInfo {
                version: PATRONI_COMPAT_VERSION,
                scope: &snap.scope,
            },
            scheduled_restart: scheduled_restart(snap.scheduled_restart.as_ref()),
            watchdog_failed: snap.watchdog_failed,
            pause: snap.paused,
            pgherd: PgherdInfo {
                version: PGHERD_VERSION,
            },
        };
        let Some(pg) = &snap.postgres else {
            // Running but not answering: Patroni reports "unknown" rather than a healthy state.
            if snap.state == "running" {
                body.state = "unknown";
            }
            return body;
        };
        body.postmaster_start_time = Some(python_str(&pg.postmaster_start_time));
        body.server_version = Some(pg.server_version);
        body.timeline = Some(pg.timeline);
        body.replication_state = pg.replication_state.as_deref();
        body.replication = Some(pg.replication.as_slice()).filter(|r| !r.is_empty());
        match &pg.xlog {
            Xlog::Primary { location } => {
                body.role = Role::Primary.as_str();
                body.xlog = Some(XlogBody::Primary {
                    location: *location,
                });
            }
            Xlog::Replica {
                received_location,
                replayed_location,
                replayed_timestamp,
                paused,
            } => {
                // In a standby cluster every node recovers; only Patroni's role tells the
                // standby leader apart.
                body.role = if snap.standby_cluster {
                    snap.role.as_str()
                } else {
                    Role::Replica.as_str()
                };
                body.xlog = Some(XlogBody::Replica {
                    received_location: received_location.unwrap_or(*replayed_location),
                    replayed_location: *replayed_location,
                    replayed_timestamp: replayed_timestamp.as_ref().map(python_str),
                    paused: *paused,
                });
                body.sync_standby = body.role == Role::Replica.as_str()
                    && cluster.is_some_and(|c| is_sync_standby(c, &snap.name));
            }
        }
        body
    }

    /// `xlog.replayed_location`, 0 on a primary or when unknown.
    pub(crate) fn replayed_location(&self) -> u64 {
        match &self.xlog {
            Some(XlogBody::Replica {
                replayed_location, ..
            }) => *replayed_location,
            _ => 0,
        }
    }
}

/// Synchronous mode is on and `name` is listed in the `sync` key.
fn is_sync_standby(cluster: &Cluster, name: &str) -> bool {
    let synchronous_mode = cluster
        .config
        .as_ref()
        .and_then(|c| c.value.get("synchronous_mode"))
        .is_some_and(parse_bool);
    synchronous_mode
        && cluster
            .sync_state()
            .is_some_and(|s| s.is_sync_standby(name))
}

/// The member-key form minus `postmaster_start_time`, which is internal bookkeeping.
fn scheduled_restart(value: Option<&Value>) -> Option<Map<String, Value>> {
    let mut restart = value?.as_object()?.clone();
    restart.remove("postmaster_start_time");
    Some(restart)
}

/// Python's `str(datetime)`: `2026-11-23 12:02:38.910808+00:00`, microseconds only if non-zero.
pub(crate) fn python_str(ts: &DateTime<FixedOffset>) -> String {
    if ts.nanosecond() / 1000 == 0 {
        ts.format("%Y-%m-%d %H:%M:%S%:z").to_string()
    } else {
        ts.format("%Y-%m-%d %H:%M:%S%.6f%:z").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::python_str;
    use chrono::DateTime;

    #[test]
    fn python_datetime_str() {
        let ts = DateTime::parse_from_rfc3339("2026-11-23T12:02:38.910808+00:00").unwrap();
        assert_eq!(python_str(&ts), "2026-11-23 12:02:38.910808+00:00");
        let ts = DateTime::parse_from_rfc3339("2026-11-23T12:02:38+02:00").unwrap();
        assert_eq!(python_str(&ts), "2026-11-23 12:02:38+02:00");
    }
}
