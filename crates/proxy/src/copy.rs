//! The data path: bytes between a client and its server, both directions in one task, with
//! one fixed buffer per direction (so memory per session is bounded and known), idle
//! timeouts, and the kill switch.
//!
//! Per message this costs one `recv` and one `send` (tokio clears a socket's readiness after
//! a short read, so no second `recv` only to see `EAGAIN`), and no clock read: idle limits are
//! checked on a timer against "anything moved since the last check" flags.
//!
//! End of a session: the server closing (or failing) ends it at once; the client closing its
//! side is passed on to the server (`shutdown(Write)`) and the session ends when the server
//! closes in turn. Any read or write error ends it. Dropping both sockets closes them, so an
//! aborted session leaves no task or descriptor behind.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
    mut client: TcpStream,
    mut server: TcpStream,
    limits: &Limits,
    counters: Counters<'_>,
    kill: &mut watch::Receiver<u64>,
) -> End {
    let mut up = Half::new(limits.buffer, counters.bytes_in);
    let mut down = Half::new(limits.buffer, counters.bytes_out);
    let mut client_done = false;
    let tick = [limits.client_idle, limits.server_idle]
        .into_iter()
        .flatten()
        .min()
        .map(|d| (d / 4).max(Duration::from_millis(10)));
    let mut next_check = tick.map(|t| Instant::now() + t);
    // When each side was last seen sending, as of the last idle check.
    let (mut client_seen, mut server_seen) = (Instant::now(), Instant::now());
    loop {
        let idle_check = async {
            match next_check {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let relay = poll_fn(|cx| {
            relay(
                cx,
                &mut client,
                &mut server,
                &mut up,
                &mut down,
                &mut client_done,
            )
        });
        tokio::select! {
            biased;
            end = relay => return end,
            // A kill, or the backend itself going away.
            _ = kill.changed() => return End::Killed,
            () = idle_check => {
                let now = Instant::now();
                if std::mem::take(&mut up.moved) {
                    client_seen = now;
                }
                if std::mem::take(&mut down.moved) {
                    server_seen = now;
                }
                if let Some(limit) = limits.client_idle {
                    if !client_done && now.duration_since(client_seen) >= limit {
                        return End::ClientIdle;
                    }
                }
                if let Some(limit) = limits.server_idle {
                    if now.duration_since(server_seen) >= limit {
                        return End::ServerIdle;
                    }
                }
                next_check = tick.map(|t| now + t);
            }
        }
    }
}

/// Both directions, client to server first; `Ready` once the session is over.
fn relay(
    cx: &mut Context<'_>,
    client: &mut TcpStream,
    server: &mut TcpStream,
    up: &mut Half<'_>,
    down: &mut Half<'_>,
    client_done: &mut bool,
) -> Poll<End> {
    if !*client_done {
        match up.poll(cx, client, server) {
            // The client finished sending: the half-close was passed on, wait for the server.
            Poll::Ready(Ok(())) => *client_done = true,
            Poll::Ready(Err(Side::Reader)) => return Poll::Ready(End::ClientError),
            Poll::Ready(Err(Side::Writer)) => return Poll::Ready(End::ServerGone),
            Poll::Pending => {}
        }
    }
    down.poll(cx, server, client).map(|r| match r {
        Ok(()) if *client_done => End::Closed,
        Ok(()) | Err(Side::Reader) => End::ServerGone,
        Err(Side::Writer) => End::ClientError,
    })
}

/// Which end of a direction failed.
enum Side {
    Reader,
    Writer,
}

/// One direction: its buffer, the bytes read but not yet written, and whether its reader
/// reached EOF.
struct Half<'a> {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    /// Bytes moved since the last idle check.
    moved: bool,
    counters: [&'a AtomicU64; 2],
}

impl<'a> Half<'a> {
    fn new(size: usize, counters: [&'a AtomicU64; 2]) -> Half<'a> {
        Half {
            buf: vec![0u8; size].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            moved: false,
            counters,
        }
    }

    /// Copies from `r` to `w` until both would block (`Pending`), or until EOF (then shuts the
    /// writer down: `Ready(Ok)`) or an error.
    fn poll<R, W>(&mut self, cx: &mut Context<'_>, r: &mut R, w: &mut W) -> Poll<Result<(), Side>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.start < self.end {
                match Pin::new(&mut *w).poll_write(cx, &self.buf[self.start..self.end]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        self.start += n;
                        if self.start == self.end {
                            for c in self.counters {
                                c.fetch_add(self.end as u64, Ordering::Relaxed);
                            }
                        }
                        continue;
                    }
                    Poll::Ready(_) => return Poll::Ready(Err(Side::Writer)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.eof {
                // Errors here change nothing: the session ends when the other side closes.
                return Pin::new(&mut *w).poll_shutdown(cx).map(|_| Ok(()));
            }
            let mut read = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut *r).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        self.eof = true;
                    } else {
                        self.moved = true;
                        self.start = 0;
                        self.end = n;
                    }
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Err(Side::Reader)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
