//! PostgreSQL protocol 3 framing for pooled listeners: the client's opening (SSLRequest,
//! CancelRequest, StartupMessage), typed messages (`tag`, `i32 length`, body) read out of a
//! [`BytesMut`], and the backend messages the proxy writes itself. Messages the proxy only
//! relays are never copied out of their buffer: [`frame`] tells where the next one ends.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

pub const SSL_REQUEST: u32 = 80_877_103;
pub const GSSENC_REQUEST: u32 = 80_877_104;
pub const CANCEL_REQUEST: u32 = 80_877_102;
pub const PROTOCOL_3: u32 = 196_608;
/// A startup packet is small; anything larger is not PostgreSQL.
const MAX_STARTUP: usize = 10_000;
/// The largest message accepted (PostgreSQL's own limit for most messages is 1 GB; a query
/// or a COPY row beyond this is refused).
pub const MAX_MESSAGE: usize = 256 << 20;

/// What a client says first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// `SSLRequest`.
    Ssl,
    /// `GSSENCRequest`.
    Gss,
    Startup(Startup),
    /// `CancelRequest` with the key the proxy gave the client.
    Cancel {
        pid: u32,
        secret: u32,
    },
}

/// A `StartupMessage`: `user`, `database` (defaults to the user) and the other parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup {
    pub user: String,
    pub database: String,
    pub params: Vec<(String, String)>,
}

/// Why the client's bytes are not a PostgreSQL opening.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("invalid startup packet: {0}")]
    Startup(&'static str),
    #[error("invalid message: {0}")]
    Message(String),
}

/// Reads the client's next opening message: from `buf` first, then from `r` in reads as
/// large as what the client sent (reading the length, then the body, took two `recv`s per
/// message and a third that failed with EAGAIN: tokio keeps a socket readable until a read
/// comes back short). What follows the message stays in `buf`.
pub async fn read_opening<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> Result<Opening, CodecError> {
    let message = loop {
        if let Some(head) = buf.get(..4) {
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if !(8..=MAX_STARTUP).contains(&len) {
                return Err(CodecError::Startup("bad length"));
            }
            if buf.len() >= len {
                break buf.split_to(len);
            }
        }
        buf.reserve(512);
        if r.read_buf(buf).await? == 0 {
            return Err(CodecError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    };
    let len = message.len();
    let mut b = &message[4..];
    let code = b.get_u32();
    match code {
        SSL_REQUEST if len == 8 => Ok(Opening::Ssl),
        GSSENC_REQUEST if len == 8 => Ok(Opening::Gss),
        CANCEL_REQUEST if len == 16 => Ok(Opening::Cancel {
            pid: b.get_u32(),
            secret: b.get_u32(),
        }),
        PROTOCOL_3 => parse_startup(b).map(Opening::Startup),
        _ => Err(CodecError::Startup("unsupported protocol version")),
    }
}

fn parse_startup(mut b: &[u8]) -> Result<Startup, CodecError> {
    let mut user = None;
    let mut database = None;
    let mut params = Vec::new();
    loop {
        let key = cstr(&mut b).ok_or(CodecError::Startup("unterminated parameter name"))?;
        if key.is_empty() {
            break;
        }
        let value = cstr(&mut b).ok_or(CodecError::Startup("unterminated parameter value"))?;
        match key.as_str() {
            "user" => user = Some(value),
            "database" => database = Some(value),
            _ => params.push((key, value)),
        }
    }
    let user = user
        .filter(|u| !u.is_empty())
        .ok_or(CodecError::Startup("no user name"))?;
    let database = database
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    Ok(Startup {
        user,
        database,
        params,
    })
}

/// Takes a NUL-terminated string off the front of `b`.
pub fn cstr(b: &mut &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0)?;
    let s = String::from_utf8_lossy(&b[..end]).into_owned();
    *b = &b[end + 1..];
    Some(s)
}

/// Where the first complete message of `buf` ends: `Ok(Some((tag, total_len)))`, `Ok(None)`
/// when more bytes are needed.
pub fn frame(buf: &[u8]) -> Result<Option<(u8, usize)>, CodecError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if !(4..=MAX_MESSAGE).contains(&len) {
        return Err(CodecError::Message(format!(
            "message {:?} with length {len}",
            buf[0] as char
        )));
    }
    Ok((buf.len() > len).then_some((buf[0], len + 1)))
}

/// One message taken out of a buffer.
#[derive(Debug, Clone)]
pub struct Message {
    pub tag: u8,
    /// The body (after the length).
    pub body: Bytes,
}

/// Reads until one complete message is in `buf`, then takes it out.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> Result<Message, CodecError> {
    loop {
        if let Some((tag, len)) = frame(buf)? {
            let mut m = buf.split_to(len).freeze();
            m.advance(5);
            return Ok(Message { tag, body: m });
        }
        buf.reserve(8192);
        if r.read_buf(buf).await? == 0 {
            return Err(CodecError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Appends a message with `tag` and `body`.
pub fn put_message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_u32(body.len() as u32 + 4);
    out.put_slice(body);
}

/// `AuthenticationOk` and the other `R` requests: `code` then `data`.
pub fn put_auth(out: &mut BytesMut, code: u32, data: &[u8]) {
    out.put_u8(b'R');
    out.put_u32(8 + data.len() as u32);
    out.put_u32(code);
    out.put_slice(data);
}

pub fn put_parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    out.put_u8(b'S');
    out.put_u32(4 + name.len() as u32 + 1 + value.len() as u32 + 1);
    put_cstr(out, name);
    put_cstr(out, value);
}

pub fn put_backend_key(out: &mut BytesMut, pid: u32, secret: u32) {
    out.put_u8(b'K');
    out.put_u32(12);
    out.put_u32(pid);
    out.put_u32(secret);
}

pub fn put_ready(out: &mut BytesMut, status: u8) {
    out.put_slice(&[b'Z', 0, 0, 0, 5, status]);
}

fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// An `ErrorResponse` (`severity` ERROR or FATAL) with a SQLSTATE, as pgbouncer sends them.
pub fn put_error(out: &mut BytesMut, severity: &str, code: &str, message: &str) {
    let mut body = BytesMut::new();
    for (k, v) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        body.put_u8(k);
        put_cstr(&mut body, v);
    }
    body.put_u8(0);
    put_message(out, b'E', &body);
}

/// The fields of an `ErrorResponse` body: (SQLSTATE, message).
pub fn error_fields(body: &[u8]) -> (String, String) {
    let mut code = String::new();
    let mut message = String::new();
    let mut rest = body;
    while let Some((&kind, mut tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let Some(value) = cstr(&mut tail) else {
            break;
        };
        match kind {
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
        rest = tail;
    }
    (code, message)
}

/// A simple `Query` message.
pub fn put_query(out: &mut BytesMut, sql: &str) {
    out.put_u8(b'Q');
    out.put_u32(4 + sql.len() as u32 + 1);
    put_cstr(out, sql);
}

/// A `Sync` message.
pub fn put_sync(out: &mut BytesMut) {
    out.put_u8(b'S');
    out.put_u32(4);
}

/// The text of a `Query` body, or of a `Parse` body's statement name and query.
pub fn query_text(body: &[u8]) -> &[u8] {
    let end = body.iter().position(|&c| c == 0).unwrap_or(body.len());
    &body[..end]
}

/// `Parse`: (statement name, query text, the rest: parameter types).
pub fn parse_fields(body: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let n = body.iter().position(|&c| c == 0)?;
    let rest = &body[n + 1..];
    let q = rest.iter().position(|&c| c == 0)?;
    Some((&body[..n], &rest[..q], &rest[q + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut body = PROTOCOL_3.to_be_bytes().to_vec();
        for (k, v) in pairs {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        m.extend(body);
        m
    }

    #[tokio::test]
    async fn openings() {
        let mut buf = BytesMut::new();
        let mut ssl: &[u8] = &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert_eq!(
            read_opening(&mut ssl, &mut buf).await.unwrap(),
            Opening::Ssl
        );
        let mut cancel = vec![0, 0, 0, 16];
        cancel.extend(CANCEL_REQUEST.to_be_bytes());
        cancel.extend(7u32.to_be_bytes());
        cancel.extend(9u32.to_be_bytes());
        assert_eq!(
            read_opening(&mut &cancel[..], &mut buf).await.unwrap(),
            Opening::Cancel { pid: 7, secret: 9 }
        );
        let s = startup(&[("user", "alice"), ("application_name", "psql")]);
        assert_eq!(
            read_opening(&mut &s[..], &mut buf).await.unwrap(),
            Opening::Startup(Startup {
                user: "alice".into(),
                database: "alice".into(),
                params: vec![("application_name".into(), "psql".into())],
            })
        );
        let s = startup(&[("database", "db")]);
        assert!(matches!(
            read_opening(&mut &s[..], &mut buf).await,
            Err(CodecError::Startup("no user name"))
        ));
        let mut http: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        assert!(read_opening(&mut http, &mut BytesMut::new()).await.is_err());
        // Several messages in one read, one split across reads: each comes out whole, and
        // what follows stays in the buffer.
        let mut two = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        two.extend(startup(&[("user", "bob")]));
        two.extend(b"p\0\0");
        let mut buf = BytesMut::new();
        let mut r = &two[..];
        assert_eq!(read_opening(&mut r, &mut buf).await.unwrap(), Opening::Ssl);
        assert!(matches!(
            read_opening(&mut r, &mut buf).await.unwrap(),
            Opening::Startup(s) if s.user == "bob"
        ));
        assert_eq!(&buf[..], b"p\0\0");
        let s = startup(&[("user", "carol")]);
        let (head, rest) = s.split_at(3);
        let mut reader = AsyncReadExt::chain(head, rest);
        assert!(matches!(
            read_opening(&mut reader, &mut BytesMut::new()).await.unwrap(),
            Opening::Startup(s) if s.user == "carol"
        ));
    }

    #[tokio::test]
    async fn frames_and_messages() {
        let mut out = BytesMut::new();
        put_query(&mut out, "select 1");
        put_ready(&mut out, b'I');
        assert_eq!(frame(&out[..3]).unwrap(), None);
        assert_eq!(frame(&out).unwrap(), Some((b'Q', 14)));
        let mut buf = BytesMut::new();
        let mut src = &out[..];
        let m = read_message(&mut src, &mut buf).await.unwrap();
        assert_eq!((m.tag, query_text(&m.body)), (b'Q', &b"select 1"[..]));
        let m = read_message(&mut src, &mut buf).await.unwrap();
        assert_eq!((m.tag, &m.body[..]), (b'Z', &b"I"[..]));
        assert!(read_message(&mut src, &mut buf).await.is_err());
        assert!(frame(&[b'Q', 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn errors_round_trip() {
        let mut out = BytesMut::new();
        put_error(&mut out, "FATAL", "28P01", "password authentication failed");
        let (tag, len) = frame(&out).unwrap().unwrap();
        assert_eq!((tag, len), (b'E', out.len()));
        assert_eq!(
            error_fields(&out[5..]),
            (
                "28P01".to_string(),
                "password authentication failed".to_string()
            )
        );
        let body = b"s1\0select $1\0\0\x01\0\0\0\x17";
        let (name, q, rest) = parse_fields(body).unwrap();
        assert_eq!((name, q, rest.len()), (&b"s1"[..], &b"select $1"[..], 6));
    }
}
