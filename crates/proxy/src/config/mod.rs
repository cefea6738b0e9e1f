//! The `proxy:` section, typed and validated through the shared configuration reader
//! ([`pgherd_config::reader`]). Every error names the file and the key path
//! (`proxy.yml: proxy.listeners[1].balance: expected roundrobin, leastconn or first, found "x"`)
//! and unknown keys are errors, so a typo never silently falls back to a default.
//!
//! One function per subsection, each in its own file: `listeners.rs`, `connections.rs`
//! (`timeouts`, `tcp_keepalive`), `pool.rs` (a listener's pooling keys), `health.rs` (`health_check`), `stats.rs`, `registration.rs`;
//! every default by name in [`defaults`].

mod connections;
pub mod defaults;
mod health;
mod listeners;
mod pool;
mod registration;
mod stats;
mod values;

pub use connections::{Keepalive, Timeouts};
pub use defaults::{
    DEFAULT_BALANCE, DEFAULT_BUFFER, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HOLD_TIMEOUT, DEFAULT_MAXCONN,
    DEFAULT_MAXQUEUE, DEFAULT_QUEUE_TIMEOUT, DEFAULT_THREADS,
};
pub use health::HealthConfig;
pub use listeners::{Balance, ListenerConfig, ListenerRole};
pub use pool::{PoolConfig, PoolMode, ServerTlsMode, TlsFiles};
pub use registration::RegistrationConfig;
pub use stats::{AdminAuth, StatsConfig};

use crate::error::ProxyError;
use defaults::{MAX_BUFFER, MIN_BUFFER};
use listeners::ListenerDefaults;
use pgherd_config::reader::{Ctx, Origins, Section};
use pgherd_config::ConfigError;
use serde_json::Value;
use std::time::Duration;
use values::count;

/// How messages name what a section of `proxy:` should be.
const MAPPING: &str = "a mapping";

/// The whole `proxy:` section plus the cluster identity it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub name: String,
    pub scope: String,
    pub namespace: String,
    /// Client connections accepted in total; accepting pauses beyond.
    pub maxconn: usize,
    /// Bytes buffered per direction of an active session.
    pub buffer_size: usize,
    /// Worker threads of the proxy's runtime (HAProxy's `nbthread`).
    pub threads: usize,
    pub timeouts: Timeouts,
    pub keepalive: Option<Keepalive>,
    pub health: HealthConfig,
    pub listeners: Vec<ListenerConfig>,
    pub stats: Option<StatsConfig>,
    pub registration: RegistrationConfig,
    /// On SIGTERM/SIGINT: how long open sessions may go on after accepting stopped.
    pub drain_timeout: Duration,
}

impl ProxyConfig {
    /// Builds the proxy configuration from a loaded pgherd configuration. `file` labels errors.
    pub fn from_config(
        config: &pgherd_config::Config,
        file: &str,
    ) -> Result<ProxyConfig, ProxyError> {
        let Some(raw) = config.proxy.as_ref() else {
            let origins = Origins::new(file);
            return Err(Ctx::new(&origins)
                .invalid(
                    "proxy",
                    "missing (expected a proxy: section with listeners)",
                )
                .into());
        };
        Self::parse(
            raw,
            file,
            &config.scope,
            &config.namespace,
            &default_hostname(),
        )
    }

    /// Parses the raw `proxy:` value. `hostname` is used for the default proxy name.
    pub fn parse(
        raw: &Value,
        file: &str,
        scope: &str,
        namespace: &str,
        hostname: &str,
    ) -> Result<ProxyConfig, ProxyError> {
        let origins = Origins::new(file);
        let ctx = Ctx::new(&origins);
        let mut root = Section::expecting(&ctx, "proxy", Some(raw), MAPPING)?;
        let name = root.string(&ctx, "name")?;
        let maxconn = count(&mut root, &ctx, "maxconn", 1)?.unwrap_or(DEFAULT_MAXCONN);
        let buffer_size = buffer_size(&mut root, &ctx)?;
        let hold_timeout = root
            .duration(&ctx, "hold_timeout")?
            .unwrap_or(DEFAULT_HOLD_TIMEOUT);
        let drain_timeout = root
            .duration(&ctx, "drain_timeout")?
            .unwrap_or(DEFAULT_DRAIN_TIMEOUT);
        let threads = count(&mut root, &ctx, "threads", 1)?.unwrap_or(DEFAULT_THREADS);
        let listener_defaults = ListenerDefaults::parse(&mut root, &ctx, hold_timeout)?;
        let timeouts = connections::timeouts(&mut root, &ctx)?;
        let keepalive = connections::tcp_keepalive(&mut root, &ctx)?;
        let health = health::health_check(&mut root, &ctx)?;
        let listeners = listeners::listeners(&mut root, &ctx, &listener_defaults)?;
        let stats = stats::stats(&mut root, &ctx, &listeners)?;
        let registration = registration::registration(&mut root, &ctx)?;
        let name_path = root.path("name");
        root.finish_strict(&ctx)?;
        let default_name = || {
            let port = listeners.first().map(|l| l.bind.port()).unwrap_or_default();
            format!("{hostname}-{port}")
        };
        Ok(ProxyConfig {
            name: proxy_name(name, default_name, &ctx, &name_path)?,
            scope: scope.to_string(),
            namespace: namespace.to_string(),
            maxconn,
            buffer_size,
            threads,
            timeouts,
            keepalive,
            health,
            listeners,
            stats,
            registration,
            drain_timeout,
        })
    }

    /// Distinct `max_lag` values of replica-like listeners (`None` = no lag limit).
    pub fn lag_limits(&self) -> Vec<Option<u64>> {
        let mut v: Vec<Option<u64>> = self
            .listeners
            .iter()
            .filter(|l| l.role != ListenerRole::Primary)
            .map(|l| l.max_lag)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// `proxy.name`: no `/` (it ends the key `proxies/<name>`); unset or blank: `default`.
fn proxy_name(
    name: Option<String>,
    default: impl FnOnce() -> String,
    ctx: &Ctx,
    path: &str,
) -> Result<String, ConfigError> {
    match name {
        Some(n) if !n.trim().is_empty() => {
            if n.contains('/') {
                return Err(ctx.invalid(path, format!("must not contain '/', found {n:?}")));
            }
            Ok(n)
        }
        _ => Ok(default()),
    }
}

/// `proxy.buffer_size`: between 1kB and 16MB.
fn buffer_size(root: &mut Section, ctx: &Ctx) -> Result<usize, ConfigError> {
    match root.size(ctx, "buffer_size")? {
        None => Ok(DEFAULT_BUFFER),
        Some(n) if (MIN_BUFFER..=MAX_BUFFER).contains(&n) => Ok(n as usize),
        Some(_) => Err(root.invalid(ctx, "buffer_size", "expected a size between 1kB and 16MB")),
    }
}

/// This host's name, for the default proxy name.
pub fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().replace('/', "_"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "pgherd-proxy".to_string())
}

#[cfg(test)]
mod tests;
