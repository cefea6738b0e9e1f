//! The `proxy:` section, typed and validated. Every error names the file and the key path
//! (`proxy.yml: proxy.listeners[1].balance: expected roundrobin, leastconn or first, found "x"`)
//! and unknown keys are errors, so a typo never silently falls back to a default.

use crate::error::ProxyError;
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::time::Duration;

/// Which servers a listener sends connections to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerRole {
    /// The leader named by the DCS, confirmed by its `GET /primary`.
    Primary,
    /// Streaming replicas confirmed by `GET /replica[?lag=max_lag]`.
    Replica,
    /// Replicas, and the primary when no replica qualifies.
    ReadOnly,
    /// Replicas listed as synchronous standbys in the DCS `sync` key.
    Sync,
    /// Replicas that are not synchronous standbys.
    Async,
}

impl ListenerRole {
    fn parse(s: &str) -> Option<ListenerRole> {
        Some(match s {
            "primary" | "master" | "read-write" => ListenerRole::Primary,
            "replica" => ListenerRole::Replica,
            "read-only" => ListenerRole::ReadOnly,
            "sync" => ListenerRole::Sync,
            "async" => ListenerRole::Async,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ListenerRole::Primary => "primary",
            ListenerRole::Replica => "replica",
            ListenerRole::ReadOnly => "read-only",
            ListenerRole::Sync => "sync",
            ListenerRole::Async => "async",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Weighted round robin.
    RoundRobin,
    /// Fewest active sessions per unit of weight.
    LeastConn,
    /// The first eligible server in name order.
    First,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub role: ListenerRole,
    pub balance: Balance,
    /// Replicas lagging more than this many bytes leave the rotation.
    pub max_lag: Option<u64>,
    /// Use the primary when no replica qualifies (`fallback: primary`).
    pub fallback_primary: bool,
    /// Concurrent server sessions through this listener; more clients wait in the queue.
    pub maxconn: Option<usize>,
    /// Clients allowed to wait for a slot; beyond that they are closed at once.
    pub maxqueue: usize,
    pub queue_timeout: Duration,
    /// How long a new connection waits for a server when none is routable.
    pub hold_timeout: Duration,
    /// Clients arrive through a load balancer that sends a PROXY protocol header (v1 or v2)
    /// naming their origin (HAProxy's `accept-proxy`).
    pub accept_proxy: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub interval: Duration,
    /// Interval used while a listener holds clients and the DCS names a candidate server.
    pub fast_interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

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

#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationConfig {
    pub enabled: bool,
    /// Lease of the `proxies/<name>` key; rewritten every third of it.
    pub ttl: Duration,
}

/// The whole `proxy:` section plus the cluster identity it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub name: String,
    pub scope: String,
    pub namespace: String,
    /// Client connections accepted in total; accepting pauses beyond.
    pub maxconn: usize,
    /// Bytes buffered per direction of an active session.
    pub buffer_size: usize,
    /// Worker threads of the proxy's runtime (HAProxy's `nbthread`).
    pub threads: usize,
    pub timeouts: Timeouts,
    pub keepalive: Option<Keepalive>,
    pub health: HealthConfig,
    pub listeners: Vec<ListenerConfig>,
    pub stats: Option<StatsConfig>,
    pub registration: RegistrationConfig,
    /// On SIGTERM/SIGINT: how long open sessions may go on after accepting stopped.
    pub drain_timeout: Duration,
}

/// Open sessions get this long to end after SIGTERM (a second signal ends them at once).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAXCONN: usize = 20_000;
pub const DEFAULT_MAXQUEUE: usize = 10_000;
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_BUFFER: usize = 16 * 1024;
/// One thread: a proxy usually shares its cores with PostgreSQL and the clients, and one
/// event loop then wakes fewer threads per message than several (measured: `bench/proxy`).
pub const DEFAULT_THREADS: usize = 1;

/// Reads one mapping, remembering its key path and which keys were read.
struct Section<'a> {
    file: &'a str,
    path: String,
    map: Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Section<'a> {
    fn new(file: &'a str, path: String, value: Option<&Value>) -> Result<Self, ProxyError> {
        let map = match value {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                return Err(invalid(
                    file,
                    &path,
                    format!("expected a mapping, found {}", show(other)),
                ))
            }
        };
        Ok(Section {
            file,
            path,
            map,
            known: Vec::new(),
        })
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn err(&self, key: &str, message: impl Into<String>) -> ProxyError {
        invalid(self.file, &self.key_path(key), message.into())
    }

    fn raw(&mut self, key: &'static str) -> Option<Value> {
        self.known.push(key);
        self.map.get(key).filter(|v| !v.is_null()).cloned()
    }

    fn string(&mut self, key: &'static str) -> Result<Option<String>, ProxyError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(self.err(key, format!("expected a string, found {}", show(&other)))),
        }
    }

    fn required_string(&mut self, key: &'static str, what: &str) -> Result<String, ProxyError> {
        self.string(key)?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| self.err(key, format!("missing (expected {what})")))
    }

    fn duration(&mut self, key: &'static str) -> Result<Option<Duration>, ProxyError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => {
                let text = scalar_text(&v);
                pgherd_config::parse_duration(&text)
                    .map(Some)
                    .map_err(|m| self.err(key, m))
            }
        }
    }

    /// A duration where `0` (or `false`) means "no limit".
    fn optional_limit(
        &mut self,
        key: &'static str,
        default: Option<Duration>,
    ) -> Result<Option<Duration>, ProxyError> {
        if matches!(self.map.get(key), Some(Value::Bool(false))) {
            self.known.push(key);
            return Ok(None);
        }
        Ok(match self.duration(key)? {
            None => default,
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        })
    }

    fn size(&mut self, key: &'static str) -> Result<Option<u64>, ProxyError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => pgherd_config::parse_size(&scalar_text(&v))
                .map(Some)
                .map_err(|m| self.err(key, m)),
        }
    }

    fn count(&mut self, key: &'static str, min: u64) -> Result<Option<u64>, ProxyError> {
        let Some(v) = self.raw(key) else {
            return Ok(None);
        };
        let n = match &v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match n {
            Some(n) if n >= min => Ok(Some(n)),
            _ => Err(self.err(
                key,
                format!("expected an integer >= {min}, found {}", show(&v)),
            )),
        }
    }

    fn bool(&mut self, key: &'static str) -> Result<Option<bool>, ProxyError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" => Ok(Some(true)),
                "false" | "off" | "no" => Ok(Some(false)),
                _ => Err(self.err(key, format!("expected true or false, found {s:?}"))),
            },
            Some(other) => Err(self.err(
                key,
                format!("expected true or false, found {}", show(&other)),
            )),
        }
    }

    fn addr(&mut self, key: &'static str) -> Result<SocketAddr, ProxyError> {
        let text = self.required_string(key, "host:port, e.g. 127.0.0.1:5000")?;
        let normalized = match text.strip_prefix('*') {
            Some(rest) => format!("0.0.0.0{rest}"),
            None => text.clone(),
        };
        normalized.parse().map_err(|_| {
            self.err(
                key,
                format!("expected an IP address and port such as 127.0.0.1:5000, found {text:?}"),
            )
        })
    }

    fn section(&mut self, key: &'static str) -> Result<Section<'a>, ProxyError> {
        let value = self.raw(key);
        Section::new(self.file, self.key_path(key), value.as_ref())
    }

    fn is_present(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// Rejects keys nobody read.
    fn finish(self) -> Result<(), ProxyError> {
        if let Some(unknown) = self.map.keys().find(|k| !self.known.contains(&k.as_str())) {
            let mut expected = self.known.clone();
            expected.sort_unstable();
            expected.dedup();
            return Err(self.err(
                unknown,
                format!("unknown key (expected one of: {})", expected.join(", ")),
            ));
        }
        Ok(())
    }
}

fn invalid(file: &str, path: &str, message: String) -> ProxyError {
    ProxyError::Config(pgherd_config::ConfigError::Invalid {
        file: file.to_string(),
        path: path.to_string(),
        message,
    })
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "a mapping".into(),
        Value::Array(_) => "a list".into(),
        other => other.to_string(),
    }
}

impl ProxyConfig {
    /// Builds the proxy configuration from a loaded pgherd configuration. `file` labels errors.
    pub fn from_config(
        config: &pgherd_config::Config,
        file: &str,
    ) -> Result<ProxyConfig, ProxyError> {
        let Some(raw) = config.proxy.as_ref() else {
            return Err(invalid(
                file,
                "proxy",
                "missing (expected a proxy: section with listeners)".to_string(),
            ));
        };
        Self::parse(
            raw,
            file,
            &config.scope,
            &config.namespace,
            &default_hostname(),
        )
    }

    /// Parses the raw `proxy:` value. `hostname` is used for the default proxy name.
    pub fn parse(
        raw: &Value,
        file: &str,
        scope: &str,
        namespace: &str,
        hostname: &str,
    ) -> Result<ProxyConfig, ProxyError> {
        let mut root = Section::new(file, "proxy".into(), Some(raw))?;
        let name = root.string("name")?;
        let maxconn = root
            .count("maxconn", 1)?
            .map_or(DEFAULT_MAXCONN, |n| n as usize);
        let buffer_size = match root.size("buffer_size")? {
            None => DEFAULT_BUFFER,
            Some(n) if (1024..=(16 << 20)).contains(&n) => n as usize,
            Some(_) => return Err(root.err("buffer_size", "expected a size between 1kB and 16MB")),
        };
        let hold_timeout = root
            .duration("hold_timeout")?
            .unwrap_or(DEFAULT_HOLD_TIMEOUT);
        let drain_timeout = root
            .duration("drain_timeout")?
            .unwrap_or(DEFAULT_DRAIN_TIMEOUT);
        let threads = root
            .count("threads", 1)?
            .map_or(DEFAULT_THREADS, |n| n as usize);
        let default_maxconn = root.count("listener_maxconn", 1)?.map(|n| n as usize);
        let default_maxqueue = root
            .count("maxqueue", 0)?
            .map_or(DEFAULT_MAXQUEUE, |n| n as usize);
        let default_queue_timeout = root
            .duration("queue_timeout")?
            .unwrap_or(DEFAULT_QUEUE_TIMEOUT);

        let mut t = root.section("timeouts")?;
        let timeouts = Timeouts {
            connect: t.duration("connect")?.unwrap_or(Duration::from_secs(3)),
            client_idle: t.optional_limit("client_idle", None)?,
            server_idle: t.optional_limit("server_idle", None)?,
        };
        if timeouts.connect.is_zero() {
            return Err(t.err("connect", "must be greater than 0"));
        }
        t.finish()?;

        let keepalive = if matches!(raw.get("tcp_keepalive"), Some(Value::Bool(false))) {
            root.raw("tcp_keepalive");
            None
        } else {
            let mut k = root.section("tcp_keepalive")?;
            let ka = Keepalive {
                idle: k.duration("idle")?.unwrap_or(Duration::from_secs(60)),
                interval: k.duration("interval")?.unwrap_or(Duration::from_secs(10)),
                count: k.count("count", 1)?.unwrap_or(6) as u32,
            };
            if ka.idle < Duration::from_secs(1) || ka.interval < Duration::from_secs(1) {
                return Err(k.err("idle", "idle and interval must be at least 1s"));
            }
            k.finish()?;
            Some(ka)
        };

        let mut h = root.section("health_check")?;
        let health = HealthConfig {
            interval: h.duration("interval")?.unwrap_or(Duration::from_secs(1)),
            fast_interval: h
                .duration("fast_interval")?
                .unwrap_or(Duration::from_millis(50)),
            timeout: h.duration("timeout")?.unwrap_or(Duration::from_secs(1)),
            rise: h.count("rise", 1)?.unwrap_or(2) as u32,
            fall: h.count("fall", 1)?.unwrap_or(3) as u32,
        };
        for (key, d) in [
            ("interval", health.interval),
            ("fast_interval", health.fast_interval),
            ("timeout", health.timeout),
        ] {
            if d < Duration::from_millis(10) {
                return Err(invalid(
                    file,
                    &format!("proxy.health_check.{key}"),
                    "must be at least 10ms".into(),
                ));
            }
        }
        h.finish()?;

        let listeners_raw = root.raw("listeners");
        let items = match &listeners_raw {
            Some(Value::Array(items)) if !items.is_empty() => items.clone(),
            Some(Value::Array(_)) | None => {
                return Err(root.err(
                    "listeners",
                    "missing (expected a list of listeners with name, bind and role)",
                ))
            }
            Some(other) => {
                return Err(root.err(
                    "listeners",
                    format!("expected a list, found {}", show(other)),
                ))
            }
        };
        let mut listeners: Vec<ListenerConfig> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let mut l = Section::new(file, format!("proxy.listeners[{i}]"), Some(item))?;
            let lname = l.required_string("name", "a listener name")?;
            if listeners.iter().any(|o| o.name == lname) {
                return Err(l.err("name", format!("duplicate listener name {lname:?}")));
            }
            let bind = l.addr("bind")?;
            if listeners.iter().any(|o| o.bind == bind) {
                return Err(l.err(
                    "bind",
                    format!("{bind} is already used by another listener"),
                ));
            }
            let role_text =
                l.required_string("role", "primary, replica, read-only, sync or async")?;
            let role = ListenerRole::parse(&role_text).ok_or_else(|| {
                l.err(
                    "role",
                    format!(
                        "expected primary, replica, read-only, sync or async, found {role_text:?}"
                    ),
                )
            })?;
            let balance = match l.string("balance")?.as_deref() {
                None | Some("roundrobin") => Balance::RoundRobin,
                Some("leastconn") => Balance::LeastConn,
                Some("first") => Balance::First,
                Some(other) => {
                    return Err(l.err(
                        "balance",
                        format!("expected roundrobin, leastconn or first, found {other:?}"),
                    ))
                }
            };
            let max_lag = l.size("max_lag")?;
            if max_lag.is_some() && role == ListenerRole::Primary {
                return Err(l.err(
                    "max_lag",
                    "only applies to replica, read-only, sync and async listeners",
                ));
            }
            let fallback_primary = match l.string("fallback")?.as_deref() {
                None | Some("none") => false,
                Some("primary") => true,
                Some(other) => {
                    return Err(l.err(
                        "fallback",
                        format!("expected primary or none, found {other:?}"),
                    ))
                }
            };
            let maxconn = l
                .count("maxconn", 1)?
                .map(|n| n as usize)
                .or(default_maxconn);
            let maxqueue = l
                .count("maxqueue", 0)?
                .map_or(default_maxqueue, |n| n as usize);
            let queue_timeout = l
                .duration("queue_timeout")?
                .unwrap_or(default_queue_timeout);
            let hold = l.duration("hold_timeout")?.unwrap_or(hold_timeout);
            let accept_proxy = l.bool("accept_proxy")?.unwrap_or(false);
            l.finish()?;
            listeners.push(ListenerConfig {
                name: lname,
                bind,
                role,
                balance,
                max_lag,
                fallback_primary,
                maxconn,
                maxqueue,
                queue_timeout,
                hold_timeout: hold,
                accept_proxy,
            });
        }

        let stats = if root.is_present("stats") {
            let mut s = root.section("stats")?;
            let bind = s.addr("bind")?;
            if listeners.iter().any(|l| l.bind == bind) {
                return Err(s.err("bind", format!("{bind} is already used by a listener")));
            }
            let admin = if s.is_present("admin") {
                let mut a = s.section("admin")?;
                let username = a.required_string("username", "the admin user name")?;
                let password = a.required_string("password", "the admin password")?;
                a.finish()?;
                Some(AdminAuth { username, password })
            } else {
                s.raw("admin");
                None
            };
            let refresh = s.duration("refresh")?.unwrap_or(Duration::from_secs(2));
            s.finish()?;
            Some(StatsConfig {
                bind,
                admin,
                refresh,
            })
        } else {
            root.raw("stats");
            None
        };

        let mut r = root.section("registration")?;
        let registration = RegistrationConfig {
            enabled: r.bool("enabled")?.unwrap_or(true),
            ttl: r.duration("ttl")?.unwrap_or(Duration::from_secs(10)),
        };
        if registration.ttl < Duration::from_secs(2) {
            return Err(r.err("ttl", "must be at least 2s (etcd leases are whole seconds)"));
        }
        r.finish()?;
        root.finish()?;

        let name = match name {
            Some(n) if !n.trim().is_empty() => {
                if n.contains('/') {
                    return Err(invalid(
                        file,
                        "proxy.name",
                        format!("must not contain '/', found {n:?}"),
                    ));
                }
                n
            }
            _ => {
                let port = listeners.first().map(|l| l.bind.port()).unwrap_or_default();
                format!("{hostname}-{port}")
            }
        };
        Ok(ProxyConfig {
            name,
            scope: scope.to_string(),
            namespace: namespace.to_string(),
            maxconn,
            buffer_size,
            threads,
            timeouts,
            keepalive,
            health,
            listeners,
            stats,
            registration,
            drain_timeout,
        })
    }

    /// Distinct `max_lag` values of replica-like listeners (`None` = no lag limit).
    pub fn lag_limits(&self) -> Vec<Option<u64>> {
        let mut v: Vec<Option<u64>> = self
            .listeners
            .iter()
            .filter(|l| l.role != ListenerRole::Primary)
            .map(|l| l.max_lag)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// This host's name, for the default proxy name.
pub fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().replace('/', "_"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "pgherd-proxy".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ProxyConfig, String> {
        ProxyConfig::parse(&v, "proxy.yml", "demo", "/service", "host").map_err(|e| e.to_string())
    }

    fn minimal() -> Value {
        json!({
            "listeners": [
                {"name": "primary", "bind": "127.0.0.1:5000", "role": "primary"},
                {"name": "replicas", "bind": "127.0.0.1:5001", "role": "replica",
                 "balance": "roundrobin", "max_lag": "16MB", "fallback": "primary"}
            ],
            "stats": {"bind": "127.0.0.1:7000"}
        })
    }

    #[test]
    fn issue_example_parses_with_defaults() {
        let c = parse(minimal()).unwrap();
        assert_eq!(c.name, "host-5000");
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].role, ListenerRole::Primary);
        assert_eq!(c.listeners[0].hold_timeout, DEFAULT_HOLD_TIMEOUT);
        assert_eq!(c.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
        assert_eq!(c.listeners[1].max_lag, Some(16 << 20));
        assert!(c.listeners[1].fallback_primary);
        assert_eq!(c.listeners[1].balance, Balance::RoundRobin);
        assert_eq!(c.health.rise, 2);
        assert_eq!(c.health.fall, 3);
        assert!(c.keepalive.is_some());
        assert!(c.registration.enabled);
        assert_eq!(c.stats.as_ref().unwrap().bind.port(), 7000);
        assert_eq!(c.threads, DEFAULT_THREADS);
        assert_eq!(c.lag_limits(), vec![Some(16 << 20)]);
    }

    #[test]
    fn every_knob_parses() {
        let c = parse(json!({
            "name": "px1", "maxconn": 500, "buffer_size": "32kB", "hold_timeout": "5s", "threads": 2,
            "drain_timeout": "2s",
            "listener_maxconn": 100, "maxqueue": 7, "queue_timeout": "2s",
            "timeouts": {"connect": "500ms", "client_idle": "10m", "server_idle": 0},
            "tcp_keepalive": {"idle": "30s", "interval": "5s", "count": 3},
            "health_check": {"interval": "2s", "fast_interval": "20ms", "timeout": "300ms", "rise": 1, "fall": 2},
            "registration": {"enabled": false, "ttl": "6s"},
            "listeners": [{"name": "rw", "bind": "127.0.0.1:6000", "role": "primary", "maxconn": 3,
                           "maxqueue": 1, "queue_timeout": "1s", "hold_timeout": "1m", "balance": "first",
                           "accept_proxy": true},
                          {"name": "ro", "bind": "127.0.0.1:6001", "role": "read-only", "balance": "leastconn"}],
            "stats": {"bind": "127.0.0.1:7001", "admin": {"username": "a", "password": "b"}, "refresh": "5s"}
        }))
        .unwrap();
        assert_eq!(c.name, "px1");
        assert_eq!(c.maxconn, 500);
        assert_eq!(c.buffer_size, 32 * 1024);
        assert_eq!(c.threads, 2);
        assert_eq!(c.drain_timeout, Duration::from_secs(2));
        assert_eq!(c.timeouts.connect, Duration::from_millis(500));
        assert_eq!(c.timeouts.client_idle, Some(Duration::from_secs(600)));
        assert_eq!(c.timeouts.server_idle, None);
        assert_eq!(c.keepalive.as_ref().unwrap().count, 3);
        assert_eq!(c.health.fast_interval, Duration::from_millis(20));
        assert!(!c.registration.enabled);
        let rw = &c.listeners[0];
        assert_eq!(
            (rw.maxconn, rw.maxqueue, rw.balance),
            (Some(3), 1, Balance::First)
        );
        assert_eq!(rw.hold_timeout, Duration::from_secs(60));
        assert!(rw.accept_proxy);
        let ro = &c.listeners[1];
        assert!(!ro.accept_proxy);
        assert_eq!((ro.maxconn, ro.maxqueue), (Some(100), 7));
        assert_eq!(ro.queue_timeout, Duration::from_secs(2));
        assert_eq!(ro.hold_timeout, Duration::from_secs(5));
        assert_eq!(c.stats.unwrap().admin.unwrap().username, "a");
    }

    #[test]
    fn errors_name_file_and_key() {
        let mut v = minimal();
        v["listeners"][1]["balance"] = json!("x");
        assert_eq!(
            parse(v).unwrap_err(),
            r#"proxy.yml: proxy.listeners[1].balance: expected roundrobin, leastconn or first, found "x""#
        );
        let mut v = minimal();
        v["listeners"][0]["role"] = json!("writer");
        assert!(parse(v)
            .unwrap_err()
            .starts_with("proxy.yml: proxy.listeners[0].role: expected primary"));
        let mut v = minimal();
        v["listeners"][0]["bind"] = json!("localhost");
        assert!(parse(v)
            .unwrap_err()
            .contains("proxy.listeners[0].bind: expected an IP address"));
        let mut v = minimal();
        v["health_check"] = json!({"intervl": "1s"});
        assert!(parse(v)
            .unwrap_err()
            .contains("proxy.health_check.intervl: unknown key"));
        let mut v = minimal();
        v["timeouts"] = json!({"connect": "soon"});
        assert!(parse(v)
            .unwrap_err()
            .contains("proxy.timeouts.connect: expected a duration"));
        let mut v = minimal();
        v["listeners"][1]["bind"] = json!("127.0.0.1:5000");
        assert!(parse(v)
            .unwrap_err()
            .contains("proxy.listeners[1].bind: 127.0.0.1:5000 is already used"));
        let mut v = minimal();
        v["threads"] = json!(0);
        assert!(parse(v).unwrap_err().contains("proxy.threads: expected"));
        let mut v = minimal();
        v["listeners"][0]["accept_proxy"] = json!("v2");
        assert!(parse(v)
            .unwrap_err()
            .contains("proxy.listeners[0].accept_proxy: expected"));
        let mut v = minimal();
        v["listeners"][0]["max_lag"] = json!("1MB");
        assert!(parse(v)
            .unwrap_err()
            .contains("proxy.listeners[0].max_lag: only applies"));
        assert!(parse(json!({"listeners": []}))
            .unwrap_err()
            .contains("proxy.listeners: missing"));
        let mut v = minimal();
        v["stats"]["admin"] = json!({"username": "a"});
        assert!(parse(v)
            .unwrap_err()
            .contains("proxy.stats.admin.password: missing"));
        let mut v = minimal();
        v["maxconn"] = json!(0);
        assert!(parse(v)
            .unwrap_err()
            .contains("proxy.maxconn: expected an integer >= 1"));
    }

    #[test]
    fn keepalive_can_be_disabled() {
        let mut v = minimal();
        v["tcp_keepalive"] = json!(false);
        assert!(parse(v).unwrap().keepalive.is_none());
    }
}
