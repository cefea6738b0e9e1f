//! Idle clients without a task. A clear client that has been idle between transactions for
//! [`PARK_AFTER`] leaves its task: its session goes, boxed, into its listener's parking, its
//! socket leaves tokio's reactor and joins an epoll instance of the parking's own (one-shot,
//! keyed by its slot). One task per listener waits for that instance: when a parked client
//! sends bytes or closes, its session gets a new task, which reads them as if it had waited
//! all along. A parked client holds what an idle one held (its units of `maxconn`,
//! `max_client_conn` and the listener's client count, its cancel key, its settings) and no
//! server connection; what it no longer holds is a task (about 1.5 kB) and its socket's
//! registration with tokio (a cache-padded 256-byte block). `client_idle` still applies: the
//! parking closes a client idle for longer, at most a tenth of `client_idle` (and a second)
//! late.
//!
//! TLS clients are not parked (their TLS state is larger than a task anyway).

use super::{drive, Session};
use crate::pool::stream::Stream;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use slab::Slab;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, warn};

/// How long a client stays idle in its task before it is parked: a client that sends its
/// next transaction sooner (pgbench, a busy application) never pays for parking.
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// The same after the login, before the client's first message: clients that connect for one
/// transaction send it within a round trip of the welcome (parking them in between cost
/// about 15 µs per `pgbench -C` connection).
pub const PARK_AFTER_LOGIN: Duration = Duration::from_millis(5);

/// Bounds of the interval at which parked clients are checked for `client_idle`.
const SWEEP_MIN: Duration = Duration::from_millis(10);
const SWEEP_MAX: Duration = Duration::from_secs(1);

/// Events taken from the epoll instance at a time.
const BATCH: usize = 256;

/// A listener's parking, made on first use.
#[derive(Default)]
pub struct Lot(OnceLock<Weak<Parking>>);

impl Lot {
    /// The parking (its task started on first use); `None` when it could not be made.
    fn get(&self, client_idle: Option<Duration>) -> Option<Arc<Parking>> {
        self.0.get_or_init(|| Parking::start(client_idle)).upgrade()
    }

    /// Clients parked now.
    pub fn parked(&self) -> usize {
        self.0
            .get()
            .and_then(Weak::upgrade)
            .map_or(0, |p| lock(&p.parked).len())
    }
}

/// The parking's epoll instance, as tokio waits for it.
struct Poller(Epoll);

impl AsRawFd for Poller {
    fn as_raw_fd(&self) -> RawFd {
        self.0 .0.as_raw_fd()
    }
}

/// Held by its task only (the listener keeps a `Weak`): when the runtime ends, the parked
/// sessions end with it and their clients are closed.
struct Parking {
    poller: AsyncFd<Poller>,
    parked: Mutex<Slab<Parked>>,
    client_idle: Option<Duration>,
}

struct Parked {
    session: Box<Session>,
    tcp: std::net::TcpStream,
    /// `client_idle` ends here.
    deadline: Option<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Parks an idle session (its client's socket clear, nothing buffered): `Err` gives it back
/// when it cannot be parked.
pub(super) fn park(
    mut session: Box<Session>,
    deadline: Option<Instant>,
) -> Result<(), Box<Session>> {
    let Some(parking) = session.pc.parking.get(session.ctx.limits.client_idle) else {
        return Err(session);
    };
    let tcp = match std::mem::replace(&mut session.client, Stream::Parked) {
        Stream::Plain(tcp) => tcp,
        other => {
            session.client = other;
            return Err(session);
        }
    };
    let mut parked = lock(&parking.parked);
    let slot = parked.vacant_entry();
    let event = EpollEvent::new(
        EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT,
        slot.key() as u64,
    );
    if let Err(e) = parking.poller.get_ref().0.add(&tcp, event) {
        debug!(listener = %session.ctx.cfg.name, client = %session.open.origin, "cannot park a client: {e}");
        session.client = Stream::Plain(tcp);
        return Err(session);
    }
    match tcp.into_std() {
        Ok(tcp) => {
            slot.insert(Parked {
                session,
                tcp,
                deadline,
            });
        }
        // The socket is gone: so is the client (closing it leaves the epoll instance).
        Err(e) => {
            debug!(listener = %session.ctx.cfg.name, client = %session.open.origin, "closing a client: cannot park it: {e}")
        }
    }
    Ok(())
}

/// The parking's epoll instance registered with tokio's reactor.
// unsafe: tokio's `AsyncFd` registration (see SAFETY below); no safe constructor exists.
#[allow(unsafe_code)]
fn poller() -> std::io::Result<AsyncFd<Poller>> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    // SAFETY: `Poller` owns the epoll descriptor (an `OwnedFd`, never replaced) and the
    // `AsyncFd` owns the `Poller`: the descriptor stays open and the same for as long as it
    // is registered.
    unsafe { AsyncFd::register_with_interest(Poller(epoll), Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

impl Parking {
    fn start(client_idle: Option<Duration>) -> Weak<Parking> {
        match poller() {
            Ok(poller) => {
                let parking = Arc::new(Parking {
                    poller,
                    parked: Mutex::new(Slab::new()),
                    client_idle,
                });
                let weak = Arc::downgrade(&parking);
                tokio::spawn(parking.run());
                weak
            }
            Err(e) => {
                warn!("idle pooled clients keep their tasks: cannot make an epoll instance: {e}");
                Weak::new()
            }
        }
    }

    /// Gives clients that spoke (or closed) a task again; closes those idle for
    /// `client_idle`.
    async fn run(self: Arc<Self>) {
        let mut events = vec![EpollEvent::empty(); BATCH];
        let mut sweep = self.client_idle.map(|limit| {
            let mut tick = tokio::time::interval((limit / 10).clamp(SWEEP_MIN, SWEEP_MAX));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tick
        });
        loop {
            let ready = match sweep.as_mut() {
                Some(tick) => tokio::select! {
                    r = self.poller.readable() => Some(r),
                    _ = tick.tick() => None,
                },
                None => Some(self.poller.readable().await),
            };
            let mut guard = match ready {
                None => {
                    self.expire();
                    continue;
                }
                Some(Ok(guard)) => guard,
                Some(Err(e)) => {
                    warn!("closing the parked clients: their epoll instance failed: {e}");
                    return;
                }
            };
            let n = match self
                .poller
                .get_ref()
                .0
                .wait(&mut events, EpollTimeout::ZERO)
            {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!("closing the parked clients: their epoll instance failed: {e}");
                    return;
                }
            };
            if n < events.len() {
                guard.clear_ready();
            }
            self.wake(&events[..n]);
        }
    }

    fn wake(&self, events: &[EpollEvent]) {
        let woken: Vec<Parked> = {
            let mut parked = lock(&self.parked);
            events
                .iter()
                .filter_map(|e| parked.try_remove(e.data() as usize))
                .inspect(|p| {
                    let _ = self.poller.get_ref().0.delete(&p.tcp);
                })
                .collect()
        };
        for Parked {
            mut session, tcp, ..
        } in woken
        {
            match TcpStream::from_std(tcp) {
                Ok(tcp) => {
                    session.client = Stream::Plain(tcp);
                    tokio::spawn(drive(session, None));
                }
                Err(e) => {
                    debug!(listener = %session.ctx.cfg.name, client = %session.open.origin, "closing a parked client: {e}")
                }
            }
        }
    }

    /// Closes the clients whose `client_idle` ended (as their task would have).
    fn expire(&self) {
        let now = Instant::now();
        let expired: Vec<Parked> = {
            let mut parked = lock(&self.parked);
            let keys: Vec<usize> = parked
                .iter()
                .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
                .map(|(k, _)| k)
                .collect();
            keys.into_iter()
                .map(|k| {
                    let p = parked.remove(k);
                    let _ = self.poller.get_ref().0.delete(&p.tcp);
                    p
                })
                .collect()
        };
        drop(expired);
    }
}
