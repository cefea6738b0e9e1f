//! The ZooKeeper session: connected lazily, replaced when the server expired it or when the
//! ttl changed, and every request run under the caller's deadline with retries.

use super::tls::Forwarders;
use crate::DcsError;
use rustls::ClientConfig;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::{sleep, timeout_at, Instant};
use tracing::{debug, info, warn};
use zookeeper_client as zk;

/// First pause between two tries of one operation; doubled after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between two tries of one operation.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Shortest deadline of a single request.
pub(super) const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Below this much remaining budget another try is pointless.
const MIN_RETRY_WINDOW: Duration = Duration::from_millis(100);
/// How often a disconnected session is dialled again by us (see [`Sessions::reattach`]), and
/// how long one such dial may take.
const REDIAL_EVERY: Duration = Duration::from_secs(1);
/// How often a disconnected client's state is looked at while waiting for it.
const STATE_POLL: Duration = Duration::from_millis(100);

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One live session and the client that owns it.
#[derive(Clone)]
pub(super) struct Session {
    pub client: zk::Client,
    /// The server's session id: the `ephemeralOwner` of our ephemeral znodes.
    pub id: i64,
    /// The ttl it was opened with (its requested session timeout).
    ttl: Duration,
    /// The value of [`Sessions::generations`] while this is the current session.
    pub generation: u64,
    /// The ACL of the znodes this session creates (empty: open to anyone).
    acls: Arc<[zk::Acl]>,
}

impl Session {
    /// How a persistent znode is created.
    pub fn persistent(&self) -> zk::CreateOptions<'_> {
        zk::CreateMode::Persistent.with_acls(self.acls())
    }

    /// How an ephemeral znode (of this session) is created.
    pub fn ephemeral(&self) -> zk::CreateOptions<'_> {
        zk::CreateMode::Ephemeral.with_acls(self.acls())
    }

    fn acls(&self) -> zk::Acls<'_> {
        if self.acls.is_empty() {
            zk::Acls::anyone_all()
        } else {
            zk::Acls::new(&self.acls)
        }
    }
}

/// How the client reaches the configured hosts.
pub(super) enum Transport {
    /// Plain TCP, straight to them.
    Plain,
    /// TLS, through forwarders started by the first connection ([`super::tls`]).
    Tls {
        hosts: Vec<String>,
        config: Arc<ClientConfig>,
        forwarders: tokio::sync::OnceCell<Forwarders>,
    },
}

/// The session of one [`super::ZooKeeperDcs`], shared with its watch task.
pub(super) struct Sessions {
    /// `host:port,host:port` as configured (ZooKeeper's connect string over plain TCP).
    pub hosts: String,
    pub label: String,
    transport: Transport,
    acls: Arc<[zk::Acl]>,
    /// The session timeout of the next session (Patroni: `ttl`; see docs/compat.md).
    ttl: Mutex<Duration>,
    retry_timeout: Duration,
    current: tokio::sync::Mutex<Option<Session>>,
    /// Bumped whenever the session is replaced or dropped: the watch task then moves its
    /// watch to the new session (so that the old client, and its pings, can go).
    generation: tokio::sync::watch::Sender<u64>,
    /// When a session was last opened or dialled again.
    last_dial: Mutex<Instant>,
    /// Since when the client has been seen disconnected (`None`: connected when last seen).
    disconnected_since: Mutex<Option<Instant>>,
}

/// How a failed request is handled.
enum Attempt {
    Transient(String),
    Permanent(String),
}

impl Sessions {
    pub fn new(
        hosts: String,
        transport: Transport,
        acls: Vec<zk::Acl>,
        label: String,
        ttl: Duration,
        retry_timeout: Duration,
    ) -> Sessions {
        Sessions {
            hosts,
            label,
            transport,
            acls: acls.into(),
            ttl: Mutex::new(ttl),
            retry_timeout,
            current: tokio::sync::Mutex::new(None),
            generation: tokio::sync::watch::channel(0).0,
            last_dial: Mutex::new(Instant::now()),
            disconnected_since: Mutex::new(None),
        }
    }

    pub fn ttl(&self) -> Duration {
        *lock(&self.ttl)
    }

    pub fn set_ttl(&self, ttl: Duration) {
        let mut current = lock(&self.ttl);
        if *current != ttl {
            info!(member = %self.label, old = ?*current, new = ?ttl, "ttl changed; the next operation opens a new ZooKeeper session");
            *current = ttl;
        }
    }

    pub fn retry_timeout(&self) -> Duration {
        self.retry_timeout
    }

    pub fn request_timeout(&self) -> Duration {
        (self.retry_timeout / 3).max(MIN_REQUEST_TIMEOUT)
    }

    /// What the client connects to: the hosts, or (TLS) the forwarders to them, started now
    /// if they are not running yet.
    async fn connect_string(&self) -> Result<String, String> {
        match &self.transport {
            Transport::Plain => Ok(self.hosts.clone()),
            Transport::Tls {
                hosts,
                config,
                forwarders,
            } => forwarders
                .get_or_try_init(|| {
                    // Generous: the client gives up on its own (connection timeout); a
                    // handshake that completes anyway warms up a freshly started server.
                    Forwarders::start(hosts, config.clone(), self.ttl(), &self.label)
                })
                .await
                .map(|f| f.connect.clone()),
        }
    }

    /// `error`, with the TLS connection failures of the hosts when there are some (a bad
    /// certificate shows only as a closed connection to the client).
    fn explain(&self, error: String) -> String {
        match &self.transport {
            Transport::Tls { forwarders, .. } => {
                match forwarders.get().and_then(Forwarders::failures) {
                    Some(failures) => format!("{error} (TLS: {failures})"),
                    None => error,
                }
            }
            Transport::Plain => error,
        }
    }

    /// The live session, opening one if there is none, the server expired ours, or the ttl
    /// changed (ZooKeeper cannot change a session's timeout: Patroni restarts it too).
    pub async fn session(&self, deadline: Instant) -> Result<Session, String> {
        let mut current = timeout_at(deadline, self.current.lock())
            .await
            .map_err(|_| "waiting for another operation to open the session".to_string())?;
        let ttl = self.ttl();
        if let Some(s) = current.as_ref() {
            let state = s.client.state();
            if !state.is_terminated() && s.ttl == ttl {
                return Ok(s.clone());
            }
            info!(member = %self.label, session = %zk::SessionId(s.id), ?state, "opening a new ZooKeeper session");
        }
        // The old client is detached: dropping it does not close its session, whose ephemeral
        // znodes are taken over (`take_over`) or expire with it.
        *current = None;
        *lock(&self.last_dial) = Instant::now();
        let connector = zk::Client::connector()
            .with_session_timeout(ttl)
            .with_connection_timeout(self.connection_timeout(ttl))
            .with_detached();
        let connect = self.connect_string().await?;
        let client = timeout_at(deadline, connector.connect(&connect))
            .await
            .map_err(|_| "no session established in time".to_string())?
            .map_err(|e| format!("connecting: {e}"))?;
        let generation = self.generation.borrow().wrapping_add(1);
        let session = Session {
            id: client.session_id().0,
            client,
            ttl,
            generation,
            acls: self.acls.clone(),
        };
        info!(member = %self.label, session = %zk::SessionId(session.id), timeout = ?session.client.session_timeout(), "ZooKeeper session opened");
        *current = Some(session.clone());
        self.generation.send_replace(generation);
        Ok(session)
    }

    fn bump_generation(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Changes when the session is replaced or dropped.
    pub fn generations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The session, connected: while the client is disconnected (its library reconnects
    /// with a backoff doubling from 0.1 s, which after a few seconds of outage would come back
    /// seconds after ZooKeeper did), waits, dialling the same session again once per
    /// [`REDIAL_EVERY`] with a fresh client. `Err` when `limit` passes first.
    async fn connected(&self, limit: Instant) -> Result<Session, String> {
        loop {
            let session = self.session(limit).await?;
            if session.client.state() != zk::SessionState::Disconnected {
                *lock(&self.disconnected_since) = None;
                return Ok(session);
            }
            if let Some(session) = self.reattach(&session, limit).await {
                return Ok(session);
            }
            if Instant::now() + STATE_POLL >= limit {
                return Err(format!("{}: disconnected", self.hosts));
            }
            sleep(STATE_POLL).await;
        }
    }

    /// A new client on the same session (ZooKeeper moves a session to whichever connection
    /// presents its id and password), replacing the disconnected one if it connects at once.
    /// The old client, no longer referenced, ends when it next reaches the server. `None`:
    /// not due yet, or ZooKeeper still unreachable.
    async fn reattach(&self, stale: &Session, limit: Instant) -> Option<Session> {
        {
            // A short blip is the library's to handle (it retries at once): only a client
            // disconnected for a while is dialled again, at most once per REDIAL_EVERY.
            let since = *lock(&self.disconnected_since).get_or_insert_with(Instant::now);
            let mut last = lock(&self.last_dial);
            if since.elapsed() < REDIAL_EVERY || last.elapsed() < REDIAL_EVERY {
                return None;
            }
            *last = Instant::now();
        }
        let mut current = timeout_at(limit, self.current.lock()).await.ok()?;
        if current.as_ref().map(|s| s.generation) != Some(stale.generation) {
            // Replaced meanwhile: use the new one.
            return current.clone();
        }
        let connector = zk::Client::connector()
            .with_session(stale.client.session().clone())
            .with_session_timeout(stale.ttl)
            .with_connection_timeout(self.connection_timeout(stale.ttl))
            .with_fail_eagerly()
            .with_detached();
        let dial_limit = limit.min(Instant::now() + REDIAL_EVERY);
        let connect = self.connect_string().await.ok()?;
        let client = match timeout_at(dial_limit, connector.connect(&connect)).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                debug!(member = %self.label, %error, "dialling the session again failed");
                return None;
            }
            Err(_) => return None,
        };
        if client.session_id().0 != stale.id {
            return None;
        }
        let generation = self.generation.borrow().wrapping_add(1);
        let session = Session {
            client,
            id: stale.id,
            ttl: stale.ttl,
            generation,
            acls: self.acls.clone(),
        };
        info!(member = %self.label, session = %zk::SessionId(stale.id), "ZooKeeper session reconnected by a new client");
        *current = Some(session.clone());
        self.generation.send_replace(generation);
        Some(session)
    }

    /// How long a silent connection is trusted: short enough to move to another server well
    /// within `retry_timeout`, at most the library's default (2/5 of the session timeout).
    fn connection_timeout(&self, ttl: Duration) -> Duration {
        (self.retry_timeout / 3)
            .max(MIN_REQUEST_TIMEOUT)
            .min(ttl * 2 / 5)
    }

    /// Forgets the session (the next operation opens a new one), returning it.
    pub async fn drop_session(&self) -> Option<Session> {
        let dropped = self.current.lock().await.take();
        self.bump_generation();
        dropped
    }

    /// Runs `op` until it succeeds, fails permanently, or `retry_timeout` has passed. `op`
    /// maps the answers it expects (`NoNode`, `NodeExists`, `BadVersion`...) into its result;
    /// what it returns as an error is classified here.
    pub async fn retry<T, F, Fut>(&self, doing: &'static str, mut op: F) -> Result<T, DcsError>
    where
        F: FnMut(Session) -> Fut,
        Fut: Future<Output = Result<T, zk::Error>>,
    {
        let started = Instant::now();
        let deadline = started + self.retry_timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        let mut last: Option<String> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining < MIN_RETRY_WINDOW {
                return Err(match last {
                    Some(last) => DcsError::ZookeeperUnavailable {
                        hosts: self.hosts.clone(),
                        doing,
                        cause: format!(
                            "no success after {attempts} attempt(s) in {:.1}s (retry_timeout {:.1}s); last error: {}",
                            started.elapsed().as_secs_f64(),
                            self.retry_timeout.as_secs_f64(),
                            self.explain(last),
                        ),
                    },
                    None => DcsError::Timeout {
                        doing,
                        seconds: self.retry_timeout.as_secs_f64(),
                    },
                });
            }
            attempts += 1;
            let limit = Instant::now() + remaining.min(self.request_timeout());
            match self.attempt(limit, &mut op).await {
                Ok(v) => return Ok(v),
                Err(Attempt::Permanent(message)) => {
                    return Err(DcsError::Rejected { doing, message })
                }
                Err(Attempt::Transient(error)) => {
                    debug!(member = %self.label, doing, attempts, %error, "ZooKeeper request failed");
                    last = Some(error);
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            sleep(backoff.min(remaining)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn attempt<T, F, Fut>(&self, limit: Instant, op: &mut F) -> Result<T, Attempt>
    where
        F: FnMut(Session) -> Fut,
        Fut: Future<Output = Result<T, zk::Error>>,
    {
        let session = self.connected(limit).await.map_err(Attempt::Transient)?;
        let id = session.id;
        match timeout_at(limit, op(session)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.classify(e, id).await),
            Err(_) => Err(Attempt::Transient(format!(
                "{}: no answer in time",
                self.hosts
            ))),
        }
    }

    async fn classify(&self, error: zk::Error, session: i64) -> Attempt {
        use zk::Error as E;
        match error {
            E::SessionExpired | E::SessionMoved | E::ClientClosed => {
                // Our ephemeral znodes are gone (or going): a new session is opened by the
                // next try, and the HA loop learns from update_leader that the leader key is
                // no longer ours.
                let mut current = self.current.lock().await;
                if current.as_ref().is_some_and(|s| s.id == session) {
                    warn!(member = %self.label, session = %zk::SessionId(session), %error, "ZooKeeper session lost");
                    *current = None;
                }
                Attempt::Transient(error.to_string())
            }
            E::NoAuth | E::AuthFailed | E::InvalidAcl => Attempt::Permanent(format!(
                "{error}: the znodes' ACL refuses this client (check zookeeper.set_acls on the other members)"
            )),
            // Answers a retry would only repeat (the expected ones, like NoNode for a read, are
            // handled by each operation).
            E::NoNode
            | E::NodeExists
            | E::BadVersion
            | E::NotEmpty
            | E::NoChildrenForEphemerals
            | E::BadArguments(_)
            | E::Unimplemented
            | E::QuotaExceeded
            | E::ReconfigDisabled
            | E::NoWatcher => Attempt::Permanent(error.to_string()),
            // Connection loss, timeouts, I/O errors (reset, refused), throttling, a read-only
            // server, and whatever else the transport reports.
            other => Attempt::Transient(other.to_string()),
        }
    }
}
