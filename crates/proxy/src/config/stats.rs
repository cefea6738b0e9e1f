//! `proxy.stats`: the stats page's address, refresh and admin credentials.

use super::defaults::DEFAULT_STATS_REFRESH;
use super::listeners::ListenerConfig;
use super::values::socket_addr;
use pgherd_config::reader::{Ctx, Section};
use pgherd_config::ConfigError;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone, PartialEq)]
pub struct AdminAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminAuth({}, <redacted>)", self.username)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatsConfig {
    pub bind: SocketAddr,
    pub admin: Option<AdminAuth>,
    /// How often the HTML page reloads itself.
    pub refresh: Duration,
}

/// `proxy.stats` (absent: no stats page); its address must differ from every listener's.
pub(super) fn stats(
    root: &mut Section,
    ctx: &Ctx,
    listeners: &[ListenerConfig],
) -> Result<Option<StatsConfig>, ConfigError> {
    let mut s = root.section(ctx, "stats")?;
    if !s.is_present() {
        return Ok(None);
    }
    let bind = socket_addr(&mut s, ctx, "bind")?;
    if listeners.iter().any(|l| l.bind == bind) {
        return Err(s.invalid(ctx, "bind", format!("{bind} is already used by a listener")));
    }
    let admin = admin(&mut s, ctx)?;
    let refresh = s.duration(ctx, "refresh")?.unwrap_or(DEFAULT_STATS_REFRESH);
    s.finish_strict(ctx)?;
    Ok(Some(StatsConfig {
        bind,
        admin,
        refresh,
    }))
}

/// `proxy.stats.admin` (absent: no admin actions): both credentials required.
fn admin(stats: &mut Section, ctx: &Ctx) -> Result<Option<AdminAuth>, ConfigError> {
    let mut a = stats.section(ctx, "admin")?;
    if !a.is_present() {
        return Ok(None);
    }
    let username = a.required_string(ctx, "username", "the admin user name")?;
    let password = a.required_string(ctx, "password", "the admin password")?;
    a.finish_strict(ctx)?;
    Ok(Some(AdminAuth { username, password }))
}
