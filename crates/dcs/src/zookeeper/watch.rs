//! One persistent recursive watch on the cluster's base znode (ZooKeeper 3.6+), re-added on
//! every new session (after expiry, a ttl change or a release), bumping the change counter once
//! per event.

use super::session::Sessions;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, timeout, Instant};
use tracing::debug;
use zookeeper_client as zk;

/// Pause before trying again after the watch could not be set.
const RETRY_EVERY: Duration = Duration::from_millis(500);

fn bump(changes: &tokio::sync::watch::Sender<u64>) {
    changes.send_modify(|n| *n = n.wrapping_add(1));
}

/// Runs until aborted (the owning `ZooKeeperDcs` is dropped).
pub(super) async fn watch_tree(
    sessions: Arc<Sessions>,
    base: String,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
) {
    let mut generations = sessions.generations();
    loop {
        let limit = sessions.request_timeout();
        let session = match sessions.session(Instant::now() + limit).await {
            Ok(s) => s,
            Err(error) => {
                debug!(member = %sessions.label, %error, "no ZooKeeper session to watch with");
                sleep(RETRY_EVERY).await;
                continue;
            }
        };
        let mut watcher = match timeout(
            limit,
            session
                .client
                .watch(&base, zk::AddWatchMode::PersistentRecursive),
        )
        .await
        {
            Ok(Ok(w)) => w,
            Ok(Err(error)) => {
                debug!(member = %sessions.label, %error, "could not watch {base}");
                sleep(RETRY_EVERY).await;
                continue;
            }
            Err(_) => {
                debug!(member = %sessions.label, "no answer to the watch request on {base}");
                sleep(RETRY_EVERY).await;
                continue;
            }
        };
        // Changes made while no watch was set would go unnoticed otherwise.
        bump(&changes);
        loop {
            tokio::select! {
                event = watcher.changed() => {
                    bump(&changes);
                    if event.event_type == zk::EventType::Session
                        && event.session_state.is_terminated()
                    {
                        debug!(member = %sessions.label, state = ?event.session_state, "watch session ended");
                        break;
                    }
                }
                changed = generations.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *generations.borrow_and_update() != session.generation {
                        debug!(member = %sessions.label, "session replaced: watching with the new one");
                        break;
                    }
                }
            }
        }
    }
}
