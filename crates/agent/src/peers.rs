//! Probing the other members' REST API (`GET <api_url>`) while the leader key is free.

use pgherd_dcs::Cluster;
use pgherd_ha::{PeerProbe, PeerReply};
use serde_json::Value;
use std::time::Duration;

/// Peers answer from memory; a node that does not answer within this is treated as down.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// The client for peer probes: the `ctl` TLS settings (falling back to `restapi`), as
/// patronictl and Patroni's own peer requests use them.
pub fn client(cfg: &pgherd_config::Config) -> anyhow::Result<reqwest::Client> {
    pgherd_api::tls::ClientTls::from_config(&cfg.ctl, &cfg.restapi)
        .http_client(None, PROBE_TIMEOUT)
        .map_err(|e| anyhow::anyhow!("ctl/restapi TLS settings for peer probes: {e}"))
}

/// Probes every other member with an api_url, in parallel.
pub async fn probe_all(http: &reqwest::Client, cluster: &Cluster, me: &str) -> Vec<PeerProbe> {
    let probes = cluster
        .members
        .values()
        .filter(|m| m.name != me && !m.data.api_url.is_empty())
        .map(|m| {
            let name = m.name.clone();
            let url = m.data.api_url.clone();
            async move {
                PeerProbe {
                    reply: probe(http, &url).await,
                    name,
                }
            }
        });
    futures::future::join_all(probes).await
}

async fn probe(http: &reqwest::Client, url: &str) -> Option<PeerReply> {
    let body: Value = http.get(url).send().await.ok()?.json().await.ok()?;
    Some(parse_status(&body))
}

/// Reads a `GET /patroni` body: a present `xlog.location` means "primary" (compat §3.3).
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
