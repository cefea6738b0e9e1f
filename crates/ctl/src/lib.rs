//! Operator commands, patronictl-compatible: thin clients of the DCS and the REST API.

pub mod list;
pub mod table;

use anyhow::{Context, Result};
use pgherd_config::DcsSettings;
use pgherd_dcs::etcd::{EtcdDcs, EtcdSettings};
use pgherd_dcs::{Dcs, KeyLayout};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long a command keeps retrying an unreachable DCS before it gives up.
const CTL_RETRY_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to one cluster, from an agent configuration or a small file with just
/// `scope`, `namespace` and the DCS section.
pub struct Ctl {
    pub scope: String,
    pub dcs: Arc<dyn Dcs>,
}

impl Ctl {
    pub fn from_config_file(path: &Path) -> Result<Ctl> {
        let loaded = pgherd_config::load_from_process_env(Some(path))?;
        let cfg = loaded.config;
        let dcs: Arc<dyn Dcs> = match cfg.dcs()? {
            DcsSettings::Etcd {
                endpoints,
                username,
                password,
                cacert,
                cert,
                key,
            } => Arc::new(
                EtcdDcs::new(
                    EtcdSettings {
                        endpoints,
                        username,
                        password,
                        cacert,
                        cert,
                        key,
                    },
                    KeyLayout::new(&cfg.namespace, &cfg.scope),
                    None,
                    Duration::from_secs(30),
                    CTL_RETRY_TIMEOUT,
                )
                .context("connecting to etcd")?,
            ),
        };
        Ok(Ctl {
            scope: cfg.scope,
            dcs,
        })
    }

    /// `list`: one DCS read, rendered like patronictl.
    pub async fn list(&self, format: list::OutputFormat, extended: bool) -> Result<String> {
        let cluster = self.dcs.get_cluster().await?;
        Ok(list::render(&self.scope, &cluster, format, extended))
    }
}
