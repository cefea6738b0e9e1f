//! JSON values stored under the cluster prefix (docs/compat.md#dcs-values).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A member's Patroni role string. Writers emit `master` for a primary (3.0 convention);
/// readers accept `primary` too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    #[serde(rename = "master", alias = "primary")]
    Primary,
    #[serde(rename = "replica")]
    Replica,
    #[serde(rename = "standby_leader")]
    StandbyLeader,
    #[serde(rename = "demoted")]
    Demoted,
    #[serde(rename = "promoted")]
    Promoted,
    #[serde(rename = "uninitialized")]
    Uninitialized,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "master",
            Role::Replica => "replica",
            Role::StandbyLeader => "standby_leader",
            Role::Demoted => "demoted",
            Role::Promoted => "promoted",
            Role::Uninitialized => "uninitialized",
        }
    }
}

/// The value of `members/<name>` (docs/compat.md#member-value). Unknown fields are kept so
/// that a round trip through pgherd loses nothing a newer Patroni wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MemberData {
    pub conn_url: String,
    pub api_url: String,
    pub state: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_role"
    )]
    pub role: Option<Role>,
    pub version: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_u64"
    )]
    pub xlog_location: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_u64"
    )]
    pub timeline: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub tags: Map<String, Value>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub pending_restart: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_restart: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_after_promote: Option<bool>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub pause: bool,
    /// A running standby's WAL receiver: `streaming`, or `in archive recovery` when it is not
    /// streaming (the field and values of later Patroni releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(match v {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    })
}

fn lenient_role<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Role>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok()))
}

impl MemberData {
    /// Parses a member value; invalid JSON gives empty data, as Patroni does.
    pub fn parse(raw: &str) -> MemberData {
        serde_json::from_str(raw).unwrap_or_default()
    }

    /// Compact JSON, as Patroni writes it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    fn tag(&self, name: &str) -> Option<&Value> {
        self.tags.get(name)
    }

    fn tag_truthy(&self, name: &str) -> bool {
        match self.tag(name) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => {
                matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "on" | "1")
            }
            Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
            _ => false,
        }
    }

    pub fn nofailover(&self) -> bool {
        self.tag_truthy("nofailover")
    }
    pub fn noloadbalance(&self) -> bool {
        self.tag_truthy("noloadbalance")
    }
    pub fn clonefrom(&self) -> bool {
        self.tag_truthy("clonefrom")
    }
    pub fn nosync(&self) -> bool {
        self.tag_truthy("nosync")
    }
    pub fn replicatefrom(&self) -> Option<&str> {
        self.tag("replicatefrom").and_then(Value::as_str)
    }
    /// Optional `failover_priority` tag (later Patroni); higher wins ties. Default 1.
    pub fn failover_priority(&self) -> i64 {
        match self.tag("failover_priority") {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(1),
            Some(Value::String(s)) => s.parse().unwrap_or(1),
            _ => 1,
        }
    }

    /// `host:port` from `conn_url` (`postgres://HOST:PORT/DB`).
    pub fn conn_host_port(&self) -> Option<(String, u16)> {
        host_port_of_url(&self.conn_url, 5432)
    }

    /// `host:port` from `api_url` (`http(s)://HOST:PORT/patroni`).
    pub fn api_host_port(&self) -> Option<(String, u16)> {
        host_port_of_url(&self.api_url, 8008)
    }

    pub fn is_running(&self) -> bool {
        self.state == "running"
    }

    /// A standby that says its WAL receiver is not streaming. Members that do not report it
    /// (Patroni before 3.0.4) are assumed to stream.
    pub fn not_streaming(&self) -> bool {
        self.replication_state
            .as_deref()
            .is_some_and(|s| s != REPLICATION_STREAMING)
    }
}

/// `replication_state` of a standby whose WAL receiver streams.
pub const REPLICATION_STREAMING: &str = "streaming";
/// `replication_state` of a standby that is not streaming (Patroni's wording).
pub const REPLICATION_NOT_STREAMING: &str = "in archive recovery";

/// Splits `scheme://[user@]host:port/...` into host and port.
pub(crate) fn host_port_of_url(url: &str, default_port: u16) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let authority = authority.rsplit('@').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, tail) = v6.split_once(']')?;
        let port = tail
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(default_port);
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), default_port)),
    }
}

/// `status` (docs/compat.md#status-key): the leader's last known WAL position and permanent
/// slot positions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Status {
    #[serde(default)]
    pub optime: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slots: BTreeMap<String, u64>,
}

impl Status {
    /// Compact JSON, as Patroni writes it (a number and a map of numbers: cannot fail).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }
}

/// `failover` (docs/compat.md#failover-key). `{}` means "no request".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Failover {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
}

impl Failover {
    /// Parses JSON, or the legacy `leader:candidate` form.
    pub fn parse(raw: &str) -> Failover {
        if let Ok(f) = serde_json::from_str::<Failover>(raw) {
            return f.normalized();
        }
        match raw.split_once(':') {
            Some((l, m)) => Failover {
                leader: Some(l.to_string()),
                member: Some(m.to_string()),
                scheduled_at: None,
            }
            .normalized(),
            None => Failover::default(),
        }
    }

    fn normalized(mut self) -> Failover {
        if self.leader.as_deref() == Some("") {
            self.leader = None;
        }
        if self.member.as_deref() == Some("") {
            self.member = None;
        }
        self
    }

    /// A request is present iff leader or candidate is set.
    pub fn is_present(&self) -> bool {
        self.leader.is_some() || self.member.is_some()
    }

    /// No request: what clearing the key writes (`{}`, as Patroni's `manual_failover('', '')`).
    pub fn none() -> Failover {
        Failover::default()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }
}

/// `sync` (docs/compat.md#sync-key): `sync_standby` is a sorted comma-joined list or null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SyncState {
    #[serde(default)]
    pub leader: Option<String>,
    #[serde(default)]
    pub sync_standby: Option<String>,
}

impl SyncState {
    pub fn new(leader: &str, standbys: &[String]) -> SyncState {
        let mut names: Vec<String> = standbys.to_vec();
        names.sort();
        names.dedup();
        SyncState {
            leader: Some(leader.to_string()),
            sync_standby: if names.is_empty() {
                None
            } else {
                Some(names.join(","))
            },
        }
    }

    pub fn standbys(&self) -> Vec<String> {
        self.sync_standby
            .as_deref()
            .map(|s| {
                s.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn is_sync_standby(&self, name: &str) -> bool {
        self.standbys().iter().any(|s| s == name)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }
}

/// One `history` entry: `[timeline, switch_lsn, reason, timestamp, new_leader]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub timeline: u64,
    pub switch_lsn: u64,
    pub reason: String,
    pub timestamp: Option<String>,
    pub new_leader: Option<String>,
}

pub fn history_from_json(raw: &str) -> Vec<HistoryEntry> {
    let Ok(Value::Array(rows)) = serde_json::from_str::<Value>(raw) else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|row| {
            let row = row.as_array()?;
            Some(HistoryEntry {
                timeline: row.first()?.as_u64()?,
                switch_lsn: row.get(1)?.as_u64()?,
                reason: row
                    .get(2)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                timestamp: row.get(3).and_then(Value::as_str).map(str::to_string),
                new_leader: row.get(4).and_then(Value::as_str).map(str::to_string),
            })
        })
        .collect()
}

pub fn history_to_json(entries: &[HistoryEntry]) -> String {
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut row = vec![
                Value::from(e.timeline),
                Value::from(e.switch_lsn),
                Value::from(e.reason.clone()),
            ];
            if let Some(ts) = &e.timestamp {
                row.push(Value::from(ts.clone()));
                if let Some(l) = &e.new_leader {
                    row.push(Value::from(l.clone()));
                }
            }
            Value::Array(row)
        })
        .collect();
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_round_trip_matches_patroni_dump() {
        let raw = r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"master","version":"3.0.2","xlog_location":67108960,"timeline":1}"#;
        let m = MemberData::parse(raw);
        assert_eq!(m.role, Some(Role::Primary));
        assert_eq!(m.xlog_location, Some(67108960));
        assert_eq!(m.conn_host_port(), Some(("127.0.0.1".to_string(), 5432)));
        assert_eq!(m.api_host_port(), Some(("127.0.0.1".to_string(), 8008)));
        assert_eq!(m.to_json(), raw);
    }

    #[test]
    fn member_accepts_primary_and_keeps_unknown_fields() {
        let m = MemberData::parse(
            r#"{"conn_url":"postgres://h:5433/postgres","api_url":"http://h:8009/patroni","state":"running","role":"primary","version":"4.0.0","xlog_location":"12","tags":{"nofailover":true,"failover_priority":"3"},"future":1}"#,
        );
        assert_eq!(m.role, Some(Role::Primary));
        assert_eq!(m.xlog_location, Some(12));
        assert!(m.nofailover());
        assert!(!m.noloadbalance());
        assert_eq!(m.failover_priority(), 3);
        assert!(m.to_json().contains(r#""future":1"#));
        assert!(m.to_json().contains(r#""role":"master""#));
    }

    #[test]
    fn invalid_member_json_is_empty() {
        assert_eq!(MemberData::parse("not json"), MemberData::default());
    }

    #[test]
    fn failover_forms() {
        let f = Failover::parse(r#"{"leader": "node0", "member": "node1"}"#);
        assert_eq!(f.leader.as_deref(), Some("node0"));
        assert_eq!(f.member.as_deref(), Some("node1"));
        assert!(f.is_present());
        assert!(!Failover::parse("{}").is_present());
        assert_eq!(Failover::parse("a:b").member.as_deref(), Some("b"));
        assert_eq!(
            Failover {
                leader: Some("n1".into()),
                member: None,
                scheduled_at: None
            }
            .to_json(),
            r#"{"leader":"n1"}"#
        );
    }

    #[test]
    fn sync_state_sorted_and_nullable() {
        let s = SyncState::new("n1", &["n3".to_string(), "n2".to_string()]);
        assert_eq!(s.to_json(), r#"{"leader":"n1","sync_standby":"n2,n3"}"#);
        assert!(s.is_sync_standby("n3"));
        let empty = SyncState::new("n1", &[]);
        assert_eq!(empty.to_json(), r#"{"leader":"n1","sync_standby":null}"#);
        assert!(empty.standbys().is_empty());
    }

    #[test]
    fn history_round_trip() {
        let raw = r#"[[1,67109256,"no recovery target specified","2026-11-23T12:03:43.568589+00:00","node1"],[2,67109728,"no recovery target specified"]]"#;
        let h = history_from_json(raw);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].new_leader.as_deref(), Some("node1"));
        assert_eq!(history_to_json(&h), raw);
    }

    #[test]
    fn status_optional_slots() {
        let s: Status = serde_json::from_str(r#"{"optime":67109536}"#).unwrap();
        assert_eq!(s.optime, 67109536);
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"optime":67109536}"#);
    }
}
