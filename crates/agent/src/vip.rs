//! The virtual IP (`vip:`, docs/compat.md#virtual-ip): held on its interface while this member
//! runs the primary with a current leader lease, released before or at any demotion, when the
//! fence fires (before it stops PostgreSQL) and on a clean stop. A lease is current only up to
//! `ttl - safety margin` after its confirmation, before the key could expire, so the address is
//! gone before another member can take the key. The address itself carries a lifetime that
//! ends no later than the key could expire, renewed every cycle: if the agent is killed, the
//! kernel removes the address in time on its own (vip-manager runs as a separate process for
//! the same reason). Without `CAP_NET_ADMIN` (or the interface) the
//! agent logs why once and runs without it.

use crate::world::Addresses;
use pgherd_config::Vip;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tracing::{error, info, warn};

/// Shared by the HA loop and the fence.
#[derive(Clone)]
pub struct VipKeeper {
    inner: Option<Arc<Mutex<State>>>,
}

struct State {
    vip: Vip,
    addresses: Arc<dyn Addresses>,
    /// Checked once, at the first call.
    usable: Option<bool>,
    held: bool,
}

impl VipKeeper {
    pub fn new(vip: Option<Vip>, addresses: Arc<dyn Addresses>) -> VipKeeper {
        VipKeeper {
            inner: vip.map(|vip| {
                Arc::new(Mutex::new(State {
                    vip,
                    addresses,
                    usable: None,
                    held: false,
                }))
            }),
        }
    }

    /// Holds the address for `lifetime` (renewed at every call), or releases it (`None`).
    /// The kernel drops an address whose lifetime ran out, so an agent killed while holding
    /// it leaves nothing behind for longer than that. Adding is retried on the next call
    /// after a failure; removing is always attempted when asked (it may be on the interface
    /// from an earlier agent process).
    pub async fn hold(&self, lifetime: Option<Duration>) {
        let Some(inner) = &self.inner else { return };
        let mut s = inner.lock().await;
        // Whole seconds only (iproute2): under one second left is not worth holding.
        let lifetime = lifetime.filter(|l| l.as_secs() >= 1);
        if s.usable.is_none() {
            let why = s.addresses.unusable(&s.vip).await;
            if let Some(why) = &why {
                error!(
                    "vip: {} on {} cannot be managed ({why}); running without the virtual IP",
                    s.vip.ip, s.vip.interface
                );
            }
            s.usable = Some(why.is_none());
            if why.is_none() && lifetime.is_none() {
                // Left behind by an earlier agent process that was killed.
                if let Err(e) = s.addresses.remove(&s.vip).await {
                    warn!("vip: removing a leftover {}: {e:#}", s.vip.ip);
                }
            }
        }
        if s.usable != Some(true) || (!s.held && lifetime.is_none()) {
            return;
        }
        let (vip, addresses) = (s.vip.clone(), s.addresses.clone());
        if let Some(lifetime) = lifetime {
            let announce = !s.held;
            match addresses.add(&vip, lifetime, announce).await {
                Ok(()) => {
                    if announce {
                        info!("vip: {}/{} added on {}", vip.ip, vip.prefix, vip.interface);
                    }
                    s.held = true;
                }
                Err(e) => error!("vip: adding {} on {} failed: {e:#}", vip.ip, vip.interface),
            }
        } else {
            match addresses.remove(&vip).await {
                Ok(()) => info!("vip: {} removed from {}", vip.ip, vip.interface),
                Err(e) => error!(
                    "vip: removing {} from {} failed: {e:#}",
                    vip.ip, vip.interface
                ),
            }
            // Believed gone either way: the next release tries again only if asked to hold.
            s.held = false;
        }
    }

    /// Releases the address.
    pub async fn release(&self) {
        self.hold(None).await;
    }
}
