//! Connection pooling on a listener with `pool_mode` (pgbouncer's job).
//!
//! A pooled listener speaks the PostgreSQL protocol itself ([`codec`]): it answers
//! `SSLRequest` with `N`, reads the `StartupMessage`, authenticates the client at the proxy
//! against the `auth_file` ([`auth`], [`scram`]), welcomes it with `AuthenticationOk`, the
//! `ParameterStatus` set of a server connection, a proxy-made `BackendKeyData` and
//! `ReadyForQuery`, then runs its session ([`client`]).
//!
//! In transaction mode a client's state travels with it: the kept parameters
//! ([`params`]), its session settings ([`settings`]: read back from the server after a
//! transaction that may have changed them, replayed on a connection that holds others) and
//! its named prepared statements ([`prepared`]); what cannot travel is refused
//! ([`statements`]).
//!
//! # The seam: one transaction, one server connection, one routing call
//!
//! Every time a client needs a server (the first message of a transaction in `transaction`
//! mode, the login in `session` mode), [`client`] calls [`route::pick`] with a
//! [`route::Target`]: the rotation the server comes from. It returns the member to use,
//! holding (up to `hold_timeout`) while none is routable, exactly as unpooled listeners do.
//! The client then takes a connection from that member's [`ServerPool`] for its (user,
//! database) in the listener's [`PoolSet`], and gives it back at `ReadyForQuery` with status
//! `I` (transaction mode) or at the end of the session (session mode, after
//! `server_reset_query`). Today the target is always the listener's own rotation
//! (`Target::Listener(index)`: the primary for `role: primary`, a balanced replica for
//! `role: replica`, ...); a SQL-aware listener decides the target per transaction and
//! calls the same function, so pools, holds, failover and cancel work unchanged.
//!
//! # Failover
//!
//! Each server connection, idle or busy, is registered on its [`Backend`] like an unpooled
//! session, so the controller's kill switch (a server that is no longer the confirmed primary
//! on a primary listener, a failed replica) reaches it: idle connections are closed at once
//! by the pool's janitor, a busy one at once by its client session (whose client gets
//! `FATAL 08006`: its transaction did not finish). The registration key `routing_leader`
//! turns only after all of them are gone. Transaction-mode clients between transactions hold
//! no server connection: their next transaction waits for the new primary (the hold) and runs
//! there.

//!
//! # Idle clients
//!
//! Most pooled clients are idle most of the time, so what one idle client holds is what a
//! pooler's memory is made of. While it runs, a client has its own task
//! ([`crate::session::serve_pooled`], without the plain path's states; the login, a bound
//! server connection and the per-transaction steps boxed while they run) and no read
//! buffer between messages ([`stream::Stream::read_idle`]). A clear client idle between
//! transactions for a moment is parked ([`client::park`]): only its boxed session
//! (parameters in a slot array, [`params::Params`]) and its socket in an epoll instance of
//! the listener's are left, no task and no registration with tokio. `bench/proxy --only
//! rss` measures it against pgbouncer with 10,000 logged-in idle clients.

pub mod auth;
pub mod auth_query;
pub mod cancel;
pub mod client;
pub mod codec;
pub mod params;
pub mod prepared;
pub mod route;
pub mod scram;
pub mod server;
pub mod settings;
pub mod statements;
pub mod stream;

use crate::backend::Backend;
use crate::config::{Keepalive, PoolConfig};
use auth::{ServerCredentials, UserList, Users};
use serde::Serialize;
use server::{ConnectError, Login, ServerConn};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::debug;

/// How often a pool's janitor looks at its idle connections (a kill is handled at once).
const JANITOR_TICK: Duration = Duration::from_secs(1);

/// What every pooled session of one listener shares.
pub struct PoolCtx {
    pub cfg: PoolConfig,
    pub users: Users,
    pub pools: PoolSet,
    pub cancels: Arc<cancel::Cancels>,
    /// `max_client_conn`.
    pub clients: Arc<Semaphore>,
    /// Server-side names of prepared statements (transaction mode).
    pub names: prepared::Names,
    /// `tls`: clients' TLS terminated here.
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// `server_tls`.
    pub server_tls: Arc<stream::ServerTls>,
    /// Where idle clients wait without a task.
    pub parking: client::park::Lot,
}

impl PoolCtx {
    /// The pooled side of a listener; `Err` names what is wrong with its TLS files.
    pub fn new(
        cfg: PoolConfig,
        users: UserList,
        cancels: Arc<cancel::Cancels>,
    ) -> Result<PoolCtx, String> {
        let acceptor = cfg.tls.as_ref().map(stream::acceptor).transpose()?;
        let server_tls = stream::server_tls(cfg.server_tls, cfg.server_tls_ca.as_deref())?;
        Ok(PoolCtx {
            clients: Arc::new(Semaphore::new(cfg.max_client_conn)),
            pools: PoolSet::default(),
            names: prepared::Names::default(),
            acceptor,
            server_tls: Arc::new(server_tls),
            parking: client::park::Lot::default(),
            cfg,
            users: Users::new(users),
            cancels,
        })
    }
}

/// Which pool a server connection belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub member: String,
    pub addr: String,
    pub user: String,
    pub database: String,
}

/// The pools of one listener, one per (server, user, database).
#[derive(Default)]
pub struct PoolSet {
    pools: Mutex<HashMap<PoolKey, Arc<ServerPool>>>,
}

impl PoolSet {
    /// The pool for `key`, created (with its janitor) on first use.
    pub fn get(
        &self,
        key: PoolKey,
        backend: &Arc<Backend>,
        pc: &PoolCtx,
        connect_timeout: Duration,
        keepalive: Option<Keepalive>,
    ) -> Arc<ServerPool> {
        let cfg = &pc.cfg;
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pools.get(&key) {
            if Arc::ptr_eq(&p.backend, backend) {
                return p.clone();
            }
        }
        let pool = Arc::new(ServerPool {
            slots: Arc::new(Semaphore::new(cfg.pool_size)),
            key: key.clone(),
            backend: backend.clone(),
            pool_size: cfg.pool_size,
            min_pool_size: cfg.min_pool_size,
            idle_timeout: cfg.server_idle_timeout,
            lifetime: cfg.server_lifetime,
            connect_timeout,
            keepalive,
            tls: pc.server_tls.clone(),
            idle: Mutex::new(Vec::new()),
            welcome: Mutex::new(None),
            creds: Mutex::new(None),
            refill: std::sync::atomic::AtomicBool::new(false),
            counters: PoolCounters::default(),
        });
        tokio::spawn(janitor(Arc::downgrade(&pool), backend.kill_watch()));
        pools.insert(key, pool.clone());
        pool
    }

    /// A welcome a primary gave `user` on `database` before (any server of this listener's
    /// pools, not in hot standby): what a client logging in while no server is routable is
    /// welcomed with, so that it connects at once and its first transaction waits for the new
    /// primary (`hold_timeout`) instead of its login.
    pub fn primary_welcome(&self, user: &str, database: &str) -> Option<Vec<(String, String)>> {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools
            .iter()
            .filter(|(k, _)| k.user == user && k.database == database)
            .filter_map(|(_, p)| p.welcome())
            .find(|w| !w.iter().any(|(k, v)| k == "in_hot_standby" && v == "on"))
    }

    pub fn snapshot(&self) -> Vec<PoolStats> {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<PoolStats> = pools.values().map(|p| p.stats()).collect();
        v.sort_by(|a, b| (&a.member, &a.user, &a.database).cmp(&(&b.member, &b.user, &b.database)));
        v
    }
}

/// One unit of a gauge, given back when dropped (however the holder ends).
pub struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(gauge: &Arc<AtomicUsize>) -> Counted {
        gauge.fetch_add(1, Ordering::Relaxed);
        Counted(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct PoolCounters {
    /// Server connections open (idle or busy): one [`Counted`] per [`ServerConn`].
    open: Arc<AtomicUsize>,
    /// Clients holding a server connection now: one [`Counted`] per [`Lease`].
    active: Arc<AtomicUsize>,
    /// Clients waiting for one.
    waiting: AtomicUsize,
    checkouts: AtomicU64,
    wait_us: AtomicU64,
    max_wait_us: AtomicU64,
    connects: AtomicU64,
}

/// One pool's counters (stats page and `/metrics`).
#[derive(Debug, Clone, Serialize)]
pub struct PoolStats {
    pub member: String,
    pub user: String,
    pub database: String,
    pub pool_size: usize,
    pub servers_open: usize,
    pub servers_idle: usize,
    pub servers_active: usize,
    pub clients_active: usize,
    pub clients_waiting: usize,
    pub checkouts: u64,
    pub server_connects: u64,
    /// Total and longest wait for a server connection, in microseconds.
    pub wait_us_total: u64,
    pub wait_us_max: u64,
}

/// Server connections to one server for one (user, database): at most `pool_size`.
pub struct ServerPool {
    pub key: PoolKey,
    backend: Arc<Backend>,
    /// One permit per server connection in use; idle connections hold none, and new ones are
    /// opened only when none is idle, so open connections never exceed `pool_size`.
    slots: Arc<Semaphore>,
    pool_size: usize,
    min_pool_size: usize,
    idle_timeout: Duration,
    lifetime: Duration,
    connect_timeout: Duration,
    keepalive: Option<Keepalive>,
    tls: Arc<stream::ServerTls>,
    /// Boxed: a connection moves between here and a [`Lease`] (held in a client's task)
    /// as a pointer, and the lease stays small.
    #[allow(clippy::vec_box, reason = "the boxes move in and out of leases")]
    idle: Mutex<Vec<Box<ServerConn>>>,
    /// The `ParameterStatus` set of the first login (what clients are welcomed with).
    welcome: Mutex<Option<Vec<(String, String)>>>,
    /// The credentials of the last client (for `min_pool_size` connections).
    creds: Mutex<Option<ServerCredentials>>,
    /// Whether `min_pool_size` connections are (re)opened: from a client's checkout (the
    /// routing chose this server) until the server's sessions are killed.
    refill: std::sync::atomic::AtomicBool,
    counters: PoolCounters,
}

/// Why no server connection was handed out.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// `query_wait_timeout` passed with every connection busy.
    #[error("query_wait_timeout")]
    WaitTimeout,
}

/// A server connection lent to one client.
pub struct Lease {
    pub conn: Box<ServerConn>,
    pool: Arc<ServerPool>,
    _permit: OwnedSemaphorePermit,
    _active: Counted,
}

impl Lease {
    pub fn pool(&self) -> &Arc<ServerPool> {
        &self.pool
    }

    /// Gives the connection back: kept for the next client when `reusable` (its session is
    /// idle, nothing is pending) and neither killed nor too old; closed otherwise.
    pub fn release(self, reusable: bool) {
        let Lease { mut conn, pool, .. } = self;
        if reusable && conn.buf.is_empty() && conn.owed.is_empty() && pool.fresh(&conn) {
            conn.last_used = Instant::now();
            pool.lock_idle().push(conn);
        }
    }
}

impl ServerPool {
    #[allow(clippy::vec_box, reason = "see `idle`")]
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Box<ServerConn>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Neither killed nor past `server_lifetime`.
    fn fresh(&self, c: &ServerConn) -> bool {
        !c.guard.killed() && c.created.elapsed() < self.lifetime
    }

    pub fn welcome(&self) -> Option<Vec<(String, String)>> {
        self.welcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Lends a server connection: an idle one, or a new one (logged in with `creds`) when
    /// none is idle and fewer than `pool_size` are in use; otherwise waits in the queue up to
    /// `wait`.
    pub async fn checkout(
        self: &Arc<Self>,
        creds: &ServerCredentials,
        wait: Duration,
    ) -> Result<Lease, CheckoutError> {
        let started = Instant::now();
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.counters.waiting.fetch_add(1, Ordering::Relaxed);
                let r = tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await;
                self.counters.waiting.fetch_sub(1, Ordering::Relaxed);
                match r {
                    Ok(Ok(p)) => p,
                    _ => return Err(CheckoutError::WaitTimeout),
                }
            }
        };
        let waited = started.elapsed().as_micros() as u64;
        self.counters.wait_us.fetch_add(waited, Ordering::Relaxed);
        self.counters
            .max_wait_us
            .fetch_max(waited, Ordering::Relaxed);
        self.counters.checkouts.fetch_add(1, Ordering::Relaxed);
        if self.min_pool_size > 0 {
            *self.creds.lock().unwrap_or_else(|p| p.into_inner()) = Some(creds.clone());
        }
        self.refill.store(true, Ordering::Relaxed);
        loop {
            let popped = self.lock_idle().pop();
            let Some(conn) = popped else { break };
            // A connection the server closed while idle (shutdown during a switchover,
            // pg_terminate_backend) is dropped here, before a client's transaction is sent.
            if self.fresh(&conn) && conn.alive() {
                return Ok(Lease {
                    conn,
                    pool: self.clone(),
                    _permit: permit,
                    _active: Counted::new(&self.counters.active),
                });
            }
        }
        let conn = Box::new(self.connect(creds).await?);
        Ok(Lease {
            conn,
            pool: self.clone(),
            _permit: permit,
            _active: Counted::new(&self.counters.active),
        })
    }

    async fn connect(&self, creds: &ServerCredentials) -> Result<ServerConn, ConnectError> {
        let login = Login {
            addr: &self.key.addr,
            user: &self.key.user,
            database: &self.key.database,
            creds,
            timeout: self.connect_timeout,
            keepalive: self.keepalive.as_ref(),
            tls: &self.tls,
        };
        let mut conn = server::connect(&login, self.backend.enter()).await?;
        conn.guard.connected();
        conn.open = Some(Counted::new(&self.counters.open));
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        let mut welcome = self.welcome.lock().unwrap_or_else(|p| p.into_inner());
        if welcome.is_none() {
            *welcome = Some(conn.welcome.clone());
        }
        Ok(conn)
    }

    /// Closes idle connections that were killed or outlived `server_idle_timeout` or
    /// `server_lifetime`; opens connections up to `min_pool_size`.
    async fn sweep(&self) {
        let now = Instant::now();
        self.lock_idle().retain(|c| {
            self.fresh(c) && c.alive() && now.duration_since(c.last_used) < self.idle_timeout
        });
        let open = self.counters.open.load(Ordering::Relaxed);
        if open >= self.min_pool_size || !self.refill.load(Ordering::Relaxed) {
            return;
        }
        let creds = self.creds.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(creds) = creds else { return };
        for _ in open..self.min_pool_size {
            // Only with a free slot: the pool never exceeds pool_size.
            let Ok(_permit) = self.slots.clone().try_acquire_owned() else {
                return;
            };
            match self.connect(&creds).await {
                Ok(c) => self.lock_idle().push(Box::new(c)),
                Err(e) => {
                    debug!(member = %self.key.member, "min_pool_size connection failed: {e}");
                    return;
                }
            }
        }
    }

    pub fn stats(&self) -> PoolStats {
        let c = &self.counters;
        let idle = self.lock_idle().len();
        let open = c.open.load(Ordering::Relaxed);
        PoolStats {
            member: self.key.member.clone(),
            user: self.key.user.clone(),
            database: self.key.database.clone(),
            pool_size: self.pool_size,
            servers_open: open,
            servers_idle: idle,
            servers_active: open.saturating_sub(idle),
            clients_active: c.active.load(Ordering::Relaxed),
            clients_waiting: c.waiting.load(Ordering::Relaxed),
            checkouts: c.checkouts.load(Ordering::Relaxed),
            server_connects: c.connects.load(Ordering::Relaxed),
            wait_us_total: c.wait_us.load(Ordering::Relaxed),
            wait_us_max: c.max_wait_us.load(Ordering::Relaxed),
        }
    }
}

/// Sweeps a pool every [`JANITOR_TICK`] and at once when its backend is killed; ends with the
/// pool.
async fn janitor(pool: Weak<ServerPool>, mut kill: tokio::sync::watch::Receiver<u64>) {
    loop {
        let killed = tokio::select! {
            r = kill.changed() => r.is_ok(),
            () = tokio::time::sleep(JANITOR_TICK) => false,
        };
        let Some(p) = pool.upgrade() else { return };
        if killed {
            // The connections' own guards saw the kill: sweep drops them, and opens no new
            // ones until the routing sends a client here again.
            kill.borrow_and_update();
            p.refill.store(false, Ordering::Relaxed);
        }
        p.sweep().await;
    }
}
