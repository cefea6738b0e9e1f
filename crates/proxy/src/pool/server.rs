//! One pooled server connection: opened and logged in by the proxy with the user's
//! credentials ([`ServerCredentials`]), its kept parameters and its own cancel key known,
//! registered on its [`crate::backend::Backend`] for as long as it lives (the kill switch reaches it, and the
//! fencing confirmation counts it).

use super::auth::{md5_answer, ServerCredentials};
use super::codec::{self, error_fields, put_message, CodecError};
use super::params::{self, Params};
use super::prepared::Owed;
use super::scram::ClientExchange;
use super::stream::{self, ServerTls, Stream};
use crate::backend::SessionGuard;
use crate::config::Keepalive;
use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Why a server connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing ran there (refused, timed out, 57P03 shutting down): another server may be
    /// tried.
    #[error("{0}")]
    Retry(String),
    /// The server refused the login: the client is told (SQLSTATE, message).
    #[error("{1} ({0})")]
    Refused(String, String),
}

/// What [`ServerConn::exec`] brought back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executed {
    /// The `ReadyForQuery` status (`I`, `T`, `E`).
    pub status: u8,
    /// The first error: SQLSTATE and message.
    pub error: Option<(String, String)>,
    /// The first column of the first row, as text (`None` for no row or NULL).
    pub value: Option<String>,
}

/// A logged-in server connection.
pub struct ServerConn {
    pub stream: Stream,
    /// Server bytes read and not yet passed on.
    pub buf: BytesMut,
    /// Kept parameters as this server has them now.
    pub params: Params,
    /// Every `ParameterStatus` of the login (what clients are welcomed with).
    pub welcome: Vec<(String, String)>,
    /// The server's own cancel key.
    pub pid: u32,
    pub secret: u32,
    pub addr: String,
    pub created: Instant,
    pub last_used: Instant,
    pub guard: SessionGuard,
    /// Server names of the statements the proxy prepared on this connection.
    pub prepared: HashSet<Arc<str>>,
    /// Answers owed for renamed prepared statements ([`super::prepared`]).
    pub owed: Owed,
    /// The session settings this connection holds beyond its login's, as the statement that
    /// re-creates them (its fingerprint, see [`super::settings`]); `None`: only the login's.
    pub session_settings: Option<Arc<str>>,
    /// Counted in its pool's open connections while it lives.
    pub open: Option<super::Counted>,
}

/// Everything [`connect`] needs.
pub struct Login<'a> {
    pub addr: &'a str,
    pub user: &'a str,
    pub database: &'a str,
    pub creds: &'a ServerCredentials,
    pub timeout: Duration,
    pub keepalive: Option<&'a Keepalive>,
    pub tls: &'a ServerTls,
}

/// Connects and logs in, bounded by `login.timeout`.
pub async fn connect(login: &Login<'_>, guard: SessionGuard) -> Result<ServerConn, ConnectError> {
    match timeout(login.timeout, open(login, guard)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Retry(format!(
            "{}: no login within {:?}",
            login.addr, login.timeout
        ))),
    }
}

fn io_retry(addr: &str, e: impl std::fmt::Display) -> ConnectError {
    ConnectError::Retry(format!("{addr}: {e}"))
}

async fn open(login: &Login<'_>, guard: SessionGuard) -> Result<ServerConn, ConnectError> {
    let addr = login.addr;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| io_retry(addr, e))?;
    crate::session::tune(&tcp, login.keepalive);
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let mut stream = stream::to_server(tcp, host, login.tls)
        .await
        .map_err(|e| ConnectError::Refused("08001".into(), format!("{addr}: {e}")))?;
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", login.user), ("database", login.database)],
        &mut out,
    )
    .map_err(|e| io_retry(addr, e))?;
    stream.send(&out).await.map_err(|e| io_retry(addr, e))?;
    let mut buf = BytesMut::with_capacity(8192);
    let mut scram_pw: Option<ScramSha256> = None;
    let mut scram_key: Option<ClientExchange> = None;
    let mut params = Params::new();
    let mut welcome = Vec::new();
    let mut key = (0, 0);
    loop {
        let m = codec::read_message(&mut stream, &mut buf)
            .await
            .map_err(|e| io_retry(addr, e))?;
        out.clear();
        match m.tag {
            b'R' => {
                let code = m
                    .body
                    .get(..4)
                    .map_or(u32::MAX, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                let data = &m.body[4.min(m.body.len())..];
                match code {
                    0 => continue,
                    3 => match login.creds {
                        ServerCredentials::Password(p) => password(&mut out, p.as_bytes()),
                        _ => return Err(no_way(login, "a clear-text password")),
                    },
                    5 => {
                        let salt: [u8; 4] = data
                            .get(..4)
                            .and_then(|s| s.try_into().ok())
                            .ok_or_else(|| io_retry(addr, "short md5 request"))?;
                        match md5_answer(login.user, login.creds, salt) {
                            Some(a) => password(&mut out, a.as_bytes()),
                            None => return Err(no_way(login, "md5")),
                        }
                    }
                    10 => {
                        let first = match login.creds {
                            ServerCredentials::Password(p) => {
                                let c = ScramSha256::new(
                                    p.as_bytes(),
                                    ChannelBinding::unsupported(),
                                );
                                let first = c.message().to_vec();
                                scram_pw = Some(c);
                                first
                            }
                            ServerCredentials::ClientKey { .. } => {
                                let (c, first) = ClientExchange::start();
                                scram_key = Some(c);
                                first.into_bytes()
                            }
                            ServerCredentials::Md5(_) => {
                                return Err(no_way(login, "SCRAM-SHA-256"))
                            }
                        };
                        let mut body = b"SCRAM-SHA-256\0".to_vec();
                        body.put_u32(first.len() as u32);
                        body.extend_from_slice(&first);
                        put_message(&mut out, b'p', &body);
                    }
                    11 => {
                        let reply = match (&mut scram_pw, &mut scram_key, login.creds) {
                            (Some(c), _, _) => {
                                c.update(data).map_err(|e| scram_failed(login, e))?;
                                c.message().to_vec()
                            }
                            (
                                None,
                                Some(c),
                                ServerCredentials::ClientKey {
                                    verifier,
                                    client_key,
                                },
                            ) => c
                                .respond(&String::from_utf8_lossy(data), verifier, client_key)
                                .map_err(|e| scram_failed(login, e))?
                                .into_bytes(),
                            _ => return Err(io_retry(addr, "unexpected SASLContinue")),
                        };
                        put_message(&mut out, b'p', &reply);
                    }
                    12 => {
                        match (&mut scram_pw, &scram_key) {
                            (Some(c), _) => c.finish(data).map_err(|e| scram_failed(login, e))?,
                            (None, Some(c)) => c
                                .finish(&String::from_utf8_lossy(data))
                                .map_err(|e| scram_failed(login, e))?,
                            _ => return Err(io_retry(addr, "unexpected SASLFinal")),
                        }
                        continue;
                    }
                    other => {
                        return Err(ConnectError::Refused(
                            "28000".into(),
                            format!("server {addr} asks for authentication method {other}, which the proxy does not support"),
                        ))
                    }
                }
                stream.send(&out).await.map_err(|e| io_retry(addr, e))?;
            }
            b'S' => {
                let mut b = &m.body[..];
                if let (Some(k), Some(v)) = (codec::cstr(&mut b), codec::cstr(&mut b)) {
                    params::record(&mut params, &k, &v);
                    welcome.push((k, v));
                }
            }
            b'K' if m.body.len() >= 8 => {
                let b = &m.body;
                key = (
                    u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                    u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                );
            }
            b'Z' => break,
            b'E' => {
                let (code, message) = error_fields(&m.body);
                // Shutting down or starting up (57P03), too many connections: nothing ran.
                return Err(if code == "57P03" || code.starts_with("53") {
                    ConnectError::Retry(format!("{addr}: {message} ({code})"))
                } else {
                    ConnectError::Refused(code, message)
                });
            }
            _ => {}
        }
    }
    let now = Instant::now();
    Ok(ServerConn {
        stream,
        buf,
        params,
        welcome,
        pid: key.0,
        secret: key.1,
        addr: addr.to_string(),
        created: now,
        last_used: now,
        guard,
        prepared: HashSet::new(),
        owed: Owed::default(),
        session_settings: None,
        open: None,
    })
}

fn password(out: &mut BytesMut, p: &[u8]) {
    let mut body = p.to_vec();
    body.push(0);
    put_message(out, b'p', &body);
}

fn no_way(login: &Login<'_>, method: &str) -> ConnectError {
    ConnectError::Refused(
        "28000".into(),
        format!(
            "server {} asks for {method} and the proxy has no usable secret for user \"{}\" (a plaintext password in auth_file works with every method)",
            login.addr, login.user
        ),
    )
}

fn scram_failed(login: &Login<'_>, e: impl std::fmt::Display) -> ConnectError {
    ConnectError::Refused(
        "28P01".into(),
        format!(
            "SCRAM login to server {} as \"{}\" failed: {e}",
            login.addr, login.user
        ),
    )
}

impl ServerConn {
    /// Whether the server still holds this idle connection: nothing to read (a server that
    /// shut down or terminated it sent a FATAL and closed). One non-blocking peek.
    pub fn alive(&self) -> bool {
        let tcp = match &self.stream {
            Stream::Plain(s) => s,
            Stream::ToServer(s) => s.get_ref().0,
            Stream::FromClient(s) => s.get_ref().0,
            Stream::Parked => return false,
        };
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        matches!(
            socket2::SockRef::from(tcp).peek(&mut probe),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }

    /// Runs `sql` (simple protocol) and reads its answer to `ReadyForQuery`, whatever the
    /// transaction status: the auto listener's statements around a client's (a deferred
    /// `BEGIN`, settings replay, LSN reads).
    pub async fn exec(&mut self, sql: &str) -> Result<Executed, CodecError> {
        let mut out = BytesMut::new();
        codec::put_query(&mut out, sql);
        self.stream.send(&out).await?;
        let mut done = Executed::default();
        loop {
            let m = codec::read_message(&mut self.stream, &mut self.buf).await?;
            match m.tag {
                b'S' => {
                    let mut b = &m.body[..];
                    if let (Some(k), Some(v)) = (codec::cstr(&mut b), codec::cstr(&mut b)) {
                        params::record(&mut self.params, &k, &v);
                    }
                }
                b'D' if done.value.is_none() => {
                    // DataRow: column count, then the first column's length and bytes.
                    let b = &m.body[..];
                    if let (Some(n), Some(len)) = (b.get(2..6), b.get(..2)) {
                        let columns = u16::from_be_bytes([len[0], len[1]]);
                        let size = i32::from_be_bytes([n[0], n[1], n[2], n[3]]);
                        if columns > 0 && size >= 0 {
                            done.value = b
                                .get(6..6 + size as usize)
                                .map(|v| String::from_utf8_lossy(v).into_owned());
                        }
                    }
                }
                b'E' if done.error.is_none() => done.error = Some(error_fields(&m.body)),
                b'Z' => {
                    done.status = m.body.first().copied().unwrap_or(b'I');
                    return Ok(done);
                }
                _ => {}
            }
        }
    }

    /// Runs `sql` (a simple query) and reads up to its ReadyForQuery, recording parameter
    /// changes. `Err`: the server failed it or the connection broke (drop the connection).
    pub async fn run(&mut self, sql: &str) -> Result<(), CodecError> {
        let done = self.exec(sql).await?;
        match (done.error, done.status) {
            (None, b'I') => Ok(()),
            (Some((_, e)), _) => Err(CodecError::Message(format!("{sql:?} failed: {e}"))),
            (None, _) => Err(CodecError::Message(format!(
                "{sql:?} left the connection in a transaction"
            ))),
        }
    }
}
