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
        if let Some(k) = keepalive {
            socket2::SockRef::from(&socket)
                .set_tcp_keepalive(&session::keepalive_params(k))
                .map_err(fail)?;
        }
    }
    socket.bind(addr).map_err(fail)?;
    socket.listen(4096).map_err(fail)
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
                tokio::spawn(async move {
                    session::serve(ctx, stream, peer).await;
                    drop(permit);
                });
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
        let (_c, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        let (s, _) = accepted.unwrap();
        assert!(s.nodelay().unwrap());
        let sock = socket2::SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), k.idle);
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), k.interval);
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), k.count);
    }
}
