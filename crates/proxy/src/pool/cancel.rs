//! Cancel requests: each pooled client gets a proxy-made `BackendKeyData`; a `CancelRequest`
//! carrying it is sent, with that server's own key, to the server connection the client is
//! running on at that moment (none: nothing runs, nothing to cancel).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

/// Where a client's query runs now: the server's address and its cancel key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub addr: String,
    pub pid: u32,
    pub secret: u32,
}

type Slot = Arc<Mutex<Option<Running>>>;

/// The proxy's cancel keys (shared by every pooled listener: a client may send its cancel to
/// any of them).
#[derive(Default)]
pub struct Cancels {
    keys: Mutex<HashMap<(u32, u32), Slot>>,
}

/// A client's registration; removed on drop.
pub struct CancelKey {
    pub pid: u32,
    pub secret: u32,
    slot: Slot,
    cancels: Arc<Cancels>,
}

impl CancelKey {
    /// Records where the client's queries run now (`None`: between transactions).
    pub fn set(&self, running: Option<Running>) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = running;
    }
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.cancels
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(self.pid, self.secret));
    }
}

impl Cancels {
    /// A new random key, unique among the live ones.
    pub fn register(self: &Arc<Self>) -> CancelKey {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let (pid, secret): (u32, u32) = rand::random();
            if pid == 0 || keys.contains_key(&(pid, secret)) {
                continue;
            }
            let slot = Slot::default();
            keys.insert((pid, secret), slot.clone());
            return CancelKey {
                pid,
                secret,
                slot,
                cancels: self.clone(),
            };
        }
    }

    /// Forwards a client's `CancelRequest` (best effort, as PostgreSQL's own).
    pub async fn forward(&self, pid: u32, secret: u32, wait: Duration) {
        let running = {
            let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.get(&(pid, secret))
                .and_then(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
        };
        let Some(r) = running else {
            debug!("cancel request for no running query");
            return;
        };
        let mut msg = bytes::BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(
            r.pid as i32,
            r.secret as i32,
            &mut msg,
        );
        let sent = tokio::time::timeout(wait, async {
            let mut s = TcpStream::connect(&r.addr).await?;
            s.write_all(&msg).await?;
            s.shutdown().await
        })
        .await;
        debug!(addr = %r.addr, ok = matches!(sent, Ok(Ok(()))), "cancel request forwarded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn forwards_to_the_running_server_with_its_key() {
        let cancels = Arc::new(Cancels::default());
        let key = cancels.register();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        // Nothing running: nothing sent.
        cancels
            .forward(key.pid, key.secret, Duration::from_secs(5))
            .await;
        key.set(Some(Running {
            addr,
            pid: 42,
            secret: 7,
        }));
        let (_, accepted) = tokio::join!(
            cancels.forward(key.pid, key.secret, Duration::from_secs(5)),
            l.accept()
        );
        let mut s = accepted.unwrap().0;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        let mut expected = vec![0, 0, 0, 16];
        expected.extend(80_877_102u32.to_be_bytes());
        expected.extend(42u32.to_be_bytes());
        expected.extend(7u32.to_be_bytes());
        assert_eq!(got, expected);
        // A wrong key or a gone client: nothing.
        let (pid, secret) = (key.pid, key.secret);
        drop(key);
        assert!(cancels.keys.lock().unwrap().get(&(pid, secret)).is_none());
    }
}
