//! A session of an auto listener (`role: auto`, transaction pooling): before a server
//! connection is bound for a routing unit (a simple `Query`, or extended-protocol messages up
//! to `Sync`), the session's [`Router`] decides where it goes; the proxy answers a deferred
//! `BEGIN` itself, binds a replica (falling back to the primary when none is routable or none
//! has replayed the session's last commit within `read_your_writes.max_wait`) or the primary,
//! runs the deferred statements, and after a transaction that may have written on the
//! primary, reads its commit LSN before the connection goes back to its pool.

use super::{Fatal, Session};
use crate::pool::codec::{self, frame};
use crate::pool::route::Target;
use crate::pool::Lease;
use crate::split::reason::{Reason, Target as SplitTarget};
use crate::split::router::{AfterReady, Decision, Lsn, Ready, Route, Router, TxStatus};
use crate::split::wire::{self, Batch, ClientMessage, ReplicaCheck};
use crate::split::SplitCtx;
use bytes::{Buf, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::debug;

/// How often a replica's replay position is read while a read waits for it.
const REPLAY_POLL: Duration = Duration::from_millis(2);

/// The auto-routing state of one client session.
pub(super) struct Auto {
    router: Router,
    split: Arc<SplitCtx>,
    /// The server the bound connection belongs to.
    served_by: SplitTarget,
    /// An `ErrorResponse` came since the last `ReadyForQuery`.
    error: bool,
    /// Read the commit LSN before the connection goes back.
    capture_lsn: bool,
    /// The messages of the unit just routed are on their way: the router already saw them.
    /// `Q`: skip one `Query`; `S`: skip up to the `Sync` (or `Flush`).
    prerouted: Option<u8>,
    /// Extended-protocol messages of a transaction in progress, up to their `Sync`.
    batch: Batch,
}

/// What the session does with the buffered client messages.
pub(super) enum Step {
    /// An extended-protocol unit is not complete yet: read more.
    NeedMore,
    /// The proxy answered (deferred `BEGIN`, refusal): nothing bound.
    Answered,
    Bound(Box<Lease>),
}

impl Auto {
    pub(super) fn new(split: &Arc<SplitCtx>) -> Auto {
        Auto {
            router: split.session(),
            split: split.clone(),
            served_by: SplitTarget::Primary,
            error: false,
            capture_lsn: false,
            prerouted: None,
            batch: Batch::default(),
        }
    }

    /// A client message forwarded on a bound connection: the router follows the
    /// transaction (writes, settings, savepoints).
    pub(super) fn client_message(&mut self, tag: u8, body: &[u8]) {
        let Some(message) = ClientMessage::read(tag, body) else {
            return;
        };
        match (self.prerouted, message) {
            (Some(b'Q'), ClientMessage::Query(_)) => self.prerouted = None,
            (Some(b'S'), ClientMessage::Sync) => self.prerouted = None,
            (Some(b'S'), _) => {}
            (_, ClientMessage::Query(sql)) => {
                let _ = self.router.route_query(sql, Instant::now());
            }
            (_, ClientMessage::Sync) => {
                let batch = std::mem::take(&mut self.batch);
                let _ = batch.route(&mut self.router, Instant::now());
            }
            (_, m) => self.batch.add(m, &mut self.router),
        }
    }

    /// A server `ErrorResponse`.
    pub(super) fn server_error(&mut self) {
        self.error = true;
    }

    /// The routed unit did not run (its server connection could not be given the session's
    /// settings): the client got an error and `ReadyForQuery(I)`.
    pub(super) fn abandoned(&mut self) {
        self.prerouted = None;
        self.error = true;
        self.ready(b'I');
    }

    /// A server `ReadyForQuery` with `status`.
    pub(super) fn ready(&mut self, status: u8) {
        let Some(status) = TxStatus::from_byte(status) else {
            return;
        };
        let after = self.router.on_ready_for_query(Ready {
            status,
            error: self.error,
            served_by: self.served_by,
        });
        self.error = false;
        if after == AfterReady::CaptureLsn {
            self.capture_lsn = true;
        }
    }
}

impl Session {
    /// Routes the unit at the front of the client buffer (see the module doc).
    pub(super) async fn auto_step(&mut self) -> Result<Step, Fatal> {
        let Some(auto) = self.auto.as_mut() else {
            return Ok(Step::NeedMore);
        };
        let now = Instant::now();
        let Some((tag, len)) = frame(&self.cbuf).map_err(super::protocol)? else {
            return Ok(Step::NeedMore);
        };
        let decision = if tag == b'Q' {
            let text = std::str::from_utf8(codec::query_text(&self.cbuf[5..len])).unwrap_or("\0");
            auto.prerouted = Some(b'Q');
            auto.router.route_query(text, now)
        } else {
            let mut batch = Batch::default();
            let mut pos = 0;
            let mut complete = false;
            while let Some((tag, len)) = frame(&self.cbuf[pos..]).map_err(super::protocol)? {
                if tag == b'S' || tag == b'H' {
                    complete = true;
                    break;
                }
                if let Some(m) = ClientMessage::read(tag, &self.cbuf[pos + 5..pos + len]) {
                    batch.add(m, &mut auto.router);
                }
                pos += len;
            }
            if !complete {
                return Ok(Step::NeedMore);
            }
            auto.prerouted = Some(b'S');
            batch.route(&mut auto.router, now)
        };
        match decision {
            Decision::Answer {
                tag: answer,
                status,
            } => {
                auto.prerouted = None;
                self.cbuf.advance(len);
                let mut out = BytesMut::new();
                wire::put_answer(&mut out, answer, status);
                self.answer(&out).await?;
                Ok(Step::Answered)
            }
            Decision::Refuse {
                sqlstate,
                message,
                status,
            } => {
                auto.prerouted = None;
                self.cbuf.advance(len);
                let mut out = BytesMut::new();
                wire::put_refusal(&mut out, sqlstate, &message, status);
                self.answer(&out).await?;
                Ok(Step::Answered)
            }
            Decision::Route(route) => self
                .auto_bind(route)
                .await
                .map(|l| Step::Bound(Box::new(l))),
        }
    }

    /// Binds a connection for `route`: a replica that qualifies, else the primary; then runs
    /// the deferred statements.
    async fn auto_bind(&mut self, route: Route) -> Result<Lease, Fatal> {
        let index = self.ctx.index;
        let mut reason = route.reason;
        let mut lease = None;
        if route.target == SplitTarget::Replica {
            self.target = Target::Replicas(index);
            match self.bind().await {
                Ok(mut replica) => match route.lsn_wait {
                    None => lease = Some(replica),
                    Some(wait) => loop {
                        let replayed = replica
                            .conn
                            .exec(wire::REPLAY_LSN_QUERY)
                            .await
                            .ok()
                            .and_then(|e| e.value)
                            .and_then(|v| Lsn::parse(&v));
                        match wire::check_replica(replayed, wait, Instant::now()) {
                            ReplicaCheck::Serve => {
                                lease = Some(replica);
                                break;
                            }
                            ReplicaCheck::Poll => tokio::time::sleep(REPLAY_POLL).await,
                            ReplicaCheck::Primary => {
                                self.cancel.set(None);
                                replica.release(true);
                                reason = Reason::ReadYourWrites;
                                break;
                            }
                        }
                    },
                },
                Err(f) => {
                    debug!(listener = %self.ctx.cfg.name, "no replica for a read ({}): the primary serves it", f.message);
                    reason = Reason::NoReplica;
                }
            }
        }
        let (mut lease, served_by) = match lease {
            Some(l) => (l, SplitTarget::Replica),
            None => {
                self.target = Target::Listener(index);
                (self.bind().await?, SplitTarget::Primary)
            }
        };
        if let Some(auto) = self.auto.as_mut() {
            auto.served_by = served_by;
            auto.split.counters.record(served_by, reason);
        }
        for statement in &route.prelude {
            let done = lease
                .conn
                .exec(statement)
                .await
                .map_err(|e| super::server_lost(&e))?;
            if let Some((code, message)) = done.error {
                // The client's transaction fails here as it would have at this statement:
                // its first message is answered with the error, the connection stays bound
                // to the failed transaction until the client ends it.
                let status = TxStatus::from_byte(done.status).unwrap_or(TxStatus::Failed);
                if let Some((_, len)) = frame(&self.cbuf).map_err(super::protocol)? {
                    self.skip_unit(len)?;
                }
                if let Some(auto) = self.auto.as_mut() {
                    auto.prerouted = None;
                    auto.error = true;
                    auto.ready(status.byte());
                }
                let mut out = BytesMut::new();
                wire::put_refusal(&mut out, static_state(&code), &message, status);
                self.client
                    .write_all(&out)
                    .await
                    .map_err(|e| Fatal::new("08006", e.to_string()))?;
                break;
            }
        }
        Ok(lease)
    }

    /// Drops the client's unit at the front of the buffer (a `Query`, or messages up to
    /// `Sync`), answered by the proxy instead.
    fn skip_unit(&mut self, first_len: usize) -> Result<(), Fatal> {
        let query = self.cbuf.first() == Some(&b'Q');
        self.cbuf.advance(first_len);
        if query {
            return Ok(());
        }
        while let Some((tag, len)) = frame(&self.cbuf).map_err(super::protocol)? {
            self.cbuf.advance(len);
            if tag == b'S' || tag == b'H' {
                break;
            }
        }
        Ok(())
    }

    /// Before a connection goes back to its pool: the commit LSN of a transaction that may
    /// have written, for the session's later reads.
    pub(super) async fn auto_before_release(&mut self, lease: &mut Lease) {
        let Some(auto) = self.auto.as_mut() else {
            return;
        };
        if !std::mem::take(&mut auto.capture_lsn) {
            return;
        }
        let lsn = lease
            .conn
            .exec(wire::COMMIT_LSN_QUERY)
            .await
            .ok()
            .and_then(|e| e.value)
            .and_then(|v| Lsn::parse(&v));
        if let Some(lsn) = lsn {
            auto.router.on_commit_lsn(lsn);
        }
    }
}

/// A server's SQLSTATE as a static string for [`wire::put_refusal`] (the ones a deferred
/// `BEGIN` or `SET TRANSACTION` can raise; others become 25000, invalid transaction state).
fn static_state(code: &str) -> &'static str {
    match code {
        "25001" => "25001",
        "25006" => "25006",
        "0A000" => "0A000",
        "42601" => "42601",
        "22023" => "22023",
        "42704" => "42704",
        _ => "25000",
    }
}
