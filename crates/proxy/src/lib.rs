//! pgherd's read-write split proxy (`pgherd proxy <CONFIG>`), replacing HAProxy + confd.
//!
//! Where bytes go, in order:
//!
//! * [`discovery`] watches the cluster prefix in the DCS and publishes a [`topology::Topology`]
//!   (members, addresses, leader) within one etcd round trip of any change;
//! * [`health`] checks each member's REST API (`GET /primary`, `GET /replica[?lag=N]`);
//! * [`controller`] merges both (plus operator admin states) through the pure rules of
//!   [`routing`] into an immutable [`routing::Table`], publishes it, then closes the sessions
//!   that must stop (a server that is no longer the confirmed primary loses every session it
//!   carries on a primary listener at once);
//! * [`listener`] accepts clients; [`session`] waits for the client's first bytes, passes the
//!   [`gate`] (`maxconn`/queue), picks a server or **holds** the client until one is routable
//!   (up to `hold_timeout`), connects, and hands both sockets to [`copy`], the data path;
//! * on a pooled listener (`pool_mode`), [`pool`] speaks the protocol itself: authenticates
//!   the client, then lends it a server connection per transaction or per session;
//! * [`registration`] writes `proxies/<name>` in the DCS (the fencing confirmation, see below);
//! * [`stats`] serves the HTML page, `/stats.json`, `/metrics` and the admin actions.
//! * [`split`] is the `role: auto` listener's SQL classifier and per-session router (pure);
//!   `pool/client/auto.rs` runs it on a transaction pool (`pool_mode: transaction`).
//!
//! # Configuration
//!
//! The file has the cluster's `scope`, `namespace` and `etcd3:` (or `etcd:`) section, like an
//! agent's, plus a `proxy:` section ([`config::ProxyConfig`]):
//!
//! ```yaml
//! proxy:
//!   name: px1                      # default: <hostname>-<first listener port>
//!   maxconn: 20000                 # client connections in total (accepting pauses beyond)
//!   hold_timeout: 30s              # wait for a primary instead of refusing
//!   listener_maxconn: 500          # default per-listener maxconn (server sessions); none if unset
//!   maxqueue: 10000                # default clients waiting for a maxconn slot
//!   queue_timeout: 30s
//!   drain_timeout: 10s             # SIGTERM: stop accepting, let sessions end this long
//!   buffer_size: 16kB              # per direction of an active session
//!   threads: 1                     # worker threads (HAProxy's nbthread); raise on a dedicated host
//!   timeouts: {connect: 3s, client_idle: 0, server_idle: 0}   # 0 = no limit
//!   tcp_keepalive: {idle: 60s, interval: 10s, count: 6}       # or false
//!   health_check: {interval: 500ms, fast_interval: 50ms, timeout: 1s, rise: 2, fall: 3}
//!   registration: {enabled: true, ttl: 10s}
//!   listeners:
//!     - {name: primary, bind: 127.0.0.1:5000, role: primary}
//!     - {name: replicas, bind: 127.0.0.1:5001, role: replica, balance: roundrobin,
//!        max_lag: 16MB, fallback: primary, maxconn: 200, maxqueue: 100, queue_timeout: 5s}
//!     - {name: behind_lb, bind: 10.0.0.5:5000, role: primary, accept_proxy: true}
//!     - {name: pooled, bind: 127.0.0.1:6432, role: primary, pool_mode: transaction,
//!        pool_size: 20, min_pool_size: 0, max_client_conn: 100, server_idle_timeout: 600s,
//!        server_lifetime: 3600s, query_wait_timeout: 120s, server_reset_query: DISCARD ALL,
//!        auth_type: scram-sha-256, auth_file: /etc/pgherd/userlist.txt,
//!        ignore_startup_parameters: [options], max_prepared_statements: 100,
//!        auth_user: pgbouncer, auth_query: "SELECT usename, passwd FROM pg_shadow WHERE usename=$1",
//!        tls: {cert: /etc/pgherd/proxy.pem, key: /etc/pgherd/proxy.key},
//!        server_tls: {mode: verify-full, ca: /etc/pgherd/ca.pem}}
//!   stats:
//!     bind: 127.0.0.1:7000
//!     refresh: 2s
//!     admin: {username: admin, password: secret}   # enables POST /admin/...
//! ```
//!
//! Roles: `primary`, `replica`, `read-only` (replicas, then the primary when none qualifies),
//! `sync`, `async`, and `auto` (one port, each transaction routed by its SQL: see [`split`];
//! its keys `read_only_functions: [name, schema.name]` and
//! `read_your_writes: replayed | session | off` or `{mode: replayed, max_wait: 10ms}`; its
//! replicas form a second rotation with the listener's `balance` and `max_lag`). Balance: `roundrobin` (weighted by the member tag `weight`, default 1),
//! `leastconn`, `first`. Members tagged `noloadbalance` (or `weight: 0`) get no replica
//! traffic.
//!
//! # Pooling
//!
//! `pool_mode: session | transaction` on a listener turns on pgbouncer's job, with
//! pgbouncer's key names and defaults (see the [`pool`] module for the protocol handling, the
//! seam between pooling and routing, and failover; [`pool::statements`] for what transaction
//! mode refuses and follows; [`pool::settings`] for the session settings (`SET`, `RESET`)
//! that follow a client from server connection to server connection). `maxconn`/`maxqueue` do not apply to pooled listeners: `max_client_conn`
//! bounds clients and `pool_size` server connections per (server, user, database).
//! `auth_type`: `scram-sha-256` (default), `md5`, `plain`. Startup parameters other than
//! the kept ones (client_encoding, DateStyle, TimeZone, standard_conforming_strings,
//! application_name) start the client's session settings ([`pool::settings`]), except
//! `options` (refused) and the names `ignore_startup_parameters` lists (dropped).
//! `max_prepared_statements` > 0 keeps named prepared statements working in transaction mode
//! ([`pool::prepared`], SQL `DEALLOCATE` included). `auth_user` + `auth_query` look up users missing from the
//! `auth_file` ([`pool::auth_query`]). `tls` terminates clients' TLS (an `SSLRequest` is then
//! answered `S`; clients may still connect in clear); `server_tls.mode` is libpq's `sslmode`
//! subset `disable | prefer | require | verify-full` (`ca` required for `verify-full`).
//!
//! # Routing rules
//!
//! A member is routed on a primary listener only when the DCS leader key names it **and** its
//! own `GET /primary` answers 200 with `role: master` (one answer suffices once the DCS agrees;
//! a 503 takes it out at once; transport failures count towards `fall`). A replica is routed
//! when the DCS lists it as a running replica and `GET /replica` (and `?lag=max_lag`) answer
//! 200 (with `rise`; any failed replica check, a 503 or no answer, takes it out at once). While nothing is routable a listener *holds*: new clients wait up
//! to `hold_timeout` and are connected as soon as a server is confirmed; the checks of a
//! member the DCS names run every `fast_interval` meanwhile.
//!
//! # Fencing: the `proxies/<name>` key
//!
//! Each proxy keeps `<namespace>/<scope>/proxies/<name>` on its own etcd lease
//! (`registration.ttl`, rewritten every third of it and at once on every change):
//! `{"api":"http://<stats bind>","name":..,"routing_leader":<member or null>,"updated_at":<epoch ms>}`
//! ([`pgherd_dcs::ProxyRegistration`]).
//! `routing_leader` turns `null` (or to the new leader) only after the proxy stopped routing
//! writes to the old leader **and** closed every session it had on it. Agents in fencing mode
//! wait, bounded by their timeout, until no live proxy key names the old leader before
//! promoting another member. A proxy that cannot reach the DCS loses its key after `ttl`; it
//! then still stops writes to the old primary because that node's `GET /primary` turns 503
//! when it loses the leader key.
//!
//! # Several proxies behind one address
//!
//! Proxies share no state: each follows the DCS and the health checks on its own, so any number
//! of them route identically. Put them behind a VIP (keepalived, or vip-manager on each proxy
//! host), a DNS name with one A record per proxy (clients retry the next address on connect
//! failure: libpq accepts `host=px1,px2`), or a cloud TCP load balancer health-checking
//! `GET /stats.json` on the stats port. A load balancer that sends the PROXY protocol (v1 or
//! v2) needs `accept_proxy: true` on the listener: the header is removed before PostgreSQL
//! sees the session and the logs name the client's origin instead of the balancer.

pub mod backend;
pub mod config;
pub mod controller;
pub mod copy;
pub mod discovery;
pub mod error;
pub mod gate;
pub mod health;
pub mod listener;
pub mod opening;
pub mod pool;
pub mod proxy_protocol;
pub mod registration;
pub mod routing;
pub mod session;
pub mod split;
pub mod stats;
pub mod topology;

pub use config::ProxyConfig;
pub use error::ProxyError;

use crate::controller::{Controller, Inputs};
use crate::copy::Limits;
use crate::gate::ListenerGate;
use crate::session::{ListenerCtx, Totals};
use pgherd_dcs::Dcs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Budget of one DCS operation (registration writes, cluster reads).
const DCS_RETRY_TIMEOUT: Duration = Duration::from_secs(3);

/// A started proxy.
pub struct Running {
    /// Bound addresses of the listeners, in configuration order.
    pub listeners: Vec<SocketAddr>,
    pub stats: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    /// The accept loops: aborting one closes its listening socket.
    acceptors: Vec<JoinHandle<()>>,
    /// Discovery, health checks, routing, stats: sessions still being drained need them.
    tasks: Vec<JoinHandle<()>>,
    registration: Option<JoinHandle<()>>,
    /// One permit per open client connection (`maxconn` in all).
    clients: Arc<Semaphore>,
    maxconn: usize,
    drain_timeout: Duration,
    /// Each listener's pooled side, in configuration order (`None`: not pooled).
    pools: Vec<Option<Arc<pool::PoolCtx>>>,
}

impl Running {
    /// Client connections open now.
    pub fn open_clients(&self) -> usize {
        self.maxconn - self.clients.available_permits()
    }

    /// Reads every pooled listener's `auth_file` again (SIGHUP): new logins check the new
    /// list; a file that cannot be read or parsed leaves that listener's list as it was.
    pub fn reload_auth_files(&self) {
        for (i, ctx) in self.pools.iter().enumerate() {
            let Some(ctx) = ctx else { continue };
            match read_auth_file(&ctx.cfg.auth_file, i) {
                Ok(list) => {
                    info!(
                        listener = i,
                        users = list.len(),
                        "reloaded {}",
                        ctx.cfg.auth_file.display()
                    );
                    ctx.users.replace(list);
                }
                Err(e) => warn!("{e}; the users read before stay in force"),
            }
        }
    }

    /// A bounded stop: stop accepting (new clients are refused by the kernel), let open
    /// sessions end on their own for up to `drain_timeout` (or until `cut_short` resolves: a
    /// second signal), then revoke the registration (bounded by the DCS budget) and close
    /// whatever is left.
    pub async fn shutdown(mut self, cut_short: impl std::future::Future<Output = ()>) {
        for a in self.acceptors.drain(..) {
            a.abort();
        }
        let open = self.open_clients();
        if open > 0 {
            info!(
                "stopped accepting; waiting up to {:?} for {open} open session(s) to end",
                self.drain_timeout
            );
            let drained = async {
                // Every permit back means every session ended.
                let _all = self.clients.acquire_many(self.maxconn as u32).await;
            };
            tokio::select! {
                () = drained => info!("every session ended"),
                () = tokio::time::sleep(self.drain_timeout) => warn!(
                    "{} session(s) still open after drain_timeout ({:?}): closing them",
                    self.open_clients(),
                    self.drain_timeout
                ),
                () = cut_short => warn!(
                    "second signal: closing {} open session(s) now",
                    self.open_clients()
                ),
            }
        }
        let _ = self.stop.send(true);
        if let Some(reg) = self.registration.take() {
            if tokio::time::timeout(DCS_RETRY_TIMEOUT + Duration::from_secs(1), reg)
                .await
                .is_err()
            {
                warn!("could not remove the registration in the DCS; it expires after its ttl");
            }
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A proxy configuration read and checked, before any runtime or socket exists (the
/// runtime's worker count comes from it).
pub struct Prepared {
    loaded: pgherd_config::Loaded,
    pub config: ProxyConfig,
}

/// Reads and checks `pgherd proxy <CONFIG>`'s file.
pub fn prepare(path: &Path) -> Result<Prepared, ProxyError> {
    let loaded = pgherd_config::load_from_process_env(Some(path))?;
    let config = ProxyConfig::from_config(&loaded.config, &loaded.source)?;
    Ok(Prepared { loaded, config })
}

/// `pgherd proxy <CONFIG>`: runs until SIGINT or SIGTERM.
pub async fn run(prepared: Prepared) -> Result<(), ProxyError> {
    let Prepared {
        loaded,
        config: cfg,
    } = prepared;
    for w in &loaded.warnings {
        warn!("{w}");
    }
    let dcs = pgherd_dcs::open(
        &loaded.config,
        &cfg.scope,
        None,
        cfg.registration.ttl,
        DCS_RETRY_TIMEOUT,
    )?;
    raise_fd_limit();
    let running = start(cfg, dcs).await?;
    let install = |kind, doing| {
        tokio::signal::unix::signal(kind).map_err(|source| ProxyError::Io { doing, source })
    };
    use tokio::signal::unix::SignalKind;
    let mut term = install(SignalKind::terminate(), "installing the SIGTERM handler")?;
    let mut int = install(SignalKind::interrupt(), "installing the SIGINT handler")?;
    // SIGHUP would end the process by default; `systemctl reload` sends it.
    let mut hup = install(SignalKind::hangup(), "installing the SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: shutting down"); break }
            _ = int.recv() => { info!("SIGINT: shutting down"); break }
            _ = hup.recv() => {
                info!("SIGHUP: reading the auth files again");
                running.reload_auth_files();
            }
        }
    }
    let second = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    running.shutdown(second).await;
    Ok(())
}

/// Raises the soft limit of open files to the hard limit: every client costs one descriptor,
/// every active session two.
// unsafe: two libc calls (see SAFETY below).
#[allow(unsafe_code)]
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let wanted = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                info!(
                    from = limit.rlim_cur,
                    to = limit.rlim_max,
                    "raised the open files limit"
                );
            }
        }
    }
}

/// Reads a pooled listener's `auth_file`.
fn read_auth_file(path: &Path, listener: usize) -> Result<pool::auth::UserList, ProxyError> {
    let key = format!("proxy.listeners[{listener}].auth_file");
    let text = std::fs::read_to_string(path).map_err(|e| ProxyError::AuthFile {
        path: path.to_path_buf(),
        key: key.clone(),
        why: e.to_string(),
    })?;
    pool::auth::UserList::parse(&text).map_err(|why| ProxyError::AuthFile {
        path: path.to_path_buf(),
        key,
        why,
    })
}

/// Binds every socket (failing fast, naming the key), then starts every task.
pub async fn start(cfg: ProxyConfig, dcs: Arc<dyn Dcs>) -> Result<Running, ProxyError> {
    let cfg = Arc::new(cfg);
    let mut sockets = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        sockets.push(listener::bind(
            l.bind,
            format!("proxy.listeners[{i}].bind"),
            listener::ListenFor::Clients(cfg.keepalive.as_ref()),
        )?);
    }
    let stats_socket = match &cfg.stats {
        Some(s) => Some(listener::bind(
            s.bind,
            "proxy.stats.bind".into(),
            listener::ListenFor::Http,
        )?),
        None => None,
    };
    let local = |l: &tokio::net::TcpListener, key: &'static str| {
        l.local_addr()
            .map_err(|source| ProxyError::Io { doing: key, source })
    };
    let listener_addrs = sockets
        .iter()
        .map(|s| local(s, "reading a listener address"))
        .collect::<Result<Vec<_>, _>>()?;
    let stats_addr = match &stats_socket {
        Some(s) => Some(local(s, "reading the stats address")?),
        None => None,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(2)
        .timeout(cfg.health.timeout)
        .connect_timeout(cfg.health.timeout)
        .build()
        .map_err(|e| ProxyError::Io {
            doing: "building the health-check client",
            source: std::io::Error::other(e),
        })?;

    let (table_tx, table_rx) = watch::channel(Arc::new(controller::initial_table(&cfg)));
    let (topo_tx, topo_rx) = watch::channel(None);
    let (report_tx, report_rx) = mpsc::channel(256);
    let (recheck_tx, recheck_rx) = mpsc::channel(64);
    let (admin_tx, admin_rx) = mpsc::channel(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    let closed = Arc::new(Notify::new());
    let totals = Arc::new(Totals::default());
    let mut tasks = Vec::new();
    let mut acceptors = Vec::new();

    tasks.push(tokio::spawn(discovery::run(dcs.clone(), topo_tx)));
    let ctl = Controller::new(cfg.clone(), table_tx, report_tx, client, closed.clone());
    tasks.push(tokio::spawn(ctl.run(Inputs {
        topology: topo_rx,
        reports: report_rx,
        recheck: recheck_rx,
        admin: admin_rx,
    })));

    let cancels = Arc::new(pool::cancel::Cancels::default());
    let mut pools = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        pools.push(match &l.pool {
            Some(p) => Some(Arc::new(
                pool::PoolCtx::new(p.clone(), read_auth_file(&p.auth_file, i)?, cancels.clone())
                    .map_err(|why| ProxyError::Tls {
                        key: format!("proxy.listeners[{i}].tls/server_tls"),
                        why,
                    })?,
            )),
            None => None,
        });
    }
    let clients = Arc::new(Semaphore::new(cfg.maxconn));
    let mut gates = Vec::new();
    let mut routing = Vec::new();
    for (i, (l, socket)) in cfg.listeners.iter().zip(sockets).enumerate() {
        let gate = ListenerGate::new(l.maxconn, l.maxqueue, l.queue_timeout);
        gates.push(gate.clone());
        let split = l
            .split
            .as_ref()
            .map(|sc| Arc::new(split::SplitCtx::new(sc)));
        routing.push(split.as_ref().map(|s| s.counters.clone()));
        let ctx = Arc::new(ListenerCtx {
            index: i,
            cfg: l.clone(),
            gate,
            table: table_rx.clone(),
            limits: Limits {
                buffer: cfg.buffer_size,
                client_idle: cfg.timeouts.client_idle,
                server_idle: cfg.timeouts.server_idle,
            },
            connect_timeout: cfg.timeouts.connect,
            keepalive: cfg.keepalive.clone(),
            recheck: recheck_tx.clone(),
            totals: totals.clone(),
            split,
            pool: pools[i].clone(),
        });
        info!(listener = %l.name, bind = %listener_addrs[i], role = l.role.as_str(), "listening");
        acceptors.push(tokio::spawn(listener::accept_loop(
            socket,
            ctx,
            clients.clone(),
        )));
    }

    if let Some(socket) = stats_socket {
        let state = stats::StatsState {
            cfg: cfg.clone(),
            table: table_rx.clone(),
            gates,
            pools: pools.clone(),
            totals,
            routing,
            admin: admin_tx,
            started: tokio::time::Instant::now(),
        };
        let app = stats::router(state);
        info!(bind = ?stats_addr, "stats page listening");
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(socket, app).await {
                warn!("stats server stopped: {e}");
            }
        }));
    }

    let registration = cfg.registration.enabled.then(|| {
        let api = stats_addr.map(|a| format!("http://{a}"));
        tokio::spawn(registration::run(
            dcs,
            cfg.name.clone(),
            api,
            cfg.registration.ttl,
            table_rx,
            closed,
            stop_rx,
        ))
    });
    info!(proxy = %cfg.name, scope = %cfg.scope, "proxy started");
    Ok(Running {
        listeners: listener_addrs,
        stats: stats_addr,
        stop: stop_tx,
        acceptors,
        tasks,
        registration,
        clients,
        maxconn: cfg.maxconn,
        drain_timeout: cfg.drain_timeout,
        pools,
    })
}
