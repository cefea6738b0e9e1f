//! One server as seen through one listener: session counters, byte counters, the kill
//! switch that closes every session it carries, and the gentler retirement of a pooled read
//! rotation (in-flight transactions finish, no connection is used again).

use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Counters and the kill switch of one (listener, member) pair. Lives as long as the member is
/// known, across routing-table rebuilds.
#[derive(Debug)]
pub struct Backend {
    pub member: String,
    pub listener: usize,
    active: AtomicUsize,
    max: AtomicUsize,
    total: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub errors: AtomicU64,
    /// Bumped to close every session on this backend.
    kill: watch::Sender<u64>,
    /// Bumped on a kill and on a retirement: every pooled connection to this backend is
    /// closed when it is next idle (the pools' janitors and checkouts watch it).
    retire: watch::Sender<u64>,
    /// A retirement is in force and its grace period has not ended.
    retiring: AtomicBool,
    /// Notified when a session ends (the fencing confirmation waits for zero).
    closed: Arc<Notify>,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BackendCounters {
    pub active: usize,
    pub max: usize,
    pub total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub errors: u64,
}

impl Backend {
    pub fn new(member: &str, listener: usize, closed: Arc<Notify>) -> Arc<Backend> {
        Arc::new(Backend {
            member: member.to_string(),
            listener,
            active: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
            total: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            kill: watch::channel(0).0,
            retire: watch::channel(0).0,
            retiring: AtomicBool::new(false),
            closed,
        })
    }

    /// Registers a session before it connects. The kill receiver only fires for kills issued
    /// after this call, so whoever kills must publish the routing change first and kill second;
    /// the session re-checks the routing table after entering.
    pub fn enter(self: &Arc<Self>) -> SessionGuard {
        let kill = self.kill.subscribe();
        let retired = self.retire.subscribe();
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::Relaxed);
        SessionGuard {
            backend: self.clone(),
            kill,
            retired,
            counted: false,
        }
    }

    /// Fires on every [`Backend::kill_all`] and [`Backend::retire_all`] from now on (the
    /// pools' janitors watch it).
    pub fn kill_watch(&self) -> watch::Receiver<u64> {
        self.retire.subscribe()
    }

    /// Closes every session currently on this backend.
    pub fn kill_all(&self) -> usize {
        self.retire.send_modify(|n| *n += 1);
        self.kill.send_modify(|n| *n += 1);
        self.active()
    }

    /// Retires every pooled connection on this backend: idle ones are closed, busy ones when
    /// their transaction ends (a relay does not watch a retirement). `true` when no earlier
    /// retirement is still in its grace period (the caller then schedules the kill that ends
    /// it, see [`Backend::end_retirement`]).
    pub fn retire_all(&self) -> bool {
        self.retire.send_modify(|n| *n += 1);
        !self.retiring.swap(true, Ordering::SeqCst)
    }

    /// The grace period of a retirement is over.
    pub fn end_retirement(&self) {
        self.retiring.store(false, Ordering::SeqCst);
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub fn counters(&self) -> BackendCounters {
        BackendCounters {
            active: self.active(),
            max: self.max.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// A session's registration on a backend; leaving is automatic on drop.
pub struct SessionGuard {
    pub backend: Arc<Backend>,
    pub kill: watch::Receiver<u64>,
    retired: watch::Receiver<u64>,
    counted: bool,
}

impl SessionGuard {
    /// The server connection succeeded: count the session in `total`.
    pub fn connected(&mut self) {
        if !self.counted {
            self.counted = true;
            self.backend.total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether a kill or a retirement was issued since [`Backend::enter`]: the connection
    /// must not be used again.
    pub fn killed(&self) -> bool {
        self.kill.has_changed().unwrap_or(true) || self.retired.has_changed().unwrap_or(true)
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.backend.active.fetch_sub(1, Ordering::SeqCst);
        self.backend.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn enter_kill_leave() {
        let closed = Arc::new(Notify::new());
        let b = Backend::new("node1", 0, closed.clone());
        let mut g1 = b.enter();
        g1.connected();
        let g2 = b.enter();
        assert_eq!(b.counters().active, 2);
        assert!(!g1.killed());
        assert_eq!(b.kill_all(), 2);
        assert!(g1.killed() && g2.killed());
        let g3 = b.enter();
        assert!(!g3.killed(), "a kill before entering does not apply");
        let waiter = closed.notified();
        drop(g1);
        waiter.await;
        drop((g2, g3));
        let c = b.counters();
        assert_eq!((c.active, c.max, c.total), (0, 3, 1));
    }

    #[tokio::test]
    async fn a_retirement_marks_connections_but_fires_no_kill() {
        let b = Backend::new("node2", 0, Arc::new(Notify::new()));
        let mut janitor = b.kill_watch();
        let g = b.enter();
        assert!(b.retire_all(), "the first retirement starts a grace period");
        assert!(!b.retire_all(), "a second one during it does not");
        assert!(g.killed(), "not to be used again");
        assert!(
            !g.kill.has_changed().unwrap(),
            "a relay watching kills is not cut"
        );
        assert!(janitor.has_changed().unwrap(), "the janitor sweeps");
        janitor.borrow_and_update();
        b.end_retirement();
        assert!(b.retire_all());
        assert_eq!(b.kill_all(), 1);
        assert!(g.kill.has_changed().unwrap() && janitor.has_changed().unwrap());
    }
}
