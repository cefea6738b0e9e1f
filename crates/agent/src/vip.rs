//! The virtual IP (`vip:`, docs/compat.md#virtual-ip): held on its interface while this member
//! runs the primary with a current leader lease, released before or at any demotion, when the
//! fence fires (before it stops PostgreSQL) and on a clean stop. A lease is current only up to
//! `ttl - safety margin` after its confirmation, before the key could expire, so the address is
//! gone before another member can take the key. Without `CAP_NET_ADMIN` (or the interface) the
//! agent logs why once and runs without it.

use crate::world::Addresses;
use pgherd_config::Vip;
use std::sync::Arc;
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

    /// Holds the address (`true`) or releases it. Adding is retried on the next call after
    /// a failure; removing is always attempted when asked (it may be on the interface from an
    /// earlier agent process).
    pub async fn hold(&self, hold: bool) {
        let Some(inner) = &self.inner else { return };
        let mut s = inner.lock().await;
        if s.usable.is_none() {
            let why = s.addresses.unusable(&s.vip).await;
            if let Some(why) = &why {
                error!(
                    "vip: {} on {} cannot be managed ({why}); running without the virtual IP",
                    s.vip.ip, s.vip.interface
                );
            }
            s.usable = Some(why.is_none());
            if why.is_none() && !hold {
                // Left behind by an earlier agent process that was killed.
                if let Err(e) = s.addresses.remove(&s.vip).await {
                    warn!("vip: removing a leftover {}: {e:#}", s.vip.ip);
                }
            }
        }
        if s.usable != Some(true) || s.held == hold {
            return;
        }
        let (vip, addresses) = (s.vip.clone(), s.addresses.clone());
        if hold {
            match addresses.add(&vip).await {
                Ok(()) => {
                    info!("vip: {}/{} added on {}", vip.ip, vip.prefix, vip.interface);
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
        self.hold(false).await;
    }
}
