//! The lazily (re)built connection shared by the operations and the watch task: one endpoint at
//! a time, the next one after a failure. A balanced channel would keep routing requests to a
//! dead endpoint; dropping the channel and building a new one is how we reconnect.

use super::client::Client;
use super::retry::{classify, describe, Attempt};
use super::settings::{Credentials, Target};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::timeout;
use tonic::metadata::AsciiMetadataValue;
use tonic::Code;
use tracing::{debug, info};

pub(super) struct Connection {
    targets: Vec<Target>,
    /// The endpoints as shown in error messages.
    pub shown: String,
    credentials: Option<Credentials>,
    /// `None` until first use or after a failure.
    current: Mutex<Option<Current>>,
    /// Index of the endpoint the next connection goes to.
    next: AtomicUsize,
    generations: AtomicU64,
}

/// The connection in use: which endpoint, and a client on it.
#[derive(Clone)]
pub(super) struct Current {
    generation: u64,
    endpoint: usize,
    pub client: Client,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Connection {
    pub fn new(targets: Vec<Target>, credentials: Option<Credentials>) -> Connection {
        Connection {
            shown: targets
                .iter()
                .map(|t| t.url.as_str())
                .collect::<Vec<_>>()
                .join(","),
            targets,
            credentials,
            current: Mutex::new(None),
            next: AtomicUsize::new(0),
            generations: AtomicU64::new(0),
        }
    }

    /// The current client, connecting to the next endpoint (and authenticating, within `limit`)
    /// if there is none. Must run inside a tokio runtime.
    pub async fn client(&self, limit: Duration) -> Result<Current, Attempt> {
        if let Some(current) = lock(&self.current).clone() {
            return Ok(current);
        }
        let endpoint = self.next.load(Ordering::Relaxed) % self.targets.len();
        // No I/O yet: the channel connects on the first request, bounded by the caller's
        // per-request deadline (and the endpoint's connect timeout).
        let mut client = Client::new(self.targets[endpoint].endpoint.connect_lazy());
        if let Some(token) = self.authenticate(&client, endpoint, limit).await? {
            client = client.with_token(token);
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let mut current = lock(&self.current);
        // A concurrent caller may have connected meanwhile; keep one client.
        let entry = current.get_or_insert(Current {
            generation,
            endpoint,
            client,
        });
        Ok(entry.clone())
    }

    /// `Auth.Authenticate` with the configured credentials (none: no token). An etcd without
    /// authentication enabled is used without a token, as Patroni does.
    async fn authenticate(
        &self,
        client: &Client,
        endpoint: usize,
        limit: Duration,
    ) -> Result<Option<AsciiMetadataValue>, Attempt> {
        let Some(credentials) = &self.credentials else {
            return Ok(None);
        };
        let url = &self.targets[endpoint].url;
        let answer = timeout(
            limit,
            client.authenticate(&credentials.user, &credentials.password),
        )
        .await;
        let token = match answer {
            Ok(Ok(token)) => token,
            Ok(Err(status))
                if status.code() == Code::FailedPrecondition
                    && status.message().contains("authentication is not enabled") =>
            {
                info!(endpoint = %url, "etcd authentication is not enabled; using no token");
                return Ok(None);
            }
            Ok(Err(status)) => {
                let attempt = match classify(&status, url) {
                    // A refused password is no token problem: say which setting to check.
                    Attempt::BadToken(_) | Attempt::LeaseGone => Attempt::Permanent(format!(
                        "{url}: {}; check the etcd3 username and password",
                        describe(&status)
                    )),
                    other => other,
                };
                if matches!(attempt, Attempt::Transient(_)) {
                    self.advance(endpoint);
                }
                return Err(attempt);
            }
            Err(_) => {
                self.advance(endpoint);
                return Err(Attempt::Transient(format!(
                    "{url}: no answer within {:.1}s while authenticating",
                    limit.as_secs_f64()
                )));
            }
        };
        debug!(endpoint = %url, user = %credentials.user, "authenticated to etcd");
        AsciiMetadataValue::try_from(token.as_str())
            .map(Some)
            .map_err(|e| Attempt::Permanent(format!("{url}: etcd sent an unusable token: {e}")))
    }

    /// After etcd refused the token `used` was sent with: authenticates again on the same
    /// channel, unless a concurrent caller already did or the connection was replaced.
    pub async fn reauthenticate(&self, used: &Current, limit: Duration) -> Result<(), Attempt> {
        let stale = |current: &Option<Current>| {
            current.as_ref().is_some_and(|c| {
                c.generation == used.generation && c.client.token() == used.client.token()
            })
        };
        if !stale(&lock(&self.current)) {
            return Ok(());
        }
        let token = self
            .authenticate(&used.client, used.endpoint, limit)
            .await?;
        let mut current = lock(&self.current);
        if stale(&current) {
            if let (Some(c), Some(token)) = (current.as_mut(), token) {
                info!(endpoint = %self.url(used), "etcd refused our token; authenticated again");
                c.client = c.client.with_token(token);
            }
        }
        Ok(())
    }

    /// Forgets `failed` so that the next request connects to the next endpoint.
    pub fn invalidate(&self, failed: &Current) {
        let mut current = lock(&self.current);
        if current
            .as_ref()
            .is_some_and(|c| c.generation == failed.generation)
        {
            *current = None;
            self.advance(failed.endpoint);
        }
    }

    fn advance(&self, from: usize) {
        // Only the first of several concurrent failures moves on, so none is skipped.
        let to = (from + 1) % self.targets.len();
        let _ = self
            .next
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub fn url(&self, current: &Current) -> &str {
        &self.targets[current.endpoint].url
    }
}
