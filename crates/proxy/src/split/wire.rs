//! The PostgreSQL protocol around the [`super::router::Router`]: what a client message means
//! for routing, the batch of extended-protocol messages that forms one routing unit, and the
//! bytes of the answers the proxy gives itself (a deferred `BEGIN`, a refusal).
//!
//! Routing units: a simple `Query` is one; extended-protocol messages up to `Sync` are one
//! (they run in one implicit transaction unless a transaction is open), routed by the
//! statements they execute, or, for a batch that only prepares or describes, by the
//! statements it parses.

use super::router::{Decision, Lsn, LsnWait, Router, TxStatus};
use bytes::{BufMut, BytesMut};
use tokio::time::Instant;

/// What a client message means for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    /// `Q`: one routing unit.
    Query(&'a str),
    /// `P`: a statement named `name` ("" is the unnamed one).
    Parse { name: &'a str, sql: &'a str },
    /// `B`: binds statement `statement` into `portal`.
    Bind { portal: &'a str, statement: &'a str },
    /// `E`: runs `portal`.
    Execute { portal: &'a str },
    /// `C` of a statement (`S`); portal closes (`P`) need nothing.
    CloseStatement { name: &'a str },
    /// `S`: ends the routing unit.
    Sync,
    /// Anything else (`D`, `H`, `F`, `X`, ...).
    Other,
}

fn cstr<'a>(body: &mut &'a [u8]) -> Option<&'a str> {
    let end = body.iter().position(|b| *b == 0)?;
    let text = std::str::from_utf8(&body[..end]).ok()?;
    *body = &body[end + 1..];
    Some(text)
}

impl<'a> ClientMessage<'a> {
    /// Reads a message's `tag` and `body` (without the length). `None` for a malformed
    /// message the proxy should refuse.
    pub fn read(tag: u8, body: &'a [u8]) -> Option<ClientMessage<'a>> {
        let mut b = body;
        Some(match tag {
            b'Q' => ClientMessage::Query(cstr(&mut b)?),
            b'P' => {
                let name = cstr(&mut b)?;
                ClientMessage::Parse {
                    name,
                    sql: cstr(&mut b)?,
                }
            }
            b'B' => {
                let portal = cstr(&mut b)?;
                ClientMessage::Bind {
                    portal,
                    statement: cstr(&mut b)?,
                }
            }
            b'E' => ClientMessage::Execute {
                portal: cstr(&mut b)?,
            },
            b'C' => match b.split_first() {
                Some((b'S', mut rest)) => ClientMessage::CloseStatement {
                    name: cstr(&mut rest)?,
                },
                Some((b'P', _)) => ClientMessage::Other,
                _ => return None,
            },
            b'S' => ClientMessage::Sync,
            _ => ClientMessage::Other,
        })
    }
}

/// The extended-protocol messages since the last `Sync`, as far as routing cares.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// Portal -> statement, for the portals bound in this batch.
    portals: Vec<(String, String)>,
    parsed: Vec<String>,
    executed: Vec<String>,
}

impl Batch {
    /// Takes in one message of the batch, telling the router about parsed and closed
    /// statements.
    pub fn add(&mut self, message: ClientMessage<'_>, router: &mut Router) {
        match message {
            ClientMessage::Parse { name, sql } => {
                router.on_parse(name, sql);
                self.parsed.push(name.to_string());
            }
            ClientMessage::Bind { portal, statement } => {
                self.portals.retain(|(p, _)| p != portal);
                self.portals
                    .push((portal.to_string(), statement.to_string()));
            }
            ClientMessage::Execute { portal } => {
                if let Some((_, statement)) = self.portals.iter().find(|(p, _)| p == portal) {
                    self.executed.push(statement.clone());
                }
            }
            ClientMessage::CloseStatement { name } => router.on_close(name),
            ClientMessage::Query(_) | ClientMessage::Sync | ClientMessage::Other => {}
        }
    }

    /// At `Sync`: where the batch goes. Executed statements decide; a batch that executes
    /// nothing (prepare and describe only) is routed by what it parsed, and one that neither
    /// parses nor executes like a read of nothing (`SELECT` of no table would be).
    pub fn route(self, router: &mut Router, now: Instant) -> Decision {
        let names = if self.executed.is_empty() {
            self.parsed
        } else {
            self.executed
        };
        if names.is_empty() {
            return router.route_query("SELECT", now);
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        router.route_prepared(&names, now)
    }
}

/// Whether a replica may serve a read that needs [`LsnWait`], from its replay position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaCheck {
    /// It has replayed the session's last commit.
    Serve,
    /// Not yet: ask it again (the deadline has not passed).
    Poll,
    /// Not in time: the primary serves the read ([`super::reason::Reason::ReadYourWrites`]).
    Primary,
}

pub fn check_replica(replayed: Option<Lsn>, wait: LsnWait, now: Instant) -> ReplicaCheck {
    match replayed {
        Some(lsn) if lsn >= wait.lsn => ReplicaCheck::Serve,
        _ if now < wait.until => ReplicaCheck::Poll,
        _ => ReplicaCheck::Primary,
    }
}

/// The query that reads a replica's replay position (`NULL` on a primary).
pub const REPLAY_LSN_QUERY: &str = "SELECT pg_last_wal_replay_lsn()";
/// The query that reads a commit's position on the primary, on the connection that ran it,
/// before the connection goes back to its pool: the insert position is at or past the
/// commit record even with `synchronous_commit = off`, where the write position may lag.
pub const COMMIT_LSN_QUERY: &str = "SELECT pg_current_wal_insert_lsn()";

fn message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_u32(body.len() as u32 + 4);
    out.put_slice(body);
}

/// `ReadyForQuery(status)`.
pub fn put_ready(out: &mut BytesMut, status: TxStatus) {
    message(out, b'Z', &[status.byte()]);
}

/// `CommandComplete(tag)` then `ReadyForQuery(status)`: the proxy's own answer to a
/// deferred `BEGIN`, `SET TRANSACTION` or an empty transaction's end.
pub fn put_answer(out: &mut BytesMut, tag: &str, status: TxStatus) {
    let mut body = Vec::with_capacity(tag.len() + 1);
    body.extend_from_slice(tag.as_bytes());
    body.push(0);
    message(out, b'C', &body);
    put_ready(out, status);
}

/// `ErrorResponse` (severity ERROR) then `ReadyForQuery(status)`.
pub fn put_refusal(out: &mut BytesMut, sqlstate: &str, text: &str, status: TxStatus) {
    let mut body = Vec::with_capacity(text.len() + 32);
    for (field, value) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', sqlstate),
        (b'M', text),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(out, b'E', &body);
    put_ready(out, status);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::classify::Classifier;
    use crate::split::reason::{Reason, Target};
    use crate::split::router::{Ready, RouterConfig};
    use std::sync::Arc;
    use std::time::Duration;

    fn router() -> Router {
        Router::new(RouterConfig::default(), Arc::new(Classifier::default()))
    }

    fn route_of(decision: Decision) -> (Target, Reason) {
        match decision {
            Decision::Route(r) => (r.target, r.reason),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_client_messages() {
        assert_eq!(
            ClientMessage::read(b'Q', b"SELECT 1\0"),
            Some(ClientMessage::Query("SELECT 1"))
        );
        assert_eq!(
            ClientMessage::read(b'P', b"s1\0SELECT $1\0\0\0"),
            Some(ClientMessage::Parse {
                name: "s1",
                sql: "SELECT $1"
            })
        );
        assert_eq!(
            ClientMessage::read(b'B', b"\0s1\0\0\0\0\0\0\0"),
            Some(ClientMessage::Bind {
                portal: "",
                statement: "s1"
            })
        );
        assert_eq!(
            ClientMessage::read(b'E', b"\0\0\0\0\0"),
            Some(ClientMessage::Execute { portal: "" })
        );
        assert_eq!(
            ClientMessage::read(b'C', b"Ss1\0"),
            Some(ClientMessage::CloseStatement { name: "s1" })
        );
        assert_eq!(
            ClientMessage::read(b'C', b"Pp\0"),
            Some(ClientMessage::Other)
        );
        assert_eq!(ClientMessage::read(b'S', b""), Some(ClientMessage::Sync));
        for (tag, body) in [
            (b'Q', &b"no terminator"[..]),
            (b'P', b"s1\0"),
            (b'C', b"X\0"),
            (b'Q', b"\xff\xfe\0"),
        ] {
            assert_eq!(ClientMessage::read(tag, body), None, "{body:?}");
        }
    }

    #[test]
    fn a_batch_is_routed_by_what_it_executes() {
        let mut r = router();
        let now = Instant::now();
        // asyncpg's pattern: prepare (Parse, Describe, Sync), then execute (Bind, Execute, Sync).
        let mut prepare = Batch::default();
        prepare.add(
            ClientMessage::Parse {
                name: "w",
                sql: "UPDATE t SET v = $1",
            },
            &mut r,
        );
        prepare.add(
            ClientMessage::Parse {
                name: "q",
                sql: "SELECT * FROM t WHERE id = $1",
            },
            &mut r,
        );
        assert_eq!(route_of(prepare.route(&mut r, now)).0, Target::Primary);
        r.on_ready_for_query(Ready {
            status: TxStatus::Idle,
            error: false,
            served_by: Target::Primary,
        });
        let mut read = Batch::default();
        read.add(
            ClientMessage::Bind {
                portal: "",
                statement: "q",
            },
            &mut r,
        );
        read.add(ClientMessage::Execute { portal: "" }, &mut r);
        assert_eq!(
            route_of(read.route(&mut r, now)),
            (Target::Replica, Reason::ReadOnly)
        );
        r.on_ready_for_query(Ready {
            status: TxStatus::Idle,
            error: false,
            served_by: Target::Replica,
        });
        let mut mixed = Batch::default();
        for (portal, statement) in [("a", "q"), ("b", "w")] {
            mixed.add(ClientMessage::Bind { portal, statement }, &mut r);
            mixed.add(ClientMessage::Execute { portal }, &mut r);
        }
        assert_eq!(
            route_of(mixed.route(&mut r, now)),
            (Target::Primary, Reason::Write)
        );
    }

    #[test]
    fn replica_checks_for_read_your_writes() {
        let now = Instant::now();
        let wait = LsnWait {
            lsn: Lsn(100),
            until: now + Duration::from_millis(10),
        };
        assert_eq!(
            check_replica(Some(Lsn(100)), wait, now),
            ReplicaCheck::Serve
        );
        assert_eq!(check_replica(Some(Lsn(99)), wait, now), ReplicaCheck::Poll);
        assert_eq!(check_replica(None, wait, now), ReplicaCheck::Poll);
        assert_eq!(
            check_replica(Some(Lsn(99)), wait, now + Duration::from_millis(10)),
            ReplicaCheck::Primary
        );
    }

    #[test]
    fn answers_and_refusals_are_protocol_messages() {
        let mut out = BytesMut::new();
        put_answer(&mut out, "BEGIN", TxStatus::InTransaction);
        assert_eq!(&out[..], b"C\0\0\0\x0aBEGIN\0Z\0\0\0\x05T");
        let mut out = BytesMut::new();
        put_refusal(&mut out, "25006", "no", TxStatus::Failed);
        assert_eq!(
            &out[..],
            b"E\0\0\0\x1eSERROR\0VERROR\0C25006\0Mno\0\0Z\0\0\0\x05E"
        );
    }
}
