//! The leader lease as this agent knows it: when the DCS last confirmed it (the time the
//! request was sent, a conservative bound), and the fence armed to stop PostgreSQL before it
//! could have expired.

use crate::fence::{FenceHandle, Stopping};
use crate::watchdog::SharedWatchdog;
use pgherd_ha::{Millis, Settings};
use std::time::Duration;
use tokio::time::Instant;

/// The agent's monotonic clock in engine units (milliseconds since the agent started).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            base: Instant::now(),
        }
    }

    pub fn now(&self) -> Millis {
        self.base.elapsed().as_millis() as Millis
    }

    pub fn instant(&self, at: Millis) -> Instant {
        self.base + Duration::from_millis(at)
    }
}

pub struct Lease {
    clock: Clock,
    confirmed_at: Option<Millis>,
    fence: FenceHandle,
    fence_stopping: Stopping,
    /// Until when the lease counts as current (`confirmed + ttl - margin`), for background
    /// work that must not act on a lapsed lease (a promotion after a slow `pre_promote`).
    current_until: tokio::sync::watch::Sender<Option<Instant>>,
    /// Kept alive after every confirmation (Patroni: after every successful update_leader).
    watchdog: SharedWatchdog,
    /// `false` only for the simulator's planted "no fence" defect.
    fence_armed: bool,
}

impl Lease {
    pub fn new(
        clock: Clock,
        fence: FenceHandle,
        fence_stopping: Stopping,
        watchdog: SharedWatchdog,
    ) -> Lease {
        Lease {
            clock,
            confirmed_at: None,
            fence,
            fence_stopping,
            current_until: tokio::sync::watch::Sender::new(None),
            watchdog,
            fence_armed: true,
        }
    }

    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// The monotonic instant of a lease-clock time.
    pub fn instant(&self, at: Millis) -> Instant {
        self.clock.instant(at)
    }

    /// When (sent-at) the DCS last confirmed our leader lease; `None` when not leader.
    pub fn confirmed_at(&self) -> Option<Millis> {
        self.confirmed_at
    }

    pub fn held(&self) -> bool {
        self.confirmed_at.is_some()
    }

    /// Held and confirmed recently enough that the fence has not fired.
    pub fn current(&self, settings: &Settings) -> bool {
        self.confirmed_at.is_some_and(|at| {
            self.clock.now() < at + settings.ttl.saturating_sub(settings.fencing_margin)
        })
    }

    /// The soonest the leader key could expire, from now: ttl after the request that last
    /// confirmed it was sent (the DCS starts counting when it receives it, later).
    pub fn key_expires_in(&self, ttl: Millis) -> Option<Millis> {
        let expiry = self.confirmed_at? + ttl;
        let now = self.clock.now();
        (now < expiry).then(|| expiry - now)
    }

    /// The DCS confirmed the lease for a request sent at `sent`: the fence moves to
    /// `sent + ttl - fencing_margin`, the watchdog (if armed) gets one more timeout.
    pub fn confirm(&mut self, sent: Millis, settings: &Settings) {
        self.confirmed_at = Some(sent);
        self.watchdog.with(|w| w.keepalive());
        let deadline = self
            .clock
            .instant(sent + settings.ttl.saturating_sub(settings.fencing_margin));
        self.current_until.send_replace(Some(deadline));
        if self.fence_armed {
            let _ = self.fence.send(Some(deadline));
        }
    }

    /// The fence is stopping PostgreSQL right now.
    pub fn fence_stopping(&self) -> bool {
        self.fence_stopping
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The simulator's planted "no fence" defect.
    pub fn disarm_fence(&mut self) {
        self.fence_armed = false;
    }

    /// Not (or no longer) the leader: the fence is disarmed.
    pub fn clear(&mut self) {
        self.confirmed_at = None;
        self.current_until.send_replace(None);
        let _ = self.fence.send(None);
    }

    /// Follows [`Lease::current`] from a background task.
    pub fn current_until(&self) -> tokio::sync::watch::Receiver<Option<Instant>> {
        self.current_until.subscribe()
    }

    /// Until when we count as leader (`GET /leader`): last confirmation + ttl.
    pub fn valid_until(&self, ttl: Millis) -> Option<Instant> {
        self.confirmed_at.map(|t| self.clock.instant(t + ttl))
    }
}
