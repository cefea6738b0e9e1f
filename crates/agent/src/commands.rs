//! Management requests from the REST API (restart, reload, reinitialize, scheduled restart),
//! handled between HA cycles. A restart or reinitialize runs as a background task and its
//! caller gets the answer when the task ends. See `pgherd_api::ApiCommand` for the contract.

use crate::agent::Agent;
use pgherd_api::{ApiCommand, CommandResult, Refusal, RestartRequest};
use pgherd_ha::{AsyncAction, Millis, Replication, Scheduled};
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::{info, warn};

/// Work scheduled for later and what blocks the leader race for a while.
#[derive(Default)]
pub struct Schedules {
    /// A restart scheduled through `POST /restart`, and the postmaster start time then.
    pub restart: Option<RestartRequest>,
    pub restart_start_time: Option<String>,
    /// The scheduled restart was looked up in our member key (after an agent restart).
    restored: bool,
    /// A `pre_promote` script refused a promotion: no race for the lock until then.
    pub promotion_blocked_until: Option<Millis>,
    /// Logical slots are not copied from the primary again (a restart each time) before then.
    pub slot_copy_after: Option<Millis>,
}

/// Handles one command; returns whether an HA cycle should run right away.
pub async fn handle(a: &mut Agent, command: ApiCommand) -> bool {
    match command {
        ApiCommand::Wake => true,
        ApiCommand::Reload => {
            reload(a).await;
            true
        }
        ApiCommand::Restart { request, reply } => {
            restart(a, &request, Some(reply)).await;
            true
        }
        ApiCommand::ScheduleRestart { request, reply } => {
            let result = if a.schedules.restart.is_some() {
                Err(Refusal::already_scheduled())
            } else {
                info!("restart scheduled at {:?}", request.schedule);
                a.schedules.restart_start_time =
                    a.pg.state().map(|s| s.postmaster_start_time.clone());
                a.schedules.restart = Some(request);
                Ok("Restart scheduled".to_string())
            };
            let _ = reply.send(result);
            true
        }
        ApiCommand::CancelScheduledRestart { reply } => {
            let had = a.schedules.restart.take().is_some();
            let _ = reply.send(had);
            true
        }
        ApiCommand::Reinitialize { force, reply } => {
            reinitialize(a, force, reply);
            true
        }
    }
}

/// Starts a due scheduled restart (Patroni drops one that is more than 1.5 loop_wait late, or
/// whose postmaster was restarted meanwhile).
pub async fn run_scheduled(a: &mut Agent) {
    let Some(request) = a.schedules.restart.clone() else {
        return;
    };
    let Some(at) = request.schedule else {
        a.schedules.restart = None;
        return;
    };
    let now = a.world.clock.now_ms();
    match pgherd_ha::scheduled(at.timestamp_millis(), now, a.dynamic.settings.loop_wait) {
        Scheduled::Waiting => return,
        Scheduled::Missed => {
            warn!("scheduled restart at {at} was missed by more than 1.5 loop_wait: dropped");
            a.schedules.restart = None;
            return;
        }
        Scheduled::Due => {}
    }
    a.schedules.restart = None;
    let started = a.pg.state().map(|s| s.postmaster_start_time.clone());
    if a.schedules.restart_start_time.is_some() && started != a.schedules.restart_start_time {
        info!("scheduled restart cancelled: PostgreSQL was restarted meanwhile");
        return;
    }
    restart(a, &request, None).await;
}

/// The planted defect: the restart awaited inside the HA loop, as the first design did.
async fn restart_inline(
    a: &mut Agent,
    limit: Duration,
    reply: Option<oneshot::Sender<CommandResult>>,
) {
    let result = match tokio::time::timeout(limit, a.world.pg.restart()).await {
        Ok(Ok(())) => Ok("restarted successfully".to_string()),
        _ => Err(Refusal::restart_failed()),
    };
    if let Some(r) = reply {
        let _ = r.send(result);
    }
}

/// Checks the conditions, then restarts PostgreSQL in a background task.
async fn restart(
    a: &mut Agent,
    request: &RestartRequest,
    reply: Option<oneshot::Sender<CommandResult>>,
) {
    let refuse = |reply: Option<oneshot::Sender<CommandResult>>, refusal: Refusal| {
        warn!("restart not done: {}", refusal.message);
        if let Some(r) = reply {
            let _ = r.send(Err(refusal));
        }
    };
    if let Some(kind) = a.tasks.kind() {
        return refuse(reply, Refusal::in_progress(kind.describe()));
    }
    let (server_version, pending_restart) = match a.pg.state() {
        Some(state) => (state.server_version, state.pending_restart),
        None if a.world.pg.postmaster().is_some() => {
            return refuse(reply, Refusal::still_starting());
        }
        // Stopped: Patroni's restart is a stop (nothing to do) and a start, which is how a
        // member stopped in maintenance mode is started again (docs/compat.md#restart-requests).
        // The filters are checked against what PostgreSQL said while it last ran.
        None => {
            if !matches!(
                a.world.pg.data_dir_state(),
                pgherd_postgres::DataDirState::Initialized { .. }
            ) {
                return refuse(reply, Refusal::restart_failed());
            }
            a.pg.last_seen().unwrap_or((0, false))
        }
    };
    if let Err(why) = request.conditions_met(a.pg.role(), server_version, pending_restart) {
        info!("restart not done: {why}");
        return refuse(reply, Refusal::conditions_not_satisfied());
    }
    let limit = request.timeout.unwrap_or_else(|| {
        Duration::from_millis(
            a.dynamic
                .settings
                .primary_start_timeout
                .max(a.dynamic.settings.ttl),
        )
    });
    if a.world.pg.postmaster().is_some() {
        info!("restarting PostgreSQL in place (requested through the REST API)");
    } else {
        info!("starting the stopped PostgreSQL (restart requested through the REST API)");
    }
    if a.planted == Some(crate::agent::PlantedBug::InlineRestart) {
        return restart_inline(a, limit, reply).await;
    }
    let ctx = a.task_context();
    // A stopped server starts in the role the HA logic gives it, never as a primary without
    // the lock: its files may still say primary (a fenced former leader).
    let start_as = a.world.pg.postmaster().is_none().then(|| {
        if a.lease.held() {
            Replication::Primary
        } else {
            match a.view.cluster.as_deref() {
                Some(c) => match c.leader_name() {
                    Some(leader) if leader != a.me.name => {
                        Replication::From(pgherd_ha::upstream_for(&a.dynamic.settings, c, leader))
                    }
                    _ => Replication::Detached,
                },
                None => Replication::Detached,
            }
        }
    });
    let cluster = a.view.cluster.clone();
    let task = async move {
        match start_as {
            None => ctx.restart(limit).await,
            Some(replication) => {
                let started = tokio::time::timeout(limit, ctx.start(cluster, replication))
                    .await
                    .map_err(|_| anyhow::anyhow!("start did not finish within {limit:?}"))??;
                Ok(crate::tasks::TaskOutcome {
                    message: "restarted successfully".into(),
                    ..started
                })
            }
        }
    };
    a.tasks.start(AsyncAction::Restart, a.lease.held(), task);
    if let Some(r) = reply {
        a.tasks.reply_when_done(r);
    }
}

fn reinitialize(a: &mut Agent, force: bool, reply: oneshot::Sender<CommandResult>) {
    let refuse = |reply: oneshot::Sender<CommandResult>, message: &str| {
        let _ = reply.send(Err(Refusal::unavailable(message)));
    };
    let Some(cluster) = a.view.cluster.clone() else {
        return refuse(reply, "Cluster has no leader, can not reinitialize");
    };
    let Some(leader) = cluster.leader_name().map(str::to_string) else {
        return refuse(reply, "Cluster has no leader, can not reinitialize");
    };
    if leader == a.me.name {
        return refuse(reply, "I am the leader, can not reinitialize");
    }
    if let Some(kind) = a.tasks.kind() {
        if !force {
            let _ = reply.send(Err(Refusal::in_progress(kind.describe())));
            return;
        }
        info!("reinitialize --force: cancelling {}", kind.describe());
        a.tasks.cancel();
    }
    a.pg.stopped_by_us();
    let ctx = a.task_context();
    info!("reinitializing from {leader} (requested through the REST API)");
    a.tasks.start(
        AsyncAction::Reinitialize,
        false,
        ctx.reinitialize(cluster, leader, "POST /reinitialize was requested"),
    );
    // Patroni answers as soon as the reinitialize has started.
    let _ = reply.send(Ok("reinitialize started".to_string()));
}

/// SIGHUP / `POST /reload`: re-read the configuration and apply what changed.
pub async fn reload(a: &mut Agent) {
    let loaded = match a.world.config.load() {
        Ok(l) => l,
        Err(e) => {
            warn!("reload: configuration rejected, keeping the current one: {e:#}");
            return;
        }
    };
    for w in &loaded.warnings {
        warn!("{w}");
    }
    if let Err(e) = loaded.config.validate_for_agent() {
        warn!("reload: configuration rejected, keeping the current one: {e}");
        return;
    }
    a.cfg = std::sync::Arc::new(loaded.config);
    a.dynamic.settings = crate::settings::engine_settings(&a.cfg, &a.me.name, &a.dynamic.config);
    a.world.peers.reconfigure(&a.cfg);
    let (watchdog, timing) = (
        &a.cfg.watchdog,
        crate::agent::watchdog_timing(&a.dynamic.config),
    );
    a.watchdog.with(|w| w.reconfigure(watchdog, timing));
    reload_api_settings(a).await;
    a.pg.forget_params();
    a.reload_parameters_if_changed().await;
    info!("configuration reloaded");
}

/// `restapi:` (authentication, allowlist, certificates, extra headers) and `ctl:` as re-read:
/// the REST API applies them to the next request or handshake, like Patroni's reload. A
/// certificate or key that cannot be read keeps the current settings.
async fn reload_api_settings(a: &mut Agent) {
    let Some(updater) = a.api_settings.clone() else {
        return;
    };
    let cfg = a.cfg.clone();
    // Allowlist host names are resolved with blocking DNS.
    let built = tokio::task::spawn_blocking(move || {
        pgherd_api::ApiSettings::from_config(&cfg.restapi, &cfg.ctl)
    })
    .await;
    match built {
        Ok(Ok(settings)) => {
            if let Some(note) = updater.replace(settings) {
                warn!("reload: {note}");
            }
        }
        Ok(Err(e)) => warn!("reload: REST API settings rejected, keeping the current ones: {e}"),
        Err(e) => warn!("reload: REST API settings not rebuilt: {e}"),
    }
}

/// Reads a scheduled restart back from our own member key after an agent restart.
pub fn restore_from_member(a: &mut Agent, cluster: &pgherd_dcs::Cluster) {
    if std::mem::replace(&mut a.schedules.restored, true) || a.schedules.restart.is_some() {
        return;
    }
    let Some(value) = cluster
        .members
        .get(&a.me.name)
        .and_then(|m| m.data.scheduled_restart.clone())
    else {
        return;
    };
    if let Some(request) = RestartRequest::from_member_value(&value) {
        info!(
            "restored the scheduled restart at {:?} from the member key",
            request.schedule
        );
        a.schedules.restart_start_time = value
            .get("postmaster_start_time")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        a.schedules.restart = Some(request);
    }
}

/// The leader wakes up exactly at a scheduled switchover's time instead of up to one
/// loop_wait later.
pub fn next_scheduled_switchover(a: &Agent) -> Option<tokio::time::Instant> {
    let cluster = a.view.cluster.as_ref()?;
    if cluster.leader_name() != Some(a.me.name.as_str()) {
        return None;
    }
    let at = cluster.failover_request()?.scheduled_at.as_deref()?;
    let when = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    let ahead = u64::try_from(when.timestamp_millis() - a.world.clock.now_ms()).ok()?;
    Some(tokio::time::Instant::now() + Duration::from_millis(ahead))
}
