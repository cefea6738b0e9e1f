//! Long actions (bootstrap, clone, start, stop, restart, promote, rewind, reinitialize) run
//! as background tasks, so the HA loop keeps renewing the leader lease and publishing its
//! state meanwhile: nothing the loop awaits may outlast the fencing margin.

use crate::world::{Hooks, PgControl};
use anyhow::{bail, Context, Result};
use pgherd_api::{CommandResult, Refusal};
use pgherd_config::Config;
use pgherd_dcs::{Cluster, Dcs};
use pgherd_ha::{AsyncAction, DemoteMode, Replication};
use pgherd_postgres::{AllowRemoval, CliOption, RecoveryConf, RemovalMode, StopMode, Upstream};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// Marks the error of a bootstrap that failed and was cancelled (Patroni's
/// `cancel_initialization`): the agent must exit, as Patroni does.
#[derive(Debug, Clone, Copy)]
pub struct BootstrapFailed;

impl std::fmt::Display for BootstrapFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Failed to bootstrap cluster")
    }
}

/// How long a crashed postmaster may linger (a zombie until its parent reaps it, or its
/// children still exiting) before we start anyway and let PostgreSQL say what is wrong.
const OLD_POSTMASTER_WAIT: Duration = Duration::from_secs(15);

/// A spawned task owned by its spawner: aborted when dropped, so nothing the agent started
/// outlives it (a crashed agent in the simulator, a cancelled task at shutdown).
pub struct OwnedTask<T>(JoinHandle<T>);

impl<T: Send + 'static> OwnedTask<T> {
    pub fn spawn(fut: impl Future<Output = T> + Send + 'static) -> OwnedTask<T> {
        OwnedTask(tokio::spawn(fut))
    }

    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Waits for the result; `None` if the task panicked or was aborted.
    pub async fn join(&mut self) -> Option<T> {
        (&mut self.0).await.ok()
    }
}

impl<T> Drop for OwnedTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a finished task tells the agent.
#[derive(Debug, Default)]
pub struct TaskOutcome {
    pub message: String,
    /// How PostgreSQL is now configured, when the task changed it.
    pub replication: Option<Replication>,
    pub rewind_failed: bool,
    /// The data directory was created or replaced.
    pub data_changed: bool,
    /// PostgreSQL was stopped by the task (not a crash).
    pub stopped: bool,
    /// The task gave up the leader key (a demotion that releases it).
    pub released_lock: bool,
    /// `pre_promote` refused the promotion: no race for the lock for one ttl.
    pub promotion_refused: bool,
    /// The server was promoted (role changes to primary).
    pub promoted: bool,
}

/// A background action in progress, with the REST caller waiting for it, if any.
pub struct RunningTask {
    pub kind: AsyncAction,
    task: OwnedTask<Result<TaskOutcome>>,
    /// Answers a `POST /restart` or `POST /reinitialize` once the task ends.
    pub reply: Option<oneshot::Sender<CommandResult>>,
    /// We held the leader key when it began (a command that loses it reports failure).
    pub was_leader: bool,
}

/// The agent's one background action at a time.
#[derive(Default)]
pub struct Tasks {
    current: Option<RunningTask>,
    /// Signalled when a task ends, so the loop runs a cycle at once.
    ended: Arc<Notify>,
}

impl Tasks {
    pub fn kind(&self) -> Option<AsyncAction> {
        self.current.as_ref().map(|t| t.kind)
    }

    pub fn is_running(&self) -> bool {
        self.current.is_some()
    }

    /// Starts `fut` as the background action. A task still running is cancelled first (only
    /// a demotion ever replaces one: stopping a primary comes before anything else).
    pub fn start<F>(&mut self, kind: AsyncAction, was_leader: bool, fut: F)
    where
        F: Future<Output = Result<TaskOutcome>> + Send + 'static,
    {
        if let Some(old) = self.current.take() {
            warn!("{} cancelled for {}", old.kind.describe(), kind.describe());
            if let Some(reply) = old.reply {
                let _ = reply.send(Err(Refusal::unavailable(format!(
                    "{} was cancelled",
                    old.kind.describe()
                ))));
            }
        }
        let ended = self.ended.clone();
        let task = OwnedTask::spawn(async move {
            let outcome = fut.await;
            ended.notify_one();
            outcome
        });
        self.current = Some(RunningTask {
            kind,
            task,
            reply: None,
            was_leader,
        });
    }

    /// Attaches the REST caller who waits for the running task.
    pub fn reply_when_done(&mut self, reply: oneshot::Sender<CommandResult>) {
        if let Some(t) = self.current.as_mut() {
            t.reply = Some(reply);
        }
    }

    /// Waits until the running task ends (never returns while none runs).
    pub async fn ended(&self) {
        if self.current.is_some() {
            self.ended.notified().await;
        } else {
            std::future::pending::<()>().await;
        }
    }

    /// The finished task and its result, if one finished.
    pub async fn take_finished(&mut self) -> Option<(RunningTask, Result<TaskOutcome>)> {
        if !self.current.as_ref()?.task.is_finished() {
            return None;
        }
        let mut t = self.current.take()?;
        let result = match t.task.join().await {
            Some(r) => r,
            None => Err(anyhow::anyhow!("the task died")),
        };
        Some((t, result))
    }

    /// Cancels the running task (shutdown, forced reinitialize); its caller is told.
    pub fn cancel(&mut self) -> Option<AsyncAction> {
        let t = self.current.take()?;
        info!("cancelling {} in progress", t.kind.describe());
        if let Some(reply) = t.reply {
            let _ = reply.send(Err(Refusal::unavailable(format!(
                "{} was cancelled",
                t.kind.describe()
            ))));
        }
        Some(t.kind)
    }
}

/// Host and port of a member's PostgreSQL, from its `conn_url`.
pub fn member_upstream(cluster: Option<&Cluster>, member: &str) -> Option<Upstream> {
    let m = cluster?.members.get(member)?;
    let (host, port) = m.data.conn_host_port()?;
    Some(Upstream::new(host, port))
}

/// The recovery configuration for `replication` (`None`: a primary, no recovery settings),
/// and how the server is really configured by it: a member whose address is not known yet
/// (its member key is not written again after a DCS outage) leaves the standby detached.
pub fn recovery_conf_for(
    cfg: &Config,
    name: &str,
    use_slots: bool,
    cluster: Option<&Cluster>,
    replication: &Replication,
) -> (Option<RecoveryConf>, Replication) {
    let upstream = match replication {
        Replication::Primary => return (None, Replication::Primary),
        Replication::Detached => None,
        Replication::From(m) => member_upstream(cluster, m).map(|address| (m, address)),
    };
    let effective = match &upstream {
        Some((m, _)) => Replication::From(m.to_string()),
        None => Replication::Detached,
    };
    let conf = RecoveryConf {
        primary_slot_name: (use_slots && upstream.is_some())
            .then(|| pgherd_dcs::slot_name_for_member(name)),
        upstream: upstream.map(|(_, address)| address),
        application_name: name.to_string(),
        extra: cfg.postgresql.recovery_conf.clone().unwrap_or_default(),
        ..RecoveryConf::default()
    };
    (Some(conf), effective)
}

/// Everything a task needs, cloned out of the agent.
#[derive(Clone)]
pub struct TaskContext {
    pub cfg: Arc<Config>,
    pub name: String,
    pub pg: Arc<dyn PgControl>,
    pub dcs: Arc<dyn Dcs>,
    pub hooks: Arc<dyn Hooks>,
    pub params: BTreeMap<String, String>,
    pub use_slots: bool,
    pub watchdog: crate::watchdog::SharedWatchdog,
    /// The dynamic `retry_timeout` (bounds the stop after a failed bootstrap, as Patroni's).
    pub retry_timeout: Duration,
    /// Until when our leader lease is current ([`crate::lease::Lease::current_until`]).
    pub lease_current_until: tokio::sync::watch::Receiver<Option<tokio::time::Instant>>,
}

impl TaskContext {
    /// Writes the configuration for `replication`; returns how the server is configured now.
    async fn write_config_for(
        &self,
        cluster: Option<&Cluster>,
        replication: &Replication,
    ) -> Result<Replication> {
        let (recovery, effective) =
            recovery_conf_for(&self.cfg, &self.name, self.use_slots, cluster, replication);
        self.pg
            .write_config(&self.params, recovery.as_ref())
            .await?;
        Ok(effective)
    }

    /// Bootstrap a new cluster (we won the `initialize` race), as Patroni's
    /// `bootstrap` + `post_bootstrap` (docs/compat.md#bootstrap). When the local part fails
    /// (initdb, start, roles, `post_bootstrap`), Patroni's `cancel_initialization`: the
    /// `initialize` key is deleted, PostgreSQL stopped (immediate), the data directory renamed
    /// to `<data_dir>.failed`, and the error carries [`BootstrapFailed`]: the agent exits, as
    /// Patroni does ("Failed to bootstrap cluster"), instead of bootstrapping again.
    pub async fn bootstrap(self) -> Result<TaskOutcome> {
        let bootstrap = self.cfg.bootstrap.clone().context("no bootstrap section")?;
        if let Err(e) = self.bootstrap_local(&bootstrap).await {
            error!("bootstrap failed: {e:#}");
            self.cancel_initialization().await;
            return Err(e.context(BootstrapFailed));
        }
        match self.hand_over_to_dcs(&bootstrap).await {
            Ok(sysid) => Ok(TaskOutcome {
                message: format!("initialized a new cluster (system identifier {sysid})"),
                replication: Some(Replication::Primary),
                data_changed: true,
                ..TaskOutcome::default()
            }),
            Err(e) => {
                // Not Patroni's path (its DCS writes here do not cancel the bootstrap); kept:
                // the cluster is given up and the race runs again.
                warn!("bootstrap failed: {e:#}");
                self.cancel_initialization().await;
                Err(e)
            }
        }
    }

    /// Patroni's `cancel_initialization` (without the exit, which the agent does).
    async fn cancel_initialization(&self) {
        info!("removing initialize key after failed attempt to bootstrap the cluster");
        if let Err(e) = self.dcs.cancel_initialization().await {
            warn!("could not remove the initialize key: {e:#}");
        }
        if let Err(e) = self.pg.stop(StopMode::Immediate, self.retry_timeout).await {
            warn!("could not stop PostgreSQL after the failed bootstrap: {e:#}");
        }
        // Patroni keeps a failed bootstrap for inspection as <data_dir>.failed.
        match self
            .pg
            .remove_data_dir(
                AllowRemoval::granted_by("failed bootstrap: kept for inspection"),
                RemovalMode::RenameToFailed,
            )
            .await
        {
            Ok(_) => {}
            Err(e) => warn!("could not rename the data directory: {e:#}"),
        }
    }

    /// initdb, pg_hba, configuration, start, the superuser's password, `post_bootstrap`, then
    /// the other roles: Patroni's order (its `post_bootstrap` runs before the replication and
    /// rewind roles and `bootstrap.users` exist, and they are created only if it succeeded).
    async fn bootstrap_local(&self, bootstrap: &pgherd_config::Bootstrap) -> Result<()> {
        if bootstrap.method != "initdb" {
            bail!(
                "bootstrap method {:?} is not supported yet (only initdb)",
                bootstrap.method
            );
        }
        let options: Vec<CliOption> = bootstrap
            .initdb
            .iter()
            .map(|o| match &o.value {
                Some(v) => CliOption::Value(o.name.clone(), v.clone()),
                None => CliOption::Flag(o.name.clone()),
            })
            .collect();
        info!("running initdb");
        self.pg.initdb(&options).await?;
        match &self.cfg.postgresql.pg_hba {
            Some(lines) => {
                self.pg.write_pg_hba(lines).await?;
            }
            None => self.pg.append_pg_hba(&bootstrap.pg_hba).await?,
        }
        if let Some(lines) = &self.cfg.postgresql.pg_ident {
            self.pg.write_pg_ident(lines).await?;
        }
        self.pg.write_config(&self.params, None).await?;
        self.pg.start().await?;
        self.wait_queryable().await?;

        self.pg.set_superuser_password().await?;
        if let Some(cmd) = &bootstrap.post_bootstrap {
            self.hooks.post_bootstrap(cmd).await?;
        }
        let opts = self.pg.options().clone();
        self.pg
            .create_or_update_role(
                &opts.replication.username,
                opts.replication.password.as_deref(),
                &["REPLICATION".to_string(), "LOGIN".to_string()],
            )
            .await?;
        if let Some(rewind) = &opts.rewind {
            if rewind.username != opts.superuser.username {
                self.pg
                    .create_or_update_role(
                        &rewind.username,
                        rewind.password.as_deref(),
                        &["LOGIN".to_string()],
                    )
                    .await?;
                self.pg.grant_rewind_privileges(&rewind.username).await?;
            }
        }
        for (user, spec) in &bootstrap.users {
            let mut options: Vec<String> = spec
                .options
                .iter()
                .map(|o| o.to_ascii_uppercase())
                .collect();
            if !options.iter().any(|o| o == "LOGIN" || o == "NOLOGIN") {
                options.push("LOGIN".into());
            }
            self.pg
                .create_or_update_role(user, spec.password.as_deref(), &options)
                .await?;
        }
        Ok(())
    }

    /// `initialize = <sysid>`, `config = bootstrap.dcs`, the leader key.
    async fn hand_over_to_dcs(&self, bootstrap: &pgherd_config::Bootstrap) -> Result<String> {
        let sysid = self.pg.sysid().await?;
        self.dcs.write_initialize(&sysid).await?;
        let dcs_config = serde_json::to_string(&bootstrap.dcs).context("encoding bootstrap.dcs")?;
        self.dcs.set_config_value(&dcs_config, None).await?;
        if !self.dcs.attempt_to_acquire_leader().await? {
            warn!("bootstrap done but another member holds the leader key");
        }
        Ok(sysid)
    }

    async fn wait_queryable(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.pg.options().pg_ctl_timeout;
        loop {
            match self.pg.query_state().await {
                Ok(_) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(e).context("PostgreSQL did not accept connections in time")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Clone from `source` and start streaming from `upstream`.
    pub async fn clone_replica(
        self,
        cluster: Arc<Cluster>,
        source: String,
        upstream: String,
    ) -> Result<TaskOutcome> {
        let from = member_upstream(Some(&cluster), &source)
            .with_context(|| format!("member {source} has no usable conn_url"))?;
        let options: Vec<CliOption> = self
            .cfg
            .postgresql
            .basebackup
            .iter()
            .map(|o| match &o.value {
                Some(v) => CliOption::Value(o.name.clone(), v.clone()),
                None => CliOption::Flag(o.name.clone()),
            })
            .collect();
        info!("creating replica from {source} ({from})");
        self.pg.pg_basebackup(&from, &options).await?;
        if let Some(lines) = &self.cfg.postgresql.pg_hba {
            self.pg.write_pg_hba(lines).await?;
        }
        let replication = self
            .write_config_for(Some(&cluster), &Replication::From(upstream.clone()))
            .await?;
        self.pg.start().await?;
        Ok(TaskOutcome {
            message: format!("replica created from {source}, following {upstream}"),
            replication: Some(replication),
            data_changed: true,
            ..TaskOutcome::default()
        })
    }

    /// Write the configuration for `replication` and start.
    pub async fn start(
        self,
        cluster: Option<Arc<Cluster>>,
        replication: Replication,
    ) -> Result<TaskOutcome> {
        self.pg
            .wait_stale_postmaster_gone(OLD_POSTMASTER_WAIT)
            .await;
        let replication = self
            .write_config_for(cluster.as_deref(), &replication)
            .await?;
        if let Some(lines) = &self.cfg.postgresql.pg_hba {
            self.pg.write_pg_hba(lines).await?;
        }
        self.pg.start().await?;
        Ok(TaskOutcome {
            message: match &replication {
                Replication::Primary => "started as primary".to_string(),
                Replication::Detached => "started as a standby without upstream".to_string(),
                Replication::From(u) => format!("started as a standby following {u}"),
            },
            replication: Some(replication),
            ..TaskOutcome::default()
        })
    }

    /// Copies permanent logical slots from the primary at `from` into this standby, as
    /// Patroni's `copy_logical_slots` (PostgreSQL 15 cannot create logical slots on a
    /// standby): their state files are read over SQL first, then PostgreSQL is stopped, the
    /// files are installed and PostgreSQL starts again as it ran (`replication`). A slot whose
    /// database or plugin on the primary differs from the configuration is not copied.
    pub async fn copy_logical_slots(
        self,
        cluster: Arc<Cluster>,
        from: Upstream,
        wanted: BTreeMap<String, pgherd_postgres::LogicalSlot>,
        replication: Replication,
    ) -> Result<TaskOutcome> {
        let names: Vec<String> = wanted.keys().cloned().collect();
        let mut copied = self.pg.read_logical_slots(&from, &names).await?;
        copied.retain(|slot| {
            let fits = wanted.get(&slot.name) == Some(&slot.logical);
            if !fits {
                warn!(
                    "will not copy the logical slot '{}': database '{}' plugin '{}' on the primary differ from the configuration",
                    slot.name, slot.logical.database, slot.logical.plugin
                );
            }
            fits
        });
        if copied.is_empty() {
            return Ok(TaskOutcome {
                message: "no logical slot to copy from the primary".into(),
                ..TaskOutcome::default()
            });
        }
        let names: Vec<&str> = copied.iter().map(|s| s.name.as_str()).collect();
        info!("copying logical slots {names:?} from the primary: restarting PostgreSQL");
        let names = names.join(", ");
        self.pg
            .stop(StopMode::Fast, self.pg.options().pg_ctl_timeout)
            .await?;
        self.pg.install_logical_slots(copied).await?;
        let started = self.start(Some(cluster), replication).await?;
        Ok(TaskOutcome {
            message: format!("copied logical slots {names} from the primary"),
            ..started
        })
    }

    /// Demotion: stop PostgreSQL (a checkpoint first for a switchover, so the fast shutdown
    /// is quick), then give up the leader key if the mode says so; `Offline` starts again
    /// read-only without upstream (the DCS is unreachable: nobody to follow).
    pub async fn demote(self, mode: DemoteMode) -> Result<TaskOutcome> {
        if mode == DemoteMode::Graceful {
            if let Err(e) = self.pg.checkpoint().await {
                warn!("checkpoint before switchover failed: {e:#}");
            }
        }
        let stop = if mode.fast_stop() {
            StopMode::Fast
        } else {
            StopMode::Immediate
        };
        self.pg.stop(stop, self.pg.options().pg_ctl_timeout).await?;
        let mut outcome = TaskOutcome {
            message: format!("demoted ({mode:?})"),
            stopped: true,
            ..TaskOutcome::default()
        };
        if mode.releases_lock() {
            self.dcs.delete_leader().await?;
            outcome.released_lock = true;
        }
        if mode == DemoteMode::Offline {
            let replication = self.write_config_for(None, &Replication::Detached).await?;
            self.pg.start().await?;
            outcome.replication = Some(replication);
            outcome.stopped = false;
            outcome.message = "demoted: running read-only without upstream".into();
        }
        Ok(outcome)
    }

    /// `pg_ctl restart` within `limit` (a REST restart, or a scheduled one).
    pub async fn restart(self, limit: Duration) -> Result<TaskOutcome> {
        match tokio::time::timeout(limit, self.pg.restart()).await {
            Ok(Ok(())) => Ok(TaskOutcome {
                message: "restarted successfully".into(),
                ..TaskOutcome::default()
            }),
            Ok(Err(e)) => Err(e.context("restart failed")),
            Err(_) => bail!("restart did not finish within {limit:?}"),
        }
    }

    /// Promotion, with its waits beside the HA loop: `pre_promote` (a refusal gives the lock
    /// back), the proxies to stop routing writes to the former leader (bounded), then
    /// `pg_ctl promote`, the configuration rewritten as a primary, and a checkpoint that makes
    /// the new timeline visible in `pg_control` at once (pg_rewind on the former primary
    /// relies on it).
    pub async fn promote(
        self,
        former_leader: Option<String>,
        proxy_wait: Duration,
    ) -> Result<TaskOutcome> {
        // Armed before PostgreSQL can accept a write as primary; `required` mode without a
        // working device refuses the promotion (Patroni's enforce_primary_role).
        if !self.watchdog.with(|w| w.activate()) {
            warn!("not promoting: the watchdog could not be activated (watchdog.mode: required); releasing the leader lock");
            self.dcs.delete_leader().await?;
            return Ok(TaskOutcome {
                message: "promotion cancelled: the watchdog could not be activated".into(),
                released_lock: true,
                promotion_refused: true,
                ..TaskOutcome::default()
            });
        }
        if let Some(cmd) = &self.cfg.postgresql.pre_promote {
            if !self.hooks.pre_promote(cmd).await? {
                warn!("pre_promote {cmd} refused the promotion: releasing the leader lock");
                self.dcs.delete_leader().await?;
                return Ok(TaskOutcome {
                    message: "promotion cancelled by pre_promote".into(),
                    released_lock: true,
                    promotion_refused: true,
                    ..TaskOutcome::default()
                });
            }
        }
        if let Some(old) = former_leader {
            crate::proxy_fence::wait(self.dcs.as_ref(), &old, proxy_wait).await;
        }
        // pre_promote and the proxies may have taken longer than the lease: promoting on a
        // lease that lapsed meanwhile could make a second primary.
        let current = *self.lease_current_until.borrow();
        if current.is_none_or(|until| until <= tokio::time::Instant::now()) {
            bail!("not promoting: the leader lease was not confirmed while pre_promote and proxy fencing ran");
        }
        self.pg.promote(true).await.context("pg_ctl promote")?;
        self.pg.write_config(&self.params, None).await?;
        if let Err(e) = self.pg.checkpoint().await {
            warn!("checkpoint after promote failed: {e:#}");
        }
        Ok(TaskOutcome {
            message: "promoted PostgreSQL to primary".into(),
            replication: Some(Replication::Primary),
            promoted: true,
            ..TaskOutcome::default()
        })
    }

    /// pg_rewind from `source`, then start following it.
    pub async fn rewind(
        self,
        cluster: Arc<Cluster>,
        source: String,
        remove_on_failure: bool,
    ) -> Result<TaskOutcome> {
        let from = member_upstream(Some(&cluster), &source)
            .with_context(|| format!("member {source} has no usable conn_url"))?;
        self.pg
            .wait_stale_postmaster_gone(OLD_POSTMASTER_WAIT)
            .await;
        // pg_rewind may first run crash recovery in single-user mode, which refuses to run
        // with standby.signal present: write the configuration without recovery settings.
        self.pg.write_config(&self.params, None).await?;
        info!("running pg_rewind from {source} ({from})");
        match self.pg.pg_rewind(&from).await {
            Ok(()) => {
                let replication = self
                    .write_config_for(Some(&cluster), &Replication::From(source.clone()))
                    .await?;
                self.pg.start().await?;
                Ok(TaskOutcome {
                    message: format!("rewound from {source} and started following it"),
                    replication: Some(replication),
                    data_changed: true,
                    ..TaskOutcome::default()
                })
            }
            Err(e) if remove_on_failure => {
                warn!("pg_rewind failed: {e:#}; removing the data directory (remove_data_directory_on_rewind_failure)");
                self.pg
                    .remove_data_dir(
                        AllowRemoval::granted_by("remove_data_directory_on_rewind_failure is set"),
                        RemovalMode::Delete,
                    )
                    .await?;
                Ok(TaskOutcome {
                    message: "data directory removed after pg_rewind failure".into(),
                    data_changed: true,
                    ..TaskOutcome::default()
                })
            }
            Err(e) => {
                warn!("pg_rewind failed: {e:#}; staying stopped (remove_data_directory_on_rewind_failure is off)");
                Ok(TaskOutcome {
                    message: "pg_rewind failed".into(),
                    rewind_failed: true,
                    ..TaskOutcome::default()
                })
            }
        }
    }

    /// Stop PostgreSQL, remove the data directory (configuration or an operator allows it)
    /// and clone again.
    pub async fn reinitialize(
        self,
        cluster: Arc<Cluster>,
        source: String,
        reason: &'static str,
    ) -> Result<TaskOutcome> {
        self.pg
            .stop(StopMode::Immediate, self.pg.options().pg_ctl_timeout)
            .await
            .context("stopping PostgreSQL before reinitializing")?;
        self.pg
            .remove_data_dir(AllowRemoval::granted_by(reason), RemovalMode::Delete)
            .await?;
        let leader = cluster.leader_name().unwrap_or(&source).to_string();
        self.clone_replica(cluster, source, leader).await
    }
}
