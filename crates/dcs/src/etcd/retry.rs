//! The retry budget of one operation: per-request deadlines, backoff, and the classification
//! of etcd's answers into "try again", "our lease is gone" and "give up".

use super::client::Client;
use super::connection::Current;
use super::EtcdDcs;
use crate::DcsError;
use std::fmt;
use std::future::Future;
use std::time::Duration;
use tokio::time::{sleep, timeout, Instant};
use tonic::{Code, Status};
use tracing::debug;

/// First pause between two tries of one operation; doubled after each failure.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between two tries of one operation.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Shortest deadline of a single request: a busy etcd may need a moment even when healthy.
pub(super) const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Below this much remaining budget another try is pointless.
const MIN_RETRY_WINDOW: Duration = Duration::from_millis(100);

/// How one failed request should be handled.
pub(super) enum Attempt {
    /// Worth another try (transport trouble, leader election, timeout).
    Transient(String),
    /// The lease we used no longer exists on the server.
    LeaseGone,
    /// etcd refused our authentication token (expired, or the auth store changed): worth
    /// another try after authenticating again.
    BadToken(String),
    /// Retrying will not help (permissions, invalid request).
    Permanent(String),
}

/// Why a retried operation failed.
pub(super) enum Failed {
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

/// Classifies etcd's answer `status` from `endpoint`; messages name the endpoint.
pub(super) fn classify(status: &Status, endpoint: &str) -> Attempt {
    let text = || format!("{endpoint}: {}", describe(status));
    let message = status.message();
    match status.code() {
        Code::NotFound if message.contains("lease not found") => Attempt::LeaseGone,
        // etcd's ErrGRPCInvalidAuthToken, and ErrGRPCAuthOldRevision (the token predates a
        // change of users or roles): a new token fixes both.
        Code::Unauthenticated if message.contains("invalid auth token") => {
            Attempt::BadToken(text())
        }
        Code::InvalidArgument if message.contains("revision of auth store is old") => {
            Attempt::BadToken(text())
        }
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
        // etcd's ErrGRPCUserEmpty / ErrGRPCAuthFailed.
        Code::InvalidArgument
            if message.contains("user name is empty") || message.contains("authentication") =>
        {
            Attempt::Permanent(format!("{}; check the etcd3 username and password", text()))
        }
        _ => Attempt::Permanent(text()),
    }
}

/// The status with its whole source chain: tonic hides the useful part ("Connection
/// refused") in the sources of a transport error.
pub(super) fn describe(status: &Status) -> String {
    use std::error::Error as _;
    let mut text = format!("{:?}: {}", status.code(), status.message());
    append_sources(&mut text, status.source());
    text
}

/// An error and its sources, each part once.
pub(super) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    append_sources(&mut text, error.source());
    text
}

fn append_sources(text: &mut String, mut next: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(err) = next {
        let part = err.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = err.source();
    }
}

impl EtcdDcs {
    /// One request with its own deadline of at most `limit`, connecting (and authenticating)
    /// first if needed.
    async fn attempt<T, F, Fut>(&self, limit: Duration, op: &mut F) -> Result<T, Attempt>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let started = Instant::now();
        let current = self.conn.client(limit).await?;
        let left = limit.saturating_sub(started.elapsed());
        match timeout(left, op(current.client.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(status)) => Err(self.failed(&current, &status, started, limit).await),
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

    /// What to do after etcd answered `status` to a request on `current`.
    async fn failed(
        &self,
        current: &Current,
        status: &Status,
        started: Instant,
        limit: Duration,
    ) -> Attempt {
        match classify(status, self.conn.url(current)) {
            Attempt::Transient(why) => {
                self.conn.invalidate(current);
                Attempt::Transient(why)
            }
            Attempt::BadToken(why) => {
                let left = limit.saturating_sub(started.elapsed());
                match self.conn.reauthenticate(current, left).await {
                    Ok(()) => Attempt::Transient(format!("{why} (authenticated again)")),
                    Err(e) => e,
                }
            }
            other => other,
        }
    }

    /// Runs `op` until it succeeds, fails permanently, or `deadline` passes.
    pub(super) async fn retry<T, F, Fut>(
        &self,
        doing: &'static str,
        deadline: Instant,
        mut op: F,
    ) -> Result<T, Failed>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
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
                        cause: Box::new(GaveUp {
                            attempts,
                            elapsed: started.elapsed(),
                            budget: self.retry_timeout,
                            last,
                        }),
                    },
                    // Earlier steps of the same operation used up the budget.
                    None => self.timed_out(doing),
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
                Err(Attempt::Transient(error) | Attempt::BadToken(error)) => {
                    debug!(member = self.label(), doing, attempts, %error, "etcd request failed");
                    last = Some(error);
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            sleep(backoff.min(remaining)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    pub(super) fn timed_out(&self, doing: &'static str) -> DcsError {
        DcsError::Timeout {
            doing,
            seconds: self.retry_timeout.as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: Status) -> &'static str {
        match classify(&status, "http://e:1") {
            Attempt::Transient(_) => "transient",
            Attempt::LeaseGone => "lease gone",
            Attempt::BadToken(_) => "bad token",
            Attempt::Permanent(_) => "permanent",
        }
    }

    #[test]
    fn etcd_errors_are_classified() {
        // The messages etcd sends (its rpctypes errors).
        let cases = [
            (Status::unavailable("etcdserver: no leader"), "transient"),
            (
                Status::unavailable("etcdserver: request timed out"),
                "transient",
            ),
            (
                Status::deadline_exceeded("context deadline exceeded"),
                "transient",
            ),
            (
                Status::not_found("etcdserver: requested lease not found"),
                "lease gone",
            ),
            (
                Status::unauthenticated("etcdserver: invalid auth token"),
                "bad token",
            ),
            (
                Status::invalid_argument("etcdserver: revision of auth store is old"),
                "bad token",
            ),
            (
                Status::permission_denied("etcdserver: permission denied"),
                "permanent",
            ),
            (
                Status::invalid_argument("etcdserver: user name is empty"),
                "permanent",
            ),
            (
                Status::invalid_argument(
                    "etcdserver: authentication failed, invalid user ID or password",
                ),
                "permanent",
            ),
            (
                Status::invalid_argument("etcdserver: key is not provided"),
                "permanent",
            ),
        ];
        for (status, expected) in cases {
            let shown = format!("{status:?}");
            assert_eq!(kind(status), expected, "{shown}");
        }
        let Attempt::Permanent(text) = classify(
            &Status::permission_denied("etcdserver: permission denied"),
            "http://e:1",
        ) else {
            panic!("permission denied is permanent");
        };
        assert!(text.starts_with("http://e:1: PermissionDenied"), "{text}");
        assert!(text.contains("etcd3 username and password"), "{text}");
    }

    #[test]
    fn descriptions_include_the_source_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let mut status = Status::unavailable("tcp connect error");
        status.set_source(std::sync::Arc::new(io));
        assert_eq!(
            describe(&status),
            "Unavailable: tcp connect error: Connection refused"
        );
    }
}
