//! `proxy.health_check`: how often and how patiently each member's REST API is asked.

use super::defaults::{
    DEFAULT_CHECK_FAST_INTERVAL, DEFAULT_CHECK_INTERVAL, DEFAULT_CHECK_TIMEOUT, DEFAULT_FALL,
    DEFAULT_RISE, MIN_CHECK_TIME,
};
use super::values::count;
use pgherd_config::reader::{Ctx, Section};
use pgherd_config::ConfigError;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub interval: Duration,
    /// Interval used while a listener holds clients and the DCS names a candidate server.
    pub fast_interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// `proxy.health_check`: intervals and timeout of at least 10ms, `rise`/`fall` at least 1.
pub(super) fn health_check(root: &mut Section, ctx: &Ctx) -> Result<HealthConfig, ConfigError> {
    let mut h = root.section(ctx, "health_check")?;
    let health = HealthConfig {
        interval: h
            .duration(ctx, "interval")?
            .unwrap_or(DEFAULT_CHECK_INTERVAL),
        fast_interval: h
            .duration(ctx, "fast_interval")?
            .unwrap_or(DEFAULT_CHECK_FAST_INTERVAL),
        timeout: h.duration(ctx, "timeout")?.unwrap_or(DEFAULT_CHECK_TIMEOUT),
        rise: count(&mut h, ctx, "rise", 1)?.unwrap_or(DEFAULT_RISE),
        fall: count(&mut h, ctx, "fall", 1)?.unwrap_or(DEFAULT_FALL),
    };
    for (key, time) in [
        ("interval", health.interval),
        ("fast_interval", health.fast_interval),
        ("timeout", health.timeout),
    ] {
        if time < MIN_CHECK_TIME {
            return Err(h.invalid(ctx, key, "must be at least 10ms"));
        }
    }
    h.finish_strict(ctx)?;
    Ok(health)
}
