//! Health rules (docs/compat.md#health-endpoints): which status code each health path
//! answers. Pure functions of the status body, the snapshot and the query string.

use crate::pyvalue::{lower_str, truthy};
use crate::size::parse_bytes;
use crate::snapshot::NodeSnapshot;
use crate::status::StatusBody;
use axum::http::StatusCode;
use pgherd_dcs::Role;
use tokio::time::Instant;

/// The health check a path selects. Patroni matches substrings, in this order, so
/// `/replica?lag=..`, `/replica/` and `/my-replica` all mean [`HealthCheck::Replica`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealthCheck {
    StandbyLeader,
    Leader,
    Primary,
    Replica,
    ReadOnly,
    Health,
    Sync,
    Async,
    ReadOnlySync,
    /// A known path without a health meaning (`HEAD /patroni`): always 503, as in Patroni.
    Other,
}

impl HealthCheck {
    /// The check for `path`, or `None` if the path is not a health path.
    pub(crate) fn classify(path: &str) -> Option<HealthCheck> {
        // Patroni's bare `option httpchk` sends `OPTIONS /`, meaning "am I the primary?".
        let path = if path == "/" { "/primary" } else { path };
        let has = |word: &str| path.contains(word);
        let check = if has("standby_leader") || has("standby-leader") {
            HealthCheck::StandbyLeader
        } else if has("leader") {
            HealthCheck::Leader
        } else if has("master") || has("primary") || has("read-write") {
            HealthCheck::Primary
        } else if has("replica") {
            HealthCheck::Replica
        } else if has("read-only") && !has("sync") {
            HealthCheck::ReadOnly
        } else if has("health") {
            HealthCheck::Health
        } else {
            // Patroni compares these exactly; we also accept a trailing slash.
            match path.trim_end_matches('/') {
                "/sync" | "/synchronous" => HealthCheck::Sync,
                "/async" | "/asynchronous" => HealthCheck::Async,
                "/read-only-sync" | "/read-only-synchronous" => HealthCheck::ReadOnlySync,
                _ => return None,
            }
        };
        Some(check)
    }

    /// Leader-type checks answer for the node's role alone; tag filters do not apply.
    fn ignores_tags(self) -> bool {
        matches!(
            self,
            HealthCheck::StandbyLeader | HealthCheck::Leader | HealthCheck::Primary
        )
    }
}

/// The query arguments health checks understand, decoded like Python's `parse_qs`: blank
/// values are dropped and the first value of a repeated key wins.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct HealthQuery {
    /// Maximum replay lag in bytes; `None` = unlimited (absent or not a size).
    lag: Option<i64>,
    /// `tag_<name>=<value>` filters.
    tags: Vec<(String, String)>,
}

impl HealthQuery {
    pub(crate) fn parse(query: Option<&str>) -> HealthQuery {
        let mut parsed = HealthQuery::default();
        let mut seen_lag = false;
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if value.is_empty() {
                continue;
            }
            if key == "lag" {
                if !seen_lag {
                    seen_lag = true;
                    parsed.lag = parse_bytes(&value);
                }
            } else if let Some(tag) = key.strip_prefix("tag_") {
                if !parsed.tags.iter().any(|(name, _)| name == tag) {
                    parsed.tags.push((tag.to_string(), value.into_owned()));
                }
            }
        }
        parsed
    }
}

/// The status codes of the leader-type checks for this node right now.
struct LeaderCodes {
    leader: StatusCode,
    primary: StatusCode,
    standby_leader: StatusCode,
    replica: StatusCode,
}

/// Patroni's generic `do_GET` decision for `check`.
pub(crate) fn evaluate(
    check: HealthCheck,
    query: &HealthQuery,
    body: &StatusBody<'_>,
    snap: &NodeSnapshot,
    now: Instant,
) -> StatusCode {
    let cluster = snap.valid_cluster(now);
    let codes = leader_codes(query, body, snap, now);
    let ok_if = |cond: bool| {
        if cond {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    let leading = codes.primary == StatusCode::OK || codes.standby_leader == StatusCode::OK;
    let code = match check {
        HealthCheck::StandbyLeader => codes.standby_leader,
        HealthCheck::Leader => codes.leader,
        HealthCheck::Primary => codes.primary,
        HealthCheck::Replica => codes.replica,
        HealthCheck::ReadOnly if leading => StatusCode::OK,
        HealthCheck::ReadOnly => codes.replica,
        HealthCheck::Health => ok_if(body.state == "running"),
        // The sync checks need a DCS view to know the sync standbys at all.
        HealthCheck::Sync if cluster.is_some() && body.sync_standby => codes.replica,
        HealthCheck::Async if cluster.is_some() && !body.sync_standby => codes.replica,
        HealthCheck::ReadOnlySync if cluster.is_some() && leading => StatusCode::OK,
        HealthCheck::ReadOnlySync if cluster.is_some() && body.sync_standby => codes.replica,
        HealthCheck::Sync | HealthCheck::Async | HealthCheck::ReadOnlySync | HealthCheck::Other => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    if code == StatusCode::OK && !check.ignores_tags() && !tags_match(query, snap) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    code
}

fn leader_codes(
    query: &HealthQuery,
    body: &StatusBody<'_>,
    snap: &NodeSnapshot,
    now: Instant,
) -> LeaderCodes {
    const OK: StatusCode = StatusCode::OK;
    const DOWN: StatusCode = StatusCode::SERVICE_UNAVAILABLE;
    let cluster = snap.valid_cluster(now);
    let code = |cond: bool| if cond { OK } else { DOWN };

    let leader_optime = cluster.and_then(|c| c.optime()).unwrap_or(0);
    let lagging = match query.lag {
        Some(lag) => {
            leader_optime > 0
                && i128::from(leader_optime)
                    > i128::from(body.replayed_location()) + i128::from(lag)
        }
        None => false,
    };
    let noloadbalance = snap.tags.get("noloadbalance").is_some_and(truthy);
    // A replica that is not streaming serves reads that may be arbitrarily old (cut off from
    // its upstream, or on a timeline the leader does not have): not a replica to route to.
    let not_streaming = body
        .replication_state
        .is_some_and(|s| s != pgherd_dcs::REPLICATION_STREAMING);
    let replica = code(
        !noloadbalance
            && !lagging
            && !not_streaming
            && body.role == "replica"
            && body.state == "running",
    );

    let role = body.role;
    if cluster.is_none() && snap.paused {
        // Paused and cut off from the DCS: nobody is managing leadership, so the best answer
        // is what PostgreSQL itself is doing.
        LeaderCodes {
            leader: code(matches!(role, "master" | "primary" | "standby_leader")),
            primary: code(matches!(role, "master" | "primary")),
            standby_leader: code(role == "standby_leader"),
            replica,
        }
    } else if snap.is_leader(now) {
        if snap.standby_cluster {
            LeaderCodes {
                leader: OK,
                primary: DOWN,
                standby_leader: code(matches!(role, "replica" | "standby_leader")),
                replica: DOWN,
            }
        } else {
            // Patroni answers 200 here on the lock alone, also while its PostgreSQL is down or
            // restarting; a load balancer must not send writes to a dead server. A postmaster
            // that runs but did not answer the status query in time (`unknown`: overloaded)
            // is not dead: as in Patroni, whose failed status query keeps the cached role,
            // the primary stays routed rather than having every write session cut.
            LeaderCodes {
                leader: OK,
                primary: code(
                    matches!(body.state, "running" | "unknown")
                        && matches!(role, "master" | "primary"),
                ),
                standby_leader: DOWN,
                replica,
            }
        }
    } else {
        LeaderCodes {
            leader: DOWN,
            primary: DOWN,
            standby_leader: DOWN,
            replica,
        }
    }
}

/// `GET /liveness`: the HA loop is not overdue by more than `ttl` (a running primary, whose
/// leader key would expire by then anyway) or `2*ttl` (others, who can afford to be slower).
/// Paused clusters are always live: nobody expects the loop to act.
pub(crate) fn liveness(snap: &NodeSnapshot, now: Instant) -> StatusCode {
    let running_primary = snap.role == Role::Primary && snap.state == "running";
    let threshold = if running_primary {
        snap.ttl
    } else {
        snap.ttl * 2
    };
    let due = snap.last_cycle_at + snap.loop_wait;
    if snap.paused || now < due + threshold {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `GET /readiness`: the leader is ready; others when PostgreSQL runs and the DCS view is fresh.
pub(crate) fn readiness(snap: &NodeSnapshot, now: Instant) -> StatusCode {
    if snap.is_leader(now) || (snap.state == "running" && snap.valid_cluster(now).is_some()) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Every `tag_<k>=<v>` must equal our tag `k` (non-strings as Python's `str(v).lower()`).
fn tags_match(query: &HealthQuery, snap: &NodeSnapshot) -> bool {
    query
        .tags
        .iter()
        .all(|(name, wanted)| match snap.tags.get(name) {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::String(s)) => s == wanted,
            Some(other) => lower_str(other) == *wanted,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_patroni_order() {
        use HealthCheck::*;
        let cases = [
            ("/", Some(Primary)),
            ("/primary", Some(Primary)),
            ("/primary/", Some(Primary)),
            ("/master", Some(Primary)),
            ("/read-write", Some(Primary)),
            ("/leader", Some(Leader)),
            ("/standby-leader", Some(StandbyLeader)),
            ("/standby_leader", Some(StandbyLeader)),
            ("/replica", Some(Replica)),
            ("/read-only", Some(ReadOnly)),
            ("/health", Some(Health)),
            ("/sync", Some(Sync)),
            ("/synchronous", Some(Sync)),
            ("/sync/", Some(Sync)),
            ("/async", Some(Async)),
            ("/asynchronous", Some(Async)),
            ("/read-only-sync", Some(ReadOnlySync)),
            ("/read-only-synchronous", Some(ReadOnlySync)),
            ("/patroni", None),
            ("/x", None),
            ("/syncx", None),
        ];
        for (path, want) in cases {
            assert_eq!(HealthCheck::classify(path), want, "{path}");
        }
    }

    #[test]
    fn query_like_parse_qs() {
        let q = HealthQuery::parse(Some("lag=1MB&lag=1GB&tag_zone=a&tag_zone=b&tag_x=&other=1"));
        assert_eq!(q.lag, Some(1048576));
        assert_eq!(q.tags, vec![("zone".to_string(), "a".to_string())]);
        let q = HealthQuery::parse(Some("lag=&tag_rack=r%201"));
        assert_eq!(q.lag, None);
        assert_eq!(q.tags, vec![("rack".to_string(), "r 1".to_string())]);
        assert_eq!(HealthQuery::parse(None), HealthQuery::default());
        assert_eq!(HealthQuery::parse(Some("lag=bogus")).lag, None);
    }
}
