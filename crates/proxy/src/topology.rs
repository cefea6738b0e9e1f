//! What the DCS says about the cluster, reduced to what routing needs (pure, no I/O).

use pgherd_dcs::{Cluster, ProxyRegistration, Role};
use serde::Serialize;
use std::collections::BTreeMap;

/// One member as the DCS describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberView {
    pub name: String,
    /// `host:port` from `conn_url` (`None` if the URL is unusable).
    pub pg_addr: Option<String>,
    /// `http(s)://host:port` from `api_url`, without the path.
    pub api_base: Option<String>,
    /// Patroni role string (`master`, `replica`, ...).
    pub role: Option<String>,
    pub state: String,
    pub noloadbalance: bool,
    /// From the `weight` tag (default 1); 0 takes the server out of balancing.
    pub weight: u32,
    /// Bytes behind the cluster's last known position (`status.optime`), replicas only.
    pub lag: Option<u64>,
    pub sync_standby: bool,
}

/// The routing-relevant part of one DCS snapshot.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Topology {
    pub leader: Option<String>,
    pub members: BTreeMap<String, MemberView>,
    /// Proxies registered under `proxies/` (this one included), by name.
    pub proxies: BTreeMap<String, ProxyRegistration>,
    pub revision: i64,
}

impl Topology {
    pub fn from_cluster(c: &Cluster) -> Topology {
        let optime = c.optime();
        let sync: Vec<&str> = c
            .sync_state()
            .and_then(|s| s.sync_standby.as_deref())
            .map(|s| s.split(',').map(str::trim).collect())
            .unwrap_or_default();
        let members = c
            .members
            .values()
            .map(|m| {
                let d = &m.data;
                let is_leader = c.leader_name() == Some(m.name.as_str());
                let lag = match (is_leader, optime, d.xlog_location) {
                    (false, Some(o), Some(x)) => Some(o.saturating_sub(x)),
                    _ => None,
                };
                let view = MemberView {
                    name: m.name.clone(),
                    pg_addr: pg_addr(&d.conn_url),
                    api_base: api_base(&d.api_url),
                    role: d.role.map(|r: Role| r.as_str().to_string()),
                    state: d.state.clone(),
                    noloadbalance: d.noloadbalance(),
                    weight: weight_tag(d.tags.get("weight")),
                    lag,
                    sync_standby: sync.contains(&m.name.as_str()),
                };
                (m.name.clone(), view)
            })
            .collect();
        Topology {
            leader: c.leader_name().map(str::to_string),
            members,
            proxies: c.proxies(),
            revision: c.revision,
        }
    }
}

fn weight_tag(v: Option<&serde_json::Value>) -> u32 {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map_or(1, |w| w.min(1000) as u32),
        Some(serde_json::Value::String(s)) => s.trim().parse::<u32>().map_or(1, |w| w.min(1000)),
        _ => 1,
    }
}

/// `postgres://[user[:pw]@]host:port/db?...` -> `host:port` (port 5432 if absent).
pub fn pg_addr(conn_url: &str) -> Option<String> {
    let rest = conn_url
        .strip_prefix("postgres://")
        .or_else(|| conn_url.strip_prefix("postgresql://"))?;
    let authority = rest.split(['/', '?']).next()?;
    let hostport = authority.rsplit('@').next()?;
    with_port(hostport, 5432)
}

/// `http://host:port/patroni` -> `http://host:port`.
pub fn api_base(api_url: &str) -> Option<String> {
    let (scheme, rest) = api_url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let hostport = rest.split(['/', '?']).next()?;
    let default = if scheme == "https" { 443 } else { 80 };
    Some(format!("{scheme}://{}", with_port(hostport, default)?))
}

fn with_port(hostport: &str, default: u16) -> Option<String> {
    if hostport.is_empty() {
        return None;
    }
    if hostport.starts_with('[') {
        // [v6]:port
        return Some(if hostport.contains("]:") {
            hostport.to_string()
        } else {
            format!("{hostport}:{default}")
        });
    }
    Some(match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => hostport.to_string(),
        Some(_) => return None,
        None => format!("{hostport}:{default}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            pg_addr("postgres://127.0.0.1:5432/postgres").as_deref(),
            Some("127.0.0.1:5432")
        );
        assert_eq!(
            pg_addr("postgres://u:p@db1:6000/x?sslmode=require").as_deref(),
            Some("db1:6000")
        );
        assert_eq!(
            pg_addr("postgres://db1/postgres").as_deref(),
            Some("db1:5432")
        );
        assert_eq!(pg_addr("mysql://db1"), None);
        assert_eq!(
            api_base("http://127.0.0.1:8008/patroni").as_deref(),
            Some("http://127.0.0.1:8008")
        );
        assert_eq!(
            api_base("https://h/patroni").as_deref(),
            Some("https://h:443")
        );
        assert_eq!(api_base("ftp://h/patroni"), None);
    }

    #[test]
    fn from_patroni_snapshot() {
        let rows = [
            ("leader", "node1", 9, 77),
            (
                "members/node1",
                r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"master","version":"3.0.2","xlog_location":1000}"#,
                10,
                77,
            ),
            (
                "members/node2",
                r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","api_url":"http://127.0.0.1:8009/patroni","state":"running","role":"replica","version":"3.0.2","xlog_location":400,"tags":{"weight":3}}"#,
                11,
                78,
            ),
            (
                "members/node3",
                r#"{"conn_url":"postgres://127.0.0.1:5434/postgres","api_url":"http://127.0.0.1:8010/patroni","state":"running","role":"replica","version":"3.0.2","tags":{"noloadbalance":true}}"#,
                12,
                79,
            ),
            ("status", r#"{"optime":1000}"#, 13, 0),
            (
                "sync",
                r#"{"leader":"node1","sync_standby":"node2"}"#,
                14,
                0,
            ),
            (
                "proxies/px1",
                r#"{"name":"px1","routing_leader":"node1"}"#,
                15,
                80,
            ),
        ];
        let t = Topology::from_cluster(&Cluster::from_rows(rows, 20));
        assert_eq!(t.leader.as_deref(), Some("node1"));
        let n2 = &t.members["node2"];
        assert_eq!(n2.pg_addr.as_deref(), Some("127.0.0.1:5433"));
        assert_eq!(n2.api_base.as_deref(), Some("http://127.0.0.1:8009"));
        assert_eq!((n2.weight, n2.lag, n2.sync_standby), (3, Some(600), true));
        assert_eq!(t.members["node1"].lag, None);
        assert!(t.members["node3"].noloadbalance);
        assert_eq!(t.members["node1"].role.as_deref(), Some("master"));
        assert_eq!(t.proxies["px1"].routing_leader.as_deref(), Some("node1"));
    }
}
