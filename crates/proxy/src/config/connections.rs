//! `proxy.timeouts` and `proxy.tcp_keepalive`: how long sockets may wait and how dead peers
//! are found.

use super::defaults::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE_COUNT, DEFAULT_KEEPALIVE_IDLE,
    DEFAULT_KEEPALIVE_INTERVAL, MIN_KEEPALIVE_TIME,
};
use super::values::count;
use pgherd_config::reader::{Ctx, Section};
use pgherd_config::ConfigError;
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    /// `None`: no limit.
    pub client_idle: Option<Duration>,
    pub server_idle: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
}

/// `proxy.timeouts`: `connect` must be positive; the idle limits take `0` for none.
pub(super) fn timeouts(root: &mut Section, ctx: &Ctx) -> Result<Timeouts, ConfigError> {
    let mut t = root.section(ctx, "timeouts")?;
    let timeouts = Timeouts {
        connect: t
            .duration(ctx, "connect")?
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        client_idle: t.limit(ctx, "client_idle")?,
        server_idle: t.limit(ctx, "server_idle")?,
    };
    if timeouts.connect.is_zero() {
        return Err(t.invalid(ctx, "connect", "must be greater than 0"));
    }
    t.finish_strict(ctx)?;
    Ok(timeouts)
}

/// `proxy.tcp_keepalive`: a section, or `false` for no keepalive.
pub(super) fn tcp_keepalive(
    root: &mut Section,
    ctx: &Ctx,
) -> Result<Option<Keepalive>, ConfigError> {
    if matches!(root.raw("tcp_keepalive"), Some(Value::Bool(false))) {
        return Ok(None);
    }
    let mut k = root.section(ctx, "tcp_keepalive")?;
    let keepalive = Keepalive {
        idle: k.duration(ctx, "idle")?.unwrap_or(DEFAULT_KEEPALIVE_IDLE),
        interval: k
            .duration(ctx, "interval")?
            .unwrap_or(DEFAULT_KEEPALIVE_INTERVAL),
        count: count(&mut k, ctx, "count", 1)?.unwrap_or(DEFAULT_KEEPALIVE_COUNT),
    };
    if keepalive.idle < MIN_KEEPALIVE_TIME || keepalive.interval < MIN_KEEPALIVE_TIME {
        return Err(k.invalid(ctx, "idle", "idle and interval must be at least 1s"));
    }
    k.finish_strict(ctx)?;
    Ok(Some(keepalive))
}
