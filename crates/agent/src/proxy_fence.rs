//! Fencing through the proxies: before promoting, wait until no live `pgherd proxy` still
//! routes writes to the former leader, so no proxy can carry a write to a node that is no
//! longer the primary. Bounded: after the timeout we promote anyway (availability) and say so.
//!
//! Each proxy registers `proxies/<name>` on its own lease with
//! `{"routing_leader": <member or null>, ...}`; an expired proxy (dead) has no key.

use crate::agent::Agent;
use pgherd_dcs::Cluster;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// Default bound; `proxy_fencing_timeout` in the DCS config (seconds) overrides it, 0 = off.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Names of live proxies still routing primary traffic to `old_leader`.
pub fn routing_to(cluster: &Cluster, old_leader: &str) -> Vec<String> {
    pgherd_dcs::proxies_routing_to(cluster, old_leader)
}

fn timeout(a: &Agent) -> Duration {
    a.dynamic
        .extra
        .get("proxy_fencing_timeout")
        .and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_TIMEOUT)
}

pub async fn wait(a: &mut Agent) {
    let Some(old) = a.last_known_leader.clone() else {
        return;
    };
    let limit = timeout(a);
    if limit.is_zero() {
        return;
    }
    let deadline = Instant::now() + limit;
    let mut waited = false;
    loop {
        let pending = match a.dcs.get_cluster().await {
            Ok(c) => routing_to(&c, &old),
            Err(e) => {
                warn!("proxy fencing: cannot read the DCS ({e}); promoting without confirmation");
                return;
            }
        };
        if pending.is_empty() {
            if waited {
                info!("proxy fencing: every proxy stopped routing writes to {old}");
            }
            return;
        }
        if Instant::now() >= deadline {
            warn!(
                "proxy fencing: {} still route writes to {old} after {limit:?}; promoting anyway",
                pending.join(",")
            );
            return;
        }
        if !waited {
            info!(
                "proxy fencing: waiting for {} to stop routing writes to {old}",
                pending.join(",")
            );
            waited = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_proxies_still_routing_to_the_old_leader() {
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
                r#"{"name":"p3","routing_leader":"node2"}"#,
                3,
                9,
            ),
        ];
        let c = Cluster::from_rows(rows, 3);
        assert_eq!(routing_to(&c, "node1"), vec!["p1".to_string()]);
        assert!(routing_to(&c, "node9").is_empty());
    }
}
