//! Cluster-wide JSON from a DCS read (docs/compat.md#other-get-endpoints): `GET /cluster`,
//! `/history`, `/config`.

use crate::pyvalue::truthy;
use pgherd_dcs::{history_to_json, Cluster, Member};
use serde::Serialize;
use serde_json::{Map, Value};

/// `GET /cluster` (Patroni's `cluster_as_json`).
#[derive(Debug, Serialize)]
pub(crate) struct ClusterJson<'a> {
    members: Vec<MemberJson<'a>>,
    #[serde(skip_serializing_if = "is_false")]
    pause: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_switchover: Option<ScheduledSwitchover<'a>>,
}

#[derive(Debug, Serialize)]
struct MemberJson<'a> {
    name: &'a str,
    role: &'static str,
    state: &'a str,
    api_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<u64>,
    #[serde(skip_serializing_if = "is_false")]
    pending_restart: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_restart: Option<&'a Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    tags: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lag: Option<Lag>,
}

/// Bytes behind the leader's last known position, or `"unknown"` without a position.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Lag {
    Bytes(u64),
    Unknown(&'static str),
}

#[derive(Debug, Serialize)]
struct ScheduledSwitchover<'a> {
    at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl<'a> ClusterJson<'a> {
    pub(crate) fn build(cluster: &'a Cluster) -> ClusterJson<'a> {
        let leader = cluster.leader_name();
        let leader_role = if cluster
            .config
            .as_ref()
            .and_then(|c| c.value.get("standby_cluster"))
            .is_some_and(is_standby_cluster)
        {
            "standby_leader"
        } else {
            "leader"
        };
        let cluster_lsn = cluster.optime().unwrap_or(0);
        // BTreeMap iteration already yields members sorted by name, as Patroni sorts them.
        let members = cluster
            .members
            .values()
            .map(|m| {
                let is_leader = leader == Some(m.name.as_str());
                let role = if is_leader {
                    leader_role
                } else if cluster
                    .sync_state()
                    .is_some_and(|s| s.is_sync_standby(&m.name))
                {
                    "sync_standby"
                } else {
                    "replica"
                };
                let (host, port) = match host_port(m) {
                    Some((host, port)) => (Some(host), Some(port)),
                    None => (None, None),
                };
                MemberJson {
                    name: &m.name,
                    role,
                    state: &m.data.state,
                    api_url: Some(m.data.api_url.as_str()).filter(|u| !u.is_empty()),
                    host,
                    port,
                    timeline: m.data.timeline,
                    pending_restart: m.data.pending_restart,
                    scheduled_restart: m.data.scheduled_restart.as_ref(),
                    tags: &m.data.tags,
                    lag: (!is_leader).then(|| match m.data.xlog_location {
                        Some(lsn) => Lag::Bytes(cluster_lsn.saturating_sub(lsn)),
                        None => Lag::Unknown("unknown"),
                    }),
                }
            })
            .collect();
        let scheduled_switchover = cluster.failover_request().and_then(|f| {
            Some(ScheduledSwitchover {
                at: f.scheduled_at.as_deref()?,
                from: f.leader.as_deref(),
                to: f.member.as_deref(),
            })
        });
        ClusterJson {
            members,
            pause: cluster.is_paused(),
            scheduled_switchover,
        }
    }
}

/// Host and port from `conn_url`, or from a legacy `conn_kwargs` object.
fn host_port(m: &Member) -> Option<(String, u16)> {
    if !m.data.conn_url.is_empty() {
        return m.data.conn_host_port().filter(|(host, _)| !host.is_empty());
    }
    let kwargs = m.data.extra.get("conn_kwargs")?.as_object()?;
    let host = kwargs.get("host")?.as_str()?.to_string();
    let port = match kwargs.get("port") {
        Some(Value::Number(n)) => u16::try_from(n.as_u64()?).ok()?,
        Some(Value::String(s)) => s.parse().ok()?,
        _ => 5432,
    };
    Some((host, port))
}

/// Patroni's `is_standby_cluster`: a `standby_cluster` section with a host, port or
/// restore_command.
fn is_standby_cluster(section: &Value) -> bool {
    ["host", "port", "restore_command"]
        .iter()
        .any(|key| section.get(key).is_some_and(truthy))
}

/// `GET /history`: Patroni's stored rows `[timeline, lsn, reason, timestamp, leader]`.
pub(crate) fn history_json(cluster: &Cluster) -> Value {
    let Some(history) = &cluster.history else {
        return Value::Array(Vec::new());
    };
    // Reuse the DCS crate's canonical row layout rather than restating it here.
    serde_json::from_str(&history_to_json(&history.value)).unwrap_or(Value::Array(Vec::new()))
}

/// `GET /config`: the `config` key, with any `*password*` values masked (DESIGN: secrets never
/// appear in `GET /config`). Patroni's dynamic configuration has no secret keys, so a normal
/// configuration is returned unchanged.
pub(crate) fn config_json(cluster: &Cluster) -> Option<Value> {
    let mut config = cluster.config.as_ref()?.value.clone();
    redact(&mut config);
    Some(config)
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key.to_ascii_lowercase().contains("password") && !v.is_null() {
                    *v = Value::String("******".to_string());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn standby_cluster_detection() {
        assert!(is_standby_cluster(&json!({"host": "10.0.0.1"})));
        assert!(is_standby_cluster(&json!({"restore_command": "cp"})));
        assert!(!is_standby_cluster(&json!({"host": ""})));
        assert!(!is_standby_cluster(&json!(null)));
    }

    #[test]
    fn config_redaction() {
        let mut v = json!({"ttl": 30, "standby_cluster": {"password": "s", "host": "h"}});
        redact(&mut v);
        assert_eq!(
            v,
            json!({"ttl": 30, "standby_cluster": {"password": "******", "host": "h"}})
        );
    }
}
