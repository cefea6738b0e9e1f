//! A consistent snapshot of `<base>/`, read in one request.

use crate::values::{Failover, HistoryEntry, MemberData, Status, SyncState};
use serde_json::Value;
use std::collections::BTreeMap;

/// A value plus the store's modification index (etcd `mod_revision`), used for CAS writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub index: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Leader {
    pub name: String,
    pub index: i64,
    /// Lease (etcd) or session holding the key.
    pub session: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub data: MemberData,
    pub index: i64,
    pub session: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cluster {
    /// `None`: never bootstrapped; `Some("")`: bootstrap in progress; else the sysid.
    pub initialize: Option<String>,
    /// The dynamic configuration object (`config` key). `None` if absent or not an object.
    pub config: Option<Versioned<Value>>,
    pub leader: Option<Leader>,
    pub members: BTreeMap<String, Member>,
    pub status: Option<Status>,
    pub history: Option<Versioned<Vec<HistoryEntry>>>,
    pub failover: Option<Versioned<Failover>>,
    pub sync: Option<Versioned<SyncState>>,
    /// `None` when absent or not an object of strings.
    pub failsafe: Option<crate::FailsafeTopology>,
    /// Other keys under the prefix (relative path -> raw value), e.g. registered proxies.
    pub other: BTreeMap<String, String>,
    /// Store revision this snapshot was read at.
    pub revision: i64,
}

impl Cluster {
    /// Builds a snapshot from `(relative_key, value, mod_revision, lease)` rows.
    pub fn from_rows<'a>(
        rows: impl IntoIterator<Item = (&'a str, &'a str, i64, i64)>,
        revision: i64,
    ) -> Cluster {
        let mut c = Cluster {
            revision,
            ..Cluster::default()
        };
        for (key, value, index, lease) in rows {
            match key {
                "initialize" => c.initialize = Some(value.to_string()),
                "config" => {
                    if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(value) {
                        c.config = Some(Versioned { value: v, index });
                    }
                }
                "leader" => {
                    if !value.is_empty() {
                        c.leader = Some(Leader {
                            name: value.to_string(),
                            index,
                            session: lease,
                        });
                    }
                }
                "status" => c.status = serde_json::from_str(value).ok(),
                "optime/leader" => {
                    if c.status.is_none() {
                        if let Ok(optime) = value.trim().parse() {
                            c.status = Some(Status {
                                optime,
                                ..Status::default()
                            });
                        }
                    }
                }
                "history" => {
                    c.history = Some(Versioned {
                        value: crate::history_from_json(value),
                        index,
                    })
                }
                "failover" => {
                    c.failover = Some(Versioned {
                        value: Failover::parse(value),
                        index,
                    })
                }
                "sync" => {
                    if let Ok(s) = serde_json::from_str::<SyncState>(value) {
                        c.sync = Some(Versioned { value: s, index });
                    }
                }
                "failsafe" => c.failsafe = crate::FailsafeTopology::parse(value),
                other => {
                    // Only direct children of members/ are members.
                    if let Some(name) = other.strip_prefix("members/") {
                        if !name.is_empty() && !name.contains('/') {
                            c.members.insert(
                                name.to_string(),
                                Member {
                                    name: name.to_string(),
                                    data: MemberData::parse(value),
                                    index,
                                    session: lease,
                                },
                            );
                            continue;
                        }
                    }
                    c.other.insert(other.to_string(), value.to_string());
                }
            }
        }
        c
    }

    pub fn leader_name(&self) -> Option<&str> {
        self.leader.as_ref().map(|l| l.name.as_str())
    }

    pub fn leader_member(&self) -> Option<&Member> {
        self.members.get(self.leader_name()?)
    }

    pub fn is_paused(&self) -> bool {
        match self.config.as_ref().and_then(|c| c.value.get("pause")) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => {
                matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "on" | "1")
            }
            _ => false,
        }
    }

    /// The valid (>= 10 digit) system identifier in `initialize`, if any.
    pub fn sysid(&self) -> Option<&str> {
        self.initialize
            .as_deref()
            .filter(|s| s.len() >= 10 && s.chars().all(|c| c.is_ascii_digit()))
    }

    pub fn failover_request(&self) -> Option<&Failover> {
        self.failover
            .as_ref()
            .map(|f| &f.value)
            .filter(|f| f.is_present())
    }

    pub fn sync_state(&self) -> Option<&SyncState> {
        self.sync.as_ref().map(|s| &s.value)
    }

    pub fn optime(&self) -> Option<u64> {
        self.status.as_ref().map(|s| s.optime)
    }

    /// Cluster timeline from `history` (docs/compat.md#history-key): last entry + 1; `[]` -> 1;
    /// missing -> 0.
    pub fn timeline(&self) -> u64 {
        match &self.history {
            None => 0,
            Some(h) => h.value.last().map(|e| e.timeline + 1).unwrap_or(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_from_patroni_dump() {
        let rows = [
            ("config", r#"{"ttl":30,"loop_wait":10,"pause":true}"#, 5, 0),
            ("initialize", "7711336143377005909", 3, 0),
            ("leader", "node0", 9, 77),
            (
                "members/node0",
                r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"master","version":"3.0.2"}"#,
                10,
                77,
            ),
            ("members/node1/extra", "x", 11, 0),
            ("status", r#"{"optime":67108960}"#, 12, 0),
            ("failover", "{}", 13, 0),
            ("sync", r#"{"leader":"node0","sync_standby":null}"#, 14, 0),
            ("history", "[]", 15, 0),
            ("proxies/p1", "{}", 16, 88),
        ];
        let c = Cluster::from_rows(rows, 20);
        assert_eq!(c.leader_name(), Some("node0"));
        assert_eq!(c.leader.as_ref().unwrap().session, 77);
        assert_eq!(c.members.len(), 1);
        assert!(c.leader_member().is_some());
        assert!(c.is_paused());
        assert_eq!(c.sysid(), Some("7711336143377005909"));
        assert_eq!(c.optime(), Some(67108960));
        assert!(c.failover_request().is_none());
        assert_eq!(c.timeline(), 1);
        assert_eq!(c.other.get("proxies/p1").map(String::as_str), Some("{}"));
        assert!(c.other.contains_key("members/node1/extra"));
    }
}
