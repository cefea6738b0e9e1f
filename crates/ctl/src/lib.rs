//! Operator commands, patronictl-compatible: thin clients of the DCS and the REST API.
//!
//! Each command reads the cluster from the DCS, talks to members' REST APIs (TLS and
//! credentials from the `ctl` section, falling back to `restapi`, as patronictl), prints what
//! patronictl prints, and returns `Err` with a one-line reason when it did not do what was
//! asked (the binary turns that into a non-zero exit).

#![forbid(unsafe_code)]

pub mod config_cmd;
pub mod console;
pub mod list;
pub mod members;
pub mod misc;
pub mod query;
pub mod rest;
pub mod switchover;
pub mod table;

use anyhow::{Context, Result};
use pgherd_config::Config;
use pgherd_dcs::{Cluster, Dcs, Member};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long a command keeps retrying an unreachable DCS before it gives up.
const CTL_RETRY_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to one cluster, from an agent configuration or a small file with just
/// `scope`, `namespace`, the DCS section and optionally `ctl`/`restapi`.
pub struct Ctl {
    pub scope: String,
    pub dcs: Arc<dyn Dcs>,
    pub config: Config,
    rest: std::sync::OnceLock<Result<rest::RestClient, String>>,
    insecure: bool,
}

impl Ctl {
    pub fn from_config_file(path: &Path) -> Result<Ctl> {
        Ctl::connect(path, false)
    }

    /// `insecure`: do not verify REST API certificates (`-k`), whatever `ctl.insecure` says.
    pub fn connect(path: &Path, insecure: bool) -> Result<Ctl> {
        let loaded = pgherd_config::load_from_process_env(Some(path))?;
        let cfg = loaded.config;
        let dcs = Ctl::open_dcs(&cfg, &cfg.scope)?;
        Ok(Ctl {
            scope: cfg.scope.clone(),
            dcs,
            config: cfg,
            rest: std::sync::OnceLock::new(),
            insecure,
        })
    }

    /// A DCS client for `scope` (another cluster under the same namespace).
    fn open_dcs(cfg: &Config, scope: &str) -> Result<Arc<dyn Dcs>> {
        pgherd_dcs::open(cfg, scope, None, Duration::from_secs(30), CTL_RETRY_TIMEOUT)
            .context("connecting to etcd")
    }

    /// The same connection pointed at another cluster name (patronictl's `CLUSTER_NAME`
    /// argument).
    pub fn for_scope(self, scope: &str) -> Result<Ctl> {
        if scope == self.scope {
            return Ok(self);
        }
        let dcs = Ctl::open_dcs(&self.config, scope)?;
        Ok(Ctl {
            scope: scope.to_string(),
            dcs,
            ..self
        })
    }

    pub async fn cluster(&self) -> Result<Cluster> {
        self.dcs
            .get_cluster()
            .await
            .with_context(|| format!("reading cluster {} from the DCS", self.scope))
    }

    /// The REST client (built on first use, so that `list` works without TLS files).
    pub fn rest(&self) -> Result<&rest::RestClient> {
        self.rest
            .get_or_init(|| {
                rest::RestClient::from_config(&self.config, self.insecure)
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// `list`: one DCS read, rendered like patronictl.
    pub async fn list(&self, format: list::OutputFormat, extended: bool) -> Result<String> {
        let cluster = self.cluster().await?;
        Ok(list::render(&self.scope, &cluster, format, extended))
    }

    /// The members table in patronictl's default layout (shown before interactive actions).
    pub fn members_table(&self, cluster: &Cluster) -> String {
        list::render(&self.scope, cluster, list::OutputFormat::Pretty, false)
    }
}

/// `host` of a member's `api_url` host:port, for messages.
pub fn member_api(member: &Member) -> &str {
    member.data.api_url.as_str()
}
