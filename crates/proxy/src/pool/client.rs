//! One client of a pooled listener: opening, authentication, welcome, then the session loop
//! that binds a server connection per transaction (or per session) through the seam
//! ([`super::route::pick`]) and relays messages.
//!
//! Transaction boundaries are read from the protocol, not from SQL: a server connection is
//! bound when the client sends a message that needs one, and given back at a
//! `ReadyForQuery` with status `I` once every `Query`/`Sync`/`FunctionCall` the client sent
//! has been answered and no extended-protocol message is waiting for its `Sync`
//! ([`TxState`]).

mod auto;
pub(super) mod park;

use super::auth::{self, ServerCredentials};
use super::cancel::{CancelKey, Running};
use super::codec::{self, frame, put_error, put_ready, CodecError, Opening};
use super::params::{self, Params};
use super::prepared::{self, Answer, Expect, Statement};
use super::route::{self, Target};
use super::server::ServerConn;
use super::settings::{self, ClientSettings};
use super::statements::{self, Deallocate, Inspection};
use super::stream::Stream;
use super::{CheckoutError, Lease, PoolCtx, PoolKey};
use crate::config::PoolMode;
use crate::gate::ClientGuard;
use crate::session::ListenerCtx;
use bytes::{Buf, BytesMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{timeout, Instant};
use tracing::{debug, info};

/// How long a client may take to log in.
const LOGIN_WAIT: Duration = Duration::from_secs(30);
/// Pause before trying another server after a failed connect (unless the table changes).
const CONNECT_RETRY: Duration = Duration::from_millis(50);
/// Bound of server connection attempts for one transaction.
const MAX_ATTEMPTS: usize = 1_000;

/// A session-ending error for the client: FATAL with this SQLSTATE and message; or, when
/// `unit_only`, an ERROR that ends only the client's routing unit (nothing of it ran).
#[derive(Debug)]
struct Fatal {
    code: &'static str,
    message: String,
    unit_only: bool,
}

impl Fatal {
    fn new(code: &'static str, message: impl Into<String>) -> Fatal {
        Fatal {
            code,
            message: message.into(),
            unit_only: false,
        }
    }
}

/// Where a transaction stands, from the messages seen both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxState {
    /// `Query`, `Sync` and `FunctionCall` messages sent and not yet answered by
    /// `ReadyForQuery`.
    pub pending: usize,
    /// Extended-protocol messages sent since the last `Sync`.
    pub unsynced: bool,
    /// One of them was an `Execute`.
    pub unsynced_execute: bool,
    /// `Sync`s the proxy sent on its own whose `ReadyForQuery` the client must not see.
    pub hidden_syncs: u8,
    /// The last `ReadyForQuery` status (`I`, `T`, `E`).
    pub status: u8,
    /// After a refused `Parse` between transactions: client messages are dropped up to the
    /// next `Sync`, which is answered `ReadyForQuery(I)`.
    pub skipping: bool,
    /// Bytes of the current server message still to pass through unread.
    pub passthrough: usize,
}

impl Default for TxState {
    fn default() -> Self {
        TxState {
            pending: 0,
            unsynced: false,
            unsynced_execute: false,
            hidden_syncs: 0,
            status: b'I',
            skipping: false,
            passthrough: 0,
        }
    }
}

impl TxState {
    /// A client message is sent to the server.
    pub fn sent(&mut self, tag: u8) {
        match tag {
            b'Q' | b'F' => self.pending += 1,
            b'S' => {
                self.pending += 1;
                self.unsynced = false;
                self.unsynced_execute = false;
            }
            b'E' => {
                self.unsynced = true;
                self.unsynced_execute = true;
            }
            b'P' | b'B' | b'D' | b'C' | b'H' => self.unsynced = true,
            _ => {}
        }
    }

    /// A `ReadyForQuery` came back.
    pub fn ready(&mut self, status: u8) {
        self.pending = self.pending.saturating_sub(1);
        self.status = status;
    }

    /// Nothing in flight and no transaction open: the server connection may go back.
    pub fn idle(&self) -> bool {
        self.pending == 0 && !self.unsynced && self.status == b'I'
    }
}

/// What woke the relay up.
enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Killed,
}

/// What one batch of client messages turned into.
#[derive(Default)]
struct Batch {
    /// Answers the proxy gives itself (refusals between transactions).
    reply: BytesMut,
    /// Messages for the server.
    forward: BytesMut,
    terminate: bool,
    fatal: Option<Fatal>,
    /// Stopped at a message that needs a server connection (none bound yet).
    needs_server: bool,
}

/// What an open client holds, with a task or parked without one: its units of the
/// listener's client count and of `maxconn`, and its address (for logs).
pub struct Open {
    pub origin: SocketAddr,
    pub _counted: ClientGuard,
    pub _maxconn: OwnedSemaphorePermit,
}

/// Runs one pooled client to its end (or until it is parked, [`park`]). `client` has sent
/// its first bytes.
pub async fn serve(ctx: Arc<ListenerCtx>, pc: Arc<PoolCtx>, mut client: TcpStream, open: Open) {
    let Ok(slot) = pc.clients.clone().try_acquire_owned() else {
        let mut out = BytesMut::new();
        put_error(
            &mut out,
            "FATAL",
            "53300",
            "no more connections allowed (max_client_conn)",
        );
        let _ = client.write_all(&out).await;
        return;
    };
    // The opening and the login are boxed, as are the session's per-transaction steps
    // (see `Session::run`): the task of a logged-in idle client is then only as large as
    // its waiting state, which is what each of many idle clients costs until it is parked.
    let Some(mut session) = Box::pin(start(ctx, pc, client, open, slot)).await else {
        return;
    };
    let lease = session.first_lease.take();
    drive(session, lease).await;
}

/// Runs a logged-in session until it ends, or until it has been idle for
/// [`park::PARK_AFTER`]: then it is parked and its task ends (the parking starts a new one
/// when the client speaks again).
async fn drive(mut session: Box<Session>, mut lease: Option<Lease>) {
    loop {
        match session.run(lease.take()).await {
            Ok(Next::Done) => return,
            Ok(Next::Park(deadline)) => match park::park(session, deadline) {
                Ok(()) => return,
                // Not parkable after all: it waits in its task.
                Err(back) => {
                    session = back;
                    session.parkable = false;
                }
            },
            Err(f) => {
                debug!(listener = %session.ctx.cfg.name, client = %session.open.origin, code = f.code, "session ended: {}", f.message);
                let mut out = BytesMut::new();
                put_error(&mut out, "FATAL", f.code, &f.message);
                let _ = session.client.send(&out).await;
                return;
            }
        }
    }
}

/// What a wait between messages ended with.
enum Idle {
    Read,
    /// The client left, or stayed idle for `client_idle`.
    Closed,
    /// Idle for [`park::PARK_AFTER`]: to be parked, closed at this `client_idle` deadline.
    Park(Option<Instant>),
}

/// How a session loop ended.
enum Next {
    Done,
    /// Idle: to be parked, closed at this `client_idle` deadline.
    Park(Option<Instant>),
}

/// The opening and the login: the logged-in session, or `None` when the client left or was
/// refused (and told why).
async fn start(
    ctx: Arc<ListenerCtx>,
    pc: Arc<PoolCtx>,
    client: TcpStream,
    open: Open,
    slot: OwnedSemaphorePermit,
) -> Option<Box<Session>> {
    let origin = open.origin;
    let (client, startup, received) = match timeout(LOGIN_WAIT, opening(&pc, client)).await {
        Ok(Ok(Some(s))) => s,
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => {
            debug!(listener = %ctx.cfg.name, client = %origin, "closing a client: {e}");
            return None;
        }
        Err(_) => return None,
    };
    let name = ctx.cfg.name.clone();
    match login(ctx, pc, client, startup, received, open, slot).await {
        Ok(s) => Some(s),
        Err((mut client, f)) => {
            info!(listener = %name, client = %origin, code = f.code, "login refused: {}", f.message);
            let mut out = BytesMut::new();
            put_error(&mut out, "FATAL", f.code, &f.message);
            let _ = client.send(&out).await;
            None
        }
    }
}

/// Answers encryption requests (`S` and the TLS handshake when the listener has `tls`, `N`
/// otherwise) and cancel requests, until a `StartupMessage`; with it, the bytes the client
/// sent after it (the start of the login's reads).
async fn opening(
    pc: &PoolCtx,
    mut client: TcpStream,
) -> Result<Option<(Stream, codec::Startup, BytesMut)>, CodecError> {
    let mut received = BytesMut::new();
    loop {
        let opening = codec::read_opening(&mut client, &mut received).await?;
        if matches!(opening, Opening::Ssl | Opening::Gss) && !received.is_empty() {
            // As PostgreSQL: bytes sent before the answer to an encryption request would be
            // taken as if they had come encrypted.
            return Err(CodecError::Startup(
                "unencrypted data after an encryption request",
            ));
        }
        match opening {
            Opening::Ssl => match &pc.acceptor {
                Some(acceptor) => {
                    client.write_all(b"S").await?;
                    let mut tls = acceptor.accept(client).await?;
                    return match codec::read_opening(&mut tls, &mut received).await? {
                        Opening::Startup(s) => {
                            Ok(Some((Stream::FromClient(Box::new(tls)), s, received)))
                        }
                        _ => Err(CodecError::Startup("expected a startup message after TLS")),
                    };
                }
                None => client.write_all(b"N").await?,
            },
            Opening::Gss => client.write_all(b"N").await?,
            Opening::Cancel { pid, secret } => {
                pc.cancels.forward(pid, secret, LOGIN_WAIT).await;
                return Ok(None);
            }
            Opening::Startup(s) => return Ok(Some((Stream::Plain(client), s, received))),
        }
    }
}

struct Session {
    ctx: Arc<ListenerCtx>,
    pc: Arc<PoolCtx>,
    /// Its units of the client count, `maxconn` and `max_client_conn`.
    open: Open,
    _slot: OwnedSemaphorePermit,
    client: Stream,
    cbuf: BytesMut,
    user: String,
    database: String,
    /// The user's, shared by its sessions.
    creds: Arc<ServerCredentials>,
    /// The client's values of the kept parameters.
    wanted: Params,
    cancel: CancelKey,
    target: Target,
    tx: TxState,
    /// Session mode: the connection bound at login.
    first_lease: Option<Lease>,
    /// The client's named prepared statements (transaction mode with
    /// `max_prepared_statements`).
    statements: HashMap<Vec<u8>, Statement>,
    /// The pool of the last server connection (reused while the routing picks its server).
    last_pool: Option<Arc<super::ServerPool>>,
    /// An auto listener: where each transaction goes (boxed: most listeners have none).
    auto: Option<Box<auto::Auto>>,
    /// Transaction mode: the session settings that follow the client ([`settings`]; boxed:
    /// an idle client's task stays small).
    settings: Box<ClientSettings>,
    /// A `DEALLOCATE` waits in the client buffer for the answers in flight before it.
    held: bool,
    /// May be parked when idle ([`park`]): a clear client whose parking could be had.
    parkable: bool,
    /// Logged in, has not spoken since: parked after [`park::PARK_AFTER_LOGIN`] when idle.
    welcomed: bool,
}

async fn login(
    ctx: Arc<ListenerCtx>,
    pc: Arc<PoolCtx>,
    mut client: Stream,
    startup: codec::Startup,
    received: BytesMut,
    open: Open,
    slot: OwnedSemaphorePermit,
) -> Result<Box<Session>, (Stream, Fatal)> {
    let mut wanted = Params::new();
    let mut startup_settings = Vec::new();
    for (k, v) in &startup.params {
        if let Some(c) = params::canonical(k) {
            wanted.insert(c, v.clone());
        } else if pc
            .cfg
            .ignore_startup_parameters
            .iter()
            .any(|i| i.eq_ignore_ascii_case(k))
        {
            continue;
        } else if ClientSettings::settable_at_startup(k) {
            startup_settings.push((k.clone(), v.clone()));
        } else {
            return Err((
                client,
                Fatal::new("08P01", format!("unsupported startup parameter: {k}")),
            ));
        }
    }
    let mut cbuf = received;
    let user = match pc.users.get(&startup.user) {
        Some(u) => Some(u),
        None => lookup_user(&ctx, &pc, &startup.user, &startup.database).await,
    };
    let authenticated = timeout(
        LOGIN_WAIT,
        auth::authenticate(
            &mut client,
            &mut cbuf,
            &startup.user,
            user.as_deref(),
            pc.cfg.auth_type,
        ),
    )
    .await;
    match authenticated {
        Ok(Ok(())) => {}
        Ok(Err(failure)) => {
            let code = match failure {
                auth::AuthFailure::Password(_) => "28P01",
                _ => "08P01",
            };
            return Err((client, Fatal::new(code, failure.to_string())));
        }
        Err(_) => return Err((client, Fatal::new("08P01", "authentication timed out"))),
    }
    let Some(creds) = user.and_then(|u| u.server_credentials()) else {
        return Err((
            client,
            Fatal::new("28000", "no server credentials for this user"),
        ));
    };
    let parkable = matches!(client, Stream::Plain(_));
    let mut s = Box::new(Session {
        cancel: pc.cancels.register(),
        target: Target::Listener(ctx.index),
        auto: ctx.split.as_ref().map(|s| Box::new(auto::Auto::new(s))),
        ctx,
        pc,
        open,
        _slot: slot,
        client,
        cbuf,
        user: startup.user,
        database: startup.database,
        creds,
        wanted,
        tx: TxState::default(),
        first_lease: None,
        statements: HashMap::new(),
        last_pool: None,
        settings: Box::new(ClientSettings::from_startup(&startup_settings)),
        held: false,
        parkable,
        welcomed: true,
    });
    // The welcome needs a server's parameters: the pool's, or a first connection's (which
    // also checks that the database exists and the login works, as pgbouncer does).
    let welcome = match s.pc.cfg.mode {
        PoolMode::Session => match s.bind().await {
            Ok(lease) => {
                let w = lease.conn.welcome.clone();
                s.first_lease = Some(lease);
                w
            }
            Err(f) => return Err((s.client, f)),
        },
        PoolMode::Transaction => match s.known_welcome().await {
            Some(w) => w,
            None => match s.bind().await {
                Ok(lease) => {
                    let w = lease.conn.welcome.clone();
                    s.cancel.set(None);
                    lease.release(true);
                    w
                }
                Err(f) => return Err((s.client, f)),
            },
        },
    };
    for (k, v) in &welcome {
        if let Some(c) = params::canonical(k) {
            s.wanted.insert_default(c, v);
        }
    }
    if let Some(lease) = s.first_lease.as_mut() {
        if let Some(sql) = params::set_statements(&s.wanted, &lease.conn.params) {
            if let Err(e) = lease.conn.run(&sql).await {
                return Err((s.client, Fatal::new("08P01", e.to_string())));
            }
        }
    }
    let mut out = BytesMut::new();
    codec::put_auth(&mut out, 0, &[]);
    for (k, v) in &welcome {
        let value = params::canonical(k)
            .and_then(|c| s.wanted.get(c))
            .unwrap_or(v);
        codec::put_parameter_status(&mut out, k, value);
    }
    codec::put_backend_key(&mut out, s.cancel.pid, s.cancel.secret);
    put_ready(&mut out, b'I');
    if let Err(e) = s.client.send(&out).await {
        return Err((s.client, Fatal::new("08006", e.to_string())));
    }
    Ok(s)
}

/// A user missing from the auth file, by `auth_query` as `auth_user` (when configured) on a
/// server of the listener's rotation.
async fn lookup_user(
    ctx: &ListenerCtx,
    pc: &PoolCtx,
    name: &str,
    database: &str,
) -> Option<Arc<auth::User>> {
    let auth_user = pc.cfg.auth_user.as_ref()?;
    let creds = pc.users.get(auth_user)?.server_credentials()?;
    let target = Target::Listener(ctx.index);
    let picked = route::pick(ctx, target, Instant::now() + ctx.cfg.hold_timeout)
        .await
        .ok()?;
    let key = PoolKey {
        member: picked.member.clone(),
        addr: picked.addr.clone(),
        user: auth_user.clone(),
        database: database.to_string(),
    };
    let pool = pc.pools.get(
        key,
        &picked.backend,
        pc,
        ctx.connect_timeout,
        ctx.keepalive.clone(),
    );
    let mut lease = match pool.checkout(&creds, pc.cfg.query_wait_timeout).await {
        Ok(l) => l,
        Err(e) => {
            info!(listener = %ctx.cfg.name, auth_user = %auth_user, "auth_query: no server connection: {e}");
            return None;
        }
    };
    // The connection may hold the session settings of a transaction-mode client of
    // auth_user (a search_path, say): the auth_query runs with the login's.
    if lease.conn.session_settings.is_some() {
        match lease.conn.exec("RESET ALL").await {
            Ok(done) if done.error.is_none() => lease.conn.session_settings = None,
            _ => {
                lease.release(false);
                return None;
            }
        }
    }
    match super::auth_query::lookup(&mut lease.conn, &pc.cfg.auth_query, name).await {
        Ok(user) => {
            lease.release(true);
            user.map(Arc::new)
        }
        Err(e) => {
            info!(listener = %ctx.cfg.name, auth_user = %auth_user, "{e}");
            lease.release(false);
            None
        }
    }
}

impl Session {
    fn mode(&self) -> PoolMode {
        self.pc.cfg.mode
    }

    /// The welcome of the pool the routing would pick now, when it has one; while nothing
    /// is routable (a failover), the welcome an earlier primary gave.
    async fn known_welcome(&self) -> Option<Vec<(String, String)>> {
        let Ok(picked) = route::pick(&self.ctx, self.target, Instant::now()).await else {
            return self.pc.pools.primary_welcome(&self.user, &self.database);
        };
        let pool = self.pc.pools.get(
            self.key(&picked.member, &picked.addr),
            &picked.backend,
            &self.pc,
            self.ctx.connect_timeout,
            self.ctx.keepalive.clone(),
        );
        pool.welcome()
    }

    fn key(&self, member: &str, addr: &str) -> PoolKey {
        PoolKey {
            member: member.to_string(),
            addr: addr.to_string(),
            user: self.user.clone(),
            database: self.database.clone(),
        }
    }

    /// Obtains a server connection through the seam: the routing picks the server (holding
    /// while none is routable), its pool lends a connection, which is brought to the
    /// client's parameters.
    async fn bind(&mut self) -> Result<Lease, Fatal> {
        let ctx = self.ctx.clone();
        let deadline = Instant::now() + ctx.cfg.hold_timeout;
        let mut rx = ctx.table.clone();
        for _ in 0..MAX_ATTEMPTS {
            let picked = route::pick(&ctx, self.target, deadline)
                .await
                .map_err(|r| {
                    // An auto listener's replicas never hold: their absence is not a refusal
                    // (the primary serves the read).
                    if matches!(self.target, Target::Listener(_)) {
                        ctx.gate.refused(r);
                    }
                    Fatal::new(
                        "08001",
                        format!(
                            "no server for listener {} within hold_timeout ({:?})",
                            ctx.cfg.name, ctx.cfg.hold_timeout
                        ),
                    )
                })?;
            // The pool of the previous transaction when the routing picked the same server
            // (no lookup, no key to build).
            let pool = match &self.last_pool {
                Some(p)
                    if Arc::ptr_eq(p.backend(), &picked.backend) && p.key.addr == picked.addr =>
                {
                    p.clone()
                }
                _ => {
                    let p = self.pc.pools.get(
                        self.key(&picked.member, &picked.addr),
                        &picked.backend,
                        &self.pc,
                        ctx.connect_timeout,
                        ctx.keepalive.clone(),
                    );
                    self.last_pool = Some(p.clone());
                    p
                }
            };
            match pool
                .checkout(&self.creds, self.pc.cfg.query_wait_timeout)
                .await
            {
                Ok(mut lease) => {
                    if lease.conn.guard.killed()
                        || !route::still_routed(&ctx, self.target, &picked.member)
                    {
                        lease.release(false);
                        continue;
                    }
                    let align = settings::alignment(
                        self.settings.replay(),
                        lease.conn.session_settings.as_ref(),
                        &self.wanted,
                        &lease.conn.params,
                    );
                    if let Some(sql) = align {
                        match lease.conn.exec(&sql).await {
                            Ok(done) if done.error.is_none() && done.status == b'I' => {
                                lease.conn.session_settings = self.settings.replay().cloned();
                            }
                            Ok(done) => {
                                lease.release(false);
                                let (code, message) = done.error.unwrap_or_default();
                                return Err(Fatal {
                                    code: settings_code(&code),
                                    message: format!(
                                        "pgherd proxy: server {} could not be given this session's settings ({message}, SQLSTATE {code}); nothing of the query ran",
                                        picked.member
                                    ),
                                    unit_only: true,
                                });
                            }
                            Err(e) => {
                                lease.release(false);
                                return Err(Fatal::new("08P01", e.to_string()));
                            }
                        }
                    }
                    self.cancel.set(Some(Running {
                        addr: lease.conn.addr.clone(),
                        pid: lease.conn.pid,
                        secret: lease.conn.secret,
                    }));
                    return Ok(lease);
                }
                Err(CheckoutError::WaitTimeout) => {
                    return Err(Fatal::new("08P01", "query_wait_timeout"))
                }
                Err(CheckoutError::Connect(super::server::ConnectError::Refused(code, m))) => {
                    return Err(Fatal {
                        code: static_code(&code),
                        message: m,
                        unit_only: false,
                    })
                }
                Err(CheckoutError::Connect(super::server::ConnectError::Retry(why))) => {
                    info!(listener = %ctx.cfg.name, member = %picked.member, "server connection failed, trying again: {why}");
                    picked.backend.errors.fetch_add(1, Ordering::Relaxed);
                    let _ = ctx.recheck.try_send(picked.member.clone());
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Fatal::new("08001", why));
                    }
                    rx.borrow_and_update();
                    let _ =
                        tokio::time::timeout_at((now + CONNECT_RETRY).min(deadline), rx.changed())
                            .await;
                }
            }
        }
        Err(Fatal::new("08001", "no server connection"))
    }

    /// Waits for the client's next bytes between messages. A parkable client with nothing
    /// buffered waits [`park::PARK_AFTER`] at most (less when `client_idle` ends sooner),
    /// then is to be parked; the others wait up to `client_idle`. A client just logged in
    /// that has not spoken yet waits only [`park::PARK_AFTER_LOGIN`]: a storm of logins then
    /// leaves almost no tasks (and no heap holes between the sessions) behind, while a
    /// client that sends its first query at once (`pgbench -C`) is not parked in between.
    async fn wait_idle(&mut self) -> Idle {
        let since = Instant::now();
        let limit = self.ctx.limits.client_idle;
        let park = self.parkable && self.cbuf.is_empty();
        let park_after = if std::mem::take(&mut self.welcomed) {
            park::PARK_AFTER_LOGIN
        } else {
            park::PARK_AFTER
        };
        let wait = match (park, limit) {
            (true, Some(limit)) => Some(limit.min(park_after)),
            (true, None) => Some(park_after),
            (false, limit) => limit,
        };
        let read = match wait {
            Some(wait) => match timeout(wait, self.client.read_idle(&mut self.cbuf)).await {
                Ok(read) => read,
                Err(_) if park && limit.is_none_or(|l| wait < l) => {
                    self.cbuf = BytesMut::new();
                    return Idle::Park(limit.map(|l| since + l));
                }
                Err(_) => return Idle::Closed,
            },
            None => self.client.read_idle(&mut self.cbuf).await,
        };
        if matches!(read, Ok(n) if n > 0) {
            Idle::Read
        } else {
            Idle::Closed
        }
    }

    /// The session loop.
    async fn run(&mut self, mut bound: Option<Lease>) -> Result<Next, Fatal> {
        loop {
            match bound.take() {
                None => {
                    if frame(&self.cbuf).map_err(protocol)?.is_none() {
                        // Boxed: the timers are not part of the task while it relays.
                        match Box::pin(self.wait_idle()).await {
                            Idle::Read => continue,
                            Idle::Closed => return Ok(Next::Done),
                            Idle::Park(deadline) => return Ok(Next::Park(deadline)),
                        }
                    }
                    let batch = self.take_client_messages(None).map_err(protocol)?;
                    self.answer(&batch.reply).await?;
                    if let Some(f) = batch.fatal {
                        return Err(f);
                    }
                    if batch.terminate {
                        return Ok(Next::Done);
                    }
                    if !batch.needs_server {
                        continue;
                    }
                    let lent = if self.auto.is_some() {
                        match Box::pin(self.auto_step()).await {
                            Ok(auto::Step::Bound(lease)) => Ok(*lease),
                            Ok(auto::Step::Answered) => continue,
                            Ok(auto::Step::NeedMore) => {
                                let read = self.client.read_idle(&mut self.cbuf).await;
                                if !matches!(read, Ok(n) if n > 0) {
                                    return Ok(Next::Done);
                                }
                                continue;
                            }
                            Err(f) => Err(f),
                        }
                    } else {
                        Box::pin(self.bind()).await
                    };
                    let mut lease = match lent {
                        Ok(lease) => lease,
                        Err(f) if f.unit_only => {
                            Box::pin(self.refuse_unit(f)).await?;
                            continue;
                        }
                        Err(f) => return Err(f),
                    };
                    match Box::pin(self.client_side(&mut lease)).await {
                        Ok(None) => bound = Some(lease),
                        Ok(Some(_)) => {
                            Box::pin(self.finish(lease)).await;
                            return Ok(Next::Done);
                        }
                        Err(f) => {
                            self.cancel.set(None);
                            lease.release(false);
                            return Err(f);
                        }
                    }
                }
                Some(mut lease) => match Box::pin(self.relay(&mut lease)).await {
                    Ok(true) => {
                        Box::pin(self.auto_before_release(&mut lease)).await;
                        self.cancel.set(None);
                        if let Err(f) = Box::pin(self.settle_settings(&mut lease)).await {
                            lease.release(false);
                            return Err(f);
                        }
                        lease.release(true);
                    }
                    Ok(false) => {
                        Box::pin(self.finish(lease)).await;
                        return Ok(Next::Done);
                    }
                    Err(f) => {
                        self.cancel.set(None);
                        lease.release(false);
                        return Err(f);
                    }
                },
            }
        }
    }

    /// The client left with `lease` bound: the connection goes back if its session is
    /// clean (session mode: after `server_reset_query`).
    async fn finish(&mut self, mut lease: Lease) {
        self.cancel.set(None);
        let mut clean = self.tx.idle() && lease.conn.buf.is_empty();
        if clean {
            clean = self.settle_settings(&mut lease).await.is_ok();
        }
        if clean && self.mode() == PoolMode::Session && !self.pc.cfg.server_reset_query.is_empty() {
            let reset = lease.conn.run(&self.pc.cfg.server_reset_query).await;
            if reset.is_ok() {
                lease.conn.prepared.clear();
            }
            clean = reset.is_ok();
        }
        lease.release(clean);
    }

    /// Before a transaction-mode connection goes back to its pool: when the transaction may
    /// have changed session settings, reads them back from the connection (the client's
    /// settings from now on, and the connection's fingerprint).
    async fn settle_settings(&mut self, lease: &mut Lease) -> Result<(), Fatal> {
        if self.mode() != PoolMode::Transaction || !self.settings.dirty() {
            return Ok(());
        }
        let done = lease
            .conn
            .exec(&self.settings.read_query())
            .await
            .map_err(|e| server_lost(&e))?;
        match (done.error, done.status) {
            (None, b'I') => {
                lease.conn.session_settings = self.settings.read(done.value);
                Ok(())
            }
            (error, _) => Err(Fatal::new(
                "08P01",
                format!(
                    "pgherd proxy: could not read this session's settings back from server {} ({}): the session cannot go on in pool_mode transaction",
                    lease.pool().key.member,
                    error.map_or("the query left a transaction open".to_string(), |(code, m)| format!("{m}, SQLSTATE {code}"))
                ),
            )),
        }
    }

    /// Answers the client's unit at the front of the buffer with `f` as an ERROR (nothing of
    /// it ran): a `Query` gets `ReadyForQuery(I)`, extended-protocol messages are dropped up
    /// to their `Sync`, which gets it.
    async fn refuse_unit(&mut self, f: Fatal) -> Result<(), Fatal> {
        let mut out = BytesMut::new();
        put_error(&mut out, "ERROR", f.code, &f.message);
        if let Some((tag, len)) = frame(&self.cbuf).map_err(protocol)? {
            if tag == b'Q' {
                self.cbuf.advance(len);
                put_ready(&mut out, b'I');
            } else {
                self.tx.skipping = true;
            }
        }
        if let Some(a) = self.auto.as_mut() {
            a.abandoned();
        }
        self.answer(&out).await
    }

    async fn answer(&mut self, reply: &[u8]) -> Result<(), Fatal> {
        if reply.is_empty() {
            return Ok(());
        }
        self.client
            .send(reply)
            .await
            .map_err(|e| Fatal::new("08006", e.to_string()))
    }

    /// Relays both ways while bound. `Ok(true)`: the transaction ended (transaction mode),
    /// the connection may go back; `Ok(false)`: the client left.
    async fn relay(&mut self, lease: &mut Lease) -> Result<bool, Fatal> {
        // Complete client messages already buffered (sent while binding).
        if frame(&self.cbuf).map_err(protocol)?.is_some() {
            if let Some(done) = self.client_side(lease).await? {
                return Ok(done);
            }
        }
        loop {
            let event = {
                let conn = &mut lease.conn;
                tokio::select! {
                    r = self.client.read_buf(&mut self.cbuf) => Event::Client(r),
                    r = conn.stream.read_buf(&mut conn.buf) => Event::Server(r),
                    _ = conn.guard.kill.changed() => Event::Killed,
                }
            };
            match event {
                Event::Client(r) => {
                    if !matches!(r, Ok(n) if n > 0) {
                        return Ok(false);
                    }
                    if let Some(done) = self.client_side(lease).await? {
                        return Ok(done);
                    }
                }
                Event::Server(r) => {
                    match r {
                        Ok(n) if n > 0 => {}
                        Ok(_) => return Err(server_lost(&"closed by the server")),
                        Err(e) => return Err(server_lost(&e)),
                    }
                    let scan = self.scan_server(lease).map_err(protocol)?;
                    let conn = &mut lease.conn;
                    let written = match scan.ranges.as_slice() {
                        [] => Ok(()),
                        [one] => self.client.send(&conn.buf[one.clone()]).await,
                        several => {
                            let mut out = BytesMut::new();
                            for r in several {
                                out.extend_from_slice(&conn.buf[r.clone()]);
                            }
                            self.client.send(&out).await
                        }
                    };
                    written.map_err(|e| Fatal::new("08006", e.to_string()))?;
                    conn.buf.advance(scan.scanned);
                    if scan.release && conn.buf.is_empty() {
                        return Ok(true);
                    }
                    // An auto session's next unit inside the transaction, or a DEALLOCATE, held
                    // back until now.
                    if (self.auto.is_some() || self.held)
                        && self.tx.pending == 0
                        && frame(&self.cbuf).map_err(protocol)?.is_some()
                    {
                        self.held = false;
                        if let Some(done) = self.client_side(lease).await? {
                            return Ok(done);
                        }
                    }
                }
                Event::Killed => {
                    return Err(Fatal::new(
                        "08006",
                        format!(
                            "server {} left the rotation of listener {} (failover, switchover or maintenance): the transaction did not finish",
                            lease.pool().key.member, self.ctx.cfg.name
                        ),
                    ));
                }
            }
        }
    }

    /// Handles complete client messages while bound. `Some(false)`: the client terminated.
    async fn client_side(&mut self, lease: &mut Lease) -> Result<Option<bool>, Fatal> {
        let batch = self
            .take_client_messages(Some(&mut lease.conn))
            .map_err(protocol)?;
        self.answer(&batch.reply).await?;
        if let Some(f) = batch.fatal {
            return Err(f);
        }
        if !batch.forward.is_empty() {
            lease
                .conn
                .stream
                .send(&batch.forward)
                .await
                .map_err(|e| server_lost(&e))?;
        }
        Ok(batch.terminate.then_some(false))
    }

    /// Takes the complete client messages out of the buffer: refusals answered or turned
    /// into server-side errors, the rest (prepared statements renamed) to forward to `conn`.
    /// Without a connection it stops at the first message that needs one.
    fn take_client_messages(
        &mut self,
        mut conn: Option<&mut ServerConn>,
    ) -> Result<Batch, CodecError> {
        let mut b = Batch::default();
        let transaction = self.mode() == PoolMode::Transaction;
        let rename = transaction && self.pc.cfg.max_prepared_statements > 0;
        while let Some((tag, len)) = frame(&self.cbuf)? {
            // An auto session routes unit by unit: what follows an unanswered unit waits for
            // its ReadyForQuery (the next unit may belong on another server). The data of a
            // `COPY ... FROM STDIN` (CopyData, CopyDone, CopyFail) is part of the unanswered
            // unit: the server waits for it before it answers.
            if self.auto.is_some()
                && conn.is_some()
                && self.tx.pending > 0
                && !matches!(tag, b'd' | b'c' | b'f')
            {
                break;
            }
            // A simple query after extended-protocol messages that ended with a Flush, not a
            // Sync (asyncpg's prepare(): Parse, Describe, Flush): the server connection is
            // still bound to where those went, a replica for a read. When they executed
            // nothing and no transaction is open, a Sync the client does not see ends them,
            // and the query is routed on its own.
            if let (Some(c), true) = (conn.as_deref_mut(), self.auto.is_some()) {
                if tag == b'Q'
                    && self.tx.unsynced
                    && !self.tx.unsynced_execute
                    && self.tx.pending == 0
                    && self.tx.status == b'I'
                {
                    codec::put_sync(&mut b.forward);
                    self.tx.sent(b'S');
                    self.tx.hidden_syncs += 1;
                    if rename {
                        c.owed.push(Expect::Sync);
                    }
                    break;
                }
            }
            if self.tx.skipping {
                self.cbuf.advance(len);
                if tag == b'S' {
                    self.tx.skipping = false;
                    put_ready(&mut b.reply, b'I');
                }
                continue;
            }
            if tag == b'X' {
                self.cbuf.advance(len);
                b.terminate = true;
                break;
            }
            let mut found = Inspection::default();
            if transaction {
                let body = &self.cbuf[5..len];
                let refused = match tag {
                    b'Q' => {
                        found = statements::inspect(codec::query_text(body));
                        found.refused.take()
                    }
                    b'P' => match codec::parse_fields(body) {
                        Some((name, _, _)) if !name.is_empty() && !rename => Some(format!(
                            "the named prepared statement {:?} (max_prepared_statements is 0)",
                            String::from_utf8_lossy(name)
                        )),
                        Some((_, q, _)) => {
                            found = statements::inspect(q);
                            found.refused.take()
                        }
                        None => None,
                    },
                    _ => None,
                };
                let nothing_running = conn.is_none() && b.forward.is_empty() && !self.tx.unsynced;
                let refused = refused.or_else(|| {
                    (found.reads_sequence_state && nothing_running).then(|| {
                        "currval() or lastval() in a transaction of its own (it reads what nextval() left in one server session; use INSERT ... RETURNING, or call it in the transaction that called nextval())".to_string()
                    })
                });
                if let Some(why) = refused {
                    self.cbuf.advance(len);
                    let text = format!(
                        "{why} is not supported in pool_mode transaction: the next transaction may run on another server connection (use a session-mode listener)"
                    );
                    if nothing_running {
                        put_error(&mut b.reply, "ERROR", "0A000", &text);
                        if tag == b'Q' {
                            put_ready(&mut b.reply, b'I');
                        } else {
                            self.tx.skipping = true;
                        }
                    } else if tag == b'Q' && conn.is_some() {
                        // In a transaction: the server raises it, so the transaction fails
                        // there as it would for any error.
                        codec::put_query(&mut b.forward, &raise(&text));
                        self.tx.sent(b'Q');
                        if let (true, Some(c)) = (rename, conn.as_deref_mut()) {
                            c.owed.push(Expect::Sync);
                        }
                    } else {
                        b.fatal = Some(Fatal::new("0A000", text));
                        break;
                    }
                    continue;
                }
                if tag == b'Q' && rename && !self.tx.unsynced {
                    if let Some(d) = found.deallocate.take() {
                        let in_flight = !b.forward.is_empty() || self.tx.pending > 0;
                        if in_flight && conn.is_some() {
                            self.held = true;
                            break;
                        }
                        self.cbuf.advance(len);
                        match (d, conn.as_deref_mut()) {
                            (Deallocate::Name(n), Some(c))
                                if self.tx.status != b'I' && !self.statements.contains_key(&n) =>
                            {
                                // In a transaction: the server raises it, so the transaction
                                // fails there as PostgreSQL's own DEALLOCATE would make it.
                                codec::put_query(&mut b.forward, &unknown_statement(&n));
                                self.tx.sent(b'Q');
                                c.owed.push(Expect::Sync);
                            }
                            (d, _) => self.deallocate(d, &mut b.reply),
                        }
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_deref_mut() else {
                b.needs_server = true;
                break;
            };
            if let Some(a) = self.auto.as_mut() {
                a.client_message(tag, &self.cbuf[5..len]);
            }
            self.settings.note(&found);
            if found.drops_statements && rename {
                // The server forgets every prepared statement of the connection.
                c.prepared.clear();
                self.statements.clear();
            }
            let msg = self.cbuf.split_to(len).freeze();
            self.tx.sent(tag);
            if rename {
                self.translate(tag, msg, c, &mut b.forward, found);
            } else {
                b.forward.extend_from_slice(&msg);
            }
        }
        Ok(b)
    }

    /// Answers a simple-query `DEALLOCATE` as PostgreSQL would, outside a transaction or in
    /// one when the name is the client's (see [`prepared`]); nothing runs on a server.
    fn deallocate(&mut self, d: Deallocate, reply: &mut BytesMut) {
        let status = self.tx.status;
        if status == b'E' {
            put_error(
                reply,
                "ERROR",
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            );
            put_ready(reply, status);
            return;
        }
        let tag: &[u8] = match d {
            Deallocate::All => {
                self.statements.clear();
                b"DEALLOCATE ALL\0"
            }
            Deallocate::Name(n) => {
                if self.statements.remove(&n).is_none() {
                    put_error(reply, "ERROR", "26000", &unknown_statement_text(&n));
                    put_ready(reply, status);
                    return;
                }
                b"DEALLOCATE\0"
            }
        };
        codec::put_message(reply, b'C', tag);
        put_ready(reply, status);
    }

    /// Writes `msg` for `conn` with the client's statement names replaced by the server's
    /// (see [`prepared`]), and records the answers it will bring.
    /// `found`: what the statement of a `Query` or `Parse` is.
    fn translate(
        &mut self,
        tag: u8,
        msg: bytes::Bytes,
        conn: &mut ServerConn,
        out: &mut BytesMut,
        found: Inspection,
    ) {
        let body = msg.slice(5..);
        match tag {
            b'P' => {
                let n = body.iter().position(|&c| c == 0).unwrap_or(body.len());
                if n == 0 || n == body.len() {
                    // A SQL DEALLOCATE of one of the client's statements: of the server's. A
                    // name the client never prepared never reaches the server (it might be
                    // one of the proxy's).
                    if let Some(Deallocate::Name(name)) = &found.deallocate {
                        let query = match self.statements.remove(name.as_slice()) {
                            Some(st) => {
                                ensure_prepared(conn, &st, out);
                                conn.prepared.remove(&st.server_name);
                                format!("DEALLOCATE {}", st.server_name)
                            }
                            None => unknown_statement(name),
                        };
                        prepared::unnamed_parse(&query, out);
                        conn.owed.push(Expect::Parse(None));
                        return;
                    }
                    conn.owed.push(Expect::Parse(None));
                    out.extend_from_slice(&msg);
                    return;
                }
                // Copied out: a slice would keep the client's whole read buffer (a fresh
                // one per transaction, see `Stream::read_idle`) alive with the statement.
                let definition = bytes::Bytes::copy_from_slice(&body[n + 1..]);
                let server_name = self.pc.names.name_for(&definition);
                self.statements.insert(
                    body[..n].to_vec(),
                    Statement {
                        server_name: server_name.clone(),
                        definition: definition.clone(),
                        settings: found.settings,
                    },
                );
                if conn.prepared.contains(&server_name) {
                    prepared::close_nothing(out);
                    conn.owed.push(Expect::CloseAsParse);
                } else {
                    // The connection may still hold it (see the module doc of `prepared`).
                    prepared::close_statement(&server_name, out);
                    conn.owed.push(Expect::HiddenClose);
                    prepared::parse_message(&server_name, &definition, out);
                    conn.prepared.insert(server_name.clone());
                    conn.owed.push(Expect::Parse(Some(server_name)));
                }
            }
            b'B' => {
                let mut rest = &body[..];
                let (Some(portal), Some(name)) = (take_cstr(&mut rest), take_cstr(&mut rest))
                else {
                    out.extend_from_slice(&msg);
                    return;
                };
                match self.statements.get(name) {
                    Some(st) if !name.is_empty() => {
                        if st.settings {
                            self.settings.mark_dirty();
                        }
                        ensure_prepared(conn, st, out);
                        prepared::bind_message(portal, &st.server_name, rest, out);
                    }
                    _ => out.extend_from_slice(&msg),
                }
            }
            b'D' if body.first() == Some(&b'S') => {
                let mut rest = &body[1..];
                let st = take_cstr(&mut rest)
                    .filter(|n| !n.is_empty())
                    .and_then(|n| self.statements.get(n));
                match st {
                    Some(st) => {
                        ensure_prepared(conn, st, out);
                        prepared::describe_statement(&st.server_name, out);
                    }
                    None => out.extend_from_slice(&msg),
                }
            }
            b'C' => {
                conn.owed.push(Expect::Close);
                let mut rest = &body[1.min(body.len())..];
                let named = body.first() == Some(&b'S')
                    && take_cstr(&mut rest).is_some_and(|n| {
                        self.statements.remove(n);
                        !n.is_empty()
                    });
                if named {
                    // The server's statement may serve other clients: kept. A name that is
                    // not the client's is not closed either (PostgreSQL answers
                    // CloseComplete for a statement that does not exist).
                    prepared::close_nothing(out);
                } else {
                    out.extend_from_slice(&msg);
                }
            }
            b'S' | b'Q' | b'F' => {
                conn.owed.push(Expect::Sync);
                out.extend_from_slice(&msg);
            }
            _ => out.extend_from_slice(&msg),
        }
    }

    /// Scans the server bytes of `lease`: the byte ranges to pass on (hidden answers left
    /// out), how many bytes were scanned, and whether the transaction ended there.
    fn scan_server(&mut self, lease: &mut Lease) -> Result<Scan, CodecError> {
        let transaction = self.mode() == PoolMode::Transaction;
        let rename = transaction && self.pc.cfg.max_prepared_statements > 0;
        let conn = &mut lease.conn;
        let mut scan = Scan::default();
        let mut start = 0;
        let mut pos = 0;
        loop {
            if self.tx.passthrough > 0 {
                let n = self.tx.passthrough.min(conn.buf.len() - pos);
                pos += n;
                self.tx.passthrough -= n;
                if self.tx.passthrough > 0 {
                    break;
                }
                continue;
            }
            let Some(head) = conn.buf.get(pos..pos + 5) else {
                break;
            };
            let tag = head[0];
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if !(4..=codec::MAX_MESSAGE).contains(&len) {
                return Err(CodecError::Message(format!(
                    "server message {:?} with length {len}",
                    tag as char
                )));
            }
            let inspected = match tag {
                b'Z' | b'S' => true,
                b'E' => rename || self.auto.is_some(),
                b'1' | b'3' => rename,
                _ => false,
            };
            if !inspected {
                self.tx.passthrough = 1 + len;
                continue;
            }
            if conn.buf.len() < pos + 1 + len {
                break;
            }
            let at = pos;
            pos += 1 + len;
            if rename && tag != b'S' {
                let mut failed = Vec::new();
                match conn.owed.answer(tag, &mut failed) {
                    Answer::Pass => {}
                    Answer::Hide => {
                        scan.ranges.push(start..at);
                        start = pos;
                    }
                    Answer::AsParseComplete => conn.buf[at] = b'1',
                }
                for n in failed {
                    conn.prepared.remove(&n);
                }
            }
            match tag {
                b'E' => {
                    if let Some(a) = self.auto.as_mut() {
                        a.server_error();
                    }
                }
                b'Z' => {
                    if self.tx.hidden_syncs > 0 {
                        self.tx.hidden_syncs -= 1;
                        scan.ranges.push(start..at);
                        start = pos;
                    }
                    if let Some(a) = self.auto.as_mut() {
                        a.ready(conn.buf[at + 5]);
                    }
                    self.tx.ready(conn.buf[at + 5]);
                    if transaction && self.tx.idle() {
                        scan.release = true;
                        break;
                    }
                }
                b'S' => {
                    let mut b = &conn.buf[at + 5..pos];
                    if let (Some(k), Some(v)) = (codec::cstr(&mut b), codec::cstr(&mut b)) {
                        params::record(&mut self.wanted, &k, &v);
                        params::record(&mut conn.params, &k, &v);
                    }
                }
                _ => {}
            }
        }
        scan.ranges.push(start..pos);
        scan.ranges.retain(|r| !r.is_empty());
        scan.scanned = pos;
        Ok(scan)
    }
}

/// What [`Session::scan_server`] found.
#[derive(Default)]
struct Scan {
    ranges: Vec<std::ops::Range<usize>>,
    scanned: usize,
    release: bool,
}

/// Takes a NUL-terminated byte string off the front of `b`.
fn take_cstr<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = b.iter().position(|&c| c == 0)?;
    let s = &b[..end];
    *b = &b[end + 1..];
    Some(s)
}

/// Prepares `st` on `conn` first when it does not have it (the answers are hidden).
fn ensure_prepared(conn: &mut ServerConn, st: &Statement, out: &mut BytesMut) {
    if !conn.prepared.contains(&st.server_name) {
        prepared::close_statement(&st.server_name, out);
        conn.owed.push(Expect::HiddenClose);
        prepared::parse_message(&st.server_name, &st.definition, out);
        conn.prepared.insert(st.server_name.clone());
        conn.owed.push(Expect::HiddenParse(st.server_name.clone()));
    }
}

/// The SQLSTATE of a failed settings alignment as a static string (the ones a `SET` can
/// raise; others become XX000, internal error).
fn settings_code(code: &str) -> &'static str {
    match code {
        "22023" => "22023",
        "42704" => "42704",
        "42501" => "42501",
        "57014" => "57014",
        "25006" => "25006",
        "55P02" => "55P02",
        "0A000" => "0A000",
        _ => "XX000",
    }
}

/// A statement that fails on the server with `feature_not_supported` and `text`.
fn raise(text: &str) -> String {
    raise_as("feature_not_supported", text)
}

/// A statement that fails on the server with `condition` and `text`.
fn raise_as(condition: &str, text: &str) -> String {
    format!(
        "DO $pgherd$BEGIN RAISE EXCEPTION USING ERRCODE = '{condition}', MESSAGE = '{}'; END$pgherd$",
        text.replace('\'', "''")
    )
}

/// PostgreSQL's message for a `DEALLOCATE` of a statement that does not exist.
fn unknown_statement_text(name: &[u8]) -> String {
    format!(
        "prepared statement \"{}\" does not exist",
        String::from_utf8_lossy(name)
    )
}

/// A statement that fails on the server as a `DEALLOCATE` of `name` that does not exist.
fn unknown_statement(name: &[u8]) -> String {
    raise_as("invalid_sql_statement_name", &unknown_statement_text(name))
}

fn protocol(e: CodecError) -> Fatal {
    Fatal::new("08P01", e.to_string())
}

fn server_lost(e: &dyn std::fmt::Display) -> Fatal {
    Fatal::new("08006", format!("server connection lost: {e}"))
}

/// The SQLSTATE of a server's login refusal as a static string (the common ones; others
/// become 08004, server rejected the connection).
fn static_code(code: &str) -> &'static str {
    match code {
        "28P01" => "28P01",
        "28000" => "28000",
        "3D000" => "3D000",
        "53300" => "53300",
        "57P03" => "57P03",
        _ => "08004",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_boundaries() {
        let mut t = TxState::default();
        assert!(t.idle());
        // Simple query outside a transaction.
        t.sent(b'Q');
        assert!(!t.idle());
        t.ready(b'I');
        assert!(t.idle());
        // BEGIN: still bound after its ReadyForQuery(T).
        t.sent(b'Q');
        t.ready(b'T');
        assert!(!t.idle());
        t.sent(b'Q');
        t.ready(b'I');
        assert!(t.idle());
        // Extended protocol: Parse/Bind/Execute waiting for their Sync keep the connection
        // even when an earlier ReadyForQuery(I) arrives.
        t.sent(b'S');
        t.sent(b'P');
        t.sent(b'B');
        t.ready(b'I');
        assert!(!t.idle(), "unsynced messages are on the server");
        t.sent(b'E');
        t.sent(b'S');
        assert!(!t.idle());
        t.ready(b'I');
        assert!(t.idle());
        // Two pipelined transactions: released only after the second answer.
        t.sent(b'S');
        t.sent(b'S');
        t.ready(b'I');
        assert!(!t.idle());
        t.ready(b'I');
        assert!(t.idle());
        // A failed transaction block keeps the connection until ROLLBACK.
        t.sent(b'Q');
        t.ready(b'E');
        assert!(!t.idle());
    }

    /// The size of what `f` returns (an async fn's future), without calling it.
    fn future_size<A, B, C, D, E, F>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The same for a function of two arguments.
    fn future_size2<A, B, F>(_: fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A logged-in client's task, until it is parked, is its boxed session and its waiting
    /// state: the opening, the login and the per-transaction steps are boxed (binding a
    /// server connection alone is over 2 kB), so their states do not make every idle
    /// client's task as large. What a parked client keeps is its session, boxed (its task
    /// is gone): bounded too.
    #[test]
    fn idle_client_task_is_small() {
        let task = future_size(crate::session::serve_pooled);
        assert!(task < 1536, "a pooled client's task is {task} bytes");
        let resumed = future_size2(drive);
        assert!(
            resumed < 1024,
            "a woken-up client's task is {resumed} bytes"
        );
        let parked = std::mem::size_of::<Session>();
        assert!(parked < 640, "a parked session is {parked} bytes");
    }

    #[test]
    fn unknown_statement_raises_postgres_error() {
        assert_eq!(
            unknown_statement(b"it's"),
            "DO $pgherd$BEGIN RAISE EXCEPTION USING ERRCODE = 'invalid_sql_statement_name', MESSAGE = 'prepared statement \"it''s\" does not exist'; END$pgherd$"
        );
    }

    #[test]
    fn raise_quotes() {
        assert_eq!(
            raise("it's"),
            "DO $pgherd$BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = 'it''s'; END$pgherd$"
        );
    }
}
