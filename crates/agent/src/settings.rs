//! Maps the YAML configuration and the DCS dynamic configuration onto what each layer needs:
//! engine settings, PostgreSQL options, the effective server parameters.

use anyhow::{Context, Result};
use pgherd_config::{Config, DynamicConfig};
use pgherd_ha::Settings;
use pgherd_postgres::{Credentials, PgOptions};
use std::path::PathBuf;
use std::time::Duration;

/// How long before its lease could expire a leader stops being writable. Covers one
/// immediate shutdown plus scheduling noise on a busy machine.
pub(crate) fn fencing_margin(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(1500), Duration::from_secs(5))
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

pub fn engine_settings(cfg: &Config, name: &str, dynamic: &DynamicConfig) -> Settings {
    let pg = &cfg.postgresql;
    Settings {
        name: name.to_string(),
        ttl: ms(dynamic.ttl),
        loop_wait: ms(dynamic.loop_wait),
        retry_timeout: ms(dynamic.retry_timeout),
        fencing_margin: ms(fencing_margin(dynamic.ttl)),
        maximum_lag_on_failover: dynamic.maximum_lag_on_failover,
        primary_start_timeout: ms(dynamic.primary_start_timeout),
        check_timeline: dynamic.check_timeline,
        synchronous_mode: dynamic.synchronous_mode,
        synchronous_mode_strict: dynamic.synchronous_mode_strict,
        failsafe_mode: dynamic.failsafe_mode,
        synchronous_node_count: dynamic.synchronous_node_count as usize,
        maximum_lag_on_syncnode: dynamic.maximum_lag_on_syncnode,
        use_pg_rewind: pg.use_pg_rewind.unwrap_or(dynamic.postgresql.use_pg_rewind),
        remove_data_directory_on_rewind_failure: pg
            .remove_data_directory_on_rewind_failure
            .unwrap_or(dynamic.postgresql.remove_data_directory_on_rewind_failure),
        remove_data_directory_on_diverged_timelines: pg
            .remove_data_directory_on_diverged_timelines
            .unwrap_or(
                dynamic
                    .postgresql
                    .remove_data_directory_on_diverged_timelines,
            ),
        nofailover: cfg.tags.nofailover,
        failover_priority: cfg.tags.failover_priority.unwrap_or(1),
        replicatefrom: cfg.tags.replicatefrom.clone(),
        can_bootstrap: cfg.bootstrap.is_some(),
    }
}

fn credentials(user: Option<&pgherd_config::PgUser>, default_name: &str) -> Credentials {
    let name = user
        .and_then(|u| u.username.clone())
        .unwrap_or_else(|| default_name.to_string());
    let password = user.and_then(|u| u.password.clone());
    let mut c = Credentials::new(name, password.as_deref());
    if let Some(u) = user {
        c.sslmode = u.sslmode.clone();
        c.sslkey = u.sslkey.clone();
        c.sslpassword = u.sslpassword.clone();
        c.sslcert = u.sslcert.clone();
        c.sslrootcert = u.sslrootcert.clone();
        c.sslcrl = u.sslcrl.clone();
        c.sslcrldir = u.sslcrldir.clone();
        c.gssencmode = u.gssencmode.clone();
        c.channel_binding = u.channel_binding.clone();
    }
    c
}

/// The unix socket directory: `unix_socket_directories` (first entry) when configured, else
/// the data directory's parent, which the agent owns.
pub fn socket_dir(cfg: &Config, data_dir: &std::path::Path) -> PathBuf {
    cfg.postgresql
        .parameters
        .get("unix_socket_directories")
        .and_then(|v| {
            v.split(',')
                .map(str::trim)
                .find(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| {
            data_dir
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
        })
}

pub fn pg_options(cfg: &Config) -> Result<PgOptions> {
    let pg = &cfg.postgresql;
    let data_dir = pg
        .data_dir
        .clone()
        .context("postgresql.data_dir is required")?;
    let (hosts, port) = cfg.postgres_listen()?;
    let bin_dir = pg
        .bin_dir
        .clone()
        .unwrap_or_else(pgherd_postgres::default_bin_dir);
    let mut o = PgOptions::new(bin_dir, data_dir.clone(), port);
    o.config_dir = pg.config_dir.clone();
    o.config_base_name = pg.config_base_name.clone();
    o.custom_conf = pg.custom_conf.clone();
    o.listen_hosts = hosts;
    o.socket_dir = socket_dir(cfg, &data_dir);
    o.use_unix_socket = true;
    let auth = &pg.authentication;
    o.superuser = credentials(auth.superuser.as_ref(), "postgres");
    o.replication = credentials(auth.replication.as_ref(), "replicator");
    o.rewind = auth
        .rewind
        .as_ref()
        .map(|u| credentials(Some(u), "rewind_user"));
    o.database = pg.database.clone();
    if let Some(p) = &pg.pgpass {
        o.pgpass = p.clone();
    }
    o.run_as = Some(pg.run_as.clone());
    o.pg_ctl_timeout = pg.pg_ctl_timeout;
    Ok(o)
}
