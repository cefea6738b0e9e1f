//! etcd v3 backend over native gRPC; the stored data is identical to what Patroni's etcd3
//! client (through etcd's gRPC-JSON gateway) writes. The client is pgherd's own: hand-written
//! protobuf messages ([`wire`]) sent with tonic ([`client`]), so building needs no `protoc`.
//!
//! * **Connection** ([`connection`]): to one endpoint at a time, built lazily by the first
//!   operation (authenticating when `etcd3.username` is set); after a transport error or a
//!   timed-out request the connection is dropped and the next endpoint of the list is used. So
//!   [`EtcdDcs::new`] needs neither a reachable etcd nor a tokio runtime, a dead endpoint costs
//!   one failed try, and an etcd restart is survived without intervention. A token etcd refuses
//!   (expired) is replaced by authenticating again.
//! * **Retries** ([`retry`]): every operation gets a budget of `retry_timeout` from the moment it
//!   is called. Each request has its own deadline (`max(retry_timeout / 3, 1 s)`, capped by what
//!   is left of the budget), connecting and authenticating included; transport errors,
//!   `Unavailable`, `DeadlineExceeded` and similar are retried with exponential backoff (50 ms
//!   doubling up to 500 ms). When the budget is spent the caller gets [`DcsError::Unavailable`]
//!   naming the endpoints, the attempts and the last error. Steps of one operation (waiting for
//!   the lease lock, keepalive, then the write) share the budget, so no call outlives
//!   `retry_timeout` by more than a few milliseconds, whatever etcd does.
//! * **Lease** ([`lease`]): one lease of `ttl` per client, granted lazily by the first operation
//!   that needs it, kept alive once per `touch_member`/`attempt_to_acquire_leader`/
//!   `update_leader`/`put_ephemeral` call, re-granted when etcd reports it gone.
//! * **Watch** ([`watch`]): a background task started by the first [`Dcs::subscribe`] call
//!   (which must run inside a tokio runtime) keeps one prefix watch open, resumes it from the
//!   last seen revision after errors, and bumps the change counter once per event. The task is
//!   aborted when the [`EtcdDcs`] is dropped.
//!
//! Every request asks for a member with a leader (`hasleader` metadata): a member cut off from
//! the quorum fails our requests and cancels our watch instead of serving stale data, and we
//! retry on another endpoint.
//!
//! Dropping an [`EtcdDcs`] does not revoke its lease (that needs a round trip): call
//! [`Dcs::release_lease`] at clean shutdown, otherwise the member and leader keys expire after
//! `ttl`.

mod client;
mod connection;
mod lease;
mod retry;
mod settings;
pub(crate) mod watch;
mod wire;

pub use settings::EtcdSettings;

use crate::{Cluster, Dcs, DcsError, Failover, KeyLayout, MemberData, Status, SyncState};
use async_trait::async_trait;
use connection::{lock, Connection};
use lease::LeaseState;
use retry::MIN_REQUEST_TIMEOUT;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use wire::{prefix_end, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp};
use wire::{TxnRequest, TxnResponse};

/// A [`Dcs`] backed by etcd v3. See the module documentation for connection, retry, lease and
/// watch behaviour.
pub struct EtcdDcs {
    conn: Arc<Connection>,
    layout: KeyLayout,
    /// `None`: ctl mode (no member key, no leader race).
    name: Option<String>,
    retry_timeout: Duration,
    request_timeout: Duration,
    /// The ttl of the next lease; [`Dcs::set_ttl`] changes it without waiting for the lease.
    ttl: Mutex<Duration>,
    /// Serialises every lease-using operation so that concurrent callers never grant two leases.
    lease: tokio::sync::Mutex<LeaseState>,
    /// `(value, lease)` of our last successful member write, to skip identical rewrites.
    member_written: Mutex<Option<(String, i64)>>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    watcher: Mutex<Option<watch::AbortOnDrop>>,
}

impl EtcdDcs {
    /// Validates the settings and reads the TLS files; does not contact etcd.
    /// `member_name: None` is ctl mode: operations that need a member name are rejected.
    pub fn new(
        settings: EtcdSettings,
        layout: KeyLayout,
        member_name: Option<String>,
        ttl: Duration,
        retry_timeout: Duration,
    ) -> Result<EtcdDcs, DcsError> {
        let request_timeout = (retry_timeout / 3).max(MIN_REQUEST_TIMEOUT);
        let (targets, credentials) = settings.resolve(request_timeout)?;
        let (changes, _) = tokio::sync::watch::channel(0);
        Ok(EtcdDcs {
            conn: Arc::new(Connection::new(targets, credentials)),
            layout,
            name: member_name,
            retry_timeout,
            request_timeout,
            ttl: Mutex::new(ttl),
            lease: tokio::sync::Mutex::new(LeaseState::new()),
            member_written: Mutex::new(None),
            changes: Arc::new(changes),
            watcher: Mutex::new(None),
        })
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.retry_timeout
    }

    fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("ctl")
    }

    fn name(&self, doing: &'static str) -> Result<&str, DcsError> {
        self.name.as_deref().ok_or_else(|| DcsError::Rejected {
            doing,
            message: "this client has no member name (ctl mode)".to_string(),
        })
    }

    /// `Put` without a lease.
    async fn put(&self, doing: &'static str, key: String, value: String) -> Result<(), DcsError> {
        let req = PutRequest {
            key: key.into_bytes(),
            value: value.into_bytes(),
            lease: 0,
        };
        self.retry(doing, self.deadline(), |c| {
            let req = req.clone();
            async move { c.put(req).await }
        })
        .await?;
        Ok(())
    }

    /// One transaction, retried within the budget.
    async fn txn(&self, doing: &'static str, txn: TxnRequest) -> Result<TxnResponse, DcsError> {
        self.retry(doing, self.deadline(), |c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
        .map_err(DcsError::from)
    }

    /// `Txn(compare mod_revision == index) Put` with an index, a plain put without.
    async fn cas_put(
        &self,
        doing: &'static str,
        key: String,
        value: String,
        index: Option<i64>,
    ) -> Result<bool, DcsError> {
        let Some(index) = index else {
            return self.put(doing, key, value).await.map(|()| true);
        };
        let txn = TxnRequest::when(
            Compare::mod_revision(&key, index),
            RequestOp::put(&key, &value, 0),
            None,
        );
        Ok(self.txn(doing, txn).await?.succeeded)
    }

    /// `DeleteRange` of `key` (with `range_end`: of the range), retried within the budget.
    async fn delete(
        &self,
        doing: &'static str,
        key: String,
        range_end: Vec<u8>,
    ) -> Result<(), DcsError> {
        let req = DeleteRangeRequest {
            key: key.into_bytes(),
            range_end,
        };
        self.retry(doing, self.deadline(), |c| {
            let req = req.clone();
            async move { c.delete_range(req).await }
        })
        .await?;
        Ok(())
    }

    /// A transaction on our lease (see [`EtcdDcs::on_lease`]): `build(lease)` makes it.
    async fn txn_on_lease(
        &self,
        doing: &'static str,
        build: impl Fn(i64) -> TxnRequest,
    ) -> Result<(TxnResponse, i64), DcsError> {
        let mut leased = self.leased(doing).await?;
        self.on_lease(&mut leased, doing, |c, lease| {
            let txn = build(lease);
            async move { c.txn(txn).await }
        })
        .await
    }
}

#[async_trait]
impl Dcs for EtcdDcs {
    async fn get_cluster(&self) -> Result<Cluster, DcsError> {
        let prefix = self.layout.prefix();
        let req = RangeRequest {
            range_end: prefix_end(prefix.as_bytes()),
            key: prefix.into_bytes(),
            serializable: true,
        };
        let resp = self
            .retry("reading the cluster", self.deadline(), |c| {
                let req = req.clone();
                async move { c.range(req).await }
            })
            .await?;
        let revision = resp.header.map(|h| h.revision).unwrap_or_default();
        let rows: Vec<(String, String, i64, i64)> = resp
            .kvs
            .into_iter()
            .filter_map(|kv| {
                let key = String::from_utf8_lossy(&kv.key);
                let relative = self.layout.relative(&key)?.to_string();
                let value = String::from_utf8_lossy(&kv.value).into_owned();
                Some((relative, value, kv.mod_revision, kv.lease))
            })
            .collect();
        if let Some(name) = &self.name {
            // Our member key changed behind our back (e.g. `remove`): rewrite it next time.
            let relative = format!("members/{name}");
            let stored = rows
                .iter()
                .find(|r| r.0 == relative)
                .map(|r| (r.1.as_str(), r.3));
            let mut written = lock(&self.member_written);
            if written.as_ref().map(|(v, l)| (v.as_str(), *l)) != stored {
                *written = None;
            }
        }
        Ok(Cluster::from_rows(
            rows.iter()
                .map(|(k, v, index, lease)| (k.as_str(), v.as_str(), *index, *lease)),
            revision,
        ))
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        const DOING: &str = "writing the member key";
        let key = self.layout.member(self.name(DOING)?);
        let value = data.to_json();
        let mut leased = self.leased(DOING).await?;
        if lock(&self.member_written).as_ref() == Some(&(value.clone(), leased.lease)) {
            return Ok(());
        }
        let written = self
            .on_lease(&mut leased, DOING, |c, lease| {
                let req = PutRequest {
                    key: key.clone().into_bytes(),
                    value: value.clone().into_bytes(),
                    lease,
                };
                async move { c.put(req).await }
            })
            .await;
        // After a failure the key may hold this value or the previous one (a timed-out write
        // can still land): write it again next time either way.
        *lock(&self.member_written) = written.as_ref().ok().map(|(_, lease)| (value, *lease));
        written.map(|_| ())
    }

    async fn attempt_to_acquire_leader(&self) -> Result<bool, DcsError> {
        const DOING: &str = "acquiring the leader key";
        let name = self.name(DOING)?;
        let key = self.layout.leader();
        let (resp, lease) = self
            .txn_on_lease(DOING, |lease| {
                TxnRequest::when(
                    Compare::absent(&key),
                    RequestOp::put(&key, name, lease),
                    Some(RequestOp::get(&key)),
                )
            })
            .await?;
        if resp.succeeded {
            info!(member = name, lease, "acquired the leader key");
            return Ok(true);
        }
        // A try that timed out may have landed before we retried: the key is ours if it holds
        // our name on our lease (nobody else can attach keys to our lease).
        let holder = resp
            .first_range_kv()
            .map(|kv| (String::from_utf8_lossy(&kv.value).into_owned(), kv.lease));
        if holder.as_ref() == Some(&(name.to_string(), lease)) {
            info!(member = name, lease, "the leader key is already ours");
            return Ok(true);
        }
        info!(member = name, holder = ?holder.map(|h| h.0), "could not take the leader key: held by another member");
        Ok(false)
    }

    async fn update_leader(&self) -> Result<bool, DcsError> {
        const DOING: &str = "refreshing the leader key";
        let name = self.name(DOING)?;
        let key = self.layout.leader();
        // Re-putting also re-attaches the key after our lease was re-granted (e.g. set_ttl).
        let (resp, lease) = self
            .txn_on_lease(DOING, |lease| {
                TxnRequest::when(
                    Compare::value(&key, name),
                    RequestOp::put(&key, name, lease),
                    None,
                )
            })
            .await?;
        if resp.succeeded {
            debug!(member = name, lease, "leader key refreshed");
        } else {
            warn!(
                member = name,
                "the leader key is gone or held by another member"
            );
        }
        Ok(resp.succeeded)
    }

    async fn delete_leader(&self) -> Result<(), DcsError> {
        const DOING: &str = "deleting the leader key";
        let name = self.name(DOING)?;
        let key = self.layout.leader();
        let txn = TxnRequest::when(Compare::value(&key, name), RequestOp::delete(&key), None);
        if self.txn(DOING, txn).await?.succeeded {
            info!(member = name, "deleted the leader key");
        } else {
            debug!(member = name, "leader key not ours; nothing deleted");
        }
        Ok(())
    }

    async fn claim_initialize(&self) -> Result<bool, DcsError> {
        let key = self.layout.initialize();
        let txn = TxnRequest::when(Compare::absent(&key), RequestOp::put(&key, "", 0), None);
        Ok(self
            .txn("creating the initialize key", txn)
            .await?
            .succeeded)
    }

    async fn write_initialize(&self, sysid: &str) -> Result<(), DcsError> {
        let key = self.layout.initialize();
        self.put("writing the initialize key", key, sysid.to_string())
            .await
    }

    async fn cancel_initialization(&self) -> Result<(), DcsError> {
        let key = self.layout.initialize();
        self.delete("deleting the initialize key", key, Vec::new())
            .await
    }

    async fn set_config_value(&self, value: &str, index: Option<i64>) -> Result<bool, DcsError> {
        let key = self.layout.config();
        self.cas_put("writing the config key", key, value.to_string(), index)
            .await
    }

    async fn set_failover(&self, request: &Failover, index: Option<i64>) -> Result<bool, DcsError> {
        let key = self.layout.failover();
        self.cas_put("writing the failover key", key, request.to_json(), index)
            .await
    }

    async fn set_sync_state(
        &self,
        value: &SyncState,
        index: Option<i64>,
    ) -> Result<bool, DcsError> {
        let key = self.layout.sync();
        self.cas_put("writing the sync key", key, value.to_json(), index)
            .await
    }

    async fn delete_sync_state(&self, index: Option<i64>) -> Result<bool, DcsError> {
        const DOING: &str = "deleting the sync key";
        let key = self.layout.sync();
        let Some(index) = index else {
            return self.delete(DOING, key, Vec::new()).await.map(|()| true);
        };
        let txn = TxnRequest::when(
            Compare::mod_revision(&key, index),
            RequestOp::delete(&key),
            None,
        );
        Ok(self.txn(DOING, txn).await?.succeeded)
    }

    async fn write_status(&self, value: &Status) -> Result<(), DcsError> {
        let key = self.layout.status();
        self.put("writing the status key", key, value.to_json())
            .await
    }

    async fn write_failsafe(&self, topology: &crate::FailsafeTopology) -> Result<(), DcsError> {
        let key = self.layout.failsafe();
        self.put("writing the failsafe key", key, topology.to_json())
            .await
    }

    async fn set_history_value(&self, value: &str) -> Result<(), DcsError> {
        let key = self.layout.history();
        self.put("writing the history key", key, value.to_string())
            .await
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        let prefix = self.layout.prefix();
        let end = prefix_end(prefix.as_bytes());
        self.delete("deleting the cluster", prefix.clone(), end)
            .await?;
        info!(member = self.label(), prefix = %prefix, "deleted every key of the cluster");
        Ok(())
    }

    async fn put_ephemeral(&self, relative_key: &str, value: &str) -> Result<(), DcsError> {
        const DOING: &str = "writing an ephemeral key";
        let key = self.layout.key(relative_key);
        let mut leased = self.leased(DOING).await?;
        self.on_lease(&mut leased, DOING, |c, lease| {
            let req = PutRequest {
                key: key.clone().into_bytes(),
                value: value.as_bytes().to_vec(),
                lease,
            };
            async move { c.put(req).await }
        })
        .await?;
        Ok(())
    }

    async fn set_ttl(&self, ttl: Duration) {
        let mut current = lock(&self.ttl);
        if *current != ttl {
            info!(member = self.label(), old = ?*current, new = ?ttl, "ttl changed; the next write takes a new lease");
            *current = ttl;
        }
    }

    async fn release_lease(&self) -> Result<(), DcsError> {
        self.revoke_lease().await
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        let mut watcher = lock(&self.watcher);
        if watcher.is_none() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let task = runtime.spawn(watch::watch_prefix(
                        self.conn.clone(),
                        self.layout.prefix(),
                        self.changes.clone(),
                        self.request_timeout,
                    ));
                    *watcher = Some(watch::AbortOnDrop(task.abort_handle()));
                }
                Err(e) => warn!(
                    member = self.label(),
                    "cannot watch etcd outside a tokio runtime ({e}); changes will only be seen by polling"
                ),
            }
        }
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_is_offline() {
        // No runtime and nothing listening: construction must still work.
        let dcs = EtcdDcs::new(
            EtcdSettings {
                endpoints: vec!["http://127.0.0.1:1".into(), "127.0.0.1:2".into()],
                ..EtcdSettings::default()
            },
            KeyLayout::new("/service", "b"),
            Some("n1".into()),
            Duration::from_secs(30),
            Duration::from_secs(10),
        );
        let dcs = dcs.unwrap_or_else(|e| panic!("offline construction failed: {e}"));
        assert_eq!(dcs.conn.shown, "http://127.0.0.1:1,127.0.0.1:2");
        assert_eq!(dcs.request_timeout, Duration::from_secs_f64(10.0 / 3.0));
    }
}
