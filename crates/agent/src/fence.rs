//! Self-fencing independent of the HA loop: if the leader lease was last confirmed longer
//! ago than `ttl - margin` and PostgreSQL still runs as a primary, stop it at once.
//!
//! The HA loop demotes on its own when a renewal fails, but a DCS call can hang and a cycle
//! can be late; this task only sleeps until the deadline, so it fires on time even then.

use crate::tasks::OwnedTask;
use crate::vip::VipKeeper;
use crate::watchdog::SharedWatchdog;
use crate::world::PgControl;
use pgherd_postgres::StopMode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// How long the fence asks PostgreSQL whether it is a primary before stopping it anyway.
const ROLE_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// While tripped, how often the fence looks again for a primary to stop.
const TRIPPED_RECHECK: Duration = Duration::from_millis(250);

/// Arms the fence: `Some(deadline)` while we hold the lock, `None` otherwise.
pub type FenceHandle = watch::Sender<Option<Instant>>;

/// `true` while the fence is stopping PostgreSQL (a restart that ends meanwhile failed).
pub type Stopping = Arc<AtomicBool>;

pub fn spawn(
    pg: Arc<dyn PgControl>,
    watchdog: SharedWatchdog,
    vip: VipKeeper,
) -> (FenceHandle, Stopping, OwnedTask<()>) {
    let (tx, mut rx) = watch::channel::<Option<Instant>>(None);
    let stopping = Stopping::default();
    let flag = stopping.clone();
    let task = OwnedTask::spawn(async move {
        loop {
            let deadline = *rx.borrow_and_update();
            match deadline {
                None => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
                Some(at) => {
                    tokio::select! {
                        biased;
                        changed = rx.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                        _ = tokio::time::sleep_until(at) => {
                            if rx.borrow().is_some_and(|d| d <= Instant::now()) {
                                // The address goes first: clients must not reach a primary
                                // whose lease may be gone (docs/compat.md#virtual-ip).
                                vip.release().await;
                                tripped(pg.as_ref(), &watchdog, &flag, &mut rx).await;
                            }
                        }
                    }
                }
            }
        }
    });
    (tx, stopping, task)
}

/// The deadline passed: until the HA loop confirms a lease again (or gives up leadership),
/// PostgreSQL must not run as a primary, including one that a restart or start already under
/// way brings up later.
async fn tripped(
    pg: &dyn PgControl,
    watchdog: &SharedWatchdog,
    stopping: &AtomicBool,
    rx: &mut watch::Receiver<Option<Instant>>,
) {
    let mut first = true;
    loop {
        if fire(pg, first, stopping, rx).await {
            // PostgreSQL is down: the watchdog's job is done (Patroni's safepoint).
            watchdog.with(|w| w.disable());
        }
        first = false;
        tokio::select! {
            biased;
            _ = rx.changed() => return,
            _ = tokio::time::sleep(TRIPPED_RECHECK) => {}
        }
    }
}

/// Stops PostgreSQL if it runs as a primary (or does not say it is a standby in time);
/// `true` when no primary runs any more.
async fn fire(
    pg: &dyn PgControl,
    first: bool,
    stopping: &AtomicBool,
    rx: &watch::Receiver<Option<Instant>>,
) -> bool {
    if pg.postmaster().is_none() {
        return true;
    }
    let standby = tokio::time::timeout(ROLE_CHECK_TIMEOUT, pg.query_state())
        .await
        .is_ok_and(|r| r.is_ok_and(|s| s.in_recovery));
    // The HA loop may have confirmed the lease (or given up leadership) while we asked: its
    // word wins, and a restart it is reporting on keeps its server.
    if !rx.borrow().is_some_and(|d| d <= Instant::now()) {
        return true;
    }
    if standby {
        if first {
            info!("fencing: leader lease not confirmed within ttl - safety margin, but PostgreSQL is a standby: nothing to stop");
        }
        return true;
    }
    warn!("fencing: leader lease not confirmed within ttl - safety margin; stopping PostgreSQL immediately to avoid split brain");
    stopping.store(true, Ordering::SeqCst);
    let stopped = match pg.stop(StopMode::Immediate, Duration::from_secs(10)).await {
        Ok(_) => true,
        Err(e) => {
            error!("fencing: immediate stop failed: {e:#}");
            false
        }
    };
    stopping.store(false, Ordering::SeqCst);
    stopped
}
