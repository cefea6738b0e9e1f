//! Accept loops. The process-wide `maxconn` is a semaphore taken before `accept`: when it is
//! exhausted the loop stops accepting and new clients wait in the kernel's backlog.

use crate::config::Keepalive;
use crate::error::ProxyError;
use crate::session::{self, ListenerCtx};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tracing::warn;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a listening socket serves.
#[derive(Debug, Clone, Copy)]
pub enum ListenFor<'a> {
    /// PostgreSQL clients: `TCP_NODELAY` and the keepalive settings are set on the listening
    /// socket, which Linux copies to every accepted socket, so a client connection costs no
    /// `setsockopt` of its own.
    Clients(Option<&'a Keepalive>),
    /// The stats page.
    Http,
}

/// Binds a listening socket with a large backlog.
pub fn bind(
    addr: SocketAddr,
    key: String,
    purpose: ListenFor<'_>,
) -> Result<TcpListener, ProxyError> {
    let fail = |source| ProxyError::Bind {
        addr,
        key: key.clone(),
        source,
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(fail)?;
    socket.set_reuseaddr(true).map_err(fail)?;
    if let ListenFor::Clients(keepalive) = purpose {
        socket.set_nodelay(true).map_err(fail)?;
        defer_accept(&socket).map_err(fail)?;
        if let Some(k) = keepalive {
            socket2::SockRef::from(&socket)
                .set_tcp_keepalive(&session::keepalive_params(k))
                .map_err(fail)?;
        }
    }
    socket.bind(addr).map_err(fail)?;
    socket.listen(4096).map_err(fail)
}

/// How long the kernel holds a connection whose client has not spoken yet before handing it
/// over anyway.
const DEFER_ACCEPT_SECS: libc::c_int = 1;

/// `TCP_DEFER_ACCEPT`: PostgreSQL clients speak first, so `accept` returns once the
/// client's first bytes are there, which spares every session a wake-up to wait for them.
// unsafe: one libc call (see SAFETY below); neither std nor socket2 sets this option.
#[allow(unsafe_code)]
fn defer_accept(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let secs = DEFER_ACCEPT_SECS;
    // SAFETY: a valid socket descriptor and a c_int option value of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Accepts clients for ever, one task per session.
pub async fn accept_loop(listener: TcpListener, ctx: Arc<ListenerCtx>, clients: Arc<Semaphore>) {
    loop {
        let Ok(permit) = clients.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let ctx = ctx.clone();
                // Two kinds of task: a pooled client's holds none of the plain path's states.
                match ctx.pool.clone() {
                    // The permit goes with the client: a parked client has no task.
                    Some(pc) => tokio::spawn(session::serve_pooled(ctx, pc, stream, peer, permit)),
                    None => tokio::spawn(async move {
                        session::serve(ctx, stream, peer).await;
                        drop(permit);
                    }),
                };
            }
            Err(e) => {
                warn!(listener = %ctx.cfg.name, "accept failed: {e}");
                drop(permit);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn silent_clients_are_still_accepted() {
        let l = bind(
            "127.0.0.1:0".parse().unwrap(),
            "test".into(),
            ListenFor::Clients(None),
        )
        .unwrap();
        let addr = l.local_addr().unwrap();
        let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Held by the kernel until the defer period ends, then handed over.
        let accepted = tokio::time::timeout(Duration::from_secs(10), l.accept()).await;
        assert!(matches!(accepted, Ok(Ok(_))), "{accepted:?}");
    }

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_and_keepalive() {
        let k = Keepalive {
            idle: Duration::from_secs(33),
            interval: Duration::from_secs(7),
            count: 4,
        };
        let l = bind(
            "127.0.0.1:0".parse().unwrap(),
            "test".into(),
            ListenFor::Clients(Some(&k)),
        )
        .unwrap();
        let addr = l.local_addr().unwrap();
        // The client speaks first, as PostgreSQL clients do (TCP_DEFER_ACCEPT waits for it).
        let client = async {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut c, b"x")
                .await
                .unwrap();
            c
        };
        let (_c, accepted) = tokio::join!(client, l.accept());
        let (s, _) = accepted.unwrap();
        assert!(s.nodelay().unwrap());
        let sock = socket2::SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), k.idle);
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), k.interval);
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), k.count);
    }
}
