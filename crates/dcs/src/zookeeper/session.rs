//! The ZooKeeper session: connected lazily, replaced when the server expired it or when the
//! ttl changed, and every request run under the caller's deadline with retries.

use crate::DcsError;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
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
}

/// The session of one [`super::ZooKeeperDcs`], shared with its watch task.
pub(super) struct Sessions {
    /// `host:port,host:port` (ZooKeeper's connect string).
    pub hosts: String,
    pub label: String,
    /// The session timeout of the next session (Patroni: `ttl`; see docs/compat.md).
    ttl: Mutex<Duration>,
    retry_timeout: Duration,
    current: tokio::sync::Mutex<Option<Session>>,
    /// Bumped whenever the session is replaced or dropped: the watch task then moves its
    /// watch to the new session (so that the old client, and its pings, can go).
    generation: tokio::sync::watch::Sender<u64>,
}

/// How a failed request is handled.
enum Attempt {
    Transient(String),
    Permanent(String),
}

impl Sessions {
    pub fn new(hosts: String, label: String, ttl: Duration, retry_timeout: Duration) -> Sessions {
        Sessions {
            hosts,
            label,
            ttl: Mutex::new(ttl),
            retry_timeout,
            current: tokio::sync::Mutex::new(None),
            generation: tokio::sync::watch::channel(0).0,
        }
    }

    pub fn ttl(&self) -> Duration {
        *self.ttl.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_ttl(&self, ttl: Duration) {
        let mut current = self.ttl.lock().unwrap_or_else(PoisonError::into_inner);
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
        let connector = zk::Client::connector()
            .with_session_timeout(ttl)
            .with_connection_timeout(self.connection_timeout(ttl))
            .with_detached();
        let client = timeout_at(deadline, connector.connect(&self.hosts))
            .await
            .map_err(|_| "no session established in time".to_string())?
            .map_err(|e| format!("connecting: {e}"))?;
        let generation = self.generation.borrow().wrapping_add(1);
        let session = Session {
            id: client.session_id().0,
            client,
            ttl,
            generation,
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
                            "no success after {attempts} attempt(s) in {:.1}s (retry_timeout {:.1}s); last error: {last}",
                            started.elapsed().as_secs_f64(),
                            self.retry_timeout.as_secs_f64()
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
        let session = self.session(limit).await.map_err(Attempt::Transient)?;
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
