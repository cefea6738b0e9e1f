//! The agent's world: the small interfaces through which it does all its I/O. `pgherd agent`
//! plugs in the real adapters (`crate::real`); the deterministic simulator (`crates/sim`)
//! plugs in simulated ones and injects faults through them (slow or hung calls, lost
//! replies, crashes). The agent itself — its loop, observation, execution of actions,
//! fencing, lease renewal, command handling, background tasks — exists once.
//!
//! Time is tokio's (`tokio::time`): real in `pgherd agent`, virtual (paused and auto-advanced)
//! in the simulator. Only the wall clock, used for scheduled switchovers and restarts, is an
//! interface of its own. File work that blocks (config files written with fsync, history
//! files read) runs on tokio's blocking pool in the real adapter, never on the HA loop's
//! thread. Everything the agent spawns is owned by it and aborted when it is
//! dropped ([`crate::tasks::OwnedTask`]), so a crashed agent leaves no task behind.

use async_trait::async_trait;
use pgherd_config::Loaded;
use pgherd_dcs::Dcs;
use pgherd_postgres::{
    AllowRemoval, CliOption, ControlData, DataDirState, PgOptions, PgState, PostmasterInfo,
    RecoveryConf, RemovalMode, SlotDrop, SlotInfo, StopMode, StopOutcome, TimelineHistory,
    Upstream,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything the agent talks to.
#[derive(Clone)]
pub struct World {
    pub pg: Arc<dyn PgControl>,
    pub dcs: Arc<dyn Dcs>,
    pub peers: Arc<dyn Peers>,
    pub hooks: Arc<dyn Hooks>,
    pub clock: Arc<dyn WallClock>,
    pub config: Arc<dyn ConfigSource>,
    pub trace: Arc<dyn Trace>,
    pub watchdogs: Arc<dyn WatchdogDevices>,
    /// Where a virtual IP (`vip:`) is added and removed.
    pub addresses: Arc<dyn Addresses>,
}

/// A network interface's IPv4 addresses, for the virtual IP (`crate::vip`).
#[async_trait]
pub trait Addresses: Send + Sync {
    /// Why the address cannot be managed here (no `CAP_NET_ADMIN`, no such interface), or
    /// `None`; asked once at start.
    async fn unusable(&self, vip: &pgherd_config::Vip) -> Option<String>;
    /// Adds the address, or renews it if present, valid for `lifetime`: the kernel removes it
    /// then unless renewed, so the address of a killed agent does not outlive its lease.
    /// `announce`: a gratuitous ARP follows (when the address is new on this node).
    async fn add(
        &self,
        vip: &pgherd_config::Vip,
        lifetime: std::time::Duration,
        announce: bool,
    ) -> anyhow::Result<()>;
    /// Removes the address if present.
    async fn remove(&self, vip: &pgherd_config::Vip) -> anyhow::Result<()>;
}

/// PostgreSQL control: the operations of `pgherd_postgres::Postgres` the agent uses. It
/// executes and never decides.
#[async_trait]
pub trait PgControl: Send + Sync {
    fn options(&self) -> &PgOptions;
    fn data_dir_state(&self) -> DataDirState;
    /// The major version PostgreSQL runs with (the data directory's, else the programs').
    fn major_version(&self) -> Option<u32>;
    /// The live postmaster of the data directory (a pid check, no query).
    fn postmaster(&self) -> Option<PostmasterInfo>;
    /// The configuration on disk makes PostgreSQL start as a standby (`standby.signal`).
    fn configured_as_standby(&self) -> bool;
    /// A crashed postmaster may linger (a zombie until reaped, children exiting): waits up to
    /// `limit` for the process named in a leftover `postmaster.pid` to be gone.
    async fn wait_stale_postmaster_gone(&self, limit: Duration);

    async fn query_state(&self) -> anyhow::Result<PgState>;
    async fn controldata(&self) -> anyhow::Result<ControlData>;
    async fn read_timeline_history(&self, timeline: u64)
        -> anyhow::Result<Option<TimelineHistory>>;
    async fn sysid(&self) -> anyhow::Result<String>;

    /// Writes postgresql.conf (and the recovery settings of a standby); `true` if it changed.
    async fn write_config(
        &self,
        params: &BTreeMap<String, String>,
        recovery: Option<&RecoveryConf>,
    ) -> anyhow::Result<bool>;
    async fn write_pg_hba(&self, lines: &[String]) -> anyhow::Result<bool>;
    async fn append_pg_hba(&self, lines: &[String]) -> anyhow::Result<()>;
    async fn write_pg_ident(&self, lines: &[String]) -> anyhow::Result<bool>;

    async fn start(&self) -> anyhow::Result<()>;
    async fn stop(&self, mode: StopMode, timeout: Duration) -> anyhow::Result<StopOutcome>;
    async fn restart(&self) -> anyhow::Result<()>;
    async fn promote(&self, wait: bool) -> anyhow::Result<()>;
    async fn reload(&self) -> anyhow::Result<()>;
    async fn checkpoint(&self) -> anyhow::Result<()>;

    async fn initdb(&self, options: &[CliOption]) -> anyhow::Result<()>;
    async fn pg_basebackup(&self, from: &Upstream, options: &[CliOption]) -> anyhow::Result<()>;
    async fn pg_rewind(&self, from: &Upstream) -> anyhow::Result<()>;
    /// Never called without an [`AllowRemoval`] granted by configuration.
    async fn remove_data_dir(
        &self,
        allow: AllowRemoval,
        mode: RemovalMode,
    ) -> anyhow::Result<Option<PathBuf>>;

    async fn set_superuser_password(&self) -> anyhow::Result<()>;
    async fn create_or_update_role(
        &self,
        name: &str,
        password: Option<&str>,
        options: &[String],
    ) -> anyhow::Result<()>;
    async fn grant_rewind_privileges(&self, role: &str) -> anyhow::Result<()>;

    /// Every slot but temporary ones.
    async fn list_slots(&self) -> anyhow::Result<Vec<SlotInfo>>;
    async fn create_physical_slot(&self, name: &str) -> anyhow::Result<bool>;
    async fn create_logical_slot(
        &self,
        name: &str,
        database: &str,
        plugin: &str,
    ) -> anyhow::Result<bool>;
    async fn drop_slot(&self, name: &str) -> anyhow::Result<SlotDrop>;
    /// The logical slots `names` of the primary at `from`, with their state files.
    async fn read_logical_slots(
        &self,
        from: &Upstream,
        names: &[String],
    ) -> anyhow::Result<Vec<pgherd_postgres::CopiedSlot>>;
    /// Writes copied logical slots into the (stopped) data directory.
    async fn install_logical_slots(
        &self,
        slots: Vec<pgherd_postgres::CopiedSlot>,
    ) -> anyhow::Result<()>;
    /// `pg_replication_slot_advance` of a logical slot on this standby; `false` when the WAL
    /// it needs is gone here (copy it again).
    async fn advance_slot(&self, name: &str, database: &str, lsn: u64) -> anyhow::Result<bool>;
}

/// The other members' REST API.
#[async_trait]
pub trait Peers: Send + Sync {
    /// `GET <api_url>` (Patroni's `GET /patroni` body), or `None` when the member does not
    /// answer within the probe timeout.
    async fn status(&self, api_url: &str) -> Option<serde_json::Value>;
    /// `POST /failsafe` with `body` to the member at `api_url` (failsafe mode): `true` only
    /// for a 200 whose body is `Accepted`, within `timeout`.
    async fn failsafe_ping(
        &self,
        api_url: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> bool;
    /// The configuration was reloaded (TLS settings for the probes may have changed).
    fn reconfigure(&self, cfg: &pgherd_config::Config);
}

/// Commands the configuration names: callbacks, `pre_promote`, `post_bootstrap`.
#[async_trait]
pub trait Hooks: Send + Sync {
    /// `postgresql.callbacks.<action>`, started in the background (never awaited).
    fn callback(&self, command: &str, action: pgherd_postgres::CallbackAction, role: &str);
    /// Runs `postgresql.pre_promote`; `Ok(false)` when it refused (non-zero exit).
    async fn pre_promote(&self, command: &str) -> anyhow::Result<bool>;
    /// Runs `bootstrap.post_bootstrap` / `post_init` against the new cluster.
    async fn post_bootstrap(&self, command: &str) -> anyhow::Result<()>;
}

/// A watchdog device (`pgherd_watchdog::Device` in `pgherd agent`). Every call is one short
/// syscall; the policy around it is `crate::watchdog`'s.
pub trait WatchdogDevice: Send {
    /// It exists and is writable: opening it is expected to work.
    fn usable(&self) -> bool;
    fn is_open(&self) -> bool;
    /// Opens the device, which starts its timer.
    fn open(&mut self) -> anyhow::Result<()>;
    fn can_set_timeout(&self) -> bool;
    /// The magic close stops the timer; without it the machine resets after we close.
    fn can_be_disabled(&self) -> bool;
    fn set_timeout(&mut self, seconds: u64) -> anyhow::Result<()>;
    /// The timeout in effect, in seconds.
    fn timeout(&self) -> anyhow::Result<u32>;
    fn keepalive(&mut self) -> anyhow::Result<()>;
    /// Magic close: stops the timer.
    fn close(&mut self) -> anyhow::Result<()>;
    fn describe(&self) -> String;
}

/// Opens the device that `watchdog:` names (a reload may name another); `None` for a driver
/// without a device here (Patroni's null watchdog).
pub trait WatchdogDevices: Send + Sync {
    fn device(&self, cfg: &pgherd_config::Watchdog) -> Option<Box<dyn WatchdogDevice>>;
}

/// Wall-clock time in milliseconds since the Unix epoch (scheduled switchovers and restarts,
/// `dcs_last_seen`); everything else measures with tokio's monotonic time.
pub trait WallClock: Send + Sync {
    fn now_ms(&self) -> i64;

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_millis(self.now_ms()).unwrap_or_default()
    }
}

/// Where the configuration comes from, for reloads (SIGHUP, `POST /reload`).
pub trait ConfigSource: Send + Sync {
    fn load(&self) -> anyhow::Result<Loaded>;
}

/// What the agent decided and did, for observers that check it (the simulator's invariants);
/// the real agent logs instead and uses [`NoTrace`].
pub trait Trace: Send + Sync {
    /// A decision, with the observation it was made on (before it is executed).
    fn decided(&self, _obs: &pgherd_ha::Observation<'_>, _decision: &pgherd_ha::Decision) {}
    /// An action of the current decision was carried out (`ok`: it succeeded, and for a lock
    /// operation, the DCS said yes).
    fn action_done(&self, _action: &pgherd_ha::Action, _ok: bool) {}
    /// A background action ended.
    fn task_ended(&self, _kind: pgherd_ha::AsyncAction, _ok: bool) {}
}

pub struct NoTrace;

impl Trace for NoTrace {}
