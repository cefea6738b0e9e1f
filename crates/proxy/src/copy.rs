//! The data path: bytes between a client and its server, both directions in one task, with
//! one fixed buffer per direction (so memory per session is bounded and known), idle
//! timeouts, and the kill switch.
//!
//! End of a session: the server closing (or failing) ends it at once; the client closing its
//! side is passed on to the server (`shutdown(Write)`) and the session ends when the server
//! closes in turn. Any read or write error ends it. Dropping both sockets closes them, so an
//! aborted session leaves no task or descriptor behind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// How a proxied session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Both sides closed normally.
    Closed,
    /// The server closed or failed.
    ServerGone,
    /// The client failed (reset, broken pipe).
    ClientError,
    /// No byte from the client for `client_idle`.
    ClientIdle,
    /// No byte from the server for `server_idle`.
    ServerIdle,
    /// The proxy closed it (the server left the rotation).
    Killed,
}

pub struct Limits {
    pub buffer: usize,
    pub client_idle: Option<Duration>,
    pub server_idle: Option<Duration>,
}

/// Byte counters to add to (client->server is "in", server->client is "out").
pub struct Counters<'a> {
    pub bytes_in: [&'a AtomicU64; 2],
    pub bytes_out: [&'a AtomicU64; 2],
}

/// Copies until one of the ending conditions; returns how it ended.
pub async fn proxy(
    client: TcpStream,
    server: TcpStream,
    limits: &Limits,
    counters: Counters<'_>,
    kill: &mut watch::Receiver<u64>,
) -> End {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let start = Instant::now();
    let client_seen = AtomicU64::new(0);
    let server_seen = AtomicU64::new(0);
    let mut up_buf = vec![0u8; limits.buffer];
    let mut down_buf = vec![0u8; limits.buffer];
    let upstream = pump(
        &mut cr,
        &mut sw,
        &mut up_buf,
        &counters.bytes_in,
        &client_seen,
        start,
    );
    let downstream = pump(
        &mut sr,
        &mut cw,
        &mut down_buf,
        &counters.bytes_out,
        &server_seen,
        start,
    );
    tokio::pin!(upstream, downstream);
    let mut client_done = false;
    let tick = [limits.client_idle, limits.server_idle]
        .into_iter()
        .flatten()
        .min()
        .map(|d| (d / 4).max(Duration::from_millis(10)));
    let mut next_check = tick.map(|t| start + t);
    loop {
        let idle_check = async {
            match next_check {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut upstream, if !client_done => match r {
                // The client finished sending: pass the half-close on, wait for the server.
                Ok(()) => {
                    client_done = true;
                }
                Err(Side::Reader) => return End::ClientError,
                Err(Side::Writer) => return End::ServerGone,
            },
            r = &mut downstream => return match r {
                Ok(()) if client_done => End::Closed,
                Ok(()) | Err(Side::Reader) => End::ServerGone,
                Err(Side::Writer) => End::ClientError,
            },
            // A kill, or the backend itself going away.
            _ = kill.changed() => return End::Killed,
            _ = idle_check => {
                let now = start.elapsed().as_millis() as u64;
                if let Some(limit) = limits.client_idle {
                    if !client_done && now.saturating_sub(client_seen.load(Ordering::Relaxed)) >= limit.as_millis() as u64 {
                        return End::ClientIdle;
                    }
                }
                if let Some(limit) = limits.server_idle {
                    if now.saturating_sub(server_seen.load(Ordering::Relaxed)) >= limit.as_millis() as u64 {
                        return End::ServerIdle;
                    }
                }
                next_check = tick.map(|t| Instant::now() + t);
            }
        }
    }
}

/// Which end of a pump failed.
enum Side {
    Reader,
    Writer,
}

/// Copies one direction until EOF (then shuts the writer down) or an error.
async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    buf: &mut [u8],
    counters: &[&AtomicU64; 2],
    seen: &AtomicU64,
    start: Instant,
) -> Result<(), Side>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let n = r.read(buf).await.map_err(|_| Side::Reader)?;
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        seen.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        w.write_all(&buf[..n]).await.map_err(|_| Side::Writer)?;
        for c in counters {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    fn limits() -> Limits {
        Limits {
            buffer: 1024,
            client_idle: None,
            server_idle: None,
        }
    }

    #[tokio::test]
    async fn copies_both_ways_and_counts() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_server, mut server) = pair().await;
        let (bi, bo, ti, to) = (
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
        );
        let (_kill_tx, mut kill) = watch::channel(0);
        let l = limits();
        let task = async {
            proxy(
                proxy_client,
                proxy_server,
                &l,
                Counters {
                    bytes_in: [&bi, &ti],
                    bytes_out: [&bo, &to],
                },
                &mut kill,
            )
            .await
        };
        let peers = async {
            let big = vec![7u8; 10_000];
            client.write_all(&big).await.unwrap();
            let mut got = vec![0u8; 10_000];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, big);
            server.write_all(b"pong").await.unwrap();
            let mut pong = [0u8; 4];
            client.read_exact(&mut pong).await.unwrap();
            assert_eq!(&pong, b"pong");
            client.shutdown().await.unwrap();
            // The server sees EOF, then closes.
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            drop(server);
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
        };
        let (end, ()) = tokio::join!(task, peers);
        assert_eq!(end, End::Closed);
        assert_eq!(
            (bi.into_inner(), bo.into_inner(), ti.into_inner()),
            (10_000, 4, 10_000)
        );
    }

    #[tokio::test]
    async fn kill_closes_both_sides() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_server, mut server) = pair().await;
        let c = AtomicU64::new(0);
        let (kill_tx, mut kill) = watch::channel(0);
        let l = limits();
        let task = proxy(
            proxy_client,
            proxy_server,
            &l,
            Counters {
                bytes_in: [&c, &c],
                bytes_out: [&c, &c],
            },
            &mut kill,
        );
        let killer = async {
            kill_tx.send_modify(|n| *n += 1);
        };
        let (end, ()) = tokio::join!(task, killer);
        assert_eq!(end, End::Killed);
        let mut buf = Vec::new();
        assert_eq!(client.read_to_end(&mut buf).await.unwrap(), 0);
        assert_eq!(server.read_to_end(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn idle_client_is_closed() {
        let (_client, proxy_client) = pair().await;
        let (proxy_server, _server) = pair().await;
        let c = AtomicU64::new(0);
        let (_kill_tx, mut kill) = watch::channel(0);
        let l = Limits {
            buffer: 1024,
            client_idle: Some(Duration::from_millis(50)),
            server_idle: None,
        };
        let end = proxy(
            proxy_client,
            proxy_server,
            &l,
            Counters {
                bytes_in: [&c, &c],
                bytes_out: [&c, &c],
            },
            &mut kill,
        )
        .await;
        assert_eq!(end, End::ClientIdle);
    }
}
