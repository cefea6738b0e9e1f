//! `bootstrap:` — how the first member creates the cluster.

use super::options::{parse_tool_options, ToolOption, INITDB_FORBIDDEN};
use crate::defaults::DEFAULT_BOOTSTRAP_METHOD;
use crate::dynamic::{parse_dynamic, Strictness};
use crate::reader::{Ctx, Section};
use crate::ConfigError;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `bootstrap:`. Only a member with this section may initialize a new cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bootstrap {
    /// `bootstrap.dcs` as written (an object, `{}` when absent): the initial DCS `config`.
    /// It has been validated as a [`crate::DynamicConfig`]; to store it, prefer
    /// `DynamicConfig::validate(&dcs, "bootstrap.dcs")?.to_dcs_json()`, which writes durations
    /// as seconds and makes pgherd's timing defaults explicit for Patroni members.
    pub dcs: Value,
    /// `initdb` or the name of a custom method in [`Bootstrap::methods`].
    pub method: String,
    pub initdb: Vec<ToolOption>,
    /// Lines appended to `pg_hba.conf` after initdb.
    pub pg_hba: Vec<String>,
    /// Roles to create after bootstrap.
    pub users: BTreeMap<String, BootstrapUser>,
    /// Command run once after bootstrap with a connection URL (`post_bootstrap` or `post_init`).
    pub post_bootstrap: Option<String>,
    /// Custom bootstrap methods by name.
    pub methods: BTreeMap<String, CustomBootstrap>,
}

/// One of `bootstrap.users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootstrapUser {
    pub password: Option<String>,
    /// Role options, e.g. `createrole`, `createdb`.
    pub options: Vec<String>,
}

/// A custom bootstrap method, e.g. restoring from a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomBootstrap {
    /// Run with `--scope=` and `--datadir=` unless `no_params`.
    pub command: String,
    pub keep_existing_recovery_conf: bool,
    pub no_params: bool,
    /// Recovery settings to write after the command.
    pub recovery_conf: Option<BTreeMap<String, String>>,
}

impl Bootstrap {
    pub(crate) fn parse(mut s: Section, ctx: &mut Ctx, citus: bool) -> Result<Self, ConfigError> {
        let dcs_path = s.path("dcs");
        let mut dcs = match s.raw("dcs") {
            None => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(other) => return Err(ctx.expected(&dcs_path, "a map of settings", other)),
        };
        // As Patroni: a new Citus cluster gets synchronous replication unless told otherwise.
        if citus {
            dcs.entry("synchronous_mode").or_insert(Value::Bool(true));
        }
        let dcs = Value::Object(dcs);
        parse_dynamic(ctx, &dcs, &dcs_path, Strictness::Strict)?;

        let initdb_path = s.path("initdb");
        let initdb = match s.raw("initdb") {
            None => Vec::new(),
            Some(v) => parse_tool_options(ctx, &initdb_path, v, INITDB_FORBIDDEN)?,
        };
        let users = parse_users(ctx, s.section(ctx, "users")?)?;
        let post_bootstrap = s.string(ctx, "post_bootstrap")?;
        let post_init = s.string(ctx, "post_init")?;
        let method = s
            .string(ctx, "method")?
            .unwrap_or_else(|| DEFAULT_BOOTSTRAP_METHOD.to_string());
        let pg_hba = s.strings(ctx, "pg_hba")?.unwrap_or_default();

        let mut methods = BTreeMap::new();
        // The chosen method must be complete: Patroni would silently run initdb instead.
        if method != DEFAULT_BOOTSTRAP_METHOD {
            let section = s.section(ctx, &method)?;
            methods.insert(method.clone(), CustomBootstrap::parse(section, ctx)?);
        }
        for (name, value) in s.take_rest() {
            let path = s.path(name);
            if value.get("command").is_some() {
                methods.insert(
                    name.clone(),
                    CustomBootstrap::parse(Section::new(ctx, &path, Some(value))?, ctx)?,
                );
            } else {
                ctx.warn(&path, "unknown key (ignored)");
            }
        }
        Ok(Bootstrap {
            dcs,
            method,
            initdb,
            pg_hba,
            users,
            post_bootstrap: post_bootstrap.or(post_init),
            methods,
        })
    }
}

fn parse_users(
    ctx: &mut Ctx,
    mut s: Section,
) -> Result<BTreeMap<String, BootstrapUser>, ConfigError> {
    let mut users = BTreeMap::new();
    for (name, value) in s.take_rest() {
        let mut u = Section::new(ctx, &s.path(name), Some(value))?;
        let user = BootstrapUser {
            password: u.string(ctx, "password")?,
            options: u.strings(ctx, "options")?.unwrap_or_default(),
        };
        u.finish(ctx);
        users.insert(name.clone(), user);
    }
    Ok(users)
}

impl CustomBootstrap {
    fn parse(mut s: Section, ctx: &mut Ctx) -> Result<Self, ConfigError> {
        let command_path = s.path("command");
        let method = CustomBootstrap {
            command: s.string(ctx, "command")?.ok_or_else(|| {
                ctx.invalid(&command_path, "missing (expected the command to run)")
            })?,
            keep_existing_recovery_conf: s
                .bool(ctx, "keep_existing_recovery_conf")?
                .unwrap_or(false),
            no_params: s.bool(ctx, "no_params")?.unwrap_or(false),
            recovery_conf: s.string_map(ctx, "recovery_conf")?,
        };
        s.finish(ctx);
        Ok(method)
    }
}
