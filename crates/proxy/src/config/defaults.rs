//! Every default and bound of the `proxy:` section, by name.

use super::listeners::Balance;
use std::time::Duration;

/// `maxconn`: client connections accepted in total.
pub const DEFAULT_MAXCONN: usize = 20_000;
/// `buffer_size`: bytes buffered per direction of an active session, and its bounds.
pub const DEFAULT_BUFFER: usize = 16 * 1024;
pub const MIN_BUFFER: u64 = 1024;
pub const MAX_BUFFER: u64 = 16 << 20;
/// `threads`. One thread: a proxy usually shares its cores with PostgreSQL and the clients,
/// and one event loop then wakes fewer threads per message than several (measured:
/// `bench/proxy`).
pub const DEFAULT_THREADS: usize = 1;
/// `drain_timeout`: open sessions get this long to end after SIGTERM (a second signal ends
/// them at once).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `hold_timeout` (top level and per listener).
pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(30);
/// `balance` of a listener.
pub const DEFAULT_BALANCE: Balance = Balance::RoundRobin;
/// `maxqueue` (top level and per listener).
pub const DEFAULT_MAXQUEUE: usize = 10_000;
/// `queue_timeout` (top level and per listener).
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// `timeouts.connect`; `client_idle` and `server_idle` have no limit by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// `tcp_keepalive`: idle time before the first probe, time between probes, probes sent.
pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_KEEPALIVE_COUNT: u32 = 6;
/// The kernel counts keepalive times in whole seconds.
pub const MIN_KEEPALIVE_TIME: Duration = Duration::from_secs(1);

/// `health_check`. Half a second: a replica cut off from the cluster answers 503 about
/// 1.1 s after its stream went silent (crates/postgres/src/state.rs, `WalReceiver`) and must
/// leave the read rotation within 2 s.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_millis(500);
pub const DEFAULT_CHECK_FAST_INTERVAL: Duration = Duration::from_millis(50);
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
/// Shortest health-check interval or timeout.
pub const MIN_CHECK_TIME: Duration = Duration::from_millis(10);

/// `stats.refresh`: how often the HTML page reloads itself.
pub const DEFAULT_STATS_REFRESH: Duration = Duration::from_secs(2);

/// `registration.ttl`: lease of the `proxies/<name>` key, and its minimum (etcd leases are
/// whole seconds, and the key is rewritten every third of the ttl).
pub const DEFAULT_REGISTRATION_TTL: Duration = Duration::from_secs(10);
pub const MIN_REGISTRATION_TTL: Duration = Duration::from_secs(2);

/// Pooled listeners (pgbouncer's defaults): `pool_size`, `max_client_conn`,
/// `server_idle_timeout`, `server_lifetime`, `query_wait_timeout`, `server_reset_query`.
pub const DEFAULT_POOL_SIZE: usize = 20;
pub const DEFAULT_MAX_CLIENT_CONN: usize = 100;
pub const DEFAULT_SERVER_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_SERVER_LIFETIME: Duration = Duration::from_secs(3600);
pub const DEFAULT_QUERY_WAIT_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_SERVER_RESET_QUERY: &str = "DISCARD ALL";
/// `auth_query` (pgbouncer's default).
pub const DEFAULT_AUTH_QUERY: &str = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1";
