//! Long actions (bootstrap, clone, start, rewind, reinitialize) run as background tasks, so
//! the HA loop keeps renewing the lock and publishing its state meanwhile.

use anyhow::{bail, Context, Result};
use pgherd_config::Config;
use pgherd_dcs::{Cluster, Dcs};
use pgherd_ha::AsyncAction;
use pgherd_postgres::{AllowRemoval, CliOption, Postgres, RecoveryConf, RemovalMode, Upstream};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub struct RunningTask {
    pub kind: AsyncAction,
    pub handle: JoinHandle<Result<TaskOutcome>>,
}

/// What a finished task tells the agent.
#[derive(Debug, Default)]
pub struct TaskOutcome {
    pub message: String,
    /// The recovery configuration now written (see `Agent::upstream`).
    pub upstream: Option<Option<String>>,
    pub rewind_failed: bool,
    /// The data directory was created or replaced.
    pub data_changed: bool,
}

/// Everything a task needs, cloned out of the agent.
#[derive(Clone)]
pub struct TaskContext {
    pub cfg: Arc<Config>,
    pub name: String,
    pub pg: Arc<Postgres>,
    pub dcs: Arc<dyn Dcs>,
    pub params: BTreeMap<String, String>,
}

/// Host and port of a member's PostgreSQL, from its `conn_url`.
pub fn member_upstream(cluster: Option<&Cluster>, member: &str) -> Option<Upstream> {
    let m = cluster?.members.get(member)?;
    let (host, port) = m.data.conn_host_port()?;
    Some(Upstream::new(host, port))
}

/// The recovery configuration for `upstream` (see `Agent::upstream`): `None` = primary.
pub fn recovery_conf_for(
    cfg: &Config,
    name: &str,
    cluster: Option<&Cluster>,
    upstream: Option<&str>,
) -> Option<RecoveryConf> {
    let upstream = upstream?;
    let use_slots = cluster
        .and_then(|c| c.config.as_ref())
        .and_then(|c| c.value.pointer("/postgresql/use_slots"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true);
    Some(RecoveryConf {
        upstream: if upstream.is_empty() {
            None
        } else {
            member_upstream(cluster, upstream)
        },
        application_name: name.to_string(),
        primary_slot_name: (use_slots && !upstream.is_empty())
            .then(|| pgherd_dcs::slot_name_for_member(name)),
        extra: cfg.postgresql.recovery_conf.clone().unwrap_or_default(),
        ..RecoveryConf::default()
    })
}

/// How long a crashed postmaster may linger (a zombie until its parent reaps it, or its
/// children still exiting) before we start anyway and let PostgreSQL say what is wrong.
const OLD_POSTMASTER_WAIT: Duration = Duration::from_secs(15);

impl TaskContext {
    /// PostgreSQL refuses to start (and pg_rewind's crash recovery fails) while the process
    /// named in a leftover postmaster.pid still exists, even as a zombie: wait it out.
    async fn wait_old_postmaster_gone(&self) {
        let pid_file = self.pg.options().data_dir.join("postmaster.pid");
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        else {
            return;
        };
        if self.pg.is_running().is_some() {
            return;
        }
        let deadline = tokio::time::Instant::now() + OLD_POSTMASTER_WAIT;
        let pid = nix::unistd::Pid::from_raw(pid);
        while nix::sys::signal::kill(pid, None).is_ok() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn start_replica_config(&self, cluster: Option<&Cluster>, upstream: &str) -> Result<()> {
        let recovery = recovery_conf_for(&self.cfg, &self.name, cluster, Some(upstream));
        self.pg.write_config(&self.params, recovery.as_ref())?;
        Ok(())
    }

    /// Bootstrap a new cluster (we won the `initialize` race).
    pub async fn bootstrap(self) -> Result<TaskOutcome> {
        match self.bootstrap_steps().await {
            Ok(sysid) => Ok(TaskOutcome {
                message: format!("initialized a new cluster (system identifier {sysid})"),
                upstream: Some(None),
                data_changed: true,
                ..TaskOutcome::default()
            }),
            Err(e) => {
                warn!("bootstrap failed: {e:#}; giving up the initialize key");
                let _ = self.dcs.cancel_initialization().await;
                let _ = self
                    .pg
                    .stop(
                        pgherd_postgres::StopMode::Immediate,
                        Duration::from_secs(30),
                    )
                    .await;
                // Patroni keeps a failed bootstrap for inspection as <data_dir>.failed.
                if let Ok(Some(path)) = self.pg.remove_data_dir(
                    AllowRemoval::granted_by("failed bootstrap: kept for inspection"),
                    RemovalMode::RenameToFailed,
                ) {
                    warn!("failed bootstrap data directory kept at {}", path.display());
                }
                Err(e)
            }
        }
    }

    async fn bootstrap_steps(&self) -> Result<String> {
        let bootstrap = self.cfg.bootstrap.clone().context("no bootstrap section")?;
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
                self.pg.write_pg_hba(lines)?;
            }
            None => self.pg.append_pg_hba(&bootstrap.pg_hba)?,
        }
        if let Some(lines) = &self.cfg.postgresql.pg_ident {
            self.pg.write_pg_ident(lines)?;
        }
        self.pg.write_config(&self.params, None)?;
        self.pg.start().await?;
        self.wait_queryable().await?;

        self.pg.set_superuser_password().await?;
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
        if let Some(cmd) = &bootstrap.post_bootstrap {
            self.run_post_init(cmd).await?;
        }

        let sysid = self.pg.sysid().await?;
        self.dcs.initialize(false, &sysid).await?;
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

    /// `post_bootstrap`/`post_init` gets a connection string as its argument (Patroni).
    async fn run_post_init(&self, cmd: &str) -> Result<()> {
        let o = self.pg.options();
        let dsn = format!(
            "postgres://{}@{}:{}/{}",
            o.superuser.username,
            o.socket_dir.display(),
            o.port,
            o.database
        );
        let mut argv = cmd.split_whitespace();
        let program = argv.next().context("post_init command is empty")?;
        info!("running post_init: {cmd}");
        let mut command = tokio::process::Command::new(program);
        command.args(argv).arg(&dsn).env("PGPASSFILE", &o.pgpass);
        if let Some(pw) = &o.superuser.password {
            command.env("PGPASSWORD", pw);
        }
        let status = command
            .status()
            .await
            .with_context(|| format!("starting post_init {cmd}"))?;
        if !status.success() {
            bail!("post_init {cmd} failed with {status}");
        }
        Ok(())
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
            self.pg.write_pg_hba(lines)?;
        }
        self.start_replica_config(Some(&cluster), &upstream)?;
        self.pg.start().await?;
        Ok(TaskOutcome {
            message: format!("replica created from {source}, following {upstream}"),
            upstream: Some(Some(upstream)),
            data_changed: true,
            ..TaskOutcome::default()
        })
    }

    /// Write the configuration for `upstream` (see `Agent::upstream`) and start.
    pub async fn start(
        self,
        cluster: Option<Arc<Cluster>>,
        upstream: Option<String>,
    ) -> Result<TaskOutcome> {
        self.wait_old_postmaster_gone().await;
        let recovery = recovery_conf_for(
            &self.cfg,
            &self.name,
            cluster.as_deref(),
            upstream.as_deref(),
        );
        self.pg.write_config(&self.params, recovery.as_ref())?;
        if let Some(lines) = &self.cfg.postgresql.pg_hba {
            self.pg.write_pg_hba(lines)?;
        }
        self.pg.start().await?;
        Ok(TaskOutcome {
            message: match upstream.as_deref() {
                None => "started as primary".to_string(),
                Some("") => "started as a standby without upstream".to_string(),
                Some(u) => format!("started as a standby following {u}"),
            },
            upstream: Some(upstream),
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
        self.wait_old_postmaster_gone().await;
        // pg_rewind may first run crash recovery in single-user mode, which refuses to run
        // with standby.signal present: write the configuration without recovery settings.
        self.pg.write_config(&self.params, None)?;
        info!("running pg_rewind from {source} ({from})");
        match self.pg.pg_rewind(&from, false).await {
            Ok(()) => {
                self.start_replica_config(Some(&cluster), &source)?;
                self.pg.start().await?;
                Ok(TaskOutcome {
                    message: format!("rewound from {source} and started following it"),
                    upstream: Some(Some(source)),
                    data_changed: true,
                    ..TaskOutcome::default()
                })
            }
            Err(e) if remove_on_failure => {
                warn!("pg_rewind failed: {e:#}; removing the data directory (remove_data_directory_on_rewind_failure)");
                self.pg.remove_data_dir(
                    AllowRemoval::granted_by("remove_data_directory_on_rewind_failure is set"),
                    RemovalMode::Delete,
                )?;
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

    /// Remove the data directory (configuration allows it) and clone again.
    pub async fn reinitialize(
        self,
        cluster: Arc<Cluster>,
        source: String,
        reason: &'static str,
    ) -> Result<TaskOutcome> {
        self.pg
            .remove_data_dir(AllowRemoval::granted_by(reason), RemovalMode::Delete)?;
        let leader = cluster.leader_name().unwrap_or(&source).to_string();
        self.clone_replica(cluster, source, leader).await
    }
}
