//! The opening of a PostgreSQL session, replayable on another server.
//!
//! A server that is shutting down or starting up (a primary being demoted during a switchover,
//! a node restarting) accepts the TCP connection and then answers the startup packet with
//! `FATAL 57P03 cannot_connect_now`. Nothing was executed, so the proxy may try another
//! server: it keeps the client's opening messages (an optional `SSLRequest`/`GSSENCRequest`
//! answered `N`, then the `StartupMessage`), reads the server's first reply, and on 57P03
//! replays them on the next routable server instead of passing the error on. Sessions that
//! negotiate TLS with the server are opaque and proxied as they are.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
const PROTOCOL_3: u32 = 196_608;
/// A startup packet is small; anything larger is not PostgreSQL.
const MAX_STARTUP: usize = 10_000;
/// First reply messages we inspect (an ErrorResponse is short).
const MAX_REPLY: usize = 8_192;

/// One message of the client's opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOpening {
    /// `SSLRequest` or `GSSENCRequest` (the 8 bytes), to be answered by the server.
    Encryption([u8; 8]),
    /// `StartupMessage` (or `CancelRequest`), complete.
    Startup(Vec<u8>),
    /// Not a PostgreSQL opening we understand: these bytes (already read) are forwarded and
    /// the rest proxied untouched.
    Other(Vec<u8>),
}

/// The result of offering the startup message to one server.
#[derive(Debug)]
pub enum Offer {
    /// Proceed with this server; `reply` (its first bytes) must be sent to the client first.
    Accepted { reply: Vec<u8> },
    /// The server cannot take connections now (57P03): try another one.
    CannotConnectNow,
}

/// Reads the client's next opening message, waiting at most `wait` for it.
pub async fn read_client_opening(
    client: &mut TcpStream,
    wait: Duration,
) -> std::io::Result<ClientOpening> {
    match timeout(wait, read_opening(client)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client sent no complete startup packet",
        )),
    }
}

async fn read_opening(client: &mut TcpStream) -> std::io::Result<ClientOpening> {
    let mut head = [0u8; 8];
    client.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if len == 8 && (code == SSL_REQUEST || code == GSSENC_REQUEST) {
        return Ok(ClientOpening::Encryption(head));
    }
    if !(8..=MAX_STARTUP).contains(&len) || !(code == PROTOCOL_3 || code == CANCEL_REQUEST) {
        return Ok(ClientOpening::Other(head.to_vec()));
    }
    let mut msg = head.to_vec();
    msg.resize(len, 0);
    client.read_exact(&mut msg[8..]).await?;
    Ok(ClientOpening::Startup(msg))
}

/// Offers the startup message to `server` and reads its first reply message.
pub async fn offer_startup(
    server: &mut TcpStream,
    startup: &[u8],
    wait: Duration,
) -> std::io::Result<Offer> {
    server.write_all(startup).await?;
    if startup.len() >= 8
        && u32::from_be_bytes([startup[4], startup[5], startup[6], startup[7]]) == CANCEL_REQUEST
    {
        return Ok(Offer::Accepted { reply: Vec::new() });
    }
    let mut head = [0u8; 5];
    match timeout(wait, server.read_exact(&mut head)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no reply to the startup packet",
            ))
        }
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut reply = head.to_vec();
    // The whole first message (an authentication request, or an error) goes to the client in
    // one write: a client that gets the header alone wakes up twice.
    if (4..=MAX_REPLY).contains(&len) {
        reply.resize(1 + len, 0);
        match timeout(wait, server.read_exact(&mut reply[5..])).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "truncated first reply",
                ))
            }
        }
        if head[0] == b'E' && sqlstate(&reply[5..]).as_deref() == Some("57P03") {
            return Ok(Offer::CannotConnectNow);
        }
    }
    Ok(Offer::Accepted { reply })
}

/// Sends an `SSLRequest`/`GSSENCRequest` to `server`; returns its one-byte answer.
pub async fn offer_encryption(
    server: &mut TcpStream,
    request: &[u8; 8],
    wait: Duration,
) -> std::io::Result<u8> {
    server.write_all(request).await?;
    let mut b = [0u8; 1];
    match timeout(wait, server.read_exact(&mut b)).await {
        Ok(Ok(_)) => Ok(b[0]),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer to the encryption request",
        )),
    }
}

/// The `C` (SQLSTATE) field of an ErrorResponse body.
fn sqlstate(body: &[u8]) -> Option<String> {
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            return None;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if kind == b'C' {
            return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
        }
        rest = &tail[end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_response(code: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in [
            (b'S', "FATAL"),
            (b'C', code),
            (b'M', "the database system is shutting down"),
        ] {
            body.push(k);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut m = vec![b'E'];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend(body);
        m
    }

    #[test]
    fn sqlstate_field() {
        assert_eq!(
            sqlstate(&error_response("57P03")[5..]).as_deref(),
            Some("57P03")
        );
        assert_eq!(sqlstate(&[b'S', b'X', 0, 0]), None);
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    fn startup() -> Vec<u8> {
        let mut body = 196_608u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0postgres\0\0");
        let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        m.extend(body);
        m
    }

    #[tokio::test]
    async fn reads_openings_and_recognises_cannot_connect_now() {
        let (mut client, mut proxy_side) = pair().await;
        client
            .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .unwrap();
        let wait = Duration::from_secs(5);
        assert!(matches!(
            read_client_opening(&mut proxy_side, wait).await.unwrap(),
            ClientOpening::Encryption(_)
        ));
        client.write_all(&startup()).await.unwrap();
        assert_eq!(
            read_client_opening(&mut proxy_side, wait).await.unwrap(),
            ClientOpening::Startup(startup())
        );
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(
            read_client_opening(&mut proxy_side, wait).await.unwrap(),
            ClientOpening::Other(b"GET / HT".to_vec())
        );

        // A server that is shutting down.
        let (mut to_server, mut server) = pair().await;
        let srv = tokio::spawn(async move {
            let mut buf = vec![0u8; startup().len()];
            server.read_exact(&mut buf).await.unwrap();
            server.write_all(&error_response("57P03")).await.unwrap();
        });
        let offer = offer_startup(&mut to_server, &startup(), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(matches!(offer, Offer::CannotConnectNow));
        srv.await.unwrap();

        // A healthy server asking for a password: accepted, its whole first message kept for
        // the client.
        let (mut to_server, mut server) = pair().await;
        let srv = tokio::spawn(async move {
            let mut buf = vec![0u8; startup().len()];
            server.read_exact(&mut buf).await.unwrap();
            server
                .write_all(&[b'R', 0, 0, 0, 12, 0, 0, 0, 5, 1, 2, 3, 4])
                .await
                .unwrap();
        });
        match offer_startup(&mut to_server, &startup(), Duration::from_secs(5))
            .await
            .unwrap()
        {
            Offer::Accepted { reply } => {
                assert_eq!(reply, [b'R', 0, 0, 0, 12, 0, 0, 0, 5, 1, 2, 3, 4])
            }
            other => panic!("{other:?}"),
        }
        srv.await.unwrap();
        // Other errors (e.g. authentication) are passed on.
        let (mut to_server, mut server) = pair().await;
        let srv = tokio::spawn(async move {
            let mut buf = vec![0u8; startup().len()];
            server.read_exact(&mut buf).await.unwrap();
            server.write_all(&error_response("28P01")).await.unwrap();
        });
        match offer_startup(&mut to_server, &startup(), Duration::from_secs(5))
            .await
            .unwrap()
        {
            Offer::Accepted { reply } => assert_eq!(reply, error_response("28P01")),
            other => panic!("{other:?}"),
        }
        srv.await.unwrap();
    }
}
