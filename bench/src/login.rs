//! Logged-in idle PostgreSQL clients: a blocking socket that has sent its startup packet,
//! answered the server's (or pooler's) md5 or SCRAM-SHA-256 challenge and read
//! `ReadyForQuery`, then says nothing. What a pooler's idle client costs is measured with
//! many of these; the socket is all the bench keeps (no client library state per client).
//!
//! The messages and the password math are postgres-protocol's (the crate tokio-postgres
//! uses).

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long one login may take (a pooler busy with thousands of others).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Who logs in where.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    pub database: String,
}

/// Connects to `127.0.0.1:port` and logs in; returns the socket, idle after `ReadyForQuery`.
pub fn login(port: u16, c: &Credentials) -> Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    s.set_read_timeout(Some(LOGIN_TIMEOUT))?;
    s.set_nodelay(true)?;
    let mut out = BytesMut::new();
    frontend::startup_message(
        [
            ("user", c.user.as_str()),
            ("database", c.database.as_str()),
            ("application_name", "bench_idle"),
        ],
        &mut out,
    )?;
    s.write_all(&out)?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut scram: Option<ScramSha256> = None;
    loop {
        let message = next_message(&mut s, &mut buf)?;
        out.clear();
        match message {
            Message::AuthenticationOk => {}
            Message::AuthenticationCleartextPassword => {
                frontend::password_message(c.password.as_bytes(), &mut out)?;
            }
            Message::AuthenticationMd5Password(body) => {
                let hash = md5_hash(c.user.as_bytes(), c.password.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut out)?;
            }
            Message::AuthenticationSasl(body) => {
                let offered: Vec<String> =
                    body.mechanisms().map(|m| Ok(m.to_string())).collect()?;
                if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                    bail!("the server offers {offered:?}, not {SCRAM_SHA_256}");
                }
                let client = ScramSha256::new(c.password.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, client.message(), &mut out)?;
                scram = Some(client);
            }
            Message::AuthenticationSaslContinue(body) => {
                let client = scram.as_mut().context("SASL continue without SASL")?;
                client.update(body.data())?;
                frontend::sasl_response(client.message(), &mut out)?;
            }
            Message::AuthenticationSaslFinal(body) => {
                scram
                    .as_mut()
                    .context("SASL final without SASL")?
                    .finish(body.data())?;
            }
            Message::ErrorResponse(body) => {
                let fields: Vec<String> = body
                    .fields()
                    .map(|f| Ok(String::from_utf8_lossy(f.value_bytes()).into_owned()))
                    .collect()?;
                bail!("login refused: {}", fields.join(" "));
            }
            Message::ReadyForQuery(_) => return Ok(s),
            // ParameterStatus, BackendKeyData, NoticeResponse.
            _ => {}
        }
        if !out.is_empty() {
            s.write_all(&out)?;
        }
    }
}

/// Reads until `buf` holds a whole backend message and takes it out.
fn next_message(s: &mut TcpStream, buf: &mut BytesMut) -> Result<Message> {
    loop {
        if let Some(m) = Message::parse(buf)? {
            return Ok(m);
        }
        let mut chunk = [0u8; 1024];
        let n = s.read(&mut chunk).context("reading the login's answer")?;
        if n == 0 {
            bail!("the server closed the connection during the login");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `count` logged-in idle clients of `127.0.0.1:port`, logged in by `threads` threads at once.
pub fn idle_clients(
    port: u16,
    c: &Credentials,
    count: usize,
    threads: usize,
) -> Result<Vec<TcpStream>> {
    let threads = threads.clamp(1, count.max(1));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let n = count / threads + usize::from(t < count % threads);
                scope.spawn(move || (0..n).map(|_| login(port, c)).collect::<Result<Vec<_>>>())
            })
            .collect();
        let mut all = Vec::with_capacity(count);
        for w in workers {
            let clients = w
                .join()
                .map_err(|_| anyhow::anyhow!("a login thread panicked"))??;
            all.extend(clients);
        }
        Ok(all)
    })
}
