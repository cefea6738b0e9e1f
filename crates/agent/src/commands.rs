//! Management requests from the REST API (restart, reload, reinitialize, scheduled restart),
//! executed by the agent between HA cycles. See `pgherd_api::ApiCommand` for the contract.

use crate::agent::Agent;
use crate::tasks::RunningTask;
use pgherd_api::{ApiCommand, CommandResult, Refusal, RestartRequest};
use pgherd_ha::AsyncAction;
use pgherd_postgres::{CallbackAction, StopMode};
use std::time::Duration;
use tracing::{info, warn};

/// Handles one command; returns whether an HA cycle should run right away.
pub async fn handle(a: &mut Agent, command: ApiCommand) -> bool {
    match command {
        ApiCommand::Wake => true,
        ApiCommand::Reload => {
            reload(a).await;
            true
        }
        ApiCommand::Restart { request, reply } => {
            let result = restart(a, &request).await;
            let _ = reply.send(result);
            true
        }
        ApiCommand::ScheduleRestart { request, reply } => {
            let result = if a.scheduled_restart.is_some() {
                Err(Refusal::already_scheduled())
            } else {
                info!("restart scheduled at {:?}", request.schedule);
                a.scheduled_restart_start_time =
                    a.pg_state.as_ref().map(|s| s.postmaster_start_time.clone());
                a.scheduled_restart = Some(request);
                Ok("Restart scheduled".to_string())
            };
            let _ = reply.send(result);
            true
        }
        ApiCommand::CancelScheduledRestart { reply } => {
            let had = a.scheduled_restart.take().is_some();
            let _ = reply.send(had);
            true
        }
        ApiCommand::Reinitialize { force, reply } => {
            let result = reinitialize(a, force).await;
            let _ = reply.send(result);
            true
        }
    }
}

/// Runs a due scheduled restart (Patroni drops one that is more than 1.5 loop_wait late, or
/// whose postmaster was restarted meanwhile).
pub async fn run_scheduled(a: &mut Agent) {
    let Some(request) = a.scheduled_restart.clone() else {
        return;
    };
    let Some(at) = request.schedule else {
        a.scheduled_restart = None;
        return;
    };
    let now = chrono::Utc::now();
    if at > now {
        return;
    }
    a.scheduled_restart = None;
    let late = (now - at.with_timezone(&chrono::Utc))
        .to_std()
        .unwrap_or_default();
    let allowed = Duration::from_millis(a.settings.loop_wait * 3 / 2).max(Duration::from_secs(1));
    if late > allowed {
        warn!("scheduled restart at {at} is {late:?} late: dropped");
        return;
    }
    let started = a.pg_state.as_ref().map(|s| s.postmaster_start_time.clone());
    if a.scheduled_restart_start_time.is_some() && started != a.scheduled_restart_start_time {
        info!("scheduled restart cancelled: PostgreSQL was restarted meanwhile");
        return;
    }
    match restart(a, &request).await {
        Ok(m) => info!("scheduled restart: {m}"),
        Err(r) => warn!("scheduled restart not done: {}", r.message),
    }
}

async fn restart(a: &mut Agent, request: &RestartRequest) -> CommandResult {
    if let Some(t) = &a.task {
        return Err(Refusal::in_progress(t.kind.describe()));
    }
    let Some(state) = a.pg_state.clone() else {
        return Err(if a.pg.is_running().is_some() {
            Refusal::still_starting()
        } else {
            Refusal::conditions_not_satisfied()
        });
    };
    if let Err(why) = request.conditions_met(a.role, state.server_version, state.pending_restart) {
        info!("restart not done: {why}");
        return Err(Refusal::conditions_not_satisfied());
    }
    let limit = request.timeout.unwrap_or_else(|| {
        Duration::from_millis(a.settings.primary_start_timeout.max(a.settings.ttl))
    });
    info!("restarting PostgreSQL in place (requested through the REST API)");
    match tokio::time::timeout(limit, a.pg.restart()).await {
        Ok(Ok(())) => {
            crate::callbacks::run(&a.pg, &a.cfg, CallbackAction::OnRestart, a.role);
            Ok("restarted successfully".to_string())
        }
        Ok(Err(e)) => {
            warn!("restart failed: {e:#}");
            Err(Refusal::restart_failed())
        }
        Err(_) => {
            warn!("restart did not finish within {limit:?}");
            Err(Refusal::restart_failed())
        }
    }
}

async fn reinitialize(a: &mut Agent, force: bool) -> CommandResult {
    let Some(cluster) = a.last_cluster.clone() else {
        return Err(Refusal::unavailable(
            "Cluster has no leader, can not reinitialize",
        ));
    };
    let Some(leader) = cluster.leader_name().map(str::to_string) else {
        return Err(Refusal::unavailable(
            "Cluster has no leader, can not reinitialize",
        ));
    };
    if leader == a.name {
        return Err(Refusal::unavailable(
            "I am the leader, can not reinitialize",
        ));
    }
    if let Some(t) = a.task.take() {
        if !force {
            let refusal = Refusal::in_progress(t.kind.describe());
            a.task = Some(t);
            return Err(refusal);
        }
        info!("reinitialize --force: cancelling {}", t.kind.describe());
        t.handle.abort();
        let _ = t.handle.await;
    }
    if let Err(e) =
        a.pg.stop(StopMode::Immediate, a.pg.options().pg_ctl_timeout)
            .await
    {
        warn!("reinitialize: stopping PostgreSQL failed: {e:#}");
        return Err(Refusal::unavailable("failed to stop postgres"));
    }
    a.was_running = false;
    let ctx = a.task_context();
    info!("reinitializing from {leader} (requested through the REST API)");
    a.task = Some(RunningTask {
        kind: AsyncAction::Reinitialize,
        handle: tokio::spawn(ctx.reinitialize(cluster, leader, "POST /reinitialize was requested")),
    });
    Ok("reinitialize started".to_string())
}

/// SIGHUP / `POST /reload`: re-read the configuration file(s) and apply what changed.
pub async fn reload(a: &mut Agent) {
    let loaded = match pgherd_config::load_from_process_env(a.config_path.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            warn!("reload: configuration rejected, keeping the current one: {e}");
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
    a.settings = crate::settings::engine_settings(&a.cfg, &a.name, &a.dynamic);
    reload_api_settings(a).await;
    a.applied_params = None;
    a.reload_parameters_if_changed().await;
    info!("configuration reloaded");
}

/// `restapi:` (authentication, allowlist, certificates, extra headers) and `ctl:` as re-read:
/// the REST API applies them to the next request or handshake, like Patroni's reload. A
/// certificate or key that cannot be read keeps the current settings.
async fn reload_api_settings(a: &mut Agent) {
    let cfg = a.cfg.clone();
    // Allowlist host names are resolved with blocking DNS.
    let built = tokio::task::spawn_blocking(move || {
        pgherd_api::ApiSettings::from_config(&cfg.restapi, &cfg.ctl)
    })
    .await;
    match built {
        Ok(Ok(settings)) => {
            if let Some(note) = a.api_settings.replace(settings) {
                warn!("reload: {note}");
            }
            match crate::peers::client(&a.cfg) {
                Ok(http) => a.http = http,
                Err(e) => warn!("reload: peer probes keep their TLS settings: {e:#}"),
            }
        }
        Ok(Err(e)) => warn!("reload: REST API settings rejected, keeping the current ones: {e}"),
        Err(e) => warn!("reload: REST API settings not rebuilt: {e}"),
    }
}

/// Reads a scheduled restart back from our own member key after an agent restart.
pub fn restore_from_member(a: &mut Agent, cluster: &pgherd_dcs::Cluster) {
    if a.scheduled_restart.is_some() {
        return;
    }
    let Some(value) = cluster
        .members
        .get(&a.name)
        .and_then(|m| m.data.scheduled_restart.clone())
    else {
        return;
    };
    if let Some(request) = RestartRequest::from_member_value(&value) {
        info!(
            "restored the scheduled restart at {:?} from the member key",
            request.schedule
        );
        a.scheduled_restart_start_time = value
            .get("postmaster_start_time")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        a.scheduled_restart = Some(request);
    }
}
