//! Carrying out the engine's actions, in order. A failed action (error, or a lock operation
//! answering "no") skips the rest; the next cycle decides again on fresh facts. Long actions
//! start a background task (`crate::tasks`) and return at once, so the loop keeps renewing
//! the lease meanwhile.

use crate::agent::Agent;
use anyhow::{anyhow, Context, Result};
use pgherd_dcs::{Cluster, Failover};
use pgherd_ha::{Action, AsyncAction, Decision, LocalPg, Replication};
use std::sync::Arc;
use tracing::{info, warn};

pub async fn run(
    a: &mut Agent,
    decision: &Decision,
    cluster: Option<&Arc<Cluster>>,
    local: &LocalPg,
) -> Result<()> {
    for action in &decision.actions {
        let result = one(a, action, cluster, local).await;
        a.world
            .trace
            .action_done(action, matches!(result, Ok(true)));
        match result {
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

fn need_cluster(cluster: Option<&Arc<Cluster>>) -> Result<Arc<Cluster>> {
    cluster.cloned().context("no DCS view")
}

async fn one(
    a: &mut Agent,
    action: &Action,
    cluster: Option<&Arc<Cluster>>,
    local: &LocalPg,
) -> Result<bool> {
    let leader = a.lease.held();
    match action {
        Action::Bootstrap => {
            if !a.world.dcs.claim_initialize().await? {
                info!("failed to acquire initialize lock");
                return Ok(false);
            }
            info!("won the initialize race: bootstrapping a new cluster");
            let ctx = a.task_context();
            a.tasks
                .start(AsyncAction::Bootstrap, leader, ctx.bootstrap());
            Ok(true)
        }
        Action::WriteInitialize { sysid } => {
            a.world.dcs.write_initialize(sysid).await?;
            Ok(true)
        }
        Action::Clone { source, upstream } => {
            let ctx = a.task_context();
            let cluster = need_cluster(cluster)?;
            a.tasks.start(
                AsyncAction::Clone,
                leader,
                ctx.clone_replica(cluster, source.clone(), upstream.clone()),
            );
            Ok(true)
        }
        Action::AcquireLock => {
            let sent = a.lease.now();
            let won = a.world.dcs.attempt_to_acquire_leader().await?;
            if won {
                a.lease.confirm(sent, &a.dynamic.settings);
                info!("acquired the leader lock");
                crate::failsafe::publish_topology(a, cluster.map(|c| &**c)).await;
            } else {
                info!("lost the leader race: another member took the lock first");
            }
            Ok(won)
        }
        Action::RenewLock => {
            let sent = a.lease.now();
            if a.world.dcs.update_leader().await? {
                a.lease.confirm(sent, &a.dynamic.settings);
                crate::failsafe::publish_topology(a, cluster.map(|c| &**c)).await;
                Ok(true)
            } else {
                a.lease.clear();
                warn!("the leader lock is no longer ours");
                Ok(false)
            }
        }
        Action::ReleaseLock => {
            a.vip.release().await;
            a.world.dcs.delete_leader().await?;
            a.lease.clear();
            info!("released the leader lock");
            Ok(true)
        }
        Action::StartPostgres(replication) => {
            let ctx = a.task_context();
            a.tasks.start(
                AsyncAction::Start,
                leader,
                ctx.start(cluster.cloned(), replication.clone()),
            );
            Ok(true)
        }
        Action::Promote => {
            let ctx = a.task_context();
            let former = a.view.last_known_leader.clone();
            let wait = a.dynamic.config.proxy_fencing_timeout;
            a.tasks
                .start(AsyncAction::Promote, leader, ctx.promote(former, wait));
            Ok(true)
        }
        Action::Demote(mode) => {
            info!("demoting ({mode:?})");
            a.vip.release().await;
            let ctx = a.task_context();
            a.tasks.start(AsyncAction::Stop, leader, ctx.demote(*mode));
            Ok(true)
        }
        Action::Follow { upstream } => {
            let (recovery, effective) = crate::tasks::recovery_conf_for(
                &a.cfg,
                &a.me.name,
                a.dynamic.config.postgresql.use_slots,
                cluster.map(|c| c.as_ref()),
                &Replication::From(upstream.clone()),
            );
            if effective != Replication::From(upstream.clone()) {
                info!("{upstream} has published no connection address yet: following it later");
                return Ok(false);
            }
            let params = a.parameters();
            let changed = a.world.pg.write_config(&params, recovery.as_ref()).await?;
            a.pg.params_written(params);
            if changed {
                a.world.pg.reload().await?;
            }
            a.pg.replication = effective;
            info!("now following {upstream}");
            Ok(true)
        }
        Action::Rewind { source } => {
            let ctx = a.task_context();
            let cluster = need_cluster(cluster)?;
            let remove = a.dynamic.settings.remove_data_directory_on_rewind_failure;
            a.tasks.start(
                AsyncAction::Rewind,
                leader,
                ctx.rewind(cluster, source.clone(), remove),
            );
            Ok(true)
        }
        Action::Reinitialize { source } => {
            let ctx = a.task_context();
            let cluster = need_cluster(cluster)?;
            a.tasks.start(
                AsyncAction::Reinitialize,
                leader,
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
            let cleared = a
                .world
                .dcs
                .set_failover(&Failover::none(), Some(*index))
                .await?;
            if !cleared {
                info!("the failover key changed concurrently; deciding again next cycle");
            }
            Ok(cleared)
        }
        Action::SetSynchronousStandbys { names, strict } => {
            let value =
                standby_names_value(names, *strict, a.dynamic.settings.synchronous_node_count);
            a.pg.set_sync_standby_names(Some(value.clone()));
            if a.write_server_config(cluster.map(|c| c.as_ref())).await? {
                a.world.pg.reload().await?;
            }
            info!("synchronous_standby_names = '{value}'");
            Ok(true)
        }
        Action::WriteSync { standbys, index } => {
            let state = pgherd_dcs::SyncState::new(&a.me.name, standbys);
            let written = a.world.dcs.set_sync_state(&state, *index).await?;
            if !written {
                info!("sync key changed concurrently; retrying next cycle");
            }
            Ok(written)
        }
        Action::DeleteSync { index } => {
            a.world.dcs.delete_sync_state(Some(*index)).await?;
            Ok(true)
        }
        Action::Fatal { message } => Err(anyhow!("{message}")),
    }
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
