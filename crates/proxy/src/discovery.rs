//! Discovery by watch: every change under the cluster prefix (leader key, member keys) wakes
//! one read of the prefix, and the new [`Topology`] is published at once. No polling lag: a
//! promotion is routed within one etcd round trip. A slow periodic re-read only guards against
//! a missed event.
//!
//! When the DCS cannot be read the last topology stays in force: the health checks still take
//! a server out (a primary that lost its leader key answers `GET /primary` with 503).

use crate::topology::Topology;
use pgherd_dcs::Dcs;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// Re-read the prefix at least this often, even without a watch event.
const RESYNC: Duration = Duration::from_secs(5);
/// Pause after a failed read before the next one.
const RETRY: Duration = Duration::from_millis(250);

pub async fn run(dcs: Arc<dyn Dcs>, tx: watch::Sender<Option<Arc<Topology>>>) {
    let mut changes = dcs.subscribe();
    let mut failing = false;
    loop {
        // Mark the current change count as seen before reading, so a change during the read
        // triggers another read.
        changes.borrow_and_update();
        match dcs.get_cluster().await {
            Ok(cluster) => {
                if failing {
                    info!("DCS readable again");
                    failing = false;
                }
                let topo = Topology::from_cluster(&cluster);
                tx.send_if_modified(|current| {
                    let same = current.as_ref().is_some_and(|c| same_routing(c, &topo));
                    if !same {
                        *current = Some(Arc::new(topo));
                    }
                    !same
                });
            }
            Err(e) => {
                if !failing {
                    warn!("cannot read the cluster from the DCS, keeping the last view: {e}");
                    failing = true;
                }
                tokio::time::sleep(RETRY).await;
                continue;
            }
        }
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() {
                    tokio::time::sleep(RESYNC).await;
                }
            }
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

/// Equal apart from the store revision (our own registration writes bump it).
fn same_routing(a: &Topology, b: &Topology) -> bool {
    a.leader == b.leader && a.members == b.members && a.proxies == b.proxies
}
