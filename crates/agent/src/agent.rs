//! The agent: one HA cycle after another. Each cycle reads the DCS, observes PostgreSQL,
//! asks the engine, executes its actions, publishes the member key and the API snapshot.

use crate::clock::Clock;
use crate::fence::FenceHandle;
use crate::tasks::{RunningTask, TaskContext};
use crate::{observe, report};
use anyhow::Result;
use pgherd_api::NodeSnapshot;
use pgherd_config::{Config, DynamicConfig};
use pgherd_dcs::{Cluster, Dcs, Role};
use pgherd_ha::{Decision, Engine, Millis, Settings};
use pgherd_postgres::{PgState, Postgres};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// pg_rewind attempts before the node stays stopped for a human.
const MAX_REWIND_ATTEMPTS: u32 = 3;

pub struct Agent {
    pub cfg: Arc<Config>,
    pub name: String,
    pub conn_url: String,
    pub api_url: String,
    pub dcs: Arc<dyn Dcs>,
    pub pg: Arc<Postgres>,
    pub engine: Engine,
    pub dynamic: DynamicConfig,
    /// Mod index of the DCS `config` we applied last.
    pub dynamic_index: Option<i64>,
    pub settings: Settings,
    pub clock: Clock,
    /// When (sent-at) the DCS last confirmed our leader lease; `None` when not leader.
    pub lock_confirmed_at: Option<Millis>,
    pub task: Option<RunningTask>,
    /// How postgresql.conf is written: `None` as a primary, `Some("")` as a standby
    /// without upstream, `Some(member)` as a standby streaming from that member.
    pub upstream: Option<String>,
    /// Consecutive pg_rewind failures; reset when the data directory changes.
    pub rewind_failures: u32,
    /// Last status query of the local PostgreSQL (when it answered).
    pub pg_state: Option<PgState>,
    /// We saw PostgreSQL running and it stopped without us stopping it.
    pub crashed: bool,
    /// PostgreSQL was running at the previous cycle (for on_start and crash detection).
    pub was_running: bool,
    pub role: Role,
    pub sysid: Option<String>,
    pub snapshot_tx: watch::Sender<Arc<NodeSnapshot>>,
    /// Replaces the REST API's access control and TLS settings on reload.
    pub api_settings: pgherd_api::SettingsUpdater,
    pub http: reqwest::Client,
    pub fence: FenceHandle,
    pub last_reason: String,
    pub dcs_last_seen: i64,
    pub last_cluster: Option<Arc<Cluster>>,
    /// The last other member seen holding the leader key (proxies must stop routing to it
    /// before we promote).
    pub last_known_leader: Option<String>,
    /// Parameters written to postgresql.conf last time.
    pub applied_params: Option<BTreeMap<String, String>>,
    /// `synchronous_standby_names` as set for synchronous mode (`None`: not managed).
    pub sync_standby_names: Option<String>,
    /// A pre_promote script refused a promotion: no race for the lock until then.
    pub promotion_blocked_until: Option<Millis>,
    /// The configuration file(s) the agent was started with (re-read on reload).
    pub config_path: Option<std::path::PathBuf>,
    /// A restart scheduled through `POST /restart`, and the postmaster start time then.
    pub scheduled_restart: Option<pgherd_api::RestartRequest>,
    pub scheduled_restart_start_time: Option<String>,
    /// The scheduled restart was looked up in our member key (after an agent restart).
    pub restored_schedule: bool,
    /// Since when our standby's WAL receiver has not been streaming.
    pub not_streaming_since: Option<tokio::time::Instant>,
    /// Member slots we created as leader (to drop them when their member leaves).
    pub member_slots: Option<std::collections::BTreeSet<String>>,
}

impl Agent {
    /// One HA cycle. `Err` only for conditions where the agent must exit (fatal).
    pub async fn cycle(&mut self) -> Result<Decision> {
        self.reap_task().await;
        crate::commands::run_scheduled(self).await;

        let cluster = match self.dcs.get_cluster().await {
            Ok(c) => {
                self.dcs_last_seen = chrono::Utc::now().timestamp();
                Some(Arc::new(c))
            }
            Err(e) => {
                warn!("DCS is not accessible: {e}");
                None
            }
        };
        if let Some(c) = &cluster {
            if !self.restored_schedule {
                self.restored_schedule = true;
                crate::commands::restore_from_member(self, c);
            }
            if let Some(l) = c.leader_name().filter(|l| *l != self.name) {
                self.last_known_leader = Some(l.to_string());
            }
            self.apply_dynamic_config(c).await;
            if c.leader_name() != Some(self.name.as_str()) {
                self.set_lock_confirmed(None);
            }
        }
        let local = observe::local_pg(self, cluster.as_deref()).await;
        let peers = match &cluster {
            Some(c) if pgherd_ha::wants_peer_probes(c, &self.settings, &local) => {
                crate::peers::probe_all(&self.http, c, &self.name).await
            }
            _ => Vec::new(),
        };
        let mut settings = self.settings.clone();
        // A failure right after a crash can be transient (old backends still exiting); after
        // a few, stay stopped and say so.
        if self.rewind_failures >= MAX_REWIND_ATTEMPTS {
            settings.use_pg_rewind = false;
        }
        let obs = pgherd_ha::Observation {
            now: self.clock.now(),
            settings: &settings,
            cluster: cluster.as_deref(),
            pg: &local,
            peers: &peers,
            in_progress: self.task.as_ref().map(|t| t.kind),
            lock_confirmed_at: self.lock_confirmed_at,
            promotion_blocked_until: self.promotion_blocked_until,
            wall_clock_ms: chrono::Utc::now().timestamp_millis(),
        };
        let decision = self.engine.step(&obs);
        if decision.reason != self.last_reason {
            info!(member = %self.name, actions = ?decision.actions, "{}", decision.reason);
            self.last_reason = decision.reason.clone();
        } else {
            debug!(member = %self.name, actions = ?decision.actions, "{}", decision.reason);
        }
        crate::execute::run(self, &decision, cluster.as_ref(), &local).await?;

        // Publish what we are now: observe again only if the actions may have changed it.
        let local = if decision.actions.is_empty() {
            local
        } else {
            observe::local_pg(self, cluster.as_deref()).await
        };
        if cluster.is_some() {
            let member = report::member_data(self, &local, cluster.as_deref());
            if let Err(e) = self.dcs.touch_member(&member).await {
                warn!("could not update member key: {e}");
            }
        }
        self.last_cluster = cluster.clone().or(self.last_cluster.take());
        report::publish_snapshot(self, &local, cluster);
        Ok(decision)
    }

    /// Collects a finished background action and logs its outcome.
    pub async fn reap_task(&mut self) {
        let finished = self.task.as_ref().is_some_and(|t| t.handle.is_finished());
        if !finished {
            return;
        }
        if let Some(task) = self.task.take() {
            match task.handle.await {
                Ok(Ok(outcome)) => {
                    info!("{} finished: {}", task.kind.describe(), outcome.message);
                    if self.pg.is_running().is_some() {
                        crate::callbacks::run(
                            &self.pg,
                            &self.cfg,
                            pgherd_postgres::CallbackAction::OnStart,
                            self.role,
                        );
                    }
                    if let Some(u) = outcome.upstream {
                        self.upstream = u;
                    }
                    if outcome.rewind_failed {
                        self.rewind_failures += 1;
                    }
                    if outcome.data_changed {
                        self.rewind_failures = 0;
                        self.applied_params = None;
                    }
                }
                Ok(Err(e)) => warn!("{} failed: {e:#}", task.kind.describe()),
                Err(e) => warn!("{} task died: {e}", task.kind.describe()),
            }
        }
    }

    pub fn set_lock_confirmed(&mut self, at: Option<Millis>) {
        self.lock_confirmed_at = at;
        let deadline = at.map(|t| {
            self.clock.instant(
                t + self
                    .settings
                    .ttl
                    .saturating_sub(self.settings.fencing_margin),
            )
        });
        let _ = self.fence.send(deadline);
    }

    pub fn task_context(&self) -> TaskContext {
        TaskContext {
            cfg: self.cfg.clone(),
            name: self.name.clone(),
            pg: self.pg.clone(),
            dcs: self.dcs.clone(),
            params: self.parameters(),
        }
    }

    /// The server parameters we run with: defaults, DCS, local file, and what pgherd forces.
    pub fn parameters(&self) -> BTreeMap<String, String> {
        let major = self
            .pg
            .data_dir_major_version()
            .ok()
            .flatten()
            .unwrap_or(15);
        let mut params = pgherd_config::effective_parameters(&self.cfg, &self.dynamic, major);
        params.insert(
            "unix_socket_directories".into(),
            self.pg.options().socket_dir.display().to_string(),
        );
        if self.dynamic.synchronous_mode {
            if let Some(names) = &self.sync_standby_names {
                params.insert("synchronous_standby_names".into(), names.clone());
            }
        }
        params
    }

    /// Applies a changed DCS `config`: engine settings, DCS ttl, PostgreSQL parameters.
    async fn apply_dynamic_config(&mut self, cluster: &Cluster) {
        let Some(config) = &cluster.config else {
            return;
        };
        if self.dynamic_index == Some(config.index) {
            return;
        }
        let (dynamic, warnings) = DynamicConfig::from_value(&config.value);
        for w in warnings {
            warn!("DCS config: {w}");
        }
        if self.dynamic_index.is_some() {
            info!("dynamic configuration changed (index {})", config.index);
        }
        if dynamic.ttl != self.dynamic.ttl {
            self.dcs.set_ttl(dynamic.ttl).await;
        }
        if !dynamic.synchronous_mode {
            self.sync_standby_names = None;
        }
        self.dynamic = dynamic;
        self.dynamic_index = Some(config.index);
        self.settings = crate::settings::engine_settings(&self.cfg, &self.name, &self.dynamic);
        self.reload_parameters_if_changed().await;
    }

    /// Rewrites postgresql.conf when the effective parameters changed and reloads a running
    /// server; parameters that need a restart show up as `pending_restart`.
    pub async fn reload_parameters_if_changed(&mut self) {
        let params = self.parameters();
        if self.applied_params.as_ref() == Some(&params) {
            return;
        }
        if !matches!(
            self.pg.data_dir_state(),
            pgherd_postgres::DataDirState::Initialized { .. }
        ) {
            return;
        }
        let recovery = crate::tasks::recovery_conf_for(
            &self.cfg,
            &self.name,
            self.last_cluster.as_deref(),
            self.upstream.as_deref(),
        );
        match self.pg.write_config(&params, recovery.as_ref()) {
            Ok(changed) => {
                if changed && self.pg.is_running().is_some() {
                    if let Err(e) = self.pg.reload().await {
                        warn!("reload after parameter change failed: {e:#}");
                    } else {
                        info!("postgresql.conf changed: reloaded PostgreSQL");
                        crate::callbacks::run(
                            &self.pg,
                            &self.cfg,
                            pgherd_postgres::CallbackAction::OnReload,
                            self.role,
                        );
                    }
                }
                self.applied_params = Some(params);
            }
            Err(e) => warn!("writing postgresql.conf failed: {e:#}"),
        }
    }
}
