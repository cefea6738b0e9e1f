//! `proxy.registration`: the `proxies/<name>` key agents read before promoting.

use super::defaults::{DEFAULT_REGISTRATION_TTL, MIN_REGISTRATION_TTL};
use super::values::true_or_false;
use pgherd_config::reader::{Ctx, Section};
use pgherd_config::ConfigError;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationConfig {
    pub enabled: bool,
    /// Lease of the `proxies/<name>` key; rewritten every third of it.
    pub ttl: Duration,
}

/// `proxy.registration`: on by default, `ttl` at least 2s.
pub(super) fn registration(
    root: &mut Section,
    ctx: &Ctx,
) -> Result<RegistrationConfig, ConfigError> {
    let mut r = root.section(ctx, "registration")?;
    let registration = RegistrationConfig {
        enabled: r.get(ctx, "enabled", true_or_false)?.unwrap_or(true),
        ttl: r.duration(ctx, "ttl")?.unwrap_or(DEFAULT_REGISTRATION_TTL),
    };
    if registration.ttl < MIN_REGISTRATION_TTL {
        return Err(r.invalid(
            ctx,
            "ttl",
            "must be at least 2s (etcd leases are whole seconds)",
        ));
    }
    r.finish_strict(ctx)?;
    Ok(registration)
}
