//! The typed local configuration (one member's file plus environment overrides).

mod bootstrap;
mod dcs;
mod misc;
mod options;
mod postgresql;
mod restapi;

pub use bootstrap::{Bootstrap, BootstrapUser, CustomBootstrap};
pub use dcs::{DcsSettings, EtcdSection, Protocol, ZookeeperAcl, ZookeeperSection, ZookeeperTls};
pub use misc::{Citus, Log, Tags, Vip, Watchdog, WatchdogMode};
pub use options::ToolOption;
pub use postgresql::{Authentication, Callbacks, PgUser, Postgresql, ReplicaMethod};
pub use restapi::{BasicAuth, Ctl, RestApi, VerifyClient};

use crate::defaults::DEFAULT_NAMESPACE;
use crate::reader::{Ctx, Section};
use crate::redact::redact_secrets;
use crate::tree::Origins;
use crate::ConfigError;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// Keys of the DCS `config` that Patroni ignores at the top level of a member's file.
const DYNAMIC_KEYS: [&str; 20] = [
    "ttl",
    "loop_wait",
    "retry_timeout",
    "maximum_lag_on_failover",
    "maximum_lag_on_syncnode",
    "check_timeline",
    "primary_start_timeout",
    "master_start_timeout",
    "primary_stop_timeout",
    "master_stop_timeout",
    "synchronous_mode",
    "synchronous_mode_strict",
    "synchronous_node_count",
    "failsafe_mode",
    "standby_cluster",
    "pause",
    "slots",
    "ignore_slots",
    "max_timelines_history",
    "permanent_slots",
];

/// One member's configuration: Patroni's YAML sections, typed. `Debug` hides secrets.
#[derive(Clone, Serialize)]
pub struct Config {
    /// Cluster name.
    pub scope: String,
    /// DCS keys live under `/<namespace>/<scope>/`.
    pub namespace: String,
    /// Member name (required for the agent; also read from the legacy `postgresql.name`).
    pub name: Option<String>,
    pub restapi: RestApi,
    pub ctl: Ctl,
    pub etcd3: Option<EtcdSection>,
    pub etcd: Option<EtcdSection>,
    pub zookeeper: Option<ZookeeperSection>,
    /// `consul`, `exhibitor`, `kubernetes`, `raft` sections, raw (not supported yet).
    pub other_dcs: BTreeMap<String, Value>,
    /// Present only if the file has a `bootstrap` section (or `PATRONI_<user>_PASSWORD` is
    /// set): only such a member may initialize a new cluster.
    pub bootstrap: Option<Bootstrap>,
    pub postgresql: Postgresql,
    pub tags: Tags,
    pub log: Log,
    pub watchdog: Watchdog,
    pub citus: Option<Citus>,
    /// `proxy:` (pgherd's connection router), raw; the proxy parses it.
    pub proxy: Option<Value>,
    /// `vip:` (pgherd: a virtual IP on the primary).
    pub vip: Option<Vip>,
    #[serde(skip)]
    pub(crate) origins: Origins,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Config({})", self.to_redacted_json())
    }
}

impl Config {
    /// Reads the merged tree; returns the config and the warnings.
    pub(crate) fn from_tree(
        tree: &Map<String, Value>,
        origins: Origins,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let mut ctx = Ctx::new(&origins);
        let tree_value = Value::Object(tree.clone());
        let mut root = Section::new(&ctx, "", Some(&tree_value))?;

        let scope = root
            .string(&ctx, "scope")?
            .ok_or_else(|| ctx.invalid("scope", "missing (expected the cluster name)"))?;
        let namespace = root
            .string(&ctx, "namespace")?
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        let name = root.string(&ctx, "name")?;
        let restapi = RestApi::parse(root.section(&ctx, "restapi")?, &mut ctx)?;
        let ctl = Ctl::parse(root.section(&ctx, "ctl")?, &mut ctx)?;

        let citus_section = root.section(&ctx, "citus")?;
        let citus = match citus_section.is_present() {
            true => Some(Citus::parse(citus_section, &mut ctx)?),
            false => None,
        };
        let mut zookeeper_value = root.raw("zookeeper").cloned();
        let mut other_dcs = BTreeMap::new();
        // Legacy: `zookeeper.exhibitor` meant the exhibitor DCS.
        if let Some(exhibitor) = zookeeper_value.as_ref().and_then(|z| z.get("exhibitor")) {
            other_dcs.insert("exhibitor".to_string(), exhibitor.clone());
            zookeeper_value = None;
        }
        for name in dcs::RAW_DCS_SECTIONS {
            if let Some(value) = root.raw(name) {
                other_dcs.insert(name.to_string(), value.clone());
            }
        }
        let etcd3 = optional(root.section(&ctx, "etcd3")?, &mut ctx, EtcdSection::parse)?;
        let etcd = optional(root.section(&ctx, "etcd")?, &mut ctx, EtcdSection::parse)?;
        let zookeeper_section = Section::new(&ctx, "zookeeper", zookeeper_value.as_ref())?;
        let zookeeper = optional(zookeeper_section, &mut ctx, ZookeeperSection::parse)?;

        let bootstrap_section = root.section(&ctx, "bootstrap")?;
        let bootstrap = match bootstrap_section.is_present() {
            true => Some(Bootstrap::parse(
                bootstrap_section,
                &mut ctx,
                citus.is_some(),
            )?),
            false => None,
        };
        let (postgresql, legacy_name) =
            Postgresql::parse(root.section(&ctx, "postgresql")?, &mut ctx)?;
        let tags = Tags::parse(root.section(&ctx, "tags")?, &mut ctx)?;
        let log = Log::parse(root.section(&ctx, "log")?, &mut ctx)?;
        let watchdog = Watchdog::parse(root.section(&ctx, "watchdog")?, &mut ctx)?;
        let proxy = root.raw("proxy").cloned();
        let vip = optional(root.section(&ctx, "vip")?, &mut ctx, Vip::parse)?;

        for key in DYNAMIC_KEYS {
            if root.raw(key).is_some() {
                ctx.warn(key, "dynamic setting, ignored here (put it under bootstrap.dcs, or change it with edit-config)");
            }
        }
        root.finish(&mut ctx);

        let warnings = ctx.warnings;
        let config = Config {
            scope,
            namespace,
            name: name.or(legacy_name),
            restapi,
            ctl,
            etcd3,
            etcd,
            zookeeper,
            other_dcs,
            bootstrap,
            postgresql,
            tags,
            log,
            watchdog,
            citus,
            proxy,
            vip,
            origins,
        };
        Ok((config, warnings))
    }

    /// Checks what the agent needs beyond what every command needs: `name`, `restapi.listen`,
    /// `postgresql.listen`, `postgresql.data_dir`, and a usable DCS section.
    pub fn validate_for_agent(&self) -> Result<(), ConfigError> {
        let ctx = Ctx::new(&self.origins);
        if !matches!(self.name.as_deref(), Some(name) if !name.is_empty()) {
            return Err(ctx.invalid("name", "missing (expected this member's name)"));
        }
        self.restapi_listen()?;
        self.postgres_listen()?;
        if self.postgresql.data_dir.is_none() {
            return Err(ctx.invalid(
                "postgresql.data_dir",
                "missing (expected the data directory)",
            ));
        }
        self.dcs().map(|_| ())
    }

    /// `postgresql.listen` as (hosts, port).
    pub fn postgres_listen(&self) -> Result<(Vec<String>, u16), ConfigError> {
        let listen = self.postgresql.listen.as_ref().ok_or_else(|| {
            Ctx::new(&self.origins)
                .invalid("postgresql.listen", r#"missing (expected "host:port")"#)
        })?;
        Ok((listen.hosts.clone(), listen.port))
    }

    /// `restapi.listen` as (host, port).
    pub fn restapi_listen(&self) -> Result<(String, u16), ConfigError> {
        let listen = self.restapi.listen.as_ref().ok_or_else(|| {
            Ctx::new(&self.origins).invalid("restapi.listen", r#"missing (expected "host:port")"#)
        })?;
        Ok((listen.host.clone(), listen.port))
    }

    /// The member's `conn_url` as published in the DCS:
    /// `postgres://<connect_address or local listen address>/<database>`. Without a
    /// `connect_address`, the host is `localhost` when listening on a wildcard or loopback
    /// address, else the first listen host (as Patroni).
    pub fn conn_url(&self) -> Result<String, ConfigError> {
        let netloc = match &self.postgresql.connect_address {
            Some(addr) => addr.to_string(),
            None => {
                let listen = self.postgresql.listen.as_ref().ok_or_else(|| {
                    Ctx::new(&self.origins).invalid(
                        "postgresql.connect_address",
                        r#"missing, and no postgresql.listen either (expected "host:port")"#,
                    )
                })?;
                crate::HostPort {
                    host: listen.local_host().to_string(),
                    port: listen.port,
                }
                .to_string()
            }
        };
        Ok(format!("postgres://{netloc}/{}", self.postgresql.database))
    }

    /// The member's `api_url` as published in the DCS:
    /// `http(s)://<restapi.connect_address or restapi.listen>/patroni` (https when
    /// `restapi.certfile` is set).
    pub fn api_url(&self) -> Result<String, ConfigError> {
        let addr = match (&self.restapi.connect_address, &self.restapi.listen) {
            (Some(addr), _) | (None, Some(addr)) => addr,
            (None, None) => {
                return Err(Ctx::new(&self.origins).invalid(
                    "restapi.connect_address",
                    r#"missing, and no restapi.listen either (expected "host:port")"#,
                ))
            }
        };
        let scheme = if self.restapi.certfile.is_some() {
            "https"
        } else {
            "http"
        };
        Ok(format!("{scheme}://{addr}/patroni"))
    }

    /// The tags this member publishes (see [`Tags::to_json`]).
    pub fn effective_tags(&self) -> Map<String, Value> {
        self.tags.to_json()
    }

    /// The whole configuration as JSON with every secret replaced by `********`
    /// (for `show-config`, `GET /config`-style output and logs).
    pub fn to_redacted_json(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        redact_secrets(&mut value);
        value
    }
}

/// Parses a section only if present.
fn optional<'v, T>(
    section: Section<'v>,
    ctx: &mut Ctx,
    parse: fn(Section<'v>, &mut Ctx) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    if section.is_present() {
        parse(section, ctx).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
