//! Reading the dynamic configuration strictly or leniently.

use super::{DynamicConfig, DynamicPostgresql};
use crate::reader::{scalar_text, to_bool, to_i64, to_u32, Ctx};
use crate::tree::{describe, join_path};
use crate::units::{duration_from_value, duration_to_json, size_from_value};
use crate::ConfigError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strictness {
    /// The first bad value is an error.
    Strict,
    /// A bad value is a warning and the default is used.
    Lenient,
}

/// Reads one map of the dynamic config, tracking which keys were used.
struct Reader<'c, 'o, 'v> {
    ctx: &'c mut Ctx<'o>,
    prefix: String,
    map: &'v Map<String, Value>,
    strictness: Strictness,
    used: Vec<&'static str>,
}

impl<'v> Reader<'_, '_, 'v> {
    fn raw(&mut self, key: &'static str) -> Option<&'v Value> {
        self.used.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn bad(&mut self, key: &str, expected: &str, found: &Value) -> Result<(), ConfigError> {
        let path = join_path(&self.prefix, key);
        match self.strictness {
            Strictness::Strict => Err(self.ctx.expected(&path, expected, found)),
            Strictness::Lenient => {
                let message = format!(
                    "expected {expected}, found {} (using the default)",
                    describe(found)
                );
                self.ctx.warn(&path, &message);
                Ok(())
            }
        }
    }

    /// The converted value of the first present key among `keys`, or `default`.
    fn field<T>(
        &mut self,
        keys: &[&'static str],
        default: T,
        convert: impl Fn(&Value) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let mut found = None;
        for key in keys {
            if let Some(value) = self.raw(key) {
                found = found.or(Some((*key, value)));
            }
        }
        let Some((key, value)) = found else {
            return Ok(default);
        };
        match convert(value) {
            Ok(v) => Ok(v),
            Err(expected) => self.bad(key, &expected, value).map(|()| default),
        }
    }

    fn bool(&mut self, key: &'static str, default: bool) -> Result<bool, ConfigError> {
        self.field(&[key], default, to_bool)
    }

    fn duration(
        &mut self,
        keys: &[&'static str],
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        self.field(keys, default, duration_from_value)
    }

    /// Keys nobody read.
    fn rest(&self) -> Vec<(&'v String, &'v Value)> {
        let map: &'v Map<String, Value> = self.map;
        map.iter()
            .filter(|(k, _)| !self.used.contains(&k.as_str()))
            .collect()
    }
}

/// Keys only a member's own file may set; Patroni ignores them in the DCS.
const LOCAL_ONLY_POSTGRESQL_KEYS: [&str; 7] = [
    "connect_address",
    "proxy_address",
    "listen",
    "config_dir",
    "data_dir",
    "pgpass",
    "authentication",
];

pub(crate) fn parse_dynamic(
    ctx: &mut Ctx,
    value: &Value,
    prefix: &str,
    strictness: Strictness,
) -> Result<DynamicConfig, ConfigError> {
    let empty = Map::new();
    let map = match value {
        Value::Object(map) => map,
        Value::Null => &empty,
        other => {
            let expected = "a map of settings";
            return match strictness {
                Strictness::Strict => Err(ctx.expected(prefix, expected, other)),
                Strictness::Lenient => {
                    let message = format!(
                        "expected {expected}, found {} (using defaults)",
                        describe(other)
                    );
                    ctx.warn(prefix, &message);
                    Ok(DynamicConfig::default())
                }
            };
        }
    };
    let d = DynamicConfig::default();
    let mut r = Reader {
        ctx,
        prefix: prefix.to_string(),
        map,
        strictness,
        used: Vec::new(),
    };
    let mut config = DynamicConfig {
        ttl: r.duration(&["ttl"], d.ttl)?,
        loop_wait: r.duration(&["loop_wait"], d.loop_wait)?,
        retry_timeout: r.duration(&["retry_timeout"], d.retry_timeout)?,
        maximum_lag_on_failover: r.field(
            &["maximum_lag_on_failover"],
            d.maximum_lag_on_failover,
            size_from_value,
        )?,
        maximum_lag_on_syncnode: r.field(
            &["maximum_lag_on_syncnode"],
            d.maximum_lag_on_syncnode,
            |v| {
                to_i64(v)
                    .ok()
                    .or_else(|| size_from_value(v).ok().and_then(|s| i64::try_from(s).ok()))
                    .ok_or_else(|| "a size in bytes, or -1".to_string())
            },
        )?,
        check_timeline: r.bool("check_timeline", d.check_timeline)?,
        primary_start_timeout: r.duration(
            &["primary_start_timeout", "master_start_timeout"],
            d.primary_start_timeout,
        )?,
        primary_stop_timeout: r.duration(
            &["primary_stop_timeout", "master_stop_timeout"],
            d.primary_stop_timeout,
        )?,
        synchronous_mode: r.bool("synchronous_mode", d.synchronous_mode)?,
        synchronous_mode_strict: r.bool("synchronous_mode_strict", d.synchronous_mode_strict)?,
        synchronous_node_count: r.field(
            &["synchronous_node_count"],
            d.synchronous_node_count,
            |v| {
                to_u32(v)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| "an integer >= 1".to_string())
            },
        )?,
        failsafe_mode: r.bool("failsafe_mode", d.failsafe_mode)?,
        pause: r.bool("pause", d.pause)?,
        postgresql: DynamicPostgresql::default(),
        slots: r.field(
            &["slots", "permanent_replication_slots", "permanent_slots"],
            None,
            |v| Ok(Some(v.clone())),
        )?,
        ignore_slots: r.field(&["ignore_slots"], None, |v| Ok(Some(v.clone())))?,
        max_timelines_history: r.field(
            &["max_timelines_history"],
            d.max_timelines_history,
            to_u32,
        )?,
        standby_cluster: r.field(&["standby_cluster"], None, |v| match v {
            Value::Object(m) => Ok(Some(m.clone())),
            _ => Err("a map of settings".to_string()),
        })?,
        proxy_fencing_timeout: r.duration(&["proxy_fencing_timeout"], d.proxy_fencing_timeout)?,
        extra: Map::new(),
    };
    if let Some(pg) = r.raw("postgresql") {
        let path = join_path(prefix, "postgresql");
        match pg {
            Value::Object(pg) => {
                config.postgresql = parse_postgresql(r.ctx, pg, &path, strictness)?
            }
            other => r.bad("postgresql", "a map of settings", other)?,
        }
    }
    let rest = r.rest();
    for (key, value) in rest {
        r.ctx.warn(
            &join_path(prefix, key),
            "unknown key (kept, not used by pgherd)",
        );
        config.extra.insert(key.clone(), value.clone());
    }
    timing_warnings(r.ctx, &config, prefix);
    Ok(config)
}

fn parse_postgresql(
    ctx: &mut Ctx,
    map: &Map<String, Value>,
    prefix: &str,
    strictness: Strictness,
) -> Result<DynamicPostgresql, ConfigError> {
    let d = DynamicPostgresql::default();
    let mut r = Reader {
        ctx,
        prefix: prefix.to_string(),
        map,
        strictness,
        used: Vec::new(),
    };
    let mut pg = DynamicPostgresql {
        use_pg_rewind: r.bool("use_pg_rewind", d.use_pg_rewind)?,
        use_slots: r.bool("use_slots", d.use_slots)?,
        parameters: BTreeMap::new(),
        remove_data_directory_on_rewind_failure: r.bool(
            "remove_data_directory_on_rewind_failure",
            d.remove_data_directory_on_rewind_failure,
        )?,
        remove_data_directory_on_diverged_timelines: r.bool(
            "remove_data_directory_on_diverged_timelines",
            d.remove_data_directory_on_diverged_timelines,
        )?,
        extra: Map::new(),
    };
    match r.raw("parameters") {
        None => {}
        Some(Value::Object(params)) => {
            for (name, value) in params {
                match scalar_text(value) {
                    Ok(Some(text)) => {
                        pg.parameters.insert(name.clone(), text);
                    }
                    Ok(None) => {}
                    Err(expected) => r.bad(&format!("parameters.{name}"), &expected, value)?,
                }
            }
        }
        Some(other) => r.bad("parameters", "a map of name: value", other)?,
    }
    let rest = r.rest();
    for (key, value) in rest {
        if LOCAL_ONLY_POSTGRESQL_KEYS.contains(&key.as_str()) {
            r.ctx.warn(
                &join_path(prefix, key),
                "only a member's own file may set this; ignored here",
            );
        } else {
            pg.extra.insert(key.clone(), value.clone());
        }
    }
    Ok(pg)
}

/// Settings that make the leader lose its lock in normal operation.
fn timing_warnings(ctx: &mut Ctx, c: &DynamicConfig, prefix: &str) {
    let secs = |d: Duration| duration_to_json(d).to_string();
    if c.ttl < Duration::from_secs(2) {
        let message = format!(
            "{}s is too short: the leader key may expire between two renewals",
            secs(c.ttl)
        );
        ctx.warn(&join_path(prefix, "ttl"), &message);
    }
    if c.loop_wait + 2 * c.retry_timeout > c.ttl {
        let message = format!(
            "loop_wait ({}s) + 2 * retry_timeout ({}s) exceeds ttl ({}s): a leader that has to \
             retry the DCS may lose its lock",
            secs(c.loop_wait),
            secs(c.retry_timeout),
            secs(c.ttl)
        );
        ctx.warn(prefix, &message);
    }
}
