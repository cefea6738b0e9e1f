//! Accept loops. The process-wide `maxconn` is a semaphore taken before `accept`: when it is
//! exhausted the loop stops accepting and new clients wait in the kernel's backlog.

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

/// Binds a listening socket with a large backlog.
pub fn bind(addr: SocketAddr, key: String) -> Result<TcpListener, ProxyError> {
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
            Ok((stream, _peer)) => {
                session::tune(&stream, ctx.keepalive.as_ref());
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    session::serve(ctx, stream).await;
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
