//! Every default value of the configuration, in one place.
//!
//! Dynamic (DCS `config`) defaults follow Patroni 3.0.2 except the three timing keys, where
//! pgherd deliberately fails over faster. A deployment that wants Patroni-equal timing sets
//! `ttl: 30`, `loop_wait: 10`, `retry_timeout: 10` explicitly (in `bootstrap.dcs`, or with
//! `edit-config`).

use std::time::Duration;

/// Leader-key TTL when the DCS `config` has no `ttl`. pgherd's choice; Patroni's is
/// [`PATRONI_DEFAULT_TTL`] (30 s). A crashed leader's key expires within this, which bounds
/// node-crash failover (about ttl - loop_wait/2 + promotion). Safe because the leader fences
/// itself at ttl - margin after its last confirmed renewal, independently of its HA loop.
pub const DEFAULT_TTL: Duration = Duration::from_secs(4);
/// HA loop period when the DCS `config` has no `loop_wait`. pgherd's choice; Patroni's is
/// [`PATRONI_DEFAULT_LOOP_WAIT`] (10 s).
pub const DEFAULT_LOOP_WAIT: Duration = Duration::from_secs(1);
/// DCS/PostgreSQL operation retry budget when the DCS `config` has no `retry_timeout`.
/// pgherd's choice; Patroni's is [`PATRONI_DEFAULT_RETRY_TIMEOUT`] (10 s). Keeps Patroni's
/// rule `loop_wait + 2 * retry_timeout <= ttl`.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_millis(1500);

/// Patroni 3.0.2's documented `ttl` default (for reference and documentation).
pub const PATRONI_DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Patroni 3.0.2's documented `loop_wait` default.
pub const PATRONI_DEFAULT_LOOP_WAIT: Duration = Duration::from_secs(10);
/// Patroni 3.0.2's documented `retry_timeout` default.
pub const PATRONI_DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(10);

/// `maximum_lag_on_failover` (bytes), as Patroni.
pub const DEFAULT_MAXIMUM_LAG_ON_FAILOVER: u64 = 1_048_576;
/// `maximum_lag_on_syncnode` (bytes; -1 = no limit), as Patroni.
pub const DEFAULT_MAXIMUM_LAG_ON_SYNCNODE: i64 = -1;
/// `primary_start_timeout` (alias `master_start_timeout`), as Patroni.
pub const DEFAULT_PRIMARY_START_TIMEOUT: Duration = Duration::from_secs(300);
/// `primary_stop_timeout` (alias `master_stop_timeout`; 0 = wait forever), as Patroni.
pub const DEFAULT_PRIMARY_STOP_TIMEOUT: Duration = Duration::from_secs(0);
/// `proxy_fencing_timeout` (pgherd): the longest wait for proxies before a promotion.
pub const DEFAULT_PROXY_FENCING_TIMEOUT: Duration = Duration::from_secs(5);
/// `synchronous_node_count`, as Patroni.
pub const DEFAULT_SYNCHRONOUS_NODE_COUNT: u32 = 1;
/// `max_timelines_history` (0 = keep all), as Patroni.
pub const DEFAULT_MAX_TIMELINES_HISTORY: u32 = 0;
/// `postgresql.use_slots` in the DCS `config`, as Patroni.
pub const DEFAULT_USE_SLOTS: bool = true;

/// `namespace`: DCS keys live under `/<namespace>/<scope>/`.
pub const DEFAULT_NAMESPACE: &str = "/service/";
/// `postgresql.database`: the database named in `conn_url` and used for local connections.
pub const DEFAULT_DATABASE: &str = "postgres";
/// `postgresql.config_base_name`: pgherd writes `<name>.conf` and keeps `<name>.base.conf`.
pub const DEFAULT_CONFIG_BASE_NAME: &str = "postgresql";
/// `postgresql.pg_ctl_timeout`.
pub const DEFAULT_PG_CTL_TIMEOUT: Duration = Duration::from_secs(60);
/// `postgresql.run_as` (pgherd extension): OS user for PostgreSQL when the agent runs as root.
pub const DEFAULT_RUN_AS: &str = "postgres";
/// `bootstrap.method`.
pub const DEFAULT_BOOTSTRAP_METHOD: &str = "initdb";

/// Client port of etcd when a host has none.
pub const DEFAULT_ETCD_PORT: u16 = 2379;

/// `log.level`.
pub const DEFAULT_LOG_LEVEL: &str = "INFO";
/// `log.traceback_level`.
pub const DEFAULT_LOG_TRACEBACK_LEVEL: &str = "ERROR";
/// `log.format` (Python logging syntax, kept for compatibility).
pub const DEFAULT_LOG_FORMAT: &str = "%(asctime)s %(levelname)s: %(message)s";
/// `log.max_queue_size`.
pub const DEFAULT_LOG_MAX_QUEUE_SIZE: u64 = 1000;
/// `log.file_size` (bytes) before rotation.
pub const DEFAULT_LOG_FILE_SIZE: u64 = 25_000_000;
/// `log.file_num`: rotated files kept.
pub const DEFAULT_LOG_FILE_NUM: u32 = 4;

/// `watchdog.device`.
pub const DEFAULT_WATCHDOG_DEVICE: &str = "/dev/watchdog";
/// `watchdog.driver`.
pub const DEFAULT_WATCHDOG_DRIVER: &str = "default";
