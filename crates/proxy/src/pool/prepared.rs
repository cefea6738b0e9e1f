//! Named prepared statements of the extended protocol in transaction mode (pgbouncer ≥ 1.21's
//! `max_prepared_statements`): a client's `Parse` of statement `N` is recorded for the client
//! and sent to servers under a name of the proxy's (`pgherd_<n>`, one per distinct query and
//! parameter types, shared by every client of the listener). `Bind` and `Describe` of `N` are
//! translated; when the server connection the client landed on does not have the statement
//! yet, the proxy prepares it there first and hides that `ParseComplete`. A `Parse` of a
//! statement the connection already has is not sent: a `Close` of a name that does not exist
//! goes in its place, and its `CloseComplete` reaches the client as `ParseComplete`. A
//! client's `Close` of `N` forgets it for the client only (other clients may share the
//! server's statement).
//!
//! A SQL `DEALLOCATE N` (psycopg 3.1 sends one when its statement cache evicts) forgets `N`
//! for the client too: as a simple `Query` the proxy answers it itself (`DEALLOCATE`, or
//! `DEALLOCATE ALL`, then `ReadyForQuery`); as an extended-protocol statement it becomes
//! `DEALLOCATE pgherd_<n>` on the server connection (the proxy prepares it there first when
//! the connection lacks it), so the client gets the server's own answers. `DEALLOCATE ALL`
//! and `DISCARD ALL` run on the server and the proxy forgets every statement of the client
//! and of that connection. A name the client never prepared gets PostgreSQL's `26000` error
//! (from the proxy, or raised on the server inside a transaction so that it fails there);
//! it never reaches the server, where it might name one of the proxy's statements, and
//! neither does a protocol `Close` of it.
//!
//! What the proxy believes a connection holds (`ServerConn::prepared`) may miss statements
//! it really holds (a `DEALLOCATE` skipped after an error), never the reverse: so each
//! `Parse` the proxy sends is preceded by a hidden `Close` of the same name.

use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Server-side names, one per distinct (query, parameter types).
#[derive(Default)]
pub struct Names {
    names: Mutex<HashMap<Bytes, Arc<str>>>,
    next: AtomicU64,
}

impl Names {
    /// The name for a `Parse` body after its statement name (query, NUL, parameter types).
    pub fn name_for(&self, definition: &Bytes) -> Arc<str> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names
            .entry(definition.clone())
            .or_insert_with(|| {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                Arc::from(format!("pgherd_{n}"))
            })
            .clone()
    }
}

/// One client's statement.
#[derive(Debug, Clone)]
pub struct Statement {
    pub server_name: Arc<str>,
    /// Query, NUL, parameter types: what a `Parse` needs after the name.
    pub definition: Bytes,
    /// Executing it may change session settings ([`super::settings`]).
    pub settings: bool,
}

/// What a server's `ParseComplete`/`CloseComplete` (in order) stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The client's own `Parse` (its statement name on the server, if named).
    Parse(Option<Arc<str>>),
    /// A `Parse` the proxy added: its answer is not passed on.
    HiddenParse(Arc<str>),
    /// A `Close` the proxy added before its own `Parse`: its answer is not passed on.
    HiddenClose,
    /// The client's own `Close`.
    Close,
    /// Stands for a `Parse` not sent: its `CloseComplete` becomes `ParseComplete`.
    CloseAsParse,
    /// A `Sync` or a `Query`: where the server stops skipping after an error.
    Sync,
}

/// A client message rewritten for one server connection.
pub fn parse_message(name: &str, definition: &[u8], out: &mut BytesMut) {
    out.put_u8(b'P');
    out.put_u32((4 + name.len() + 1 + definition.len()) as u32);
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out.put_slice(definition);
}

/// A `Close` of a statement that cannot exist (answered `CloseComplete`, no effect).
pub fn close_nothing(out: &mut BytesMut) {
    close_statement("pgherd_none", out);
}

/// A `Close` of statement `name` (answered `CloseComplete` whether it exists or not).
pub fn close_statement(name: &str, out: &mut BytesMut) {
    out.put_u8(b'C');
    out.put_u32((4 + 1 + name.len() + 1) as u32);
    out.put_u8(b'S');
    out.put_slice(name.as_bytes());
    out.put_u8(0);
}

/// An unnamed `Parse` of `query` (no parameters).
pub fn unnamed_parse(query: &str, out: &mut BytesMut) {
    out.put_u8(b'P');
    out.put_u32((4 + 1 + query.len() + 1 + 2) as u32);
    out.put_u8(0);
    out.put_slice(query.as_bytes());
    out.put_u8(0);
    out.put_u16(0);
}

/// `Bind` with another statement name: portal, statement, the rest as it was.
pub fn bind_message(portal: &[u8], statement: &str, rest: &[u8], out: &mut BytesMut) {
    out.put_u8(b'B');
    out.put_u32((4 + portal.len() + 1 + statement.len() + 1 + rest.len()) as u32);
    out.put_slice(portal);
    out.put_u8(0);
    out.put_slice(statement.as_bytes());
    out.put_u8(0);
    out.put_slice(rest);
}

/// `Describe` of statement `name`.
pub fn describe_statement(name: &str, out: &mut BytesMut) {
    out.put_u8(b'D');
    out.put_u32((4 + 1 + name.len() + 1) as u32);
    out.put_u8(b'S');
    out.put_slice(name.as_bytes());
    out.put_u8(0);
}

/// The answers a server connection owes, in order.
#[derive(Debug, Default)]
pub struct Owed {
    queue: VecDeque<Expect>,
}

/// What to do with one server message.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Pass,
    /// Drop it (a hidden `ParseComplete`).
    Hide,
    /// Pass it on as a `ParseComplete`.
    AsParseComplete,
}

impl Owed {
    pub fn push(&mut self, e: Expect) {
        self.queue.push_back(e);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// A `ParseComplete` (`1`), `CloseComplete` (`3`), `ErrorResponse` (`E`) or
    /// `ReadyForQuery` (`Z`) arrived. `failed` collects the server names of statements that
    /// an error left unprepared.
    pub fn answer(&mut self, tag: u8, failed: &mut Vec<Arc<str>>) -> Answer {
        match tag {
            b'1' | b'3' => match self.queue.pop_front() {
                Some(Expect::HiddenParse(_) | Expect::HiddenClose) => Answer::Hide,
                Some(Expect::CloseAsParse) => Answer::AsParseComplete,
                _ => Answer::Pass,
            },
            b'E' => {
                // The server skips to the next Sync: nothing before it will be answered.
                while let Some(e) = self.queue.front() {
                    if *e == Expect::Sync {
                        break;
                    }
                    match self.queue.pop_front() {
                        Some(Expect::Parse(Some(n))) | Some(Expect::HiddenParse(n)) => {
                            failed.push(n)
                        }
                        _ => {}
                    }
                }
                Answer::Pass
            }
            b'Z' => {
                while let Some(e) = self.queue.pop_front() {
                    if e == Expect::Sync {
                        break;
                    }
                }
                Answer::Pass
            }
            _ => Answer::Pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shared_per_definition() {
        let n = Names::default();
        let a = n.name_for(&Bytes::from_static(b"select 1\0\0\0"));
        let b = n.name_for(&Bytes::from_static(b"select 2\0\0\0"));
        assert_ne!(a, b);
        assert_eq!(a, n.name_for(&Bytes::from_static(b"select 1\0\0\0")));
    }

    #[test]
    fn answers_in_order_and_errors_skip_to_sync() {
        let s: Arc<str> = Arc::from("pgherd_0");
        let mut o = Owed::default();
        let mut failed = Vec::new();
        // Hidden close and parse then the client's Bind: their answers are hidden.
        o.push(Expect::HiddenClose);
        o.push(Expect::HiddenParse(s.clone()));
        o.push(Expect::CloseAsParse);
        o.push(Expect::Sync);
        assert_eq!(o.answer(b'3', &mut failed), Answer::Hide);
        assert_eq!(o.answer(b'1', &mut failed), Answer::Hide);
        assert_eq!(o.answer(b'3', &mut failed), Answer::AsParseComplete);
        assert_eq!(o.answer(b'Z', &mut failed), Answer::Pass);
        assert!(o.is_empty());
        // An error before the Sync: the parses after it never happened.
        o.push(Expect::Parse(None));
        o.push(Expect::Parse(Some(s.clone())));
        o.push(Expect::Sync);
        o.push(Expect::Close);
        o.push(Expect::Sync);
        assert_eq!(o.answer(b'E', &mut failed), Answer::Pass);
        assert_eq!(failed, vec![s.clone()]);
        assert_eq!(o.answer(b'Z', &mut failed), Answer::Pass);
        assert_eq!(o.answer(b'3', &mut failed), Answer::Pass);
        assert_eq!(o.answer(b'Z', &mut failed), Answer::Pass);
        assert!(o.is_empty());
    }

    #[test]
    fn messages() {
        let mut out = BytesMut::new();
        parse_message("pgherd_1", b"select $1\0\0\x01\0\0\0\x17", &mut out);
        assert_eq!(
            super::super::codec::frame(&out).unwrap(),
            Some((b'P', out.len()))
        );
        let body = &out[5..];
        let (name, q, _) = super::super::codec::parse_fields(body).unwrap();
        assert_eq!((name, q), (&b"pgherd_1"[..], &b"select $1"[..]));
        out.clear();
        bind_message(b"", "pgherd_1", b"\0\0\0\0\0\0", &mut out);
        assert_eq!(&out[5..], b"\0pgherd_1\0\0\0\0\0\0\0");
        out.clear();
        unnamed_parse("DEALLOCATE pgherd_1", &mut out);
        let (name, q, types) = super::super::codec::parse_fields(&out[5..]).unwrap();
        assert_eq!(
            (name, q, types),
            (&b""[..], &b"DEALLOCATE pgherd_1"[..], &b"\0\0"[..])
        );
        assert_eq!(
            super::super::codec::frame(&out).unwrap(),
            Some((b'P', out.len()))
        );
        out.clear();
        close_nothing(&mut out);
        describe_statement("x", &mut out);
        assert_eq!(super::super::codec::frame(&out).unwrap(), Some((b'C', 18)));
    }
}
