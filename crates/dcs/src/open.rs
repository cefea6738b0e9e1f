//! Opening the store a configuration names, for every pgherd role (agent, ctl, proxy).

use crate::etcd::{EtcdDcs, EtcdSettings};
use crate::zookeeper::{ZooKeeperDcs, ZooKeeperSettings};
use crate::{Dcs, DcsError, KeyLayout};
use pgherd_config::{Config, DcsSettings};
use std::sync::Arc;
use std::time::Duration;

/// A client for cluster `scope` under the configuration's namespace. `member`: the agent's
/// name (leases for its member and leader keys); `None` for ctl and proxies.
pub fn open(
    cfg: &Config,
    scope: &str,
    member: Option<String>,
    ttl: Duration,
    retry_timeout: Duration,
) -> Result<Arc<dyn Dcs>, DcsError> {
    let settings = cfg.dcs().map_err(|e| DcsError::Config(e.to_string()))?;
    Ok(match settings {
        DcsSettings::Etcd {
            endpoints,
            username,
            password,
            cacert,
            cert,
            key,
        } => Arc::new(EtcdDcs::new(
            EtcdSettings {
                endpoints,
                username,
                password,
                cacert,
                cert,
                key,
            },
            KeyLayout::new(&cfg.namespace, scope),
            member,
            ttl,
            retry_timeout,
        )?),
        DcsSettings::Zookeeper { hosts, tls, acls } => Arc::new(ZooKeeperDcs::new(
            ZooKeeperSettings { hosts, tls, acls },
            KeyLayout::new(&cfg.namespace, scope),
            member,
            ttl,
            retry_timeout,
        )?),
    })
}
