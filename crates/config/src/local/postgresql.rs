//! `postgresql:` — the local PostgreSQL server.

use super::options::{parse_tool_options, ToolOption, BASEBACKUP_FORBIDDEN};
use crate::address::{HostPort, ListenAddress};
use crate::defaults::*;
use crate::reader::{Ctx, Section};
use crate::units::serialize_duration;
use crate::ConfigError;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `postgresql:`. Keys that are also dynamic (`parameters`, `pg_hba`, `use_pg_rewind`, ...)
/// override the DCS values when set here.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Postgresql {
    /// Where PostgreSQL listens (required for the agent); becomes `listen_addresses`/`port`.
    pub listen: Option<ListenAddress>,
    /// The address other members and clients use (published in `conn_url`).
    pub connect_address: Option<HostPort>,
    /// A connection pooler in front of this server (published for service discovery only).
    pub proxy_address: Option<HostPort>,
    /// The data directory (required for the agent).
    pub data_dir: Option<PathBuf>,
    /// Where `postgresql.conf` lives; defaults to `data_dir`.
    pub config_dir: Option<PathBuf>,
    /// Directory of the PostgreSQL binaries; default: `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// The pgpass file pgherd writes for its own connections.
    pub pgpass: Option<PathBuf>,
    /// Database in `conn_url` and for local connections.
    pub database: String,
    pub authentication: Authentication,
    /// Server parameters, as text. See [`crate::effective_parameters`] for how they combine with
    /// the DCS ones (postmaster-only parameters are ignored here).
    pub parameters: BTreeMap<String, String>,
    /// When set, pgherd writes `pg_hba.conf` with exactly these lines.
    pub pg_hba: Option<Vec<String>>,
    /// When set, pgherd writes `pg_ident.conf` with exactly these lines.
    pub pg_ident: Option<Vec<String>>,
    pub callbacks: Callbacks,
    /// Run after taking the leader lock and before promoting; a non-zero exit cancels.
    pub pre_promote: Option<String>,
    /// Replica creation methods in order (also the legacy `create_replica_method`);
    /// `None`: the DCS value, else `basebackup`.
    pub create_replica_methods: Option<Vec<String>>,
    /// Extra `pg_basebackup` options.
    pub basebackup: Vec<ToolOption>,
    /// Custom replica creation methods by name.
    pub replica_methods: BTreeMap<String, ReplicaMethod>,
    /// Extra recovery settings for replicas.
    pub recovery_conf: Option<BTreeMap<String, String>>,
    /// A file included into the generated `postgresql.conf` instead of `postgresql.base.conf`.
    pub custom_conf: Option<PathBuf>,
    /// Base name of the generated configuration file (`<name>.conf`).
    pub config_base_name: String,
    /// How long `pg_ctl start/stop` may take.
    #[serde(serialize_with = "serialize_duration")]
    pub pg_ctl_timeout: Duration,
    /// `None`: take the DCS value.
    pub use_pg_rewind: Option<bool>,
    /// `None`: take the DCS value.
    pub remove_data_directory_on_rewind_failure: Option<bool>,
    /// `None`: take the DCS value.
    pub remove_data_directory_on_diverged_timelines: Option<bool>,
    /// Connect to the local server over the Unix socket.
    pub use_unix_socket: bool,
    /// Replicas connect over the Unix socket when the source is local.
    pub use_unix_socket_repl: bool,
    /// Kerberos service name for replication connections.
    pub krbsrvname: Option<String>,
    /// pgherd extension: the OS user that runs PostgreSQL (initdb, pg_ctl, pg_basebackup, ...)
    /// when the agent itself runs as root; ignored otherwise. Default `postgres`.
    pub run_as: String,
}

/// `postgresql.authentication`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Authentication {
    /// Used for local connections (and pg_rewind when `rewind` is not set).
    pub superuser: Option<PgUser>,
    /// Used by replicas to stream and to clone.
    pub replication: Option<PgUser>,
    /// Used for pg_rewind (PostgreSQL 11+).
    pub rewind: Option<PgUser>,
}

/// Credentials and libpq TLS settings for one role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PgUser {
    pub username: Option<String>,
    pub password: Option<String>,
    pub sslmode: Option<String>,
    pub sslkey: Option<String>,
    pub sslpassword: Option<String>,
    pub sslcert: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcrl: Option<String>,
    pub sslcrldir: Option<String>,
    pub gssencmode: Option<String>,
    pub channel_binding: Option<String>,
}

/// Commands run as `<cmd> <action> <role> <scope>` on events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Callbacks {
    pub on_start: Option<String>,
    pub on_stop: Option<String>,
    pub on_restart: Option<String>,
    pub on_reload: Option<String>,
    pub on_role_change: Option<String>,
}

/// A custom replica creation method (`postgresql.<name>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplicaMethod {
    /// Command to run; default: the method name.
    pub command: Option<String>,
    /// Do not pass `--scope`, `--role`, `--datadir`, `--connstring`.
    pub no_params: bool,
    /// Works without a running leader (`no_leader`, legacy `no_master`).
    pub no_leader: bool,
    /// Do not empty the data directory first.
    pub keep_data: bool,
    /// Other keys, passed as `--key=value`.
    pub params: BTreeMap<String, String>,
}

impl Postgresql {
    /// Parses the section; also returns the legacy `postgresql.name` (member name fallback).
    pub(crate) fn parse(
        mut s: Section,
        ctx: &mut Ctx,
    ) -> Result<(Self, Option<String>), ConfigError> {
        let legacy_name = s.string(ctx, "name")?;
        let basebackup_path = s.path("basebackup");
        let use_slots_path = s.path("use_slots");
        if s.raw("use_slots").is_some() {
            ctx.warn(
                &use_slots_path,
                "only honoured in the DCS config (bootstrap.dcs.postgresql.use_slots); ignored here",
            );
        }
        let mut pg = Postgresql {
            listen: s.listen(ctx, "listen")?,
            connect_address: s.host_port(ctx, "connect_address")?,
            proxy_address: s.host_port(ctx, "proxy_address")?,
            data_dir: s.path_buf(ctx, "data_dir")?,
            config_dir: s.path_buf(ctx, "config_dir")?,
            bin_dir: s.path_buf(ctx, "bin_dir")?,
            pgpass: s.path_buf(ctx, "pgpass")?,
            database: s
                .string(ctx, "database")?
                .unwrap_or_else(|| DEFAULT_DATABASE.to_string()),
            authentication: Authentication::default(),
            parameters: s.string_map(ctx, "parameters")?.unwrap_or_default(),
            pg_hba: s.strings(ctx, "pg_hba")?,
            pg_ident: s.strings(ctx, "pg_ident")?,
            callbacks: Callbacks::default(),
            pre_promote: s.string(ctx, "pre_promote")?,
            create_replica_methods: s.strings(ctx, "create_replica_methods")?,
            basebackup: match s.raw("basebackup") {
                None => Vec::new(),
                Some(v) => parse_tool_options(ctx, &basebackup_path, v, BASEBACKUP_FORBIDDEN)?,
            },
            replica_methods: BTreeMap::new(),
            recovery_conf: s.string_map(ctx, "recovery_conf")?,
            custom_conf: s.path_buf(ctx, "custom_conf")?,
            config_base_name: s
                .string(ctx, "config_base_name")?
                .unwrap_or_else(|| DEFAULT_CONFIG_BASE_NAME.to_string()),
            pg_ctl_timeout: s
                .duration(ctx, "pg_ctl_timeout")?
                .unwrap_or(DEFAULT_PG_CTL_TIMEOUT),
            use_pg_rewind: s.bool(ctx, "use_pg_rewind")?,
            remove_data_directory_on_rewind_failure: s
                .bool(ctx, "remove_data_directory_on_rewind_failure")?,
            remove_data_directory_on_diverged_timelines: s
                .bool(ctx, "remove_data_directory_on_diverged_timelines")?,
            use_unix_socket: s.bool(ctx, "use_unix_socket")?.unwrap_or(false),
            use_unix_socket_repl: s.bool(ctx, "use_unix_socket_repl")?.unwrap_or(false),
            krbsrvname: s.string(ctx, "krbsrvname")?,
            run_as: s
                .string(ctx, "run_as")?
                .unwrap_or_else(|| DEFAULT_RUN_AS.to_string()),
        };
        let legacy_methods = s.strings(ctx, "create_replica_method")?;
        pg.create_replica_methods = pg.create_replica_methods.or(legacy_methods);
        let callbacks = s.section(ctx, "callbacks")?;
        pg.callbacks = Callbacks::parse(callbacks, ctx)?;
        pg.parse_authentication(ctx, &mut s)?;
        if let Some(addr) = pg.connect_address.as_ref().filter(|a| a.is_wildcard()) {
            ctx.warn(
                &s.path("connect_address"),
                &format!("{addr} is not an address other members can connect to"),
            );
        }

        let named: Vec<String> = pg.create_replica_methods.clone().unwrap_or_default();
        for (name, value) in s.take_rest() {
            let path = s.path(name);
            if named.contains(name) || value.get("command").is_some() {
                let section = Section::new(ctx, &path, Some(value))?;
                pg.replica_methods
                    .insert(name.clone(), ReplicaMethod::parse(section, ctx)?);
            } else {
                ctx.warn(&path, "unknown key (ignored)");
            }
        }
        Ok((pg, legacy_name))
    }

    /// `authentication`, or the legacy top-level `superuser`/`replication`/`pg_rewind` forms.
    fn parse_authentication(&mut self, ctx: &mut Ctx, s: &mut Section) -> Result<(), ConfigError> {
        let legacy_superuser = PgUser::parse(s.section(ctx, "superuser")?, ctx)?;
        let legacy_replication = PgUser::parse(s.section(ctx, "replication")?, ctx)?;
        let legacy_rewind = PgUser::parse(s.section(ctx, "pg_rewind")?, ctx)?;
        let mut auth = s.section(ctx, "authentication")?;
        if auth.is_present() {
            for (key, present) in [
                ("superuser", &legacy_superuser),
                ("replication", &legacy_replication),
            ] {
                if present.is_some() {
                    ctx.warn(
                        &s.path(key),
                        "ignored because postgresql.authentication is set",
                    );
                }
            }
            self.authentication = Authentication {
                superuser: PgUser::parse(auth.section(ctx, "superuser")?, ctx)?,
                replication: PgUser::parse(auth.section(ctx, "replication")?, ctx)?,
                rewind: PgUser::parse(auth.section(ctx, "rewind")?, ctx)?,
            };
            auth.finish(ctx);
        } else {
            self.authentication.superuser = legacy_superuser;
            self.authentication.replication = legacy_replication;
            if legacy_rewind.is_some() {
                self.use_pg_rewind = self.use_pg_rewind.or(Some(true));
            }
        }
        // As Patroni: the old `pg_rewind` credentials stand in for a missing superuser.
        if self.authentication.superuser.is_none() {
            self.authentication.superuser = legacy_rewind;
        }
        Ok(())
    }
}

impl PgUser {
    fn parse(mut s: Section, ctx: &mut Ctx) -> Result<Option<Self>, ConfigError> {
        if !s.is_present() {
            return Ok(None);
        }
        let user = PgUser {
            username: s.string(ctx, "username")?,
            password: s.string(ctx, "password")?,
            sslmode: s.string(ctx, "sslmode")?,
            sslkey: s.string(ctx, "sslkey")?,
            sslpassword: s.string(ctx, "sslpassword")?,
            sslcert: s.string(ctx, "sslcert")?,
            sslrootcert: s.string(ctx, "sslrootcert")?,
            sslcrl: s.string(ctx, "sslcrl")?,
            sslcrldir: s.string(ctx, "sslcrldir")?,
            gssencmode: s.string(ctx, "gssencmode")?,
            channel_binding: s.string(ctx, "channel_binding")?,
        };
        s.finish(ctx);
        Ok(Some(user))
    }
}

impl Callbacks {
    fn parse(mut s: Section, ctx: &mut Ctx) -> Result<Self, ConfigError> {
        let callbacks = Callbacks {
            on_start: s.string(ctx, "on_start")?,
            on_stop: s.string(ctx, "on_stop")?,
            on_restart: s.string(ctx, "on_restart")?,
            on_reload: s.string(ctx, "on_reload")?,
            on_role_change: s.string(ctx, "on_role_change")?,
        };
        s.finish(ctx);
        Ok(callbacks)
    }
}

impl ReplicaMethod {
    fn parse(mut s: Section, ctx: &mut Ctx) -> Result<Self, ConfigError> {
        let no_leader = s.bool(ctx, "no_leader")?;
        let no_master = s.bool(ctx, "no_master")?;
        let mut method = ReplicaMethod {
            command: s.string(ctx, "command")?,
            no_params: s.bool(ctx, "no_params")?.unwrap_or(false),
            no_leader: no_leader.or(no_master).unwrap_or(false),
            keep_data: s.bool(ctx, "keep_data")?.unwrap_or(false),
            params: BTreeMap::new(),
        };
        for (key, value) in s.take_rest() {
            let text = match value {
                Value::String(t) => t.clone(),
                Value::Number(_) | Value::Bool(_) => value.to_string(),
                Value::Null => continue,
                other => return Err(ctx.expected(&s.path(key), "a single value", other)),
            };
            method.params.insert(key.clone(), text);
        }
        Ok(method)
    }
}
