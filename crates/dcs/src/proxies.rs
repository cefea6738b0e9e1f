//! `proxies/<name>`: a `pgherd proxy`'s registration, the contract between proxies and agents.
//!
//! Each proxy keeps its key on its own lease, so the key exists only while the proxy is alive,
//! and writes (compact JSON, keys in name order):
//!
//! ```json
//! {"api":"http://127.0.0.1:7000","name":"px1","routing_leader":"node1","updated_at":1760000000000}
//! ```
//!
//! `routing_leader` names the member the proxy sends writes to, or still carries write sessions
//! on; `null` when it routes writes nowhere. Before promoting another member, agents wait until
//! no live proxy names the former leader ([`proxies_routing_to`]). Patroni ignores these keys.

use crate::Cluster;
use serde_json::Value;
use std::collections::BTreeMap;

/// Where proxies register, relative to the cluster's base.
const PREFIX: &str = "proxies/";

/// The key of proxy `name`'s registration, relative to the cluster's base.
pub fn proxy_key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// The value of `proxies/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyRegistration {
    pub name: String,
    /// The member this proxy routes writes to (see the module documentation).
    pub routing_leader: Option<String>,
    /// When the proxy wrote the value, in milliseconds since the Unix epoch.
    pub updated_at: u64,
    /// The proxy's stats and admin address (`http://<stats bind>`), if it serves one.
    pub api: Option<String>,
}

impl ProxyRegistration {
    /// Parses a value. Lenient, so that values of other pgherd versions still count for
    /// fencing: a missing field, or one of another type, reads as absent (0 for `updated_at`).
    pub fn parse(raw: &str) -> Result<ProxyRegistration, serde_json::Error> {
        let v: Value = serde_json::from_str(raw)?;
        let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        Ok(ProxyRegistration {
            name: text("name").unwrap_or_default(),
            routing_leader: text("routing_leader"),
            updated_at: v.get("updated_at").and_then(Value::as_u64).unwrap_or(0),
            api: text("api"),
        })
    }

    /// The JSON value: every field, absent ones as `null`, keys in name order.
    pub fn to_value(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "routing_leader": self.routing_leader,
            "updated_at": self.updated_at,
            "api": self.api,
        })
    }

    /// [`ProxyRegistration::to_value`] as compact text, as written to the DCS.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

impl serde::Serialize for ProxyRegistration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl Cluster {
    /// The registered (live) proxies by name. The name is the key's: a value naming another
    /// proxy is read under its key's name. Values that are not JSON are left out.
    pub fn proxies(&self) -> BTreeMap<String, ProxyRegistration> {
        self.other
            .iter()
            .filter_map(|(key, raw)| {
                let name = key.strip_prefix(PREFIX)?;
                let registration = ProxyRegistration::parse(raw).ok()?;
                Some((
                    name.to_string(),
                    ProxyRegistration {
                        name: name.to_string(),
                        ..registration
                    },
                ))
            })
            .collect()
    }
}

/// Names of the live proxies that still route writes to `member`, in name order.
pub fn proxies_routing_to(cluster: &Cluster, member: &str) -> Vec<String> {
    cluster
        .proxies()
        .into_values()
        .filter(|p| p.routing_leader.as_deref() == Some(member))
        .map(|p| p.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_bytes_proxies_write() {
        let written = r#"{"api":"http://127.0.0.1:7000","name":"px1","routing_leader":"node1","updated_at":1760000000000}"#;
        let parsed = ProxyRegistration::parse(written).unwrap();
        assert_eq!(
            parsed,
            ProxyRegistration {
                name: "px1".into(),
                routing_leader: Some("node1".into()),
                updated_at: 1_760_000_000_000,
                api: Some("http://127.0.0.1:7000".into()),
            }
        );
        assert_eq!(parsed.to_json(), written);
        let idle = ProxyRegistration {
            name: "px2".into(),
            ..ProxyRegistration::default()
        };
        assert_eq!(
            idle.to_json(),
            r#"{"api":null,"name":"px2","routing_leader":null,"updated_at":0}"#
        );
        assert_eq!(ProxyRegistration::parse(&idle.to_json()).unwrap(), idle);
        assert_eq!(serde_json::to_value(&idle).unwrap(), idle.to_value());
    }

    #[test]
    fn parsing_is_lenient_but_needs_json() {
        let p = ProxyRegistration::parse(r#"{"routing_leader":"node1","updated_at":-1}"#).unwrap();
        assert_eq!(p.routing_leader.as_deref(), Some("node1"));
        assert_eq!((p.name.as_str(), p.updated_at, p.api), ("", 0, None));
        let p = ProxyRegistration::parse(r#"{"routing_leader":5}"#).unwrap();
        assert_eq!(p.routing_leader, None);
        assert!(ProxyRegistration::parse("not json").is_err());
    }

    #[test]
    fn finds_live_proxies_routing_to_a_member() {
        let rows = [
            (
                "proxies/p1",
                r#"{"name":"p1","routing_leader":"node1"}"#,
                1,
                9,
            ),
            ("proxies/p2", r#"{"name":"p2","routing_leader":null}"#, 2, 9),
            (
                "proxies/p3",
                r#"{"name":"other","routing_leader":"node1"}"#,
                3,
                9,
            ),
            ("proxies/p4", "garbage", 4, 9),
            ("failover", "{}", 5, 0),
        ];
        let c = Cluster::from_rows(rows, 5);
        let proxies = c.proxies();
        assert_eq!(proxies.keys().collect::<Vec<_>>(), ["p1", "p2", "p3"]);
        assert_eq!(proxies["p3"].name, "p3");
        assert_eq!(proxies_routing_to(&c, "node1"), ["p1", "p3"]);
        assert!(proxies_routing_to(&c, "node2").is_empty());
        assert_eq!(proxy_key("px1"), "proxies/px1");
    }
}
