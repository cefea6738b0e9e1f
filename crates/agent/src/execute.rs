//! Carrying out the engine's actions, in order. A failed action (error, or a lock operation
//! answering "no") skips the rest; the next cycle decides again on fresh facts.

use crate::agent::Agent;
use crate::tasks::RunningTask;
use anyhow::{anyhow, Context, Result};
use pgherd_dcs::{Cluster, Role};
use pgherd_ha::{Action, AsyncAction, Decision, DemoteMode, LocalPg, StartRole};
use pgherd_postgres::{CallbackAction, StopMode};
use std::future::Future;
use std::sync::Arc;
use tracing::{info, warn};

pub async fn run(
    a: &mut Agent,
    decision: &Decision,
    cluster: Option<&Arc<Cluster>>,
    local: &LocalPg,
) -> Result<()> {
    for action in &decision.actions {
        match one(a, action, cluster, local).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                if let Action::Fatal { .. } = action {
                    return Err(e);
                }
                warn!("{action:?} failed: {e:#}");
                break;
            }
        }
    }
    Ok(())
}

fn spawn<F>(a: &mut Agent, kind: AsyncAction, fut: F)
where
    F: Future<Output = Result<crate::tasks::TaskOutcome>> + Send + 'static,
{
    a.task = Some(RunningTask {
        kind,
        handle: tokio::spawn(fut),
    });
}

fn need_cluster(cluster: Option<&Arc<Cluster>>) -> Result<Arc<Cluster>> {
    cluster.cloned().context("no DCS view")
}

async fn one(
    a: &mut Agent,
    action: &Action,
    cluster: Option<&Arc<Cluster>>,
    local: &LocalPg,
) -> Result<bool> {
    match action {
        Action::Bootstrap => {
            if !a.dcs.initialize(true, "").await? {
                info!("failed to acquire initialize lock");
                return Ok(false);
            }
            info!("won the initialize race: bootstrapping a new cluster");
            let ctx = a.task_context();
            spawn(a, AsyncAction::Bootstrap, ctx.bootstrap());
            Ok(true)
        }
        Action::WriteInitialize { sysid } => {
            a.dcs.initialize(false, sysid).await?;
            Ok(true)
        }
        Action::Clone { source, upstream } => {
            let ctx = a.task_context();
            let cluster = need_cluster(cluster)?;
            spawn(
                a,
                AsyncAction::Clone,
                ctx.clone_replica(cluster, source.clone(), upstream.clone()),
            );
            Ok(true)
        }
        Action::AcquireLock => {
            let sent = a.clock.now();
            let won = a.dcs.attempt_to_acquire_leader().await?;
            if won {
                a.set_lock_confirmed(Some(sent));
                info!("acquired the leader lock");
            } else {
                info!("lost the leader race: another member took the lock first");
            }
            Ok(won)
        }
        Action::RenewLock => {
            let sent = a.clock.now();
            if a.dcs.update_leader().await? {
                a.set_lock_confirmed(Some(sent));
                Ok(true)
            } else {
                a.set_lock_confirmed(None);
                warn!("the leader lock is no longer ours");
                Ok(false)
            }
        }
        Action::ReleaseLock => {
            a.dcs.delete_leader().await?;
            a.set_lock_confirmed(None);
            info!("released the leader lock");
            Ok(true)
        }
        Action::StartPostgres(role) => {
            let upstream = match role {
                StartRole::Primary => None,
                StartRole::Replica { upstream } => Some(upstream.clone().unwrap_or_default()),
            };
            let ctx = a.task_context();
            spawn(a, AsyncAction::Start, ctx.start(cluster.cloned(), upstream));
            Ok(true)
        }
        Action::Promote => {
            if !pre_promote(a).await? {
                return Ok(false);
            }
            crate::proxy_fence::wait(a).await;
            a.pg.promote(true).await.context("pg_ctl promote")?;
            a.upstream = None;
            a.role = Role::Primary;
            // Rewrite the configuration as a primary (no recovery settings).
            let params = a.parameters();
            a.pg.write_config(&params, None)?;
            a.applied_params = Some(params);
            // A checkpoint makes the new timeline visible in pg_control at once, which
            // pg_rewind on the former primary relies on.
            if let Err(e) = a.pg.checkpoint().await {
                warn!("checkpoint after promote failed: {e:#}");
            }
            info!("promoted PostgreSQL to primary");
            crate::callbacks::run(&a.pg, &a.cfg, CallbackAction::OnRoleChange, Role::Primary);
            Ok(true)
        }
        Action::Demote(mode) => demote(a, *mode).await,
        Action::Follow { upstream } => {
            let recovery = crate::tasks::recovery_conf_for(
                &a.cfg,
                &a.name,
                cluster.map(|c| c.as_ref()),
                Some(upstream),
            );
            let params = a.parameters();
            let changed = a.pg.write_config(&params, recovery.as_ref())?;
            a.applied_params = Some(params);
            if changed {
                a.pg.reload().await?;
            }
            a.upstream = Some(upstream.clone());
            info!("now following {upstream}");
            Ok(true)
        }
        Action::Rewind { source } => {
            let ctx = a.task_context();
            let cluster = need_cluster(cluster)?;
            let remove = a.settings.remove_data_directory_on_rewind_failure;
            spawn(
                a,
                AsyncAction::Rewind,
                ctx.rewind(cluster, source.clone(), remove),
            );
            Ok(true)
        }
        Action::Reinitialize { source } => {
            let ctx = a.task_context();
            let cluster = need_cluster(cluster)?;
            spawn(
                a,
                AsyncAction::Reinitialize,
                ctx.reinitialize(
                    cluster,
                    source.clone(),
                    "remove_data_directory_on_diverged_timelines is set",
                ),
            );
            Ok(true)
        }
        Action::PublishLeaderState => {
            let cluster = need_cluster(cluster)?;
            crate::leader::publish(a, &cluster, local).await
        }
        Action::ClearFailover { index } => {
            a.dcs.set_failover_value("{}", Some(*index)).await?;
            Ok(true)
        }
        Action::SetSynchronousStandbys { names, strict } => {
            let value = standby_names_value(names, *strict, a.settings.synchronous_node_count);
            a.sync_standby_names = Some(value.clone());
            let params = a.parameters();
            let recovery = crate::tasks::recovery_conf_for(
                &a.cfg,
                &a.name,
                cluster.map(|c| c.as_ref()),
                a.upstream.as_deref(),
            );
            if a.pg.write_config(&params, recovery.as_ref())? {
                a.pg.reload().await?;
            }
            a.applied_params = Some(params);
            info!("synchronous_standby_names = '{value}'");
            Ok(true)
        }
        Action::WriteSync { standbys, index } => {
            let state = pgherd_dcs::SyncState::new(&a.name, standbys);
            let written = a.dcs.set_sync_state(&state, *index).await?;
            if !written {
                info!("sync key changed concurrently; retrying next cycle");
            }
            Ok(written)
        }
        Action::DeleteSync { index } => {
            a.dcs.delete_sync_state(Some(*index)).await?;
            Ok(true)
        }
        Action::Fatal { message } => Err(anyhow!("{message}")),
    }
}

/// Demotion (compat §4.8). The server is left stopped except for `Offline`: the next cycle
/// decides how it comes back (follow, rewind) with the leader it then sees.
async fn demote(a: &mut Agent, mode: DemoteMode) -> Result<bool> {
    let timeout = a.pg.options().pg_ctl_timeout;
    if mode == DemoteMode::Graceful {
        if let Err(e) = a.pg.checkpoint().await {
            warn!("checkpoint before switchover failed: {e:#}");
        }
    }
    let stop = if mode.fast_stop() {
        StopMode::Fast
    } else {
        StopMode::Immediate
    };
    a.pg.stop(stop, timeout).await?;
    if mode.releases_lock() {
        a.dcs.delete_leader().await?;
    }
    a.set_lock_confirmed(None);
    if mode == DemoteMode::Offline {
        let ctx = a.task_context();
        spawn(a, AsyncAction::Start, ctx.start(None, Some(String::new())));
    }
    a.was_running = false;
    a.role = Role::Demoted;
    info!("demoted ({mode:?})");
    crate::callbacks::run(&a.pg, &a.cfg, CallbackAction::OnRoleChange, Role::Replica);
    Ok(true)
}

/// `synchronous_standby_names` for these members: none -> `*` (strict: commits wait for any
/// standby) or empty (asynchronous); one -> `"a"`; several -> `N ("a","b")`.
fn standby_names_value(names: &[String], strict: bool, count: usize) -> String {
    let quoted: Vec<String> = names
        .iter()
        .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
        .collect();
    match quoted.len() {
        0 if strict => "*".to_string(),
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} ({})", count.clamp(1, n), quoted.join(",")),
    }
}

/// Runs `postgresql.pre_promote`; a non-zero exit cancels the promotion, releases the lock
/// and keeps this node out of the race for one ttl.
async fn pre_promote(a: &mut Agent) -> Result<bool> {
    let Some(cmd) = a.cfg.postgresql.pre_promote.clone() else {
        return Ok(true);
    };
    let status = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&cmd)
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| format!("running pre_promote {cmd}"))?;
    if status.success() {
        return Ok(true);
    }
    warn!("pre_promote {cmd} exited with {status}: promotion cancelled, releasing the leader lock");
    a.dcs.delete_leader().await?;
    a.set_lock_confirmed(None);
    a.promotion_blocked_until = Some(a.clock.now() + a.settings.ttl);
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::standby_names_value;

    #[test]
    fn standby_names_render_like_patroni() {
        let n = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(standby_names_value(&[], true, 1), "*");
        assert_eq!(standby_names_value(&[], false, 1), "");
        assert_eq!(standby_names_value(&n(&["node2"]), false, 1), "\"node2\"");
        assert_eq!(
            standby_names_value(&n(&["a", "b"]), false, 2),
            "2 (\"a\",\"b\")"
        );
    }
}
