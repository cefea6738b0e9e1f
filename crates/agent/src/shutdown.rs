//! Stopping (Patroni's shutdown): stop PostgreSQL, then give up the leader key so a replica
//! can take over at once instead of waiting for the lease to expire. Bounded whatever the DCS
//! does: PostgreSQL's stop (fast, escalated to immediate after `pg_ctl_timeout`), then at most
//! `retry_timeout` for the DCS writes, then the REST API gets [`API_STOP_TIMEOUT`] to close.
//! A second SIGTERM/SIGINT ends the process at once.

use crate::agent::Agent;
use anyhow::{Context, Result};
use pgherd_postgres::{CallbackAction, StopMode};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long open REST API connections may delay the exit.
pub const API_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// SIGTERM and SIGINT: the first sets the returned flag (a clean, bounded stop follows); the
/// second ends the process at once, whatever the stop is waiting for.
pub fn install_signal_handlers() -> Result<watch::Receiver<bool>> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!("{first} received: shutting down");
        let _ = tx.send(true);
        let second = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        warn!("{second} received during shutdown (second signal): exiting at once");
        std::process::exit(1);
    });
    Ok(rx)
}

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
    let budget = Duration::from_millis(a.settings.retry_timeout);
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

/// The DCS side of a clean stop: our last position in `status` and the leader key released
/// (if we hold it), the member key saying `stopped`.
async fn release(a: &mut Agent) -> Result<()> {
    // The last cycle may have been abandoned between taking the lock and noting it.
    let holds_lock = a.lock_confirmed_at.is_some()
        || a.last_cluster
            .as_ref()
            .is_some_and(|c| c.leader_name() == Some(a.name.as_str()));
    a.set_lock_confirmed(None);
    if holds_lock {
        if let Ok(cd) = a.pg.controldata().await {
            let status = pgherd_dcs::Status {
                optime: cd.checkpoint_lsn,
                ..Default::default()
            };
            a.dcs
                .write_status(&status)
                .await
                .context("writing status")?;
        }
        a.dcs
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
    member.role = Some(a.role);
    a.dcs
        .touch_member(&member)
        .await
        .context("updating the member key")?;
    Ok(())
}
