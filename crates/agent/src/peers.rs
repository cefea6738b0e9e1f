//! Probing the other members' REST API (`GET <api_url>`) while the leader key is free.

use crate::world::Peers;
use pgherd_dcs::{Cluster, FailsafeTopology};
use pgherd_ha::{PeerProbe, PeerReply};
use serde_json::Value;
use std::collections::BTreeMap;

/// Probes every other member with an api_url, in parallel; with failsafe mode, also the
/// members of the failsafe topology whose member key is gone (as Patroni: a member cut off
/// from the DCS may still be the most advanced).
pub async fn probe_all(
    peers: &dyn Peers,
    cluster: &Cluster,
    failsafe: Option<&FailsafeTopology>,
    me: &str,
) -> Vec<PeerProbe> {
    let mut targets: BTreeMap<&str, &str> = cluster
        .members
        .values()
        .filter(|m| !m.data.api_url.is_empty())
        .map(|m| (m.name.as_str(), m.data.api_url.as_str()))
        .collect();
    for (name, url) in failsafe.iter().flat_map(|t| t.0.iter()) {
        targets.entry(name.as_str()).or_insert(url.as_str());
    }
    targets.remove(me);
    let probes = targets.into_iter().map(|(name, url)| async move {
        PeerProbe {
            reply: peers.status(url).await.map(|b| parse_status(&b)),
            name: name.to_string(),
        }
    });
    futures::future::join_all(probes).await
}

/// Reads a `GET /patroni` body: a present `xlog.location` means "primary".
pub fn parse_status(body: &Value) -> PeerReply {
    let xlog = &body["xlog"];
    let location = xlog["location"].as_u64();
    let received = xlog["received_location"].as_u64();
    let replayed = xlog["replayed_location"].as_u64();
    let truthy = |v: &Value| match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "on" | "yes" | "1"),
        _ => false,
    };
    PeerReply {
        running: body["state"] == "running",
        starting: body["state"]
            .as_str()
            .is_some_and(PeerReply::is_starting_state),
        is_primary: location.is_some(),
        wal_position: location.or(match (received, replayed) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }),
        timeline: body["timeline"].as_u64(),
        nofailover: truthy(&body["tags"]["nofailover"]) || truthy(&body["watchdog_failed"]),
        failover_priority: body["tags"]["failover_priority"]
            .as_i64()
            .or_else(|| {
                body["tags"]["failover_priority"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
            })
            .unwrap_or(1),
    }
}
