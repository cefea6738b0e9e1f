//! Self-fencing independent of the HA loop: if the leader lease was last confirmed longer
//! ago than `ttl - margin` and PostgreSQL still runs as a primary, stop it at once.
//!
//! The HA loop demotes on its own when a renewal fails, but a DCS call can hang and a cycle
//! can be late; this task only sleeps until the deadline, so it fires on time even then.

use pgherd_postgres::{Postgres, StopMode};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, warn};

/// Arms the fence: `Some(deadline)` while we hold the lock, `None` otherwise.
pub type FenceHandle = watch::Sender<Option<Instant>>;

pub fn spawn(pg: Arc<Postgres>) -> FenceHandle {
    let (tx, mut rx) = watch::channel::<Option<Instant>>(None);
    tokio::spawn(async move {
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
                        changed = rx.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                        _ = tokio::time::sleep_until(at) => {
                            if rx.borrow().is_some_and(|d| d <= Instant::now()) {
                                fire(&pg).await;
                                // Disarmed until the HA loop confirms a lease again.
                                let _ = rx.changed().await;
                            }
                        }
                    }
                }
            }
        }
    });
    tx
}

async fn fire(pg: &Postgres) {
    if pg.is_running().is_none() {
        return;
    }
    warn!("fencing: leader lease not confirmed within ttl - safety margin; stopping PostgreSQL immediately to avoid split brain");
    if let Err(e) = pg.stop(StopMode::Immediate, Duration::from_secs(10)).await {
        error!("fencing: immediate stop failed: {e:#}");
    }
}
