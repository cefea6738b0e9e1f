//! Fencing through the proxies: before promoting, wait until no live `pgherd proxy` still
//! routes writes to the former leader, so no proxy can carry a write to a node that is no
//! longer the primary. Bounded by `proxy_fencing_timeout` (DCS config, default 5 s, 0 = off):
//! after it we promote anyway (availability) and say so.
//! Runs inside the promotion task, beside the HA loop, which keeps renewing the lease.
//!
//! Each proxy registers `proxies/<name>` on its own lease (`pgherd_dcs::ProxyRegistration`);
//! an expired proxy (dead) has no key.

use pgherd_dcs::{proxies_routing_to, Dcs};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

pub async fn wait(dcs: &dyn Dcs, old: &str, limit: Duration) {
    if limit.is_zero() {
        return;
    }
    let deadline = Instant::now() + limit;
    let mut waited = false;
    loop {
        // A DCS that cannot be read says nothing about the proxies: keep asking until the
        // deadline, as if they all still routed to the former leader.
        let pending = match tokio::time::timeout_at(deadline, dcs.get_cluster()).await {
            Ok(Ok(c)) => proxies_routing_to(&c, old),
            Ok(Err(e)) => {
                warn!("proxy fencing: cannot read the DCS ({e}); asking again");
                vec![format!("(unknown: {e})")]
            }
            Err(_) => vec!["(unknown: the DCS did not answer)".to_string()],
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
