//! The dynamic configuration: the DCS `config` key, shared by all members (seeded from
//! `bootstrap.dcs`, changed with `edit-config` or `PATCH /config`).

mod parse;
#[cfg(test)]
mod tests;

pub(crate) use parse::{parse_dynamic, Strictness};

use crate::defaults::*;
use crate::reader::Ctx;
use crate::tree::Origins;
use crate::units::{duration_to_json, serialize_duration};
use crate::ConfigError;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The DCS `config` key, typed. Absent keys take the defaults of [`crate::defaults`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DynamicConfig {
    /// Leader key TTL.
    #[serde(serialize_with = "serialize_duration")]
    pub ttl: Duration,
    /// HA loop period.
    #[serde(serialize_with = "serialize_duration")]
    pub loop_wait: Duration,
    /// Budget for retrying DCS and PostgreSQL operations.
    #[serde(serialize_with = "serialize_duration")]
    pub retry_timeout: Duration,
    /// Bytes a replica may lag and still be promoted.
    pub maximum_lag_on_failover: u64,
    /// Bytes a synchronous standby may lag before being replaced; -1 = no limit.
    pub maximum_lag_on_syncnode: i64,
    /// Refuse to promote a member on an older timeline.
    pub check_timeline: bool,
    /// How long a crashed primary may take to recover before failing over
    /// (`master_start_timeout` is accepted when this is absent).
    #[serde(serialize_with = "serialize_duration")]
    pub primary_start_timeout: Duration,
    /// How long a primary may take to stop in synchronous mode; 0 = wait (alias
    /// `master_stop_timeout`).
    #[serde(serialize_with = "serialize_duration")]
    pub primary_stop_timeout: Duration,
    pub synchronous_mode: bool,
    /// Stop writes rather than run without a synchronous standby.
    pub synchronous_mode_strict: bool,
    pub synchronous_node_count: u32,
    /// Keep the primary running without the DCS while every member answers.
    pub failsafe_mode: bool,
    /// Maintenance mode: no automatic failover, start or stop.
    pub pause: bool,
    pub postgresql: DynamicPostgresql,
    /// Permanent replication slots (also read from `permanent_replication_slots` and
    /// `permanent_slots`), raw.
    pub slots: Option<Value>,
    /// Slots the leader must not drop, raw.
    pub ignore_slots: Option<Value>,
    /// Timeline history entries kept in the `history` key; 0 = all.
    pub max_timelines_history: u32,
    /// Run as a standby cluster replicating from elsewhere, raw (`host`, `port`,
    /// `primary_slot_name`, `restore_command`, ...).
    pub standby_cluster: Option<Map<String, Value>>,
    /// pgherd: before promoting, how long to wait for every live proxy to stop routing writes
    /// to the former leader (0 = do not wait).
    #[serde(serialize_with = "serialize_duration")]
    pub proxy_fencing_timeout: Duration,
    /// Keys pgherd does not use, kept so that writing the config back loses nothing.
    pub extra: Map<String, Value>,
}

/// `postgresql` in the DCS `config`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DynamicPostgresql {
    pub use_pg_rewind: bool,
    /// Replication slots for members (DCS only: a local value is ignored).
    pub use_slots: bool,
    /// Server parameters as text, as written in the DCS.
    pub parameters: BTreeMap<String, String>,
    pub remove_data_directory_on_rewind_failure: bool,
    pub remove_data_directory_on_diverged_timelines: bool,
    /// Other keys (`pg_hba`, `pg_ident`, `recovery_conf`, ...), which a local value overrides.
    pub extra: Map<String, Value>,
}

impl Default for DynamicPostgresql {
    fn default() -> Self {
        DynamicPostgresql {
            use_pg_rewind: false,
            use_slots: DEFAULT_USE_SLOTS,
            parameters: BTreeMap::new(),
            remove_data_directory_on_rewind_failure: false,
            remove_data_directory_on_diverged_timelines: false,
            extra: Map::new(),
        }
    }
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            ttl: DEFAULT_TTL,
            loop_wait: DEFAULT_LOOP_WAIT,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
            maximum_lag_on_failover: DEFAULT_MAXIMUM_LAG_ON_FAILOVER,
            maximum_lag_on_syncnode: DEFAULT_MAXIMUM_LAG_ON_SYNCNODE,
            check_timeline: false,
            primary_start_timeout: DEFAULT_PRIMARY_START_TIMEOUT,
            primary_stop_timeout: DEFAULT_PRIMARY_STOP_TIMEOUT,
            synchronous_mode: false,
            synchronous_mode_strict: false,
            synchronous_node_count: DEFAULT_SYNCHRONOUS_NODE_COUNT,
            failsafe_mode: false,
            pause: false,
            postgresql: DynamicPostgresql::default(),
            slots: None,
            ignore_slots: None,
            max_timelines_history: DEFAULT_MAX_TIMELINES_HISTORY,
            standby_cluster: None,
            proxy_fencing_timeout: DEFAULT_PROXY_FENCING_TIMEOUT,
            extra: Map::new(),
        }
    }
}

impl DynamicConfig {
    /// Reads the DCS `config` leniently, as Patroni does: a bad value falls back to its default
    /// with a warning; never fails.
    pub fn from_value(value: &Value) -> (DynamicConfig, Vec<String>) {
        let origins = Origins::new("");
        let mut ctx = Ctx::new(&origins);
        let config = parse_dynamic(&mut ctx, value, "", Strictness::Lenient).unwrap_or_default();
        (config, ctx.warnings)
    }

    /// Reads strictly (for `bootstrap.dcs` and configuration edits): the first bad value is an
    /// error naming `path_prefix.key`.
    pub fn validate(value: &Value, path_prefix: &str) -> Result<DynamicConfig, ConfigError> {
        let origins = Origins::new("");
        parse_dynamic(
            &mut Ctx::new(&origins),
            value,
            path_prefix,
            Strictness::Strict,
        )
    }

    /// The value to store in the DCS: durations as seconds (integers when whole, since
    /// Patroni's readers apply `int()`), the timing keys always (so Patroni members use
    /// pgherd's timing rather than their own defaults), other keys when not at their default,
    /// and unused keys as they were.
    pub fn to_dcs_json(&self) -> Value {
        let d = DynamicConfig::default();
        let mut out = self.extra.clone();
        let mut put = |key: &str, value: Value, is_default: bool| {
            if !is_default {
                out.insert(key.to_string(), value);
            }
        };
        put("ttl", duration_to_json(self.ttl), false);
        put("loop_wait", duration_to_json(self.loop_wait), false);
        put("retry_timeout", duration_to_json(self.retry_timeout), false);
        let lag = self.maximum_lag_on_failover;
        put(
            "maximum_lag_on_failover",
            lag.into(),
            lag == d.maximum_lag_on_failover,
        );
        let lag = self.maximum_lag_on_syncnode;
        put(
            "maximum_lag_on_syncnode",
            lag.into(),
            lag == d.maximum_lag_on_syncnode,
        );
        put(
            "check_timeline",
            self.check_timeline.into(),
            !self.check_timeline,
        );
        let t = self.primary_start_timeout;
        put(
            "primary_start_timeout",
            duration_to_json(t),
            t == d.primary_start_timeout,
        );
        let t = self.primary_stop_timeout;
        put(
            "primary_stop_timeout",
            duration_to_json(t),
            t == d.primary_stop_timeout,
        );
        put(
            "synchronous_mode",
            self.synchronous_mode.into(),
            !self.synchronous_mode,
        );
        let strict = self.synchronous_mode_strict;
        put("synchronous_mode_strict", strict.into(), !strict);
        let count = self.synchronous_node_count;
        put(
            "synchronous_node_count",
            count.into(),
            count == d.synchronous_node_count,
        );
        put(
            "failsafe_mode",
            self.failsafe_mode.into(),
            !self.failsafe_mode,
        );
        put("pause", self.pause.into(), !self.pause);
        let pg = self.postgresql.to_json();
        put("postgresql", Value::Object(pg.clone()), pg.is_empty());
        if let Some(slots) = &self.slots {
            put("slots", slots.clone(), false);
        }
        if let Some(ignore) = &self.ignore_slots {
            put("ignore_slots", ignore.clone(), false);
        }
        let history = self.max_timelines_history;
        put(
            "max_timelines_history",
            history.into(),
            history == d.max_timelines_history,
        );
        if let Some(standby) = &self.standby_cluster {
            put("standby_cluster", Value::Object(standby.clone()), false);
        }
        let t = self.proxy_fencing_timeout;
        put(
            "proxy_fencing_timeout",
            duration_to_json(t),
            t == d.proxy_fencing_timeout,
        );
        Value::Object(out)
    }
}

impl DynamicPostgresql {
    fn to_json(&self) -> Map<String, Value> {
        let mut out = self.extra.clone();
        if self.use_pg_rewind {
            out.insert("use_pg_rewind".into(), true.into());
        }
        if !self.use_slots {
            out.insert("use_slots".into(), false.into());
        }
        if !self.parameters.is_empty() {
            let params = self
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())));
            out.insert("parameters".into(), Value::Object(params.collect()));
        }
        for (key, on) in [
            (
                "remove_data_directory_on_rewind_failure",
                self.remove_data_directory_on_rewind_failure,
            ),
            (
                "remove_data_directory_on_diverged_timelines",
                self.remove_data_directory_on_diverged_timelines,
            ),
        ] {
            if on {
                out.insert(key.into(), true.into());
            }
        }
        out
    }
}
