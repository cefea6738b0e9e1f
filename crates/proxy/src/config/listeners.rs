//! `proxy.listeners`: one entry per port, and the top-level defaults entries inherit.

use super::defaults::{DEFAULT_BALANCE, DEFAULT_MAXQUEUE, DEFAULT_QUEUE_TIMEOUT};
use super::pool::PoolConfig;
use super::values::{count, socket_addr, true_or_false};
use pgherd_config::reader::{Ctx, Section};
use pgherd_config::ConfigError;
use std::net::SocketAddr;
use std::time::Duration;

/// Which servers a listener sends connections to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerRole {
    /// The leader named by the DCS, confirmed by its `GET /primary`.
    Primary,
    /// Streaming replicas confirmed by `GET /replica[?lag=max_lag]`.
    Replica,
    /// Replicas, and the primary when no replica qualifies.
    ReadOnly,
    /// Replicas listed as synchronous standbys in the DCS `sync` key.
    Sync,
    /// Replicas that are not synchronous standbys.
    Async,
}

const ROLE_EXPECTED: &str = "primary, replica, read-only, sync or async";

impl ListenerRole {
    fn parse(s: &str) -> Option<ListenerRole> {
        Some(match s {
            "primary" | "master" | "read-write" => ListenerRole::Primary,
            "replica" => ListenerRole::Replica,
            "read-only" => ListenerRole::ReadOnly,
            "sync" => ListenerRole::Sync,
            "async" => ListenerRole::Async,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ListenerRole::Primary => "primary",
            ListenerRole::Replica => "replica",
            ListenerRole::ReadOnly => "read-only",
            ListenerRole::Sync => "sync",
            ListenerRole::Async => "async",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Weighted round robin.
    RoundRobin,
    /// Fewest active sessions per unit of weight.
    LeastConn,
    /// The first eligible server in name order.
    First,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub role: ListenerRole,
    pub balance: Balance,
    /// Replicas lagging more than this many bytes leave the rotation.
    pub max_lag: Option<u64>,
    /// Use the primary when no replica qualifies (`fallback: primary`).
    pub fallback_primary: bool,
    /// Concurrent server sessions through this listener; more clients wait in the queue.
    pub maxconn: Option<usize>,
    /// Clients allowed to wait for a slot; beyond that they are closed at once.
    pub maxqueue: usize,
    pub queue_timeout: Duration,
    /// How long a new connection waits for a server when none is routable.
    pub hold_timeout: Duration,
    /// Clients arrive through a load balancer that sends a PROXY protocol header (v1 or v2)
    /// naming their origin (HAProxy's `accept-proxy`).
    pub accept_proxy: bool,
    /// Pooling (`pool_mode` and the other pgbouncer keys); `None`: bytes are proxied as they
    /// are after the startup packet.
    pub pool: Option<PoolConfig>,
}

/// The top-level settings a listener takes when it does not set its own.
pub(super) struct ListenerDefaults {
    pub hold_timeout: Duration,
    /// `listener_maxconn`.
    pub maxconn: Option<usize>,
    pub maxqueue: usize,
    pub queue_timeout: Duration,
}

impl ListenerDefaults {
    /// Reads `listener_maxconn`, `maxqueue` and `queue_timeout` (`hold_timeout` is read
    /// earlier, with the proxy-wide settings).
    pub fn parse(
        root: &mut Section,
        ctx: &Ctx,
        hold_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        Ok(ListenerDefaults {
            hold_timeout,
            maxconn: count(root, ctx, "listener_maxconn", 1)?,
            maxqueue: count(root, ctx, "maxqueue", 0)?.unwrap_or(DEFAULT_MAXQUEUE),
            queue_timeout: root
                .duration(ctx, "queue_timeout")?
                .unwrap_or(DEFAULT_QUEUE_TIMEOUT),
        })
    }
}

/// `proxy.listeners`: at least one; names and addresses distinct.
pub(super) fn listeners(
    root: &mut Section,
    ctx: &Ctx,
    defaults: &ListenerDefaults,
) -> Result<Vec<ListenerConfig>, ConfigError> {
    let sections = root.sections(ctx, "listeners")?;
    if sections.is_empty() {
        return Err(root.invalid(
            ctx,
            "listeners",
            "missing (expected a list of listeners with name, bind and role)",
        ));
    }
    let mut listeners: Vec<ListenerConfig> = Vec::with_capacity(sections.len());
    for section in sections {
        let listener = listener(section, ctx, defaults, &listeners)?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// One entry of `proxy.listeners`; `earlier` are the entries before it.
fn listener(
    mut l: Section,
    ctx: &Ctx,
    defaults: &ListenerDefaults,
    earlier: &[ListenerConfig],
) -> Result<ListenerConfig, ConfigError> {
    let name = l.required_string(ctx, "name", "a listener name")?;
    if earlier.iter().any(|o| o.name == name) {
        return Err(l.invalid(ctx, "name", format!("duplicate listener name {name:?}")));
    }
    let bind = socket_addr(&mut l, ctx, "bind")?;
    if earlier.iter().any(|o| o.bind == bind) {
        return Err(l.invalid(
            ctx,
            "bind",
            format!("{bind} is already used by another listener"),
        ));
    }
    let role_text = l.required_string(ctx, "role", ROLE_EXPECTED)?;
    let role = ListenerRole::parse(&role_text).ok_or_else(|| {
        l.invalid(
            ctx,
            "role",
            format!("expected {ROLE_EXPECTED}, found {role_text:?}"),
        )
    })?;
    let balance = match l.string(ctx, "balance")?.as_deref() {
        None => DEFAULT_BALANCE,
        Some("roundrobin") => Balance::RoundRobin,
        Some("leastconn") => Balance::LeastConn,
        Some("first") => Balance::First,
        Some(other) => {
            return Err(l.invalid(
                ctx,
                "balance",
                format!("expected roundrobin, leastconn or first, found {other:?}"),
            ))
        }
    };
    let max_lag = l.size(ctx, "max_lag")?;
    if max_lag.is_some() && role == ListenerRole::Primary {
        return Err(l.invalid(
            ctx,
            "max_lag",
            "only applies to replica, read-only, sync and async listeners",
        ));
    }
    let fallback_primary = match l.string(ctx, "fallback")?.as_deref() {
        None | Some("none") => false,
        Some("primary") => true,
        Some(other) => {
            return Err(l.invalid(
                ctx,
                "fallback",
                format!("expected primary or none, found {other:?}"),
            ))
        }
    };
    let maxconn = count(&mut l, ctx, "maxconn", 1)?.or(defaults.maxconn);
    let maxqueue = count(&mut l, ctx, "maxqueue", 0)?.unwrap_or(defaults.maxqueue);
    let queue_timeout = l
        .duration(ctx, "queue_timeout")?
        .unwrap_or(defaults.queue_timeout);
    let hold_timeout = l
        .duration(ctx, "hold_timeout")?
        .unwrap_or(defaults.hold_timeout);
    let accept_proxy = l.get(ctx, "accept_proxy", true_or_false)?.unwrap_or(false);
    let pool = super::pool::pool(&mut l, ctx)?;
    l.finish_strict(ctx)?;
    Ok(ListenerConfig {
        name,
        bind,
        role,
        balance,
        max_lag,
        fallback_primary,
        maxconn,
        maxqueue,
        queue_timeout,
        hold_timeout,
        accept_proxy,
        pool,
    })
}
