//! etcd v3 backend over native gRPC (compat reference §1.4); the stored data is identical to
//! what Patroni's gRPC-JSON-gateway client writes.
//!
//! * **Connection**: to one endpoint at a time, built lazily by the first operation; after a
//!   transport error or a timed-out request the client is dropped and the next endpoint of the
//!   list is used. So [`EtcdDcs::new`] needs neither a reachable etcd nor a tokio runtime, a dead
//!   endpoint costs one failed try, and an etcd restart is survived without intervention.
//! * **Retries**: every operation gets a budget of `retry_timeout` from the moment it is called.
//!   Each request has its own deadline (`max(retry_timeout / 3, 1 s)`, capped by what is left of
//!   the budget); transport errors, `Unavailable`, `DeadlineExceeded` and similar are retried with
//!   exponential backoff (50 ms doubling up to 500 ms). When the budget is spent the caller gets
//!   [`DcsError::Unavailable`] naming the endpoints, the attempts and the last error. Steps of one
//!   operation (keepalive, then the write) share the budget, so no call outlives
//!   `retry_timeout` by more than a few milliseconds.
//! * **Lease**: one lease of `ttl` per client, granted lazily by the first operation that needs
//!   it, kept alive once per `touch_member`/`attempt_to_acquire_leader`/`update_leader`/
//!   `put_ephemeral` call, re-granted when etcd reports it gone.
//! * **Watch**: a background task started by the first [`Dcs::subscribe`] call (which must run
//!   inside a tokio runtime) keeps one prefix watch open, resumes it from the last seen revision
//!   after errors, and bumps the change counter once per event. The task is aborted when the
//!   [`EtcdDcs`] is dropped.
//!
//! Dropping an [`EtcdDcs`] does not revoke its lease (that needs a round trip): call
//! [`Dcs::release_lease`] at clean shutdown, otherwise the member and leader keys expire after
//! `ttl`.

use crate::{Cluster, Dcs, DcsError, KeyLayout, MemberData, Status, SyncState};
use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};
use tracing::{debug, info, warn};

/// First pause between two tries of one operation; doubled after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between two tries of one operation.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Shortest deadline of a single request: a busy etcd may need a moment even when healthy.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Below this much remaining budget another try is pointless.
const MIN_RETRY_WINDOW: Duration = Duration::from_millis(100);
/// Longest pause between two attempts to re-open the watch.
const WATCH_MAX_BACKOFF: Duration = Duration::from_secs(1);
/// HTTP/2 pings on open streams detect a silently dead etcd. etcd refuses pings more frequent
/// than every 5 s (`--grpc-keepalive-min-time`) and pings without streams, hence these values.
const H2_PING_INTERVAL: Duration = Duration::from_secs(10);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach etcd (the `etcd3:` configuration section, already resolved to URLs).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EtcdSettings {
    /// `http://host:port` or `https://host:port`; a bare `host:port` means http, or https when
    /// a CA or client certificate is configured.
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM CA bundle used to verify etcd (required for https: system roots are not loaded).
    pub cacert: Option<PathBuf>,
    /// PEM client certificate and key, for etcd's `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

// Written by hand so that the password never reaches a log line.
impl fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("cacert", &self.cacert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

/// A [`Dcs`] backed by etcd v3. See the module documentation for connection, retry, lease and
/// watch behaviour.
pub struct EtcdDcs {
    conn: Arc<Connection>,
    layout: KeyLayout,
    /// `None`: ctl mode (no member key, no leader race).
    name: Option<String>,
    retry_timeout: Duration,
    request_timeout: Duration,
    /// Serialises every lease-using operation so that concurrent callers never grant two leases.
    lease: tokio::sync::Mutex<LeaseState>,
    /// `(value, lease)` of our last successful member write, to skip identical rewrites.
    member_written: Mutex<Option<(String, i64)>>,
    changes: Arc<watch::Sender<u64>>,
    watcher: Mutex<Option<AbortOnDrop>>,
}

struct LeaseState {
    id: Option<i64>,
    ttl: Duration,
}

/// Aborts the watch task when the owning [`EtcdDcs`] goes away.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The lazily (re)built gRPC client shared by the operations and the watch task. It talks to
/// one endpoint at a time and moves on to the next after a failure: tonic's balanced channel
/// keeps routing requests to a dead endpoint, and dropping a client is how we reconnect.
struct Connection {
    endpoints: Vec<String>,
    /// The endpoints as shown in error messages.
    shown: String,
    options: ConnectOptions,
    /// `None` until first use or after a failure.
    current: Mutex<Option<Current>>,
    /// Index of the endpoint the next connection goes to.
    next: AtomicUsize,
    generations: AtomicU64,
}

#[derive(Clone)]
struct Current {
    generation: u64,
    endpoint: usize,
    client: Client,
}

impl Connection {
    /// The current client, connecting to the next endpoint (within `limit`) if there is none.
    async fn client(&self, limit: Duration) -> Result<Current, Attempt> {
        if let Some(current) = lock(&self.current).clone() {
            return Ok(current);
        }
        let endpoint = self.next.load(Ordering::Relaxed) % self.endpoints.len();
        let url = &self.endpoints[endpoint];
        // Without credentials this does no I/O (tonic connects on the first request); with
        // them it authenticates.
        let connected = timeout(limit, Client::connect([url], Some(self.options.clone()))).await;
        let client = match connected {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                self.advance(endpoint);
                return Err(classify(&e, url));
            }
            Err(_) => {
                self.advance(endpoint);
                return Err(Attempt::Transient(format!(
                    "{url}: no answer within {:.1}s while connecting",
                    limit.as_secs_f64()
                )));
            }
        };
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

    /// Forgets `failed` so that the next request connects to the next endpoint.
    fn invalidate(&self, failed: &Current) {
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
        let to = (from + 1) % self.endpoints.len();
        let _ = self
            .next
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn url(&self, current: &Current) -> &str {
        &self.endpoints[current.endpoint]
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How one failed request should be handled.
enum Attempt {
    /// Worth another try (transport trouble, leader election, timeout).
    Transient(String),
    /// The lease we used no longer exists on the server.
    LeaseGone,
    /// Retrying will not help (permissions, invalid request).
    Permanent(String),
}

/// Why a retried operation failed.
enum Failed {
    LeaseGone(&'static str),
    Dcs(DcsError),
}

impl From<Failed> for DcsError {
    fn from(f: Failed) -> DcsError {
        match f {
            Failed::LeaseGone(doing) => DcsError::Rejected {
                doing,
                message: "our etcd lease no longer exists".to_string(),
            },
            Failed::Dcs(e) => e,
        }
    }
}

impl From<DcsError> for Failed {
    fn from(e: DcsError) -> Failed {
        Failed::Dcs(e)
    }
}

/// The source of [`DcsError::Unavailable`] once the retry budget is spent.
#[derive(Debug)]
struct GaveUp {
    attempts: u32,
    elapsed: Duration,
    budget: Duration,
    last: String,
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no success after {} attempt(s) in {:.1}s (retry_timeout {:.1}s); last error: {}",
            self.attempts,
            self.elapsed.as_secs_f64(),
            self.budget.as_secs_f64(),
            self.last
        )
    }
}

impl std::error::Error for GaveUp {}

/// Classifies a failed request to `endpoint`; messages name the endpoint.
fn classify(e: &etcd_client::Error, endpoint: &str) -> Attempt {
    use etcd_client::Error as E;
    use tonic::Code;
    let text = || format!("{endpoint}: {}", describe(e));
    match e {
        E::GRpcStatus(s) => match s.code() {
            Code::NotFound if s.message().contains("lease not found") => Attempt::LeaseGone,
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Internal
            | Code::FailedPrecondition => Attempt::Transient(text()),
            Code::Unauthenticated | Code::PermissionDenied => {
                Attempt::Permanent(format!("{}; check the etcd3 username and password", text()))
            }
            _ => Attempt::Permanent(text()),
        },
        E::LeaseKeepAliveError(m) if m.contains("lease not found") => Attempt::LeaseGone,
        E::InvalidArgs(_)
        | E::InvalidUri(_)
        | E::InvalidMetadataValue(_)
        | E::Utf8Error(_)
        | E::EndpointsNotManaged => Attempt::Permanent(text()),
        _ => Attempt::Transient(text()),
    }
}

/// The error with its whole source chain: tonic hides the useful part ("Connection refused")
/// in sources, and etcd-client's error does not expose them.
fn describe(e: &etcd_client::Error) -> String {
    use std::error::Error as _;
    let (mut text, mut next) = match e {
        etcd_client::Error::GRpcStatus(s) => {
            (format!("{:?}: {}", s.code(), s.message()), s.source())
        }
        etcd_client::Error::TransportError(t) => (t.to_string(), t.source()),
        other => (other.to_string(), None),
    };
    while let Some(err) = next {
        let part = err.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = err.source();
    }
    text
}

fn ttl_seconds(ttl: Duration) -> i64 {
    // etcd leases have whole seconds; round up so keys never expire earlier than asked.
    (ttl.as_secs_f64().ceil() as i64).max(1)
}

fn config_error(message: String) -> DcsError {
    DcsError::Rejected {
        doing: "configuring the etcd client",
        message,
    }
}

fn read_pem(setting: &str, path: &Path) -> Result<Vec<u8>, DcsError> {
    std::fs::read(path).map_err(|e| {
        config_error(format!(
            "cannot read {setting} {}: {e}; check the etcd3.{setting} setting",
            path.display()
        ))
    })
}

fn connect_options(
    settings: &EtcdSettings,
    request_timeout: Duration,
) -> Result<ConnectOptions, DcsError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(request_timeout)
        .with_keep_alive(H2_PING_INTERVAL, H2_PING_TIMEOUT)
        .with_keep_alive_while_idle(false)
        .with_tcp_keepalive(H2_PING_INTERVAL)
        // A member cut off from the quorum must fail our requests (and cancel our watch) instead
        // of serving stale data, so that we retry on another endpoint.
        .with_require_leader(true)
        .with_auto_token_refresh(true);
    if let Some(user) = &settings.username {
        options = options.with_user(user, settings.password.clone().unwrap_or_default());
    }
    let any_https = settings.endpoints.iter().any(|e| e.starts_with("https://"));
    let tls_files = settings.cacert.is_some() || settings.cert.is_some() || settings.key.is_some();
    if any_https || tls_files {
        if let Some(plain) = settings.endpoints.iter().find(|e| e.starts_with("http://")) {
            return Err(config_error(format!(
                "endpoint {plain} uses http:// while TLS is configured; use https:// for every \
                 etcd3 endpoint or remove cacert/cert/key"
            )));
        }
        let mut tls = TlsOptions::new();
        if let Some(ca) = &settings.cacert {
            tls = tls.ca_certificate(Certificate::from_pem(read_pem("cacert", ca)?));
        }
        match (&settings.cert, &settings.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read_pem("cert", cert)?,
                    read_pem("key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(config_error(
                    "etcd3.cert and etcd3.key must be set together".to_string(),
                ))
            }
        }
        options = options.with_tls(tls);
    }
    Ok(options)
}

impl EtcdDcs {
    /// Validates the settings and reads the TLS files; does not contact etcd.
    /// `member_name: None` is ctl mode: operations that need a member name are rejected.
    pub fn new(
        settings: EtcdSettings,
        layout: KeyLayout,
        member_name: Option<String>,
        ttl: Duration,
        retry_timeout: Duration,
    ) -> Result<EtcdDcs, DcsError> {
        if settings.endpoints.is_empty() {
            return Err(config_error(
                "no etcd endpoint configured; set etcd3.hosts (or host/url)".to_string(),
            ));
        }
        if let Some(bad) = settings
            .endpoints
            .iter()
            .find(|e| e.contains("://") && !e.starts_with("http://") && !e.starts_with("https://"))
        {
            return Err(config_error(format!(
                "endpoint {bad} has an unsupported scheme; use http://host:port or https://host:port"
            )));
        }
        let request_timeout = (retry_timeout / 3).max(MIN_REQUEST_TIMEOUT);
        let options = connect_options(&settings, request_timeout)?;
        let (changes, _) = watch::channel(0);
        Ok(EtcdDcs {
            conn: Arc::new(Connection {
                shown: settings.endpoints.join(","),
                endpoints: settings.endpoints,
                options,
                current: Mutex::new(None),
                next: AtomicUsize::new(0),
                generations: AtomicU64::new(0),
            }),
            layout,
            name: member_name,
            retry_timeout,
            request_timeout,
            lease: tokio::sync::Mutex::new(LeaseState { id: None, ttl }),
            member_written: Mutex::new(None),
            changes: Arc::new(changes),
            watcher: Mutex::new(None),
        })
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.retry_timeout
    }

    fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("ctl")
    }

    fn name(&self, doing: &'static str) -> Result<&str, DcsError> {
        self.name.as_deref().ok_or_else(|| DcsError::Rejected {
            doing,
            message: "this client has no member name (ctl mode)".to_string(),
        })
    }

    /// One request with its own deadline of at most `limit`.
    async fn attempt<T, F, Fut>(&self, limit: Duration, op: &mut F) -> Result<T, Attempt>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let current = self.conn.client(limit).await?;
        let left = limit.saturating_sub(started.elapsed());
        match timeout(left, op(current.client.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let outcome = classify(&e, self.conn.url(&current));
                if matches!(outcome, Attempt::Transient(_)) {
                    self.conn.invalidate(&current);
                }
                Err(outcome)
            }
            Err(_) => {
                // A hung connection (e.g. a stopped etcd process) would hang the next request
                // too; move on with a fresh one.
                self.conn.invalidate(&current);
                Err(Attempt::Transient(format!(
                    "{}: no answer within {:.1}s",
                    self.conn.url(&current),
                    limit.as_secs_f64()
                )))
            }
        }
    }

    /// Runs `op` until it succeeds, fails permanently, or `deadline` passes.
    async fn retry<T, F, Fut>(
        &self,
        doing: &'static str,
        deadline: Instant,
        mut op: F,
    ) -> Result<T, Failed>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0;
        let mut last = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // A request with almost no time left would only time out (and drop a healthy
            // connection).
            if remaining < MIN_RETRY_WINDOW {
                return Err(Failed::Dcs(match last {
                    Some(last) => DcsError::Unavailable {
                        endpoints: self.conn.shown.clone(),
                        doing,
                        source: Box::new(GaveUp {
                            attempts,
                            elapsed: started.elapsed(),
                            budget: self.retry_timeout,
                            last,
                        }),
                    },
                    // Earlier steps of the same operation used up the budget.
                    None => DcsError::Timeout {
                        doing,
                        seconds: self.retry_timeout.as_secs_f64(),
                    },
                }));
            }
            attempts += 1;
            match self
                .attempt(remaining.min(self.request_timeout), &mut op)
                .await
            {
                Ok(v) => return Ok(v),
                Err(Attempt::LeaseGone) => return Err(Failed::LeaseGone(doing)),
                Err(Attempt::Permanent(message)) => {
                    return Err(Failed::Dcs(DcsError::Rejected { doing, message }))
                }
                Err(Attempt::Transient(error)) => {
                    debug!(member = self.label(), doing, attempts, %error, "etcd request failed");
                    last = Some(error);
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            sleep(backoff.min(remaining)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Keeps our lease alive (one keepalive), granting a new one if there is none or etcd lost it.
    async fn ensure_lease(&self, st: &mut LeaseState, deadline: Instant) -> Result<i64, DcsError> {
        if let Some(id) = st.id {
            let kept = self
                .retry("keeping the lease alive", deadline, |mut c| async move {
                    c.lease_keep_alive(id).await.map(|_| ())
                })
                .await;
            match kept {
                Ok(()) => return Ok(id),
                Err(Failed::LeaseGone(_)) => {
                    warn!(
                        member = self.label(),
                        lease = id,
                        "our etcd lease expired; granting a new one"
                    );
                    st.id = None;
                    lock(&self.member_written).take();
                }
                Err(Failed::Dcs(e)) => return Err(e),
            }
        }
        let ttl = ttl_seconds(st.ttl);
        let id = self
            .retry("granting a lease", deadline, |mut c| async move {
                c.lease_grant(ttl, None).await.map(|r| r.id())
            })
            .await?;
        info!(member = self.label(), lease = id, ttl, "granted etcd lease");
        st.id = Some(id);
        Ok(id)
    }

    /// Runs `op` with our lease; if etcd says the lease is gone, grants a new one and tries once
    /// more. Returns the result and the lease it was obtained with.
    async fn on_lease<T, F, Fut>(
        &self,
        st: &mut LeaseState,
        lease: i64,
        doing: &'static str,
        deadline: Instant,
        mut op: F,
    ) -> Result<(T, i64), DcsError>
    where
        F: FnMut(Client, i64) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        match self.retry(doing, deadline, |c| op(c, lease)).await {
            Ok(v) => Ok((v, lease)),
            Err(Failed::LeaseGone(_)) => {
                warn!(
                    member = self.label(),
                    lease, doing, "our etcd lease disappeared; granting a new one and retrying"
                );
                st.id = None;
                lock(&self.member_written).take();
                let lease = self.ensure_lease(st, deadline).await?;
                let v = self.retry(doing, deadline, |c| op(c, lease)).await?;
                Ok((v, lease))
            }
            Err(Failed::Dcs(e)) => Err(e),
        }
    }

    async fn put(&self, doing: &'static str, key: String, value: String) -> Result<(), DcsError> {
        self.retry(doing, self.deadline(), |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await.map(|_| ()) }
        })
        .await
        .map_err(DcsError::from)
    }

    /// `Txn(compare mod_revision == index) Put` with an index, a plain put without.
    async fn cas_put(
        &self,
        doing: &'static str,
        key: String,
        value: String,
        index: Option<i64>,
    ) -> Result<bool, DcsError> {
        let Some(index) = index else {
            return self.put(doing, key, value).await.map(|()| true);
        };
        self.retry(doing, self.deadline(), |mut c| {
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, index)])
                .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
            async move { c.txn(txn).await.map(|r| r.succeeded()) }
        })
        .await
        .map_err(DcsError::from)
    }
}

/// The `(value, lease)` of the first key returned by a `Get` inside a transaction.
fn txn_get_holder(responses: &[TxnOpResponse]) -> Option<(String, i64)> {
    responses.iter().find_map(|r| match r {
        TxnOpResponse::Get(get) => get
            .kvs()
            .first()
            .map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease())),
        _ => None,
    })
}

#[async_trait]
impl Dcs for EtcdDcs {
    async fn get_cluster(&self) -> Result<Cluster, DcsError> {
        let prefix = self.layout.prefix();
        let resp = self
            .retry("reading the cluster", self.deadline(), |mut c| {
                let prefix = prefix.clone();
                async move {
                    c.get(
                        prefix,
                        Some(GetOptions::new().with_prefix().with_serializable()),
                    )
                    .await
                }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        let rows: Vec<(String, String, i64, i64)> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                let relative = self.layout.relative(&key)?.to_string();
                let value = String::from_utf8_lossy(kv.value()).into_owned();
                Some((relative, value, kv.mod_revision(), kv.lease()))
            })
            .collect();
        if let Some(name) = &self.name {
            // Our member key changed behind our back (e.g. `remove`): rewrite it next time.
            let relative = format!("members/{name}");
            let stored = rows
                .iter()
                .find(|r| r.0 == relative)
                .map(|r| (r.1.as_str(), r.3));
            let mut written = lock(&self.member_written);
            if written.as_ref().map(|(v, l)| (v.as_str(), *l)) != stored {
                *written = None;
            }
        }
        Ok(Cluster::from_rows(
            rows.iter()
                .map(|(k, v, index, lease)| (k.as_str(), v.as_str(), *index, *lease)),
            revision,
        ))
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        const DOING: &str = "writing the member key";
        let name = self.name(DOING)?;
        let key = self.layout.member(name);
        let value = data.to_json();
        let deadline = self.deadline();
        let mut st = self.lease.lock().await;
        let lease = self.ensure_lease(&mut st, deadline).await?;
        if lock(&self.member_written).as_ref() == Some(&(value.clone(), lease)) {
            return Ok(());
        }
        let ((), lease) = self
            .on_lease(&mut st, lease, DOING, deadline, |mut c, lease| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                        .await
                        .map(|_| ())
                }
            })
            .await?;
        *lock(&self.member_written) = Some((value, lease));
        Ok(())
    }

    async fn attempt_to_acquire_leader(&self) -> Result<bool, DcsError> {
        const DOING: &str = "acquiring the leader key";
        let name = self.name(DOING)?;
        let key = self.layout.leader();
        let deadline = self.deadline();
        let mut st = self.lease.lock().await;
        let lease = self.ensure_lease(&mut st, deadline).await?;
        let ((won, holder), lease) = self
            .on_lease(&mut st, lease, DOING, deadline, |mut c, lease| {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.clone(),
                        name,
                        Some(PutOptions::new().with_lease(lease)),
                    )])
                    .or_else([TxnOp::get(key.clone(), None)]);
                async move {
                    let resp = c.txn(txn).await?;
                    Ok((resp.succeeded(), txn_get_holder(&resp.op_responses())))
                }
            })
            .await?;
        if won {
            info!(member = name, lease, "acquired the leader key");
            return Ok(true);
        }
        // A try that timed out may have landed before we retried: the key is ours if it holds
        // our name on our lease (nobody else can attach keys to our lease).
        if holder.as_ref() == Some(&(name.to_string(), lease)) {
            info!(member = name, lease, "the leader key is already ours");
            return Ok(true);
        }
        info!(member = name, holder = ?holder.map(|h| h.0), "could not take the leader key: held by another member");
        Ok(false)
    }

    async fn update_leader(&self) -> Result<bool, DcsError> {
        const DOING: &str = "refreshing the leader key";
        let name = self.name(DOING)?;
        let key = self.layout.leader();
        let deadline = self.deadline();
        let mut st = self.lease.lock().await;
        let lease = self.ensure_lease(&mut st, deadline).await?;
        // Re-putting also re-attaches the key after our lease was re-granted (e.g. set_ttl).
        let (ours, lease) = self
            .on_lease(&mut st, lease, DOING, deadline, |mut c, lease| {
                let txn = Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, name)])
                    .and_then([TxnOp::put(
                        key.clone(),
                        name,
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                async move { c.txn(txn).await.map(|r| r.succeeded()) }
            })
            .await?;
        if ours {
            debug!(member = name, lease, "leader key refreshed");
        } else {
            warn!(
                member = name,
                "the leader key is gone or held by another member"
            );
        }
        Ok(ours)
    }

    async fn delete_leader(&self) -> Result<(), DcsError> {
        const DOING: &str = "deleting the leader key";
        let name = self.name(DOING)?;
        let key = self.layout.leader();
        let deleted = self
            .retry(DOING, self.deadline(), |mut c| {
                let txn = Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, name)])
                    .and_then([TxnOp::delete(key.clone(), None)]);
                async move { c.txn(txn).await.map(|r| r.succeeded()) }
            })
            .await?;
        if deleted {
            info!(member = name, "deleted the leader key");
        } else {
            debug!(member = name, "leader key not ours; nothing deleted");
        }
        Ok(())
    }

    async fn initialize(&self, create_new: bool, sysid: &str) -> Result<bool, DcsError> {
        const DOING: &str = "writing the initialize key";
        let key = self.layout.initialize();
        if !create_new {
            return self.put(DOING, key, sysid.to_string()).await.map(|()| true);
        }
        self.retry(DOING, self.deadline(), |mut c| {
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), sysid, None)]);
            async move { c.txn(txn).await.map(|r| r.succeeded()) }
        })
        .await
        .map_err(DcsError::from)
    }

    async fn cancel_initialization(&self) -> Result<(), DcsError> {
        let key = self.layout.initialize();
        self.retry("deleting the initialize key", self.deadline(), |mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await.map(|_| ()) }
        })
        .await
        .map_err(DcsError::from)
    }

    async fn set_config_value(&self, value: &str, index: Option<i64>) -> Result<bool, DcsError> {
        self.cas_put(
            "writing the config key",
            self.layout.config(),
            value.to_string(),
            index,
        )
        .await
    }

    async fn set_failover_value(&self, value: &str, index: Option<i64>) -> Result<bool, DcsError> {
        self.cas_put(
            "writing the failover key",
            self.layout.failover(),
            value.to_string(),
            index,
        )
        .await
    }

    async fn set_sync_state(
        &self,
        value: &SyncState,
        index: Option<i64>,
    ) -> Result<bool, DcsError> {
        self.cas_put(
            "writing the sync key",
            self.layout.sync(),
            value.to_json(),
            index,
        )
        .await
    }

    async fn delete_sync_state(&self, index: Option<i64>) -> Result<bool, DcsError> {
        let key = self.layout.sync();
        self.retry("deleting the sync key", self.deadline(), |mut c| {
            let key = key.clone();
            async move {
                match index {
                    Some(index) => {
                        let txn = Txn::new()
                            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, index)])
                            .and_then([TxnOp::delete(key, None)]);
                        c.txn(txn).await.map(|r| r.succeeded())
                    }
                    None => c.delete(key, None).await.map(|_| true),
                }
            }
        })
        .await
        .map_err(DcsError::from)
    }

    async fn write_status(&self, value: &Status) -> Result<(), DcsError> {
        let key = self.layout.status();
        let json = serde_json::to_string(value).map_err(|e| DcsError::Malformed {
            key: key.clone(),
            message: e.to_string(),
        })?;
        self.put("writing the status key", key, json).await
    }

    async fn set_history_value(&self, value: &str) -> Result<(), DcsError> {
        self.put(
            "writing the history key",
            self.layout.history(),
            value.to_string(),
        )
        .await
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        let prefix = self.layout.prefix();
        self.retry("deleting the cluster", self.deadline(), |mut c| {
            let prefix = prefix.clone();
            async move {
                c.delete(
                    prefix,
                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                )
                .await
                .map(|_| ())
            }
        })
        .await?;
        info!(member = self.label(), prefix = %prefix, "deleted every key of the cluster");
        Ok(())
    }

    async fn put_ephemeral(&self, relative_key: &str, value: &str) -> Result<(), DcsError> {
        const DOING: &str = "writing an ephemeral key";
        let key = self.layout.key(relative_key);
        let deadline = self.deadline();
        let mut st = self.lease.lock().await;
        let lease = self.ensure_lease(&mut st, deadline).await?;
        self.on_lease(&mut st, lease, DOING, deadline, |mut c, lease| {
            let key = key.clone();
            async move {
                c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
                    .map(|_| ())
            }
        })
        .await
        .map(|((), _)| ())
    }

    async fn set_ttl(&self, ttl: Duration) {
        let mut st = self.lease.lock().await;
        if st.ttl == ttl {
            return;
        }
        info!(member = self.label(), old = ?st.ttl, new = ?ttl, "ttl changed; the next write takes a new lease");
        st.ttl = ttl;
        // Not revoked: that would drop the leader key at once. The old lease just expires, and
        // the member and leader keys move to the new lease on their next write.
        st.id = None;
        lock(&self.member_written).take();
    }

    async fn release_lease(&self) -> Result<(), DcsError> {
        let mut st = self.lease.lock().await;
        let Some(id) = st.id.take() else {
            return Ok(());
        };
        lock(&self.member_written).take();
        let revoked = self
            .retry("revoking the lease", self.deadline(), |mut c| async move {
                c.lease_revoke(id).await.map(|_| ())
            })
            .await;
        match revoked {
            Ok(()) | Err(Failed::LeaseGone(_)) => {
                info!(
                    member = self.label(),
                    lease = id,
                    "released the etcd lease: our member and leader keys are gone"
                );
                Ok(())
            }
            Err(Failed::Dcs(e)) => {
                // Keep it so that a later call can try again.
                st.id = Some(id);
                Err(e)
            }
        }
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        let mut watcher = lock(&self.watcher);
        if watcher.is_none() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let task = runtime.spawn(watch_prefix(
                        self.conn.clone(),
                        self.layout.prefix(),
                        self.changes.clone(),
                        self.request_timeout,
                    ));
                    *watcher = Some(AbortOnDrop(task.abort_handle()));
                }
                Err(e) => warn!(
                    member = self.label(),
                    "cannot watch etcd outside a tokio runtime ({e}); changes will only be seen by polling"
                ),
            }
        }
        self.changes.subscribe()
    }
}

/// Keeps a watch on `prefix` open for ever, bumping `changes` once per event.
async fn watch_prefix(
    conn: Arc<Connection>,
    prefix: String,
    changes: Arc<watch::Sender<u64>>,
    request_timeout: Duration,
) {
    // 0: from now; otherwise the first revision we have not seen yet.
    let mut next_revision = 0;
    let mut backoff = FIRST_BACKOFF;
    let mut quiet = false;
    loop {
        let mut established = false;
        let why = follow(
            &conn,
            &prefix,
            &changes,
            request_timeout,
            &mut next_revision,
            &mut established,
        )
        .await;
        if established {
            backoff = FIRST_BACKOFF;
            quiet = false;
        }
        if quiet {
            debug!(prefix = %prefix, reason = %why, "etcd watch still down; retrying");
        } else {
            warn!(prefix = %prefix, endpoints = %conn.shown, reason = %why, "etcd watch interrupted; reconnecting");
            quiet = true;
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(WATCH_MAX_BACKOFF);
    }
}

/// One watch stream, until it fails; returns why.
async fn follow(
    conn: &Connection,
    prefix: &str,
    changes: &watch::Sender<u64>,
    request_timeout: Duration,
    next_revision: &mut i64,
    established: &mut bool,
) -> String {
    let current = match conn.client(request_timeout).await {
        Ok(c) => c,
        Err(Attempt::Transient(why) | Attempt::Permanent(why)) => return why,
        Err(Attempt::LeaseGone) => return "unexpected lease error while connecting".to_string(),
    };
    let url = conn.url(&current);
    let mut options = WatchOptions::new().with_prefix();
    if *next_revision > 0 {
        options = options.with_start_revision(*next_revision);
    }
    let opened = timeout(
        request_timeout,
        current.client.watch_client().watch(prefix, Some(options)),
    )
    .await;
    let mut stream = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            conn.invalidate(&current);
            return format!("{url}: {}", describe(&e));
        }
        Err(_) => {
            conn.invalidate(&current);
            return format!("{url}: no answer while opening the watch");
        }
    };
    loop {
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                conn.invalidate(&current);
                return format!("{url}: stream closed by etcd");
            }
            Err(e) => {
                conn.invalidate(&current);
                return format!("{url}: {}", describe(&e));
            }
        };
        if resp.created() {
            if !*established {
                debug!(prefix = %prefix, from = *next_revision, "etcd watch open");
            }
            *established = true;
            if *next_revision == 0 {
                if let Some(header) = resp.header() {
                    *next_revision = header.revision() + 1;
                }
            }
        }
        if resp.compact_revision() > 0 {
            // The history we would resume from is gone: restart from now and report a change,
            // since we may have missed some.
            *next_revision = 0;
            changes.send_modify(|c| *c = c.wrapping_add(1));
            return format!("revision compacted at {}", resp.compact_revision());
        }
        if resp.canceled() {
            // e.g. the member lost its quorum (we require a leader): try the next endpoint.
            conn.invalidate(&current);
            return format!("{url}: watch cancelled by etcd: {}", resp.cancel_reason());
        }
        let events = resp.events();
        if !events.is_empty() {
            for kv in events.iter().filter_map(|e| e.kv()) {
                *next_revision = (*next_revision).max(kv.mod_revision() + 1);
            }
            let n = events.len() as u64;
            changes.send_modify(|c| *c = c.wrapping_add(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(settings: EtcdSettings) -> Result<EtcdDcs, DcsError> {
        EtcdDcs::new(
            settings,
            KeyLayout::new("/service", "b"),
            Some("n1".into()),
            Duration::from_secs(30),
            Duration::from_secs(10),
        )
    }

    fn endpoints(urls: &[&str]) -> EtcdSettings {
        EtcdSettings {
            endpoints: urls.iter().map(|u| u.to_string()).collect(),
            ..EtcdSettings::default()
        }
    }

    #[test]
    fn construction_is_offline_and_validates_settings() {
        // No runtime and nothing listening: construction must still work.
        assert!(new(endpoints(&["http://127.0.0.1:1", "127.0.0.1:2"])).is_ok());

        let err = new(endpoints(&[])).err().unwrap().to_string();
        assert!(err.contains("etcd3.hosts"), "{err}");
        let err = new(endpoints(&["unix:///x"])).err().unwrap().to_string();
        assert!(err.contains("unsupported scheme"), "{err}");

        let mut tls = endpoints(&["http://127.0.0.1:2379"]);
        tls.cacert = Some("/nonexistent/ca.pem".into());
        let err = new(tls.clone()).err().unwrap().to_string();
        assert!(err.contains("use https://"), "{err}");
        tls.endpoints = vec!["https://127.0.0.1:2379".into()];
        let err = new(tls.clone()).err().unwrap().to_string();
        assert!(
            err.contains("/nonexistent/ca.pem") && err.contains("etcd3.cacert"),
            "{err}"
        );

        let mut half = endpoints(&["https://127.0.0.1:2379"]);
        half.cert = Some("/nonexistent/cert.pem".into());
        let err = new(half).err().unwrap().to_string();
        assert!(err.contains("cert and etcd3.key"), "{err}");
    }

    #[test]
    fn settings_debug_hides_the_password() {
        let mut s = endpoints(&["http://127.0.0.1:2379"]);
        s.username = Some("root".into());
        s.password = Some("hunter2".into());
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("root"),
            "{shown}"
        );
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(ttl_seconds(Duration::from_secs(30)), 30);
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
    }
}
