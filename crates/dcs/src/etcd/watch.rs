//! The background watch on the cluster prefix: one `Watch` stream at a time, re-opened from
//! the last seen revision after errors, bumping the change counter once per event.

use super::connection::Connection;
use super::retry::{describe, Attempt, FIRST_BACKOFF};
use super::wire::{prefix_end, WatchCreateRequest};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};
use tracing::{debug, warn};

/// Longest pause between two attempts to re-open the watch.
const WATCH_MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Aborts a watch task when the owning client (`EtcdDcs`, `ZooKeeperDcs`) goes away.
pub(crate) struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps a watch on `prefix` open for ever, bumping `changes` once per event.
pub(super) async fn watch_prefix(
    conn: Arc<Connection>,
    prefix: String,
    changes: Arc<watch::Sender<u64>>,
    request_timeout: Duration,
) {
    // 0: from now; otherwise the first revision we have not seen yet.
    let mut next_revision = 0;
    let mut backoff = FIRST_BACKOFF;
    let mut quiet = false;
    loop {
        let mut established = false;
        let why = follow(
            &conn,
            &prefix,
            &changes,
            request_timeout,
            &mut next_revision,
            &mut established,
        )
        .await;
        if established {
            backoff = FIRST_BACKOFF;
            quiet = false;
        }
        if quiet {
            debug!(prefix = %prefix, reason = %why, "etcd watch still down; retrying");
        } else {
            warn!(prefix = %prefix, endpoints = %conn.shown, reason = %why, "etcd watch interrupted; reconnecting");
            quiet = true;
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(WATCH_MAX_BACKOFF);
    }
}

/// One watch stream, until it fails; returns why. Connecting, authenticating and the creation
/// of the watch share one deadline of `request_timeout`.
async fn follow(
    conn: &Connection,
    prefix: &str,
    changes: &watch::Sender<u64>,
    request_timeout: Duration,
    next_revision: &mut i64,
    established: &mut bool,
) -> String {
    let deadline = Instant::now() + request_timeout;
    let current = match conn.client(request_timeout).await {
        Ok(c) => c,
        Err(Attempt::Transient(why) | Attempt::Permanent(why) | Attempt::BadToken(why)) => {
            return why
        }
        Err(Attempt::LeaseGone) => return "unexpected lease error while connecting".to_string(),
    };
    // The connection failed us: the next try goes to the next endpoint.
    let broken = |why: &str| {
        conn.invalidate(&current);
        format!("{}: {why}", conn.url(&current))
    };
    let create = WatchCreateRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(prefix.as_bytes()),
        start_revision: *next_revision,
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let mut stream = match timeout(left, current.client.watch(create)).await {
        Ok(Ok(s)) => s,
        Ok(Err(status)) => return broken(&describe(&status)),
        Err(_) => return broken("no answer while opening the watch"),
    };
    loop {
        // Until etcd confirms the watch, the same deadline applies; afterwards the stream may
        // stay quiet for ever (HTTP/2 pings notice a dead etcd).
        let next = if *established {
            Ok(stream.message().await)
        } else {
            timeout(
                deadline.saturating_duration_since(Instant::now()),
                stream.message(),
            )
            .await
        };
        let resp = match next {
            Ok(Ok(Some(resp))) => resp,
            Ok(Ok(None)) => return broken("stream closed by etcd"),
            Ok(Err(status)) => return broken(&describe(&status)),
            Err(_) => return broken("the watch was not confirmed in time"),
        };
        if resp.created {
            if !*established {
                debug!(prefix = %prefix, from = *next_revision, "etcd watch open");
            }
            *established = true;
            if *next_revision == 0 {
                if let Some(header) = &resp.header {
                    *next_revision = header.revision + 1;
                }
            }
        }
        if resp.compact_revision > 0 {
            // The history we would resume from is gone: restart from now and report a change,
            // since we may have missed some.
            *next_revision = 0;
            changes.send_modify(|c| *c = c.wrapping_add(1));
            return format!("revision compacted at {}", resp.compact_revision);
        }
        if resp.canceled {
            // e.g. the member lost its quorum (we require a leader), or our token expired:
            // reconnect (and authenticate again), on the next endpoint.
            return broken(&format!("watch cancelled by etcd: {}", resp.cancel_reason));
        }
        if !resp.events.is_empty() {
            for kv in resp.events.iter().filter_map(|e| e.kv.as_ref()) {
                *next_revision = (*next_revision).max(kv.mod_revision + 1);
            }
            let n = resp.events.len() as u64;
            changes.send_modify(|c| *c = c.wrapping_add(n));
        }
    }
}
