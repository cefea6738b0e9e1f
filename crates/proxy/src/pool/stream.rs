//! A client or server connection of a pooled listener, in clear or in TLS (tokio-rustls with
//! the ring provider): `tls: {cert, key}` on the listener terminates clients' TLS,
//! `server_tls: {mode, ca}` encrypts the proxy's server connections.

use crate::config::{ServerTlsMode, TlsFiles};
use bytes::BytesMut;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Spare room a client's read buffer gets before a read: what one `recv` takes in.
pub const CLIENT_READ: usize = 8192;

/// One connection, either way.
pub enum Stream {
    Plain(TcpStream),
    /// A client's TLS, terminated by the proxy.
    FromClient(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The proxy's TLS to a server.
    ToServer(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// An idle client's socket while the parking holds it (`pool::client::park`): reads and
    /// writes fail until it is given back.
    Parked,
}

fn parked() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the client is parked")
}

impl Stream {
    /// Writes all of `b` and pushes it out (TLS buffers records until flushed).
    pub async fn send(&mut self, b: &[u8]) -> io::Result<()> {
        self.write_all(b).await?;
        if !matches!(self, Stream::Plain(_)) {
            self.flush().await?;
        }
        Ok(())
    }

    /// Reads a client's next bytes into `buf` (0: the client closed). A clear client with
    /// nothing buffered — a pooled client between transactions, what most of them are most
    /// of the time — holds no buffer while it waits: the socket is waited on for
    /// readability and the buffer allocated once bytes are there. A partial message stays
    /// in `buf` and the rest is appended to it. (A TLS client keeps its buffer: its TLS
    /// state holds larger ones anyway.)
    pub async fn read_idle(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let Stream::Plain(tcp) = self else {
            buf.reserve(CLIENT_READ);
            return self.read_buf(buf).await;
        };
        if !buf.is_empty() {
            buf.reserve(CLIENT_READ);
            return tcp.read_buf(buf).await;
        }
        loop {
            *buf = BytesMut::new();
            // Not `readable()`: its waiter would be part of every idle client's task.
            std::future::poll_fn(|cx| tcp.poll_read_ready(cx)).await?;
            buf.reserve(CLIENT_READ);
            // `poll_read`, not `try_read_buf`: tokio clears the socket's readiness after a
            // short read, so waiting for the server's answer next does not first try a `recv`
            // on this client that fails with EAGAIN (one syscall per transaction, seen with
            // strace under `pgbench -S`).
            let read = {
                let mut read = std::pin::pin!(tcp.read_buf(buf));
                std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await
            };
            match read {
                Poll::Ready(read) => return read,
                // Readiness was stale: wait again, without the buffer.
                Poll::Pending => continue,
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::FromClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::ToServer(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Parked => Poll::Ready(Err(parked())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, b),
            Stream::FromClient(s) => Pin::new(s.as_mut()).poll_write(cx, b),
            Stream::ToServer(s) => Pin::new(s.as_mut()).poll_write(cx, b),
            Stream::Parked => Poll::Ready(Err(parked())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::FromClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::ToServer(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Parked => Poll::Ready(Err(parked())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::FromClient(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::ToServer(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Parked => Poll::Ready(Err(parked())),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The acceptor of a listener's `tls: {cert, key}`.
pub fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, String> {
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: no usable private key: {e}", files.key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs(&files.cert)?, key)
        .map_err(|e| {
            format!(
                "{}: certificate and key do not match: {e}",
                files.cert.display()
            )
        })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// How the proxy opens server connections.
#[derive(Clone)]
pub enum ServerTls {
    Disable,
    /// TLS when the server offers it (`prefer`) or always (`require`, no verification;
    /// `verify-full`, verified with the CA file and the server's address).
    Enabled {
        required: bool,
        connector: tokio_rustls::TlsConnector,
    },
}

/// The `server_tls` setting made usable.
pub fn server_tls(mode: ServerTlsMode, ca: Option<&Path>) -> Result<ServerTls, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier = match (mode, ca) {
        (ServerTlsMode::Disable, _) => return Ok(ServerTls::Disable),
        (ServerTlsMode::VerifyFull, Some(ca)) => {
            pgherd_tls::TrustStore::new(certs(ca)?, provider())
                .and_then(|t| t.server_verifier())
                .map_err(|e| format!("{}: {e}", ca.display()))?
        }
        (ServerTlsMode::VerifyFull, None) => return Err("verify-full needs ca".into()),
        _ => pgherd_tls::insecure_server_verifier(provider()),
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(ServerTls::Enabled {
        required: mode != ServerTlsMode::Prefer,
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
    })
}

/// Asks `stream`'s server for TLS (`SSLRequest`) and wraps the connection as `tls` says.
pub async fn to_server(
    mut stream: TcpStream,
    host: &str,
    tls: &ServerTls,
) -> Result<Stream, String> {
    let ServerTls::Enabled {
        required,
        connector,
    } = tls
    else {
        return Ok(Stream::Plain(stream));
    };
    let request = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    stream
        .write_all(&request)
        .await
        .map_err(|e| e.to_string())?;
    match stream.read_u8().await.map_err(|e| e.to_string())? {
        b'S' => {
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| format!("server name {host:?}: {e}"))?;
            let tls = connector
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            Ok(Stream::ToServer(Box::new(tls)))
        }
        b'N' if !required => Ok(Stream::Plain(stream)),
        b'N' => Err("the server does not accept TLS (server_tls requires it)".into()),
        other => Err(format!("unexpected answer {other:?} to SSLRequest")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::codec;
    use bytes::Buf;
    use futures::FutureExt;
    use pgherd_testkit::pki::Pki;

    /// A connected pair: the proxy's side as a clear [`Stream`], and the client.
    async fn pair() -> (Stream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (Stream::Plain(server), client)
    }

    /// Reads until `buf` holds `len` bytes.
    async fn read_to(s: &mut Stream, buf: &mut BytesMut, len: usize) {
        while buf.len() < len {
            assert!(s.read_idle(buf).await.unwrap() > 0, "closed early");
        }
    }

    #[tokio::test]
    async fn idle_reads_hold_no_buffer_and_keep_partial_messages() {
        let (mut s, mut client) = pair().await;
        let mut msg = BytesMut::new();
        codec::put_query(&mut msg, "select 1");
        let mut buf = BytesMut::with_capacity(CLIENT_READ);
        // Waiting with nothing buffered, the buffer's memory is given back.
        assert!(s.read_idle(&mut buf).now_or_never().is_none());
        assert_eq!(buf.capacity(), 0);
        // A message split in two: the first part stays and the rest is appended to it.
        client.write_all(&msg[..3]).await.unwrap();
        read_to(&mut s, &mut buf, 3).await;
        assert_eq!(codec::frame(&buf).unwrap(), None);
        client.write_all(&msg[3..]).await.unwrap();
        read_to(&mut s, &mut buf, msg.len()).await;
        assert_eq!(codec::frame(&buf).unwrap(), Some((b'Q', msg.len())));
        assert_eq!(&buf[..], &msg[..]);
        // A message larger than one read's room arrives whole, across reads.
        buf.advance(msg.len());
        let big = "x".repeat(3 * CLIENT_READ);
        let mut msg = BytesMut::new();
        codec::put_query(&mut msg, &big);
        client.write_all(&msg).await.unwrap();
        read_to(&mut s, &mut buf, msg.len()).await;
        assert_eq!(codec::frame(&buf).unwrap(), Some((b'Q', msg.len())));
        buf.advance(msg.len());
        // The client leaves: 0 bytes.
        drop(client);
        assert_eq!(s.read_idle(&mut buf).await.unwrap(), 0);
    }

    /// A server that answers an SSLRequest with `answer`, then (for `S`) speaks TLS and
    /// echoes "pong" to "ping".
    async fn server(answer: u8, acceptor: tokio_rustls::TlsAcceptor) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = [0u8; 8];
            s.read_exact(&mut req).await.unwrap();
            s.write_all(&[answer]).await.unwrap();
            if answer == b'S' {
                // A client that refuses the certificate ends the handshake.
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut ping = [0u8; 4];
                if tls.read_exact(&mut ping).await.is_ok() && &ping == b"ping" {
                    let _ = tls.write_all(b"pong").await;
                    let _ = tls.flush().await;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn tls_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(dir.path()).unwrap();
        let acceptor = acceptor(&TlsFiles {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
        })
        .unwrap();
        let verified = server_tls(ServerTlsMode::VerifyFull, Some(&pki.ca)).unwrap();
        let addr = server(b'S', acceptor.clone()).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut s = to_server(tcp, "127.0.0.1", &verified).await.unwrap();
        assert!(matches!(s, Stream::ToServer(_)));
        s.send(b"ping").await.unwrap();
        let mut pong = [0u8; 4];
        s.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"pong");
        // The certificate does not name this host: verify-full refuses.
        let addr = server(b'S', acceptor.clone()).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        assert!(to_server(tcp, "db.example.com", &verified).await.is_err());
        // A server without TLS: require refuses, prefer goes on in clear.
        let required = server_tls(ServerTlsMode::Require, None).unwrap();
        let addr = server(b'N', acceptor.clone()).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        assert!(to_server(tcp, "127.0.0.1", &required).await.is_err());
        let preferred = server_tls(ServerTlsMode::Prefer, None).unwrap();
        let addr = server(b'N', acceptor).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let s = to_server(tcp, "127.0.0.1", &preferred).await.unwrap();
        assert!(matches!(s, Stream::Plain(_)));
        assert!(acceptor_from_missing_files().is_err());
    }

    fn acceptor_from_missing_files() -> Result<tokio_rustls::TlsAcceptor, String> {
        acceptor(&TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        })
    }
}
