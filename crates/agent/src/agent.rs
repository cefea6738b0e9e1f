//! The agent: one HA cycle after another. Each cycle reads the DCS, looks at PostgreSQL, asks
//! the engine, executes its actions, publishes the member key and the API snapshot. The
//! state lives in parts with one owner each: the lease ([`Lease`]), what we know of
//! PostgreSQL ([`PgRuntime`]), the background action ([`Tasks`]), scheduled work
//! ([`Schedules`]), the DCS configuration in force ([`Dynamic`]) and the last cluster view.

use crate::commands::Schedules;
use crate::fence;
use crate::lease::{Clock, Lease};
use crate::runtime::PgRuntime;
use crate::tasks::{OwnedTask, TaskContext, Tasks};
use crate::watchdog::{SharedWatchdog, Watchdog};
use crate::world::World;
use anyhow::{Context, Result};
use pgherd_api::{ApiCommand, NodeSnapshot, SettingsUpdater};
use pgherd_config::{Config, DynamicConfig};
use pgherd_dcs::Cluster;
use pgherd_ha::{Decision, Engine, Observation, Settings};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

/// What others hold of a running agent: its REST snapshot and its command channel (the REST
/// API serves the first and sends management calls to the second).
pub struct AgentHandles {
    pub snapshot: watch::Receiver<Arc<NodeSnapshot>>,
    pub commands: mpsc::Sender<ApiCommand>,
    /// Where the REST API records `POST /failsafe` pings for the agent.
    pub failsafe: pgherd_api::FailsafePings,
}

/// Defects put back for the simulator's planted-bug tests, which show that the simulator
/// finds them. `pgherd agent` never plants any.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// A REST restart awaited inside the HA loop (the loop stops renewing the lease).
    InlineRestart,
    /// No independent fence task.
    NoFence,
    /// The former leader of a switchover races for the lock like any member.
    FormerLeaderRaces,
}

/// This member's identity.
pub struct Me {
    pub name: String,
    pub conn_url: String,
    pub api_url: String,
}

/// The dynamic configuration in force (the DCS `config`, seeded by `bootstrap.dcs`) and the
/// engine settings derived from it and the local file.
pub struct Dynamic {
    pub config: DynamicConfig,
    /// Mod index of the DCS `config` applied last.
    index: Option<i64>,
    pub settings: Settings,
}

/// What the last DCS read said, kept for cycles without one.
#[derive(Default)]
pub struct View {
    pub cluster: Option<Arc<Cluster>>,
    /// Epoch seconds of the last successful DCS read.
    pub last_seen: i64,
    /// The last other member seen holding the leader key (proxies must stop routing to it
    /// before we promote).
    pub last_known_leader: Option<String>,
}

pub struct Agent {
    pub(crate) world: World,
    pub(crate) cfg: Arc<Config>,
    pub(crate) me: Me,
    pub(crate) engine: Engine,
    pub(crate) dynamic: Dynamic,
    pub(crate) lease: Lease,
    pub(crate) watchdog: SharedWatchdog,
    /// The virtual IP (`vip:`), held while primary with a current lease.
    pub(crate) vip: crate::vip::VipKeeper,
    pub(crate) pg: PgRuntime,
    pub(crate) failsafe: crate::failsafe::Failsafe,
    pub(crate) tasks: Tasks,
    pub(crate) schedules: Schedules,
    pub(crate) view: View,
    pub(crate) snapshot_tx: watch::Sender<Arc<NodeSnapshot>>,
    pub(crate) last_reason: String,
    /// Replaces the REST API's access control and TLS settings on reload.
    pub(crate) api_settings: Option<SettingsUpdater>,
    pub(crate) planted: Option<PlantedBug>,
    /// A finished task left a condition the agent must exit on (a cancelled bootstrap).
    fatal: Option<anyhow::Error>,
    commands: mpsc::Receiver<ApiCommand>,
    _fence: OwnedTask<()>,
}

impl Agent {
    /// An agent for `cfg` in `world`; validates what the agent needs from the configuration.
    pub fn new(cfg: Config, world: World) -> Result<(Agent, AgentHandles)> {
        cfg.validate_for_agent()?;
        let name = cfg.name.clone().context("name is required")?;
        let bootstrap_dynamic = match cfg.bootstrap.as_ref() {
            Some(b) if b.dcs.is_object() => DynamicConfig::from_value(&b.dcs).0,
            _ => DynamicConfig::default(),
        };
        let me = Me {
            conn_url: cfg.conn_url()?,
            api_url: cfg.api_url()?,
            name: name.clone(),
        };
        let settings = crate::settings::engine_settings(&cfg, &name, &bootstrap_dynamic);
        let (snapshot_tx, snapshot) =
            watch::channel(Arc::new(NodeSnapshot::new(name, cfg.scope.clone())));
        let (commands_tx, commands) = mpsc::channel(16);
        let watchdog = SharedWatchdog::new(Watchdog::new(
            world.watchdogs.clone(),
            &cfg.watchdog,
            watchdog_timing(&bootstrap_dynamic),
        ));
        let vip = crate::vip::VipKeeper::new(cfg.vip.clone(), world.addresses.clone());
        let (fence, fence_stopping, fence_task) =
            fence::spawn(world.pg.clone(), watchdog.clone(), vip.clone());
        let pg = PgRuntime::new(world.pg.configured_as_standby());
        let pings = pgherd_api::FailsafePings::default();
        let agent = Agent {
            cfg: Arc::new(cfg),
            me,
            engine: Engine::new(),
            dynamic: Dynamic {
                config: bootstrap_dynamic,
                index: None,
                settings,
            },
            lease: Lease::new(Clock::new(), fence, fence_stopping, watchdog.clone()),
            watchdog,
            vip,
            pg,
            failsafe: crate::failsafe::Failsafe::new(pings.clone()),
            tasks: Tasks::default(),
            schedules: Schedules::default(),
            view: View::default(),
            snapshot_tx,
            last_reason: String::new(),
            api_settings: None,
            planted: None,
            fatal: None,
            commands,
            _fence: fence_task,
            world,
        };
        Ok((
            agent,
            AgentHandles {
                snapshot,
                commands: commands_tx,
                failsafe: pings,
            },
        ))
    }

    /// The REST API's settings, replaced when the configuration is reloaded.
    pub fn with_api_settings(mut self, updater: SettingsUpdater) -> Agent {
        self.api_settings = Some(updater);
        self
    }

    #[doc(hidden)]
    pub fn plant(mut self, bug: PlantedBug) -> Agent {
        self.planted = Some(bug);
        match bug {
            PlantedBug::NoFence => self.lease.disarm_fence(),
            PlantedBug::FormerLeaderRaces => self.engine.plant_former_leader_races(),
            PlantedBug::InlineRestart => {}
        }
        self
    }

    /// Runs HA cycles until `stop` resolves (a cycle in progress is abandoned: with the DCS
    /// hung it could take several retry_timeouts, and nothing it was doing matters more than
    /// stopping), then stops cleanly within a bound (`crate::shutdown`). `Err` only for
    /// conditions where the agent must exit (e.g. the data directory belongs to another
    /// cluster); the clean stop is skipped then.
    pub async fn run(mut self, stop: impl Future<Output = ()>) -> Result<()> {
        let result = tokio::select! {
            biased;
            () = stop => Ok(()),
            result = self.run_loop() => result,
        };
        if let Err(e) = &result {
            error!("{e:#}");
        }
        crate::shutdown::stop(&mut self, result.is_ok()).await;
        result
    }

    async fn run_loop(&mut self) -> Result<()> {
        let mut changes = self.world.dcs.subscribe();
        loop {
            let started = tokio::time::Instant::now();
            self.cycle().await?;
            let loop_wait = Duration::from_millis(self.dynamic.settings.loop_wait);
            let deadline = crate::commands::next_scheduled_switchover(self)
                .map_or(started + loop_wait, |at| at.min(started + loop_wait));
            self.wait_for_next_cycle(deadline, &mut changes).await?;
        }
    }

    /// Sleeps until the next cycle, waking early when something that matters changes in the
    /// DCS (the leader key, a failover request, the configuration), a background action
    /// ends, the postmaster dies or comes up, or a REST command asks for it.
    async fn wait_for_next_cycle(
        &mut self,
        deadline: tokio::time::Instant,
        changes: &mut watch::Receiver<u64>,
    ) -> Result<()> {
        let fingerprint = self.view.cluster.as_deref().map(wake_fingerprint);
        loop {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline) => return Ok(()),
                () = self.tasks.ended() => return Ok(()),
                Some(command) = self.commands.recv() => {
                    if crate::commands::handle(self, command).await {
                        return Ok(());
                    }
                }
                // A postmaster that died (or came up) is acted on at once rather than at
                // the next loop_wait: a cheap pid check, no query.
                () = tokio::time::sleep(Duration::from_millis(200)), if !self.tasks.is_running() => {
                    if self.world.pg.postmaster().is_some() != self.pg.was_running() {
                        return Ok(());
                    }
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        anyhow::bail!("the DCS watch ended");
                    }
                    if let Ok(c) = self.world.dcs.get_cluster().await {
                        if Some(wake_fingerprint(&c)) != fingerprint {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// One HA cycle. `Err` only for conditions where the agent must exit (fatal).
    pub(crate) async fn cycle(&mut self) -> Result<Decision> {
        self.reap_task().await;
        // Parameters changed (reload, DCS config) while a task ran are written now.
        self.reload_parameters_if_changed().await;
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        crate::commands::run_scheduled(self).await;

        // With failsafe mode, a leader gives up on a slow DCS read in time to ask the
        // members instead (crate::failsafe).
        let read = self.world.dcs.get_cluster();
        let read_started = tokio::time::Instant::now();
        let read = match crate::failsafe::read_deadline(self) {
            Some(deadline) => match tokio::time::timeout_at(deadline, read).await {
                Ok(result) => result,
                Err(_) => Err(pgherd_dcs::DcsError::Timeout {
                    doing: "reading the cluster (given up: the failsafe check is due)",
                    seconds: read_started.elapsed().as_secs_f64(),
                }),
            },
            None => read.await,
        };
        let cluster = match read {
            Ok(c) => {
                self.view.last_seen = self.world.clock.now_ms() / 1000;
                self.failsafe.dcs_answered();
                Some(Arc::new(crate::failsafe::with_pinging_leader(self, c)))
            }
            Err(e) => {
                warn!("DCS is not accessible: {e}");
                None
            }
        };
        if let Some(c) = &cluster {
            crate::commands::restore_from_member(self, c);
            if let Some(l) = c.leader_name().filter(|l| *l != self.me.name) {
                self.view.last_known_leader = Some(l.to_string());
            }
            self.apply_dynamic_config(c).await;
            if c.leader_name() != Some(self.me.name.as_str()) {
                self.lease.clear();
            }
        }
        let local = self.observe(cluster.as_deref()).await;
        let failsafe_confirmed = cluster.is_none()
            && self.dynamic.config.failsafe_mode
            && self.lease.held()
            && local.is_primary()
            && !self.view.cluster.as_ref().is_some_and(|c| c.is_paused())
            && crate::failsafe::confirm_by_members(self).await;
        let peers = match &cluster {
            Some(c) if pgherd_ha::wants_peer_probes(c, &self.dynamic.settings, &local) => {
                let failsafe = c
                    .failsafe
                    .as_ref()
                    .filter(|_| self.dynamic.config.failsafe_mode);
                crate::peers::probe_all(self.world.peers.as_ref(), c, failsafe, &self.me.name).await
            }
            _ => Vec::new(),
        };
        let mut settings = self.dynamic.settings.clone();
        // A failure right after a crash can be transient (old backends still exiting); after
        // a few, stay stopped and say so.
        if self.pg.rewind_exhausted() {
            settings.use_pg_rewind = false;
        }
        let obs = Observation {
            now: self.lease.now(),
            settings: &settings,
            cluster: cluster.as_deref(),
            pg: &local,
            peers: &peers,
            in_progress: self.tasks.kind(),
            lock_confirmed_at: self.lease.confirmed_at(),
            promotion_blocked_until: self.schedules.promotion_blocked_until,
            wall_clock_ms: self.world.clock.now_ms(),
            watchdog_allows_leadership: self.watchdog.with(|w| w.allows_leadership()),
            failsafe_confirmed,
        };
        let decision = self.engine.step(&obs);
        self.world.trace.decided(&obs, &decision);
        if decision.reason != self.last_reason {
            info!(member = %self.me.name, actions = ?decision.actions, "{}", decision.reason);
            self.last_reason = decision.reason.clone();
        } else {
            debug!(member = %self.me.name, actions = ?decision.actions, "{}", decision.reason);
        }
        crate::execute::run(self, &decision, cluster.as_ref(), &local).await?;

        // Publish what we are now: look again only if the actions may have changed it.
        let local = if decision.actions.is_empty() {
            local
        } else {
            self.observe(cluster.as_deref()).await
        };
        self.keep_watchdog(&local, cluster.as_deref());
        // Not while a background action runs: a demotion releases the address before its
        // stop begins, and a restart or promotion is not serving as a primary yet.
        let primary = local.running && local.queryable && !local.in_recovery;
        let serving = primary && !self.tasks.is_running();
        // Held no longer than our leader key could last: a killed agent's address expires
        // before another member can take the key.
        let settings = &self.dynamic.settings;
        let vip_lifetime = (serving && self.lease.current(settings))
            .then(|| self.lease.key_expires_in(settings.ttl))
            .flatten()
            .map(Duration::from_millis);
        self.vip.hold(vip_lifetime).await;
        if cluster.is_some() {
            let member = crate::report::member_data(self, &local, cluster.as_deref());
            if let Err(e) = self.world.dcs.touch_member(&member).await {
                warn!("could not update member key: {e}");
            }
        }
        // A running replica keeps the slots of the members that stream from it and drops
        // unknown ones, as Patroni's replicas (the leader does this after its renewal); after
        // the member key, so that slot queries never delay it.
        if let Some(c) = &cluster {
            if local.running
                && local.queryable
                && local.in_recovery
                && !self.tasks.is_running()
                && c.leader_name() != Some(self.me.name.as_str())
            {
                let synced = crate::slots::sync(self, c, crate::slots::Role::Replica).await;
                self.copy_logical_slots(c, synced.to_copy);
            }
        }
        if cluster.is_some() {
            self.view.cluster = cluster.clone();
        }
        crate::report::publish_snapshot(self, &local, cluster);
        Ok(decision)
    }

    /// Starts copying permanent logical slots from the leader (a restart of this standby) in
    /// the background, as Patroni's `copy_logical_slots`.
    fn copy_logical_slots(
        &mut self,
        cluster: &Arc<Cluster>,
        wanted: BTreeMap<String, pgherd_postgres::LogicalSlot>,
    ) {
        let now = self.lease.now();
        if wanted.is_empty()
            || self.tasks.is_running()
            || self.schedules.slot_copy_after.is_some_and(|at| now < at)
        {
            return;
        }
        // A copy (a restart) is not repeated at once when it did not help.
        self.schedules.slot_copy_after = Some(now + SLOT_COPY_BACKOFF_MS);
        let Some(leader) = cluster.leader_name() else {
            return;
        };
        let Some(from) = crate::tasks::member_upstream(Some(cluster), leader) else {
            return;
        };
        let ctx = self.task_context();
        let (cluster, replication) = (cluster.clone(), self.pg.replication.clone());
        let task = ctx.copy_logical_slots(cluster, from, wanted, replication);
        self.tasks
            .start(pgherd_ha::AsyncAction::Restart, self.lease.held(), task);
    }

    /// The watchdog runs while we hold the lock with PostgreSQL a primary (armed now if it is
    /// not yet: an agent restarted under a running primary), and is disabled once PostgreSQL
    /// no longer runs as a primary or the cluster is paused. A promotion in progress arms it
    /// itself (`crate::tasks`), before `pg_ctl promote`.
    fn keep_watchdog(&mut self, local: &pgherd_ha::LocalPg, cluster: Option<&Cluster>) {
        let paused = cluster.is_some_and(|c| c.is_paused());
        let primary = local.running && !local.in_recovery;
        let promoting = self.tasks.kind() == Some(pgherd_ha::AsyncAction::Promote);
        let lease_held = self.lease.held();
        self.watchdog.with(|w| {
            if paused || !(primary || promoting) {
                w.disable();
            } else if lease_held && primary && !w.is_running() {
                // `required` and no safe device: the next cycle's engine demotes
                // (`watchdog_allows_leadership` is false now).
                w.activate();
            }
        });
    }

    /// PostgreSQL as the engine sees it this cycle.
    pub(crate) async fn observe(&mut self, cluster: Option<&Cluster>) -> pgherd_ha::LocalPg {
        let facts = crate::observe::look(self.world.pg.as_ref()).await;
        let patience =
            Duration::from_millis(self.dynamic.settings.loop_wait * 2).max(Duration::from_secs(5));
        self.pg.record(
            facts,
            &self.me.name,
            cluster,
            self.dynamic.config.synchronous_mode,
            self.tasks.is_running(),
            patience,
        )
    }

    /// Collects a finished background action: applies what it changed, answers whoever waits
    /// for it, and logs its outcome.
    pub(crate) async fn reap_task(&mut self) {
        let Some((task, result)) = self.tasks.take_finished().await else {
            return;
        };
        let reply = match result {
            Ok(outcome) => {
                info!("{} finished: {}", task.kind.describe(), outcome.message);
                self.world.trace.task_ended(task.kind, true);
                if let Some(r) = outcome.replication.clone() {
                    self.pg.replication = r;
                }
                if outcome.rewind_failed {
                    self.pg.rewind_failed();
                }
                if outcome.data_changed {
                    self.pg.data_changed();
                }
                if outcome.stopped {
                    self.pg.stopped_by_us();
                }
                if outcome.released_lock {
                    self.lease.clear();
                }
                if outcome.promotion_refused {
                    self.schedules.promotion_blocked_until =
                        Some(self.lease.now() + self.dynamic.settings.ttl);
                }
                if outcome.promoted {
                    self.pg.set_role(pgherd_dcs::Role::Primary);
                    self.pg.params_written(self.parameters());
                    self.callback(pgherd_postgres::CallbackAction::OnRoleChange);
                } else if outcome.stopped || outcome.released_lock {
                    self.pg.set_role(pgherd_dcs::Role::Demoted);
                    self.callback(pgherd_postgres::CallbackAction::OnRoleChange);
                } else if task.kind == pgherd_ha::AsyncAction::Restart {
                    self.callback(pgherd_postgres::CallbackAction::OnRestart);
                } else if self.world.pg.postmaster().is_some() {
                    self.callback(pgherd_postgres::CallbackAction::OnStart);
                }
                // A command on the leader must not report success if the leadership was lost
                // meanwhile (e.g. a slow restart that cost the lease), nor a restart whose
                // server is gone again (stopped by the fence while the loop was stuck).
                let lease_lost = task.was_leader
                    && !outcome.released_lock
                    && !self.lease.current(&self.dynamic.settings);
                let restarted_down = task.kind == pgherd_ha::AsyncAction::Restart
                    && (self.world.pg.postmaster().is_none() || self.lease.fence_stopping());
                if lease_lost {
                    Err(pgherd_api::Refusal::unavailable(format!(
                        "{}: the leader lock was lost meanwhile",
                        outcome.message
                    )))
                } else if restarted_down {
                    Err(pgherd_api::Refusal::unavailable(
                        "restart failed: PostgreSQL is not running any more".to_string(),
                    ))
                } else {
                    Ok(outcome.message)
                }
            }
            Err(e) => {
                self.world.trace.task_ended(task.kind, false);
                // Patroni raises PatroniFatalException after cancel_initialization: no second
                // bootstrap attempt from this process (docs/compat.md#bootstrap).
                if e.downcast_ref::<crate::tasks::BootstrapFailed>().is_none() {
                    warn!("{} failed: {e:#}", task.kind.describe());
                } else {
                    self.fatal = Some(anyhow::anyhow!(
                        "{e:#}; the data directory was kept as \
                         <data_dir>.failed and the initialize key removed; fix the cause and \
                         start the agent again"
                    ));
                }
                Err(pgherd_api::Refusal::unavailable(format!(
                    "{} failed: {e:#}",
                    task.kind.describe()
                )))
            }
        };
        if let Some(r) = task.reply {
            let _ = r.send(reply);
        }
    }

    /// Runs a configured callback in the background.
    pub(crate) fn callback(&self, action: pgherd_postgres::CallbackAction) {
        let cb = &self.cfg.postgresql.callbacks;
        let command = match action {
            pgherd_postgres::CallbackAction::OnStart => &cb.on_start,
            pgherd_postgres::CallbackAction::OnStop => &cb.on_stop,
            pgherd_postgres::CallbackAction::OnRestart => &cb.on_restart,
            pgherd_postgres::CallbackAction::OnReload => &cb.on_reload,
            pgherd_postgres::CallbackAction::OnRoleChange => &cb.on_role_change,
        };
        if let Some(command) = command {
            self.world
                .hooks
                .callback(command, action, self.pg.role().as_str());
        }
    }

    pub(crate) fn task_context(&self) -> TaskContext {
        TaskContext {
            cfg: self.cfg.clone(),
            name: self.me.name.clone(),
            pg: self.world.pg.clone(),
            dcs: self.world.dcs.clone(),
            hooks: self.world.hooks.clone(),
            params: self.parameters(),
            use_slots: self.dynamic.config.postgresql.use_slots,
            watchdog: self.watchdog.clone(),
            retry_timeout: Duration::from_millis(self.dynamic.settings.retry_timeout),
            lease_current_until: self.lease.current_until(),
        }
    }

    /// The server parameters we run with: defaults, DCS, local file, and what pgherd forces.
    pub(crate) fn parameters(&self) -> BTreeMap<String, String> {
        let major = self
            .world
            .pg
            .major_version()
            .unwrap_or(pgherd_postgres::NEWEST_KNOWN_MAJOR);
        let mut params =
            pgherd_config::effective_parameters(&self.cfg, &self.dynamic.config, major);
        params.insert(
            "unix_socket_directories".into(),
            self.world.pg.options().socket_dir.display().to_string(),
        );
        if self.dynamic.config.synchronous_mode {
            if let Some(names) = self.pg.sync_standby_names() {
                params.insert("synchronous_standby_names".into(), names.to_string());
            }
        }
        if crate::slots::wants_logical_copies(
            self.dynamic.config.postgresql.use_slots,
            self.dynamic.settings.nofailover,
            self.dynamic.config.slots.as_ref(),
        ) {
            params.insert("hot_standby_feedback".into(), "on".into());
        }
        params
    }

    /// Writes postgresql.conf with the current parameters and recovery settings; returns
    /// whether it changed. How the server is configured is what was written (a standby whose
    /// upstream's address is unknown is configured detached, and remembered so).
    pub(crate) async fn write_server_config(&mut self, cluster: Option<&Cluster>) -> Result<bool> {
        let params = self.parameters();
        let (recovery, effective) = crate::tasks::recovery_conf_for(
            &self.cfg,
            &self.me.name,
            self.dynamic.config.postgresql.use_slots,
            cluster,
            &self.pg.replication,
        );
        let changed = self
            .world
            .pg
            .write_config(&params, recovery.as_ref())
            .await?;
        self.pg.replication = effective;
        self.pg.params_written(params);
        Ok(changed)
    }

    /// Applies a changed DCS `config`: engine settings, DCS ttl, PostgreSQL parameters.
    async fn apply_dynamic_config(&mut self, cluster: &Cluster) {
        let Some(config) = &cluster.config else {
            return;
        };
        if self.dynamic.index == Some(config.index) {
            return;
        }
        let (dynamic, warnings) = DynamicConfig::from_value(&config.value);
        for w in warnings {
            warn!("DCS config: {w}");
        }
        if self.dynamic.index.is_some() {
            info!("dynamic configuration changed (index {})", config.index);
        }
        if dynamic.ttl != self.dynamic.config.ttl {
            self.world.dcs.set_ttl(dynamic.ttl).await;
        }
        if watchdog_timing(&dynamic) != watchdog_timing(&self.dynamic.config) {
            let (cfg, timing) = (&self.cfg.watchdog, watchdog_timing(&dynamic));
            self.watchdog.with(|w| w.reconfigure(cfg, timing));
        }
        if !dynamic.synchronous_mode {
            self.pg.set_sync_standby_names(None);
        }
        self.dynamic.settings =
            crate::settings::engine_settings(&self.cfg, &self.me.name, &dynamic);
        self.dynamic.config = dynamic;
        self.dynamic.index = Some(config.index);
        self.reload_parameters_if_changed().await;
    }

    /// Rewrites postgresql.conf when the effective parameters changed and reloads a running
    /// server; parameters that need a restart show up as `pending_restart`.
    pub(crate) async fn reload_parameters_if_changed(&mut self) {
        let params = self.parameters();
        if self.pg.applied_params() == Some(&params) {
            return;
        }
        // A start, restart, promotion or rewind under way writes the configuration itself,
        // with the replication it is about to set up (the runtime learns it when the task
        // ends): writing now would undo it. The next cycle after the task writes instead.
        if self.tasks.is_running() {
            return;
        }
        if !matches!(
            self.world.pg.data_dir_state(),
            pgherd_postgres::DataDirState::Initialized { .. }
        ) {
            return;
        }
        let cluster = self.view.cluster.clone();
        match self.write_server_config(cluster.as_deref()).await {
            Ok(changed) => {
                if changed && self.world.pg.postmaster().is_some() {
                    if let Err(e) = self.world.pg.reload().await {
                        warn!("reload after parameter change failed: {e:#}");
                    } else {
                        info!("postgresql.conf changed: reloaded PostgreSQL");
                        self.callback(pgherd_postgres::CallbackAction::OnReload);
                    }
                }
            }
            Err(e) => warn!("writing postgresql.conf failed: {e:#}"),
        }
    }
}

/// Between two copies of logical slots from the primary (each restarts PostgreSQL).
const SLOT_COPY_BACKOFF_MS: u64 = 15_000;

/// The parts of the cluster whose change should run a cycle at once: leader, failover
/// index, config index, sync index, initialize.
type WakeFingerprint = (
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

pub(crate) fn watchdog_timing(dynamic: &DynamicConfig) -> crate::watchdog::Timing {
    crate::watchdog::Timing {
        ttl: dynamic.ttl,
        loop_wait: dynamic.loop_wait,
        fencing_margin: crate::settings::fencing_margin(dynamic.ttl),
    }
}

fn wake_fingerprint(c: &Cluster) -> WakeFingerprint {
    (
        c.leader_name().map(str::to_string),
        c.failover.as_ref().map(|f| f.index),
        c.config.as_ref().map(|f| f.index),
        c.sync.as_ref().map(|f| f.index),
        c.initialize.clone(),
    )
}
