//! The real world of `pgherd agent`: PostgreSQL through `pgherd_postgres`, peers over HTTP(S),
//! hooks as shell commands, the system clock, configuration files.

use crate::world::{ConfigSource, Hooks, Peers, PgControl, WallClock};
use anyhow::{Context, Result};
use async_trait::async_trait;
use pgherd_config::Loaded;
use pgherd_postgres::{
    AllowRemoval, CallbackAction, CliOption, ControlData, DataDirState, PgOptions, PgState,
    Postgres, PostmasterInfo, RecoveryConf, RemovalMode, SlotDrop, SlotInfo, StopMode, StopOutcome,
    TimelineHistory, Upstream,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::{info, warn};

/// `pgherd_postgres::Postgres` as the agent's [`PgControl`]; file work that blocks runs on
/// tokio's blocking pool.
pub struct RealPostgres(pub Arc<Postgres>);

impl RealPostgres {
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Postgres) -> pgherd_postgres::Result<T> + Send + 'static,
    ) -> Result<T> {
        let pg = self.0.clone();
        let result = tokio::task::spawn_blocking(move || f(&pg))
            .await
            .with_context(|| format!("{what}: the blocking task died"))?;
        Ok(result?)
    }
}

#[async_trait]
impl PgControl for RealPostgres {
    fn options(&self) -> &PgOptions {
        self.0.options()
    }
    fn data_dir_state(&self) -> DataDirState {
        self.0.data_dir_state()
    }
    fn major_version(&self) -> Option<u32> {
        self.0.major_version()
    }
    fn postmaster(&self) -> Option<PostmasterInfo> {
        self.0.is_running()
    }
    fn configured_as_standby(&self) -> bool {
        self.0.options().data_dir.join("standby.signal").exists()
    }
    async fn wait_stale_postmaster_gone(&self, limit: Duration) {
        let pid_file = self.0.options().data_dir.join("postmaster.pid");
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        else {
            return;
        };
        if self.0.is_running().is_some() {
            return;
        }
        let deadline = tokio::time::Instant::now() + limit;
        let pid = nix::unistd::Pid::from_raw(pid);
        while nix::sys::signal::kill(pid, None).is_ok() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    async fn query_state(&self) -> Result<PgState> {
        Ok(self.0.query_state().await?)
    }
    async fn controldata(&self) -> Result<ControlData> {
        Ok(self.0.controldata().await?)
    }
    async fn read_timeline_history(&self, timeline: u64) -> Result<Option<TimelineHistory>> {
        self.blocking("reading a timeline history file", move |pg| {
            pg.read_timeline_history(timeline)
        })
        .await
    }
    async fn sysid(&self) -> Result<String> {
        Ok(self.0.sysid().await?)
    }
    async fn write_config(
        &self,
        params: &BTreeMap<String, String>,
        recovery: Option<&RecoveryConf>,
    ) -> Result<bool> {
        let (params, recovery) = (params.clone(), recovery.cloned());
        self.blocking("writing postgresql.conf", move |pg| {
            pg.write_config(&params, recovery.as_ref())
        })
        .await
    }
    async fn write_pg_hba(&self, lines: &[String]) -> Result<bool> {
        let lines = lines.to_vec();
        self.blocking("writing pg_hba.conf", move |pg| pg.write_pg_hba(&lines))
            .await
    }
    async fn append_pg_hba(&self, lines: &[String]) -> Result<()> {
        let lines = lines.to_vec();
        self.blocking("writing pg_hba.conf", move |pg| pg.append_pg_hba(&lines))
            .await
    }
    async fn write_pg_ident(&self, lines: &[String]) -> Result<bool> {
        let lines = lines.to_vec();
        self.blocking("writing pg_ident.conf", move |pg| pg.write_pg_ident(&lines))
            .await
    }
    async fn start(&self) -> Result<()> {
        Ok(self.0.start().await?)
    }
    async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<StopOutcome> {
        Ok(self.0.stop(mode, timeout).await?)
    }
    async fn restart(&self) -> Result<()> {
        Ok(self.0.restart().await?)
    }
    async fn promote(&self, wait: bool) -> Result<()> {
        Ok(self.0.promote(wait).await?)
    }
    async fn reload(&self) -> Result<()> {
        Ok(self.0.reload().await?)
    }
    async fn checkpoint(&self) -> Result<()> {
        Ok(self.0.checkpoint().await?)
    }
    async fn initdb(&self, options: &[CliOption]) -> Result<()> {
        Ok(self.0.initdb(options).await?)
    }
    async fn pg_basebackup(&self, from: &Upstream, options: &[CliOption]) -> Result<()> {
        Ok(self.0.pg_basebackup(from, options).await?)
    }
    async fn pg_rewind(&self, from: &Upstream) -> Result<()> {
        Ok(self.0.pg_rewind(from, false).await?)
    }
    async fn remove_data_dir(
        &self,
        allow: AllowRemoval,
        mode: RemovalMode,
    ) -> Result<Option<PathBuf>> {
        self.blocking("removing the data directory", move |pg| {
            pg.remove_data_dir(allow, mode)
        })
        .await
    }
    async fn set_superuser_password(&self) -> Result<()> {
        Ok(self.0.set_superuser_password().await?)
    }
    async fn create_or_update_role(
        &self,
        name: &str,
        password: Option<&str>,
        options: &[String],
    ) -> Result<()> {
        Ok(self
            .0
            .create_or_update_role(name, password, options)
            .await?)
    }
    async fn grant_rewind_privileges(&self, role: &str) -> Result<()> {
        Ok(self.0.grant_rewind_privileges(role).await?)
    }
    async fn list_slots(&self) -> Result<Vec<SlotInfo>> {
        Ok(self.0.list_slots().await?)
    }
    async fn create_logical_slot(&self, name: &str, database: &str, plugin: &str) -> Result<bool> {
        Ok(self.0.create_logical_slot(name, database, plugin).await?)
    }
    async fn create_physical_slot(&self, name: &str) -> Result<bool> {
        Ok(self.0.create_physical_slot(name).await?)
    }
    async fn drop_slot(&self, name: &str) -> Result<SlotDrop> {
        Ok(self.0.drop_slot(name).await?)
    }
    async fn read_logical_slots(
        &self,
        from: &Upstream,
        names: &[String],
    ) -> Result<Vec<pgherd_postgres::CopiedSlot>> {
        Ok(self.0.read_logical_slots(from, names).await?)
    }
    async fn install_logical_slots(&self, slots: Vec<pgherd_postgres::CopiedSlot>) -> Result<()> {
        self.blocking("installing copied logical slots", move |pg| {
            pg.install_logical_slots(&slots)
        })
        .await
    }
    async fn advance_slot(&self, name: &str, database: &str, lsn: u64) -> Result<bool> {
        Ok(self.0.advance_slot(name, database, lsn).await?)
    }
}

/// Peers answer from memory; a node that does not answer within this is treated as down.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// `GET /patroni` over HTTP(S), with the `ctl` TLS settings (falling back to `restapi`), as
/// patronictl and Patroni's own peer requests use them.
pub struct HttpPeers(Mutex<reqwest::Client>);

impl HttpPeers {
    fn http(&self) -> reqwest::Client {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl HttpPeers {
    pub fn new(cfg: &pgherd_config::Config) -> Result<HttpPeers> {
        Ok(HttpPeers(Mutex::new(client(cfg)?)))
    }
}

/// Patroni's own requests to members carry the `ctl` (else `restapi`) credentials:
/// `POST /failsafe` needs them where the REST API requires authentication.
fn client(cfg: &pgherd_config::Config) -> Result<reqwest::Client> {
    let auth = cfg
        .ctl
        .authentication
        .as_ref()
        .or(cfg.restapi.authentication.as_ref())
        .and_then(pgherd_api::tls::basic_authorization);
    pgherd_api::tls::ClientTls::from_config(&cfg.ctl, &cfg.restapi)
        .http_client(auth.as_deref(), PROBE_TIMEOUT)
        .map_err(|e| anyhow::anyhow!("ctl/restapi TLS settings for peer probes: {e}"))
}

#[async_trait]
impl Peers for HttpPeers {
    async fn status(&self, api_url: &str) -> Option<serde_json::Value> {
        self.http()
            .get(api_url)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    async fn failsafe_ping(
        &self,
        api_url: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> bool {
        let Some(url) = pgherd_api::tls::endpoint_url(api_url, "failsafe") else {
            warn!("failsafe: {api_url} is not a usable REST API URL");
            return false;
        };
        let request = self.http().post(&url).json(body).timeout(timeout);
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                info!("failsafe: {url} answered {status}: {text}");
                status == reqwest::StatusCode::OK && text == "Accepted"
            }
            Err(e) => {
                warn!("failsafe: POST {url} failed: {e}");
                false
            }
        }
    }

    fn reconfigure(&self, cfg: &pgherd_config::Config) {
        match client(cfg) {
            Ok(http) => *self.0.lock().unwrap_or_else(PoisonError::into_inner) = http,
            Err(e) => warn!("reload: peer probes keep their TLS settings: {e:#}"),
        }
    }
}

/// Hooks as shell commands, the way Patroni runs them.
pub struct ShellHooks {
    pub pg: Arc<Postgres>,
    pub scope: String,
    /// `postgresql.use_unix_socket`: `post_bootstrap` gets the socket directory as its host.
    pub post_bootstrap_over_socket: bool,
}

#[async_trait]
impl Hooks for ShellHooks {
    fn callback(&self, command: &str, action: CallbackAction, role: &str) {
        if let Err(e) = self.pg.run_callback(command, action, role, &self.scope) {
            warn!("callback {} failed to start: {e}", action.as_str());
        }
    }

    async fn pre_promote(&self, command: &str) -> Result<bool> {
        let status = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .status()
            .await
            .with_context(|| format!("running pre_promote {command}"))?;
        if !status.success() {
            warn!("pre_promote {command} exited with {status}");
        }
        Ok(status.success())
    }

    /// Patroni's `call_post_bootstrap` (`Postgres::run_post_bootstrap`, docs/compat.md#bootstrap).
    async fn post_bootstrap(&self, command: &str) -> Result<()> {
        Ok(self
            .pg
            .run_post_bootstrap(command, self.post_bootstrap_over_socket)
            .await?)
    }
}

pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// The YAML file(s) and `PATRONI_*` variables the agent was started with.
pub struct FileConfig(pub Option<PathBuf>);

impl ConfigSource for FileConfig {
    fn load(&self) -> Result<Loaded> {
        Ok(pgherd_config::load_from_process_env(self.0.as_deref())?)
    }
}

/// The watchdog devices of `pgherd_watchdog`: the Linux API and Patroni's `testing` pipe.
pub struct DeviceWatchdogs;

impl crate::world::WatchdogDevices for DeviceWatchdogs {
    fn device(
        &self,
        cfg: &pgherd_config::Watchdog,
    ) -> Option<Box<dyn crate::world::WatchdogDevice>> {
        match pgherd_watchdog::Driver::parse(&cfg.driver) {
            Ok(driver) => Some(Box::new(pgherd_watchdog::Device::new(driver, &cfg.device))),
            Err(e) => {
                warn!("watchdog: {e}; running without one");
                None
            }
        }
    }
}

impl crate::world::WatchdogDevice for pgherd_watchdog::Device {
    fn usable(&self) -> bool {
        pgherd_watchdog::Device::usable(self)
    }
    fn is_open(&self) -> bool {
        pgherd_watchdog::Device::is_open(self)
    }
    fn open(&mut self) -> Result<()> {
        Ok(pgherd_watchdog::Device::open(self)?)
    }
    fn can_set_timeout(&self) -> bool {
        pgherd_watchdog::Device::can_set_timeout(self)
    }
    fn can_be_disabled(&self) -> bool {
        pgherd_watchdog::Device::can_be_disabled(self)
    }
    fn set_timeout(&mut self, seconds: u64) -> Result<()> {
        Ok(pgherd_watchdog::Device::set_timeout(self, seconds)?)
    }
    fn timeout(&self) -> Result<u32> {
        Ok(pgherd_watchdog::Device::timeout(self)?)
    }
    fn keepalive(&mut self) -> Result<()> {
        Ok(pgherd_watchdog::Device::keepalive(self)?)
    }
    fn close(&mut self) -> Result<()> {
        Ok(pgherd_watchdog::Device::close(self)?)
    }
    fn describe(&self) -> String {
        pgherd_watchdog::Device::describe(self)
    }
}

/// The virtual IP with iproute2's `ip` and iputils' `arping` (Debian `iproute2`,
/// `iputils-arping`).
pub struct IpAddresses;

/// Bit of `CAP_NET_ADMIN` in `/proc/self/status`'s `CapEff` (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

async fn run_command(program: &str, args: &[&str]) -> Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::process::Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{program} {} did not finish within 5 s", args.join(" ")))?
    .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl IpAddresses {
    async fn present(vip: &pgherd_config::Vip) -> Result<bool> {
        let out = run_command("ip", &["-4", "-o", "addr", "show", "dev", &vip.interface]).await?;
        let want = format!("inet {}/", vip.ip);
        Ok(out.contains(&want))
    }
}

#[async_trait]
impl crate::world::Addresses for IpAddresses {
    async fn unusable(&self, vip: &pgherd_config::Vip) -> Option<String> {
        let status = tokio::fs::read_to_string("/proc/self/status").await.ok()?;
        let cap_eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or(0);
        if cap_eff & (1 << CAP_NET_ADMIN) == 0 {
            return Some(
                "the agent lacks CAP_NET_ADMIN (systemd: AmbientCapabilities=CAP_NET_ADMIN)".into(),
            );
        }
        match run_command("ip", &["-4", "-o", "addr", "show", "dev", &vip.interface]).await {
            Ok(_) => None,
            Err(e) => Some(format!("interface {}: {e:#}", vip.interface)),
        }
    }

    async fn add(
        &self,
        vip: &pgherd_config::Vip,
        lifetime: Duration,
        announce: bool,
    ) -> Result<()> {
        // `replace` adds the address or renews its lifetime (whole seconds, at least 1).
        let cidr = format!("{}/{}", vip.ip, vip.prefix);
        let lft = lifetime.as_secs().max(1).to_string();
        run_command(
            "ip",
            &[
                "addr",
                "replace",
                &cidr,
                "dev",
                &vip.interface,
                "valid_lft",
                &lft,
                "preferred_lft",
                &lft,
            ],
        )
        .await?;
        if announce {
            // Unsolicited ARP so that neighbours drop the former holder's MAC at once.
            let ip = vip.ip.to_string();
            if let Err(e) =
                run_command("arping", &["-U", "-c", "1", "-I", &vip.interface, &ip]).await
            {
                tracing::warn!(
                    "vip: gratuitous ARP for {ip} on {} failed: {e:#}",
                    vip.interface
                );
            }
        }
        Ok(())
    }

    async fn remove(&self, vip: &pgherd_config::Vip) -> Result<()> {
        if Self::present(vip).await? {
            let cidr = format!("{}/{}", vip.ip, vip.prefix);
            run_command("ip", &["addr", "del", &cidr, "dev", &vip.interface]).await?;
        }
        Ok(())
    }
}
