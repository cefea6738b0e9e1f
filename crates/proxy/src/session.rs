//! One client session: wait for the client to speak, pass the listener's gate, find a server
//! (holding while none is routable), connect, then hand both sockets to the data path.
//!
//! The server connection is opened only once the client has sent its first bytes (PostgreSQL
//! clients always speak first), so idle clients cost no server connection. The listening
//! socket defers `accept` until those bytes arrive (`TCP_DEFER_ACCEPT`, 1 s; a silent client
//! is handed over when it expires). The client's
//! opening messages are kept until the server accepted them ([`crate::opening`]), so a refused
//! connection or a `57P03` answer (server shutting down during a switchover) moves the client
//! to the next routable server instead of failing it: nothing was executed there.

use crate::backend::SessionGuard;
use crate::config::{Keepalive, ListenerConfig};
use crate::copy::{self, Counters, End, Limits};
use crate::error::Refusal;
use crate::gate::{ClientGuard, Dec, ListenerGate};
use crate::opening::{self, read_client_opening, ClientOpening, Offer};
use crate::proxy_protocol::{self, Origin};
use crate::routing::{Readiness, Table};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::{timeout, timeout_at, Instant};
use tracing::{debug, info};

/// Pause between connect attempts when a routable server refuses (unless the table changes).
const CONNECT_RETRY: Duration = Duration::from_millis(50);
/// Upper bound of routing attempts per session (each needs a table change or a failed connect).
const MAX_ATTEMPTS: usize = 10_000;
/// How long a client may take to send its whole startup packet when `client_idle` is unset.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

/// Process-wide byte counters.
#[derive(Debug, Default)]
pub struct Totals {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// What every session of one listener shares.
pub struct ListenerCtx {
    pub index: usize,
    pub cfg: ListenerConfig,
    pub gate: Arc<ListenerGate>,
    pub table: watch::Receiver<Arc<Table>>,
    pub limits: Limits,
    pub connect_timeout: Duration,
    pub keepalive: Option<Keepalive>,
    /// Asks the controller to re-check a member now (its server refused a connection).
    pub recheck: mpsc::Sender<String>,
    pub totals: Arc<Totals>,
    /// An auto listener's classifier, router settings and decision counters (`None` for
    /// other roles).
    pub split: Option<Arc<crate::split::SplitCtx>>,
    /// Pooled listeners (`pool_mode`): the pools, users and cancel keys.
    pub pool: Option<Arc<crate::pool::PoolCtx>>,
}

/// Sets `TCP_NODELAY` and keepalive on a server socket (best effort). Client sockets inherit
/// both from their listening socket ([`crate::listener::bind`]).
pub fn tune(stream: &TcpStream, keepalive: Option<&Keepalive>) {
    let _ = stream.set_nodelay(true);
    if let Some(k) = keepalive {
        let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive_params(k));
    }
}

pub fn keepalive_params(k: &Keepalive) -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(k.idle)
        .with_interval(k.interval)
        .with_retries(k.count)
}

/// Runs one client session to its end. `peer`: the socket's remote address.
pub async fn serve(ctx: Arc<ListenerCtx>, mut client: TcpStream, peer: SocketAddr) {
    // Inline: a silent client waits here, and the task is as large as the plain path's
    // states anyway (boxing the wait would cost it one more allocation).
    let Some((_client, origin)) = greet(&ctx, &mut client, peer).await else {
        return;
    };
    let _slot = match ctx.gate.enter().await {
        Ok(permit) => permit,
        Err(why) => {
            debug!(listener = %ctx.cfg.name, ?why, "session refused");
            return;
        }
    };
    // The opening and the data path are boxed: a session's task is then only as large as
    // its waiting states, which is what each of many idle clients costs (1.5 kB instead of
    // 1.9 kB per idle client in bench/proxy).
    let (server, mut guard) = match Box::pin(open(&ctx, &mut client)).await {
        Ok(found) => found,
        Err(Failure::Refused(why)) => {
            ctx.gate.refused(why);
            info!(listener = %ctx.cfg.name, client = %origin, ?why, "closing a client: no server to send it to");
            return;
        }
        Err(Failure::ClientGone) => return,
    };
    let backend = guard.backend.clone();
    let end = Box::pin(copy::proxy(
        client,
        server,
        &ctx.limits,
        Counters {
            bytes_in: [&backend.bytes_in, &ctx.totals.bytes_in],
            bytes_out: [&backend.bytes_out, &ctx.totals.bytes_out],
        },
        &mut guard.kill,
    ))
    .await;
    match end {
        End::Killed => {
            debug!(listener = %ctx.cfg.name, client = %origin, member = %backend.member, "session closed: server left the rotation")
        }
        other => {
            debug!(listener = %ctx.cfg.name, client = %origin, member = %backend.member, end = ?other, "session ended")
        }
    }
}

/// Runs one client of a pooled listener to its end: the proxy speaks the protocol itself
/// ([`crate::pool`]; maxconn/maxqueue do not apply, max_client_conn and pool_size do). Its
/// own kind of task, so that a pooled client's task holds none of the plain path's states.
/// `permit`: its unit of the process-wide `maxconn`, held for as long as the client is
/// open (also while it is parked without a task, [`crate::pool::park`]).
pub async fn serve_pooled(
    ctx: Arc<ListenerCtx>,
    pc: Arc<crate::pool::PoolCtx>,
    mut client: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let Some((counted, origin)) = greet(&ctx, &mut client, peer).await else {
        return;
    };
    let open = crate::pool::client::Open {
        origin,
        _counted: counted,
        _maxconn: permit,
    };
    crate::pool::client::serve(ctx, pc, client, open).await;
}

/// What every client goes through first: counted on its listener, its PROXY header read
/// (`accept_proxy`), its first bytes waited for. `None`: it left or sent no valid header.
async fn greet(
    ctx: &Arc<ListenerCtx>,
    client: &mut TcpStream,
    peer: SocketAddr,
) -> Option<(ClientGuard, SocketAddr)> {
    let counted = ctx.gate.client();
    let origin = if ctx.cfg.accept_proxy {
        match proxy_protocol::read_header(client, client_wait(ctx)).await {
            Ok(Origin::Client(addr)) => addr,
            Ok(Origin::Unknown) => peer,
            Err(why) => {
                ctx.gate.refused(Refusal::ProxyHeader);
                info!(listener = %ctx.cfg.name, %peer, "closing a client: {why}");
                return None;
            }
        }
    } else {
        peer
    };
    if ctx.pool.is_some() {
        // A pooled listener reads the opening itself, within its login timeout: waiting here
        // would cost one more syscall (a peek) per connection.
        return Some((counted, origin));
    }
    first_bytes(ctx, client).await.then_some((counted, origin))
}

/// Waits until the client sends something (or goes away / stays idle too long).
async fn first_bytes(ctx: &ListenerCtx, client: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    let peeked = match ctx.limits.client_idle {
        Some(limit) => match timeout(limit, client.peek(&mut probe)).await {
            Ok(r) => r,
            Err(_) => return false,
        },
        None => client.peek(&mut probe).await,
    };
    matches!(peeked, Ok(n) if n > 0)
}

/// Why a session ended before reaching the data path.
enum Failure {
    Refused(Refusal),
    ClientGone,
}

/// The outcome of offering the client's opening to one server.
enum Step {
    Proceed,
    /// Nothing was executed on this server: another may be tried.
    Retry(String),
    Fail(Failure),
}

/// What the client has said so far, kept to be replayed on another server.
struct Opening {
    /// The next client message not yet given to a server.
    pending: Option<ClientOpening>,
    /// Encryption requests the client was already answered `N` to.
    told: Vec<[u8; 8]>,
    startup: Option<Vec<u8>>,
}

/// Finds a server that accepts the client's opening: holds while none is routable, and moves
/// on when a server refuses the connection or answers 57P03 (shutting down, starting up).
async fn open(
    ctx: &ListenerCtx,
    client: &mut TcpStream,
) -> Result<(TcpStream, SessionGuard), Failure> {
    let deadline = Instant::now() + ctx.cfg.hold_timeout;
    let first = read_client_opening(client, client_wait(ctx))
        .await
        .map_err(|_| Failure::ClientGone)?;
    let mut opening = Opening {
        pending: Some(first),
        told: Vec::new(),
        startup: None,
    };
    let mut rx = ctx.table.clone();
    for _ in 0..MAX_ATTEMPTS {
        let (mut server, guard) = connect(ctx, &mut rx, deadline)
            .await
            .map_err(Failure::Refused)?;
        match offer(ctx, client, &mut server, &mut opening).await {
            Step::Proceed => return Ok((server, guard)),
            Step::Fail(f) => return Err(f),
            Step::Retry(why) => {
                info!(listener = %ctx.cfg.name, member = %guard.backend.member, "server did not take the session, trying again: {why}");
                guard.backend.errors.fetch_add(1, Ordering::Relaxed);
                let _ = ctx.recheck.try_send(guard.backend.member.clone());
                drop((server, guard));
                let now = Instant::now();
                if now >= deadline {
                    return Err(Failure::Refused(Refusal::ConnectFailed));
                }
                let _ = timeout_at((now + CONNECT_RETRY).min(deadline), rx.changed()).await;
            }
        }
    }
    Err(Failure::Refused(Refusal::ConnectFailed))
}

fn client_wait(ctx: &ListenerCtx) -> Duration {
    ctx.limits.client_idle.unwrap_or(STARTUP_WAIT)
}

async fn offer(
    ctx: &ListenerCtx,
    client: &mut TcpStream,
    server: &mut TcpStream,
    o: &mut Opening,
) -> Step {
    let wait = ctx.connect_timeout;
    for request in &o.told {
        match opening::offer_encryption(server, request, wait).await {
            Ok(b'N') => {}
            // The client was told "no encryption" by an earlier server: cannot replay here.
            Ok(_) => return Step::Fail(Failure::Refused(Refusal::ConnectFailed)),
            Err(e) => return Step::Retry(e.to_string()),
        }
    }
    while let Some(message) = o.pending.take() {
        match message {
            ClientOpening::Other(bytes) => {
                if let Err(e) = server.write_all(&bytes).await {
                    o.pending = Some(ClientOpening::Other(bytes));
                    return Step::Retry(e.to_string());
                }
                return Step::Proceed;
            }
            ClientOpening::Startup(m) => o.startup = Some(m),
            ClientOpening::Encryption(request) => {
                let answer = match opening::offer_encryption(server, &request, wait).await {
                    Ok(a) => a,
                    Err(e) => {
                        o.pending = Some(ClientOpening::Encryption(request));
                        return Step::Retry(e.to_string());
                    }
                };
                if client.write_all(&[answer]).await.is_err() {
                    return Step::Fail(Failure::ClientGone);
                }
                if answer != b'N' {
                    // TLS or GSS with this server: opaque from here on.
                    return Step::Proceed;
                }
                o.told.push(request);
                match read_client_opening(client, client_wait(ctx)).await {
                    Ok(next) => o.pending = Some(next),
                    Err(_) => return Step::Fail(Failure::ClientGone),
                }
            }
        }
    }
    let Some(startup) = o.startup.as_deref() else {
        return Step::Fail(Failure::ClientGone);
    };
    match opening::offer_startup(server, startup, wait).await {
        Ok(Offer::Accepted { reply }) => {
            if client.write_all(&reply).await.is_err() {
                return Step::Fail(Failure::ClientGone);
            }
            Step::Proceed
        }
        Ok(Offer::CannotConnectNow) => {
            Step::Retry("the database system cannot accept connections now (57P03)".into())
        }
        Err(e) => Step::Retry(e.to_string()),
    }
}

/// Finds a routable server and connects to it, holding while there is none.
async fn connect(
    ctx: &ListenerCtx,
    rx: &mut watch::Receiver<Arc<Table>>,
    deadline: Instant,
) -> Result<(TcpStream, SessionGuard), Refusal> {
    let mut holding: Option<Dec<'_>> = None;
    let mut connect_failed = false;
    for _ in 0..MAX_ATTEMPTS {
        let table = rx.borrow_and_update().clone();
        let Some(lt) = table.listeners.get(ctx.index) else {
            return Err(Refusal::HoldTimeout);
        };
        if let Some(entry) = lt.pick() {
            let Some(addr) = entry.addr.clone() else {
                continue;
            };
            let member = entry.member.clone();
            let mut guard = entry.backend.enter();
            // Re-check after entering: a server that left the rotation in between is either
            // visible in the newest table here, or its kill reaches this guard.
            let still = ctx
                .table
                .borrow()
                .listeners
                .get(ctx.index)
                .is_some_and(|l| l.routes(&member));
            if !still || guard.killed() {
                continue;
            }
            match timeout(ctx.connect_timeout, TcpStream::connect(&addr)).await {
                Ok(Ok(server)) => {
                    tune(&server, ctx.keepalive.as_ref());
                    guard.connected();
                    return Ok((server, guard));
                }
                Ok(Err(e)) => {
                    debug!(listener = %ctx.cfg.name, member = %member, %addr, "connect failed: {e}")
                }
                Err(_) => {
                    debug!(listener = %ctx.cfg.name, member = %member, %addr, "connect timed out")
                }
            }
            guard.backend.errors.fetch_add(1, Ordering::Relaxed);
            let _ = ctx.recheck.try_send(member);
            connect_failed = true;
            drop(guard);
            let now = Instant::now();
            if now >= deadline {
                return Err(Refusal::ConnectFailed);
            }
            let _ = timeout_at((now + CONNECT_RETRY).min(deadline), rx.changed()).await;
            continue;
        }
        let why = if connect_failed {
            Refusal::ConnectFailed
        } else {
            Refusal::HoldTimeout
        };
        if lt.readiness == Readiness::FailFast || Instant::now() >= deadline {
            return Err(why);
        }
        if holding.is_none() {
            ctx.gate.holding.fetch_add(1, Ordering::SeqCst);
            holding = Some(Dec(&ctx.gate.holding));
        }
        match timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => return Err(why),
        }
    }
    Err(Refusal::HoldTimeout)
}
