//! `tags:`, `log:`, `watchdog:` and `citus:` sections.

use crate::defaults::*;
use crate::reader::{Ctx, Section};
use crate::ConfigError;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `tags:` — published in the member key; the HA engine and the proxy act on them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tags {
    /// Never become primary.
    pub nofailover: bool,
    /// Take no read-only traffic (the proxy and `GET /replica` honour it).
    pub noloadbalance: bool,
    /// Preferred source for new replicas.
    pub clonefrom: bool,
    /// Never become a synchronous standby.
    pub nosync: bool,
    /// Member to stream from (cascading replication).
    pub replicatefrom: Option<String>,
    /// Higher wins among equally good candidates; 0 behaves like `nofailover`.
    pub failover_priority: Option<i64>,
    /// Any other tags, verbatim (used by `?tag_key=value` health-check filters).
    pub custom: Map<String, Value>,
}

impl Tags {
    pub(crate) fn parse(mut s: Section, ctx: &mut Ctx) -> Result<Self, ConfigError> {
        let mut tags = Tags {
            nofailover: s.bool(ctx, "nofailover")?.unwrap_or(false),
            noloadbalance: s.bool(ctx, "noloadbalance")?.unwrap_or(false),
            clonefrom: s.bool(ctx, "clonefrom")?.unwrap_or(false),
            nosync: s.bool(ctx, "nosync")?.unwrap_or(false),
            replicatefrom: s.string(ctx, "replicatefrom")?,
            failover_priority: s.i64(ctx, "failover_priority")?,
            custom: Map::new(),
        };
        for (key, value) in s.take_rest() {
            tags.custom.insert(key.clone(), value.clone());
        }
        Ok(tags)
    }

    /// The tags as Patroni publishes them in the member key: the boolean tags only when true.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut out = self.custom.clone();
        for (name, on) in [
            ("nofailover", self.nofailover),
            ("noloadbalance", self.noloadbalance),
            ("clonefrom", self.clonefrom),
            ("nosync", self.nosync),
        ] {
            if on {
                out.insert(name.to_string(), Value::Bool(true));
            }
        }
        if let Some(from) = &self.replicatefrom {
            out.insert("replicatefrom".to_string(), Value::from(from.as_str()));
        }
        if let Some(priority) = self.failover_priority {
            out.insert("failover_priority".to_string(), Value::from(priority));
        }
        out
    }
}

/// `log:` — the agent's own logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Log {
    /// `DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL` (stored upper-case).
    pub level: String,
    pub traceback_level: String,
    /// Python logging format; kept for compatibility.
    pub format: String,
    pub dateformat: Option<String>,
    pub max_queue_size: u64,
    /// Write logs to files here instead of stderr.
    pub dir: Option<PathBuf>,
    /// Rotate at this many bytes.
    pub file_size: u64,
    /// Rotated files to keep.
    pub file_num: u32,
    /// Per-module levels.
    pub loggers: BTreeMap<String, String>,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: DEFAULT_LOG_LEVEL.to_string(),
            traceback_level: DEFAULT_LOG_TRACEBACK_LEVEL.to_string(),
            format: DEFAULT_LOG_FORMAT.to_string(),
            dateformat: None,
            max_queue_size: DEFAULT_LOG_MAX_QUEUE_SIZE,
            dir: None,
            file_size: DEFAULT_LOG_FILE_SIZE,
            file_num: DEFAULT_LOG_FILE_NUM,
            loggers: BTreeMap::new(),
        }
    }
}

const LOG_LEVELS: [&str; 7] = [
    "DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL",
];

impl Log {
    pub(crate) fn parse(mut s: Section, ctx: &mut Ctx) -> Result<Self, ConfigError> {
        let d = Log::default();
        let log = Log {
            level: log_level(&mut s, ctx, "level")?.unwrap_or(d.level),
            traceback_level: log_level(&mut s, ctx, "traceback_level")?
                .unwrap_or(d.traceback_level),
            format: s.string(ctx, "format")?.unwrap_or(d.format),
            dateformat: s.string(ctx, "dateformat")?,
            max_queue_size: s.size(ctx, "max_queue_size")?.unwrap_or(d.max_queue_size),
            dir: s.path_buf(ctx, "dir")?,
            file_size: s.size(ctx, "file_size")?.unwrap_or(d.file_size),
            file_num: s.u32(ctx, "file_num")?.unwrap_or(d.file_num),
            loggers: s.string_map(ctx, "loggers")?.unwrap_or_default(),
        };
        s.finish(ctx);
        Ok(log)
    }
}

fn log_level(s: &mut Section, ctx: &Ctx, key: &str) -> Result<Option<String>, ConfigError> {
    s.get(ctx, key, |v| {
        crate::reader::to_string(v)
            .ok()
            .map(|l| l.to_ascii_uppercase())
            .filter(|l| LOG_LEVELS.contains(&l.as_str()))
            .ok_or_else(|| "a log level (DEBUG, INFO, WARNING, ERROR, CRITICAL)".to_string())
    })
}

/// `watchdog.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchdogMode {
    /// No watchdog (`off`, `disable`, `disabled`, or YAML `false`).
    Off,
    /// Use it if it can be opened (`automatic`, `auto`).
    Automatic,
    /// Refuse to become leader without it (`required`, `require`).
    Required,
}

/// `watchdog:` — fencing with a hardware/softdog timer while primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Watchdog {
    pub mode: WatchdogMode,
    pub device: PathBuf,
    /// Seconds before the leader key expires at which the watchdog fires; -1 = ttl / 2.
    /// `None`: pgherd's default, tied to the lease's fencing margin (crates/agent/src/watchdog.rs).
    pub safety_margin: Option<i64>,
    pub driver: String,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            mode: WatchdogMode::Automatic,
            device: PathBuf::from(DEFAULT_WATCHDOG_DEVICE),
            safety_margin: None,
            driver: DEFAULT_WATCHDOG_DRIVER.to_string(),
        }
    }
}

impl Watchdog {
    pub(crate) fn parse(mut s: Section, ctx: &mut Ctx) -> Result<Self, ConfigError> {
        let d = Watchdog::default();
        let watchdog = Watchdog {
            mode: s
                .get(ctx, "mode", |v| match v {
                    Value::Bool(false) => Ok(WatchdogMode::Off),
                    Value::String(m) => match m.to_ascii_lowercase().as_str() {
                        "off" | "disable" | "disabled" => Ok(WatchdogMode::Off),
                        "automatic" | "auto" => Ok(WatchdogMode::Automatic),
                        "required" | "require" => Ok(WatchdogMode::Required),
                        _ => Err("one of off, automatic, required".to_string()),
                    },
                    _ => Err("one of off, automatic, required".to_string()),
                })?
                .unwrap_or(d.mode),
            device: s.path_buf(ctx, "device")?.unwrap_or(d.device),
            safety_margin: s.i64(ctx, "safety_margin")?.or(d.safety_margin),
            driver: s.string(ctx, "driver")?.unwrap_or(d.driver),
        };
        // Drivers may take their own settings (Patroni passes the rest to the driver).
        s.take_rest();
        Ok(watchdog)
    }
}

/// `citus:` — keys live under `<base>/<group>/`; group 0 is the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Citus {
    pub group: i64,
    pub database: String,
}

impl Citus {
    pub(crate) fn parse(mut s: Section, ctx: &mut Ctx) -> Result<Self, ConfigError> {
        let group = s.i64(ctx, "group")?;
        let database = s.string(ctx, "database")?;
        let citus = Citus {
            group: group
                .ok_or_else(|| ctx.invalid(&s.path("group"), "missing (expected an integer)"))?,
            database: database.ok_or_else(|| {
                ctx.invalid(&s.path("database"), "missing (expected a database name)")
            })?,
        };
        s.finish(ctx);
        Ok(citus)
    }
}

/// `vip:` — a virtual IPv4 address held on `interface` while this member is the primary
/// with a current leader lease (keepalived's / vip-manager's job; docs/compat.md#virtual-ip).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vip {
    pub ip: std::net::Ipv4Addr,
    /// Prefix length (vip-manager's `netmask`; a dotted mask is accepted too).
    pub prefix: u8,
    pub interface: String,
}

impl Vip {
    pub(crate) fn parse(mut s: Section, ctx: &mut Ctx) -> Result<Self, ConfigError> {
        let ip = s
            .get(ctx, "ip", |v| {
                v.as_str()
                    .and_then(|t| t.trim().parse::<std::net::Ipv4Addr>().ok())
                    .ok_or_else(|| "an IPv4 address such as 10.0.0.100".to_string())
            })?
            .ok_or_else(|| ctx.invalid(&s.path("ip"), "missing (expected an IPv4 address)"))?;
        let prefix = s
            .get(ctx, "netmask", |v| {
                let prefix = match v {
                    Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
                    Value::String(t) => t.trim().parse::<u8>().ok().or_else(|| {
                        let mask: std::net::Ipv4Addr = t.trim().parse().ok()?;
                        let bits = u32::from(mask);
                        (bits.leading_ones() + bits.trailing_zeros() == 32)
                            .then(|| bits.leading_ones() as u8)
                    }),
                    _ => None,
                };
                prefix
                    .filter(|p| (1..=32).contains(p))
                    .ok_or_else(|| "a prefix length 1-32 or a dotted netmask".to_string())
            })?
            .unwrap_or(32);
        let interface = s.string(ctx, "interface")?.ok_or_else(|| {
            ctx.invalid(
                &s.path("interface"),
                "missing (expected a network interface name)",
            )
        })?;
        if interface.is_empty()
            || interface.len() > 15
            || !interface
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
        {
            return Err(ctx.invalid(
                &s.path("interface"),
                "expected a network interface name (up to 15 letters, digits, '.', '_', '-')",
            ));
        }
        s.finish(ctx);
        Ok(Vip {
            ip,
            prefix,
            interface,
        })
    }
}
