//! Clean shutdown (compat §4.15): stop PostgreSQL, then give up the leader key so a replica
//! can take over at once instead of waiting for the lease to expire.

use crate::agent::Agent;
use pgherd_postgres::{CallbackAction, StopMode};
use tracing::{info, warn};

pub async fn stop(a: &mut Agent, clean: bool) {
    if let Some(task) = a.task.take() {
        info!("cancelling {} in progress", task.kind.describe());
        task.handle.abort();
        let _ = task.handle.await;
    }
    let paused = a.last_cluster.as_ref().is_some_and(|c| c.is_paused());
    if paused {
        info!("cluster is paused: leaving PostgreSQL running and the leader key in place");
        return;
    }
    if !clean {
        // A fatal error (e.g. foreign data directory): we never started anything; leave it.
        return;
    }
    let holds_lock = a.lock_confirmed_at.is_some();
    if a.pg.is_running().is_some() {
        info!("stopping PostgreSQL");
        if let Err(e) =
            a.pg.stop(StopMode::Fast, a.pg.options().pg_ctl_timeout)
                .await
        {
            warn!("stopping PostgreSQL failed: {e:#}");
        }
        crate::callbacks::run(&a.pg, &a.cfg, CallbackAction::OnStop, a.role);
    }
    if holds_lock {
        if let Ok(cd) = a.pg.controldata().await {
            let status = pgherd_dcs::Status {
                optime: cd.checkpoint_lsn,
                ..Default::default()
            };
            let _ = a.dcs.write_status(&status).await;
        }
        match a.dcs.delete_leader().await {
            Ok(()) => info!("released the leader lock"),
            Err(e) => warn!("could not release the leader lock: {e}"),
        }
        a.set_lock_confirmed(None);
    }
    let mut member = crate::report::member_data(
        a,
        &pgherd_ha::LocalPg::stopped(pgherd_ha::DataDir::Empty),
        None,
    );
    member.state = "stopped".into();
    member.role = Some(a.role);
    let _ = a.dcs.touch_member(&member).await;
}
