//! Stopping (Patroni's shutdown): stop PostgreSQL, then give up the leader key so a replica
//! can take over at once instead of waiting for the lease to expire. Bounded whatever the DCS
//! does: PostgreSQL's stop (fast, escalated to immediate after `pg_ctl_timeout`), then at most
//! `retry_timeout` for the DCS writes. A second SIGTERM/SIGINT ends the process at once (the
//! signal handling is `pgherd agent`'s, in `crate::run`).

use crate::agent::Agent;
use anyhow::{Context, Result};
use pgherd_postgres::{CallbackAction, StopMode};
use std::time::Duration;
use tracing::{info, warn};

pub async fn stop(a: &mut Agent, clean: bool) {
    a.tasks.cancel();
    // Before PostgreSQL stops accepting writes, also in pause (docs/compat.md#virtual-ip).
    a.vip.release().await;
    let paused = a.view.cluster.as_ref().is_some_and(|c| c.is_paused());
    if paused {
        info!("cluster is paused: leaving PostgreSQL running and the leader key in place");
        a.watchdog.with(|w| w.disable());
        return;
    }
    if !clean {
        // A fatal error (e.g. foreign data directory): we never started anything; leave it.
        return;
    }
    if a.world.pg.postmaster().is_some() {
        info!("stopping PostgreSQL");
        let timeout = a.world.pg.options().pg_ctl_timeout;
        let (pg, dcs, settings) = (
            a.world.pg.clone(),
            a.world.dcs.clone(),
            a.dynamic.settings.clone(),
        );
        // A leader keeps its lease while its server shuts down (a slow shutdown checkpoint
        // must not hand the cluster to a replica that misses the end of our WAL).
        let renew = keep_lease(&mut a.lease, dcs.as_ref(), &settings);
        let stopped = tokio::select! {
            biased;
            stopped = pg.stop(StopMode::Fast, timeout) => stopped,
            never = renew => match never {},
        };
        match stopped {
            // The magic close once no primary runs any more (Patroni's safepoint).
            Ok(_) => a.watchdog.with(|w| w.disable()),
            Err(e) => warn!(
                "stopping PostgreSQL failed: {e:#}{}",
                if a.watchdog.with(|w| w.is_running()) {
                    "; leaving the watchdog running"
                } else {
                    ""
                }
            ),
        }
        a.pg.stopped_by_us();
        a.callback(CallbackAction::OnStop);
    }
    let budget = Duration::from_millis(a.dynamic.settings.retry_timeout);
    match tokio::time::timeout(budget, release(a)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(
            "could not release the leader key and update the member key: {e:#}; they expire after ttl"
        ),
        Err(_) => warn!(
            "could not release the leader key and update the member key within retry_timeout ({budget:?}): the DCS does not answer; they expire after ttl"
        ),
    }
}

/// Renews the leader lease every loop_wait while we hold it (never returns).
async fn keep_lease(
    lease: &mut crate::lease::Lease,
    dcs: &dyn pgherd_dcs::Dcs,
    settings: &pgherd_ha::Settings,
) -> std::convert::Infallible {
    loop {
        if lease.held() {
            let sent = lease.now();
            match dcs.update_leader().await {
                Ok(true) => lease.confirm(sent, settings),
                Ok(false) => lease.clear(),
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(settings.loop_wait)).await;
    }
}

/// The DCS side of a clean stop: our last position in `status` and the leader key released
/// (if we hold it), the member key saying `stopped`.
async fn release(a: &mut Agent) -> Result<()> {
    // The last cycle may have been abandoned between taking the lock and noting it.
    let holds_lock = a.lease.held()
        || a.view
            .cluster
            .as_ref()
            .is_some_and(|c| c.leader_name() == Some(a.me.name.as_str()));
    a.lease.clear();
    if holds_lock {
        if let Ok(cd) = a.world.pg.controldata().await {
            let status = pgherd_dcs::Status {
                optime: cd.checkpoint_lsn,
                ..Default::default()
            };
            a.world
                .dcs
                .write_status(&status)
                .await
                .context("writing status")?;
        }
        a.world
            .dcs
            .delete_leader()
            .await
            .context("releasing the leader key")?;
        info!("released the leader lock");
    }
    let mut member = crate::report::member_data(
        a,
        &pgherd_ha::LocalPg::stopped(pgherd_ha::DataDir::Empty),
        None,
    );
    member.state = "stopped".into();
    a.world
        .dcs
        .touch_member(&member)
        .await
        .context("updating the member key")?;
    Ok(())
}
