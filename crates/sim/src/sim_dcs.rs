//! The agent's DCS client in the simulated network: pgherd's in-memory store
//! (`pgherd_dcs::MemoryDcs`, etcd's semantics: revisions, create-if-absent, compare-and-set,
//! a lease per client) behind a network that delays and loses messages and can cut a node
//! (or everyone) off. Like the etcd client, an operation retries for `retry_timeout` and
//! then fails with `Unavailable`; a request may land although its reply is lost (the retry
//! then meets its own earlier write, as with etcd).

use crate::world::{lock, thawed, Shared};
use crate::Time;
use async_trait::async_trait;
use pgherd_dcs::memory::MemoryDcs;
use pgherd_dcs::{Cluster, Dcs, DcsError, MemberData, Status, SyncState};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The budget of an operator's (REST API, control command) DCS call.
const OPERATOR_RETRY: Duration = Duration::from_secs(5);
/// Shortest deadline of a single request (the etcd client's).
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) struct SimDcs {
    world: Shared,
    /// The node whose network the requests cross; `None`: an operator outside every fault.
    node: Option<usize>,
    inner: MemoryDcs,
    store: pgherd_dcs::memory::MemoryStore,
    retry: Duration,
}

impl SimDcs {
    /// The DCS client of node `n`'s agent (member mode: a lease, member and leader keys).
    pub fn member(world: Shared, n: usize, settings: &pgherd_ha::Settings) -> SimDcs {
        let (store, layout, name) = {
            let w = lock(&world);
            (w.store.clone(), w.layout.clone(), w.nodes[n].name.clone())
        };
        SimDcs {
            inner: MemoryDcs::new(
                store.clone(),
                layout,
                Some(name),
                Duration::from_millis(settings.ttl),
            ),
            store,
            world,
            node: Some(n),
            retry: Duration::from_millis(settings.retry_timeout),
        }
    }

    /// A client without a member name (a REST API's or a control command's), crossing node
    /// `via`'s network (`None`: outside every fault).
    pub fn operator(world: Shared, via: Option<usize>) -> SimDcs {
        let (store, layout) = {
            let w = lock(&world);
            (w.store.clone(), w.layout.clone())
        };
        SimDcs {
            inner: MemoryDcs::new(store.clone(), layout, None, Duration::from_secs(30)),
            store,
            world,
            node: via,
            retry: OPERATOR_RETRY,
        }
    }

    fn request_timeout(&self) -> Duration {
        (self.retry / 3).max(MIN_REQUEST_TIMEOUT)
    }

    /// One message's trip: `Some(delay)` when it arrives, `None` when it is lost (or nobody
    /// can reach etcd).
    fn trip(&self) -> Option<Time> {
        let mut w = lock(&self.world);
        match self.node {
            None => (w.dcs_outages == 0).then(|| w.rng.range(1, 5)),
            Some(n) if w.dcs_reachable(n) => w.net_delay(n),
            Some(_) => None,
        }
    }

    fn reachable(&self) -> bool {
        let w = lock(&self.world);
        match self.node {
            None => w.dcs_outages == 0,
            Some(n) => w.dcs_reachable(n),
        }
    }

    async fn paused(&self) {
        if let Some(n) = self.node {
            thawed(&self.world, n).await;
        }
    }

    fn unavailable(doing: &'static str, tries: u32) -> DcsError {
        DcsError::Unavailable {
            endpoints: "sim-etcd".into(),
            doing,
            cause: format!("no answer after {tries} attempt(s) within retry_timeout").into(),
        }
    }
}

/// One DCS operation with the etcd client's retries: the request travels, `$op` is applied
/// at etcd, the reply travels back. A lost request or reply costs a request timeout; the
/// budget is `retry_timeout` from the call.
macro_rules! call {
    ($self:ident, $doing:expr, $op:expr) => {{
        let deadline = Instant::now() + $self.retry;
        let mut tries = 0;
        loop {
            $self.paused().await;
            if Instant::now() >= deadline {
                break Err(SimDcs::unavailable($doing, tries));
            }
            tries += 1;
            let wait_out = deadline.min(Instant::now() + $self.request_timeout());
            let Some(there) = $self.trip() else {
                tokio::time::sleep_until(wait_out).await;
                continue;
            };
            tokio::time::sleep(Duration::from_millis(there)).await;
            if !$self.reachable() {
                tokio::time::sleep_until(wait_out).await;
                continue;
            }
            let before = $self.store.revision();
            let result = $op;
            {
                let mut w = lock(&$self.world);
                if $self.store.revision() != before {
                    w.notify_watchers();
                }
                w.changed();
            }
            let Some(back) = $self.trip() else {
                tokio::time::sleep_until(wait_out).await;
                continue;
            };
            tokio::time::sleep(Duration::from_millis(back)).await;
            $self.paused().await;
            break result;
        }
    }};
}

#[async_trait]
impl Dcs for SimDcs {
    async fn get_cluster(&self) -> Result<Cluster, DcsError> {
        call!(self, "reading the cluster", self.inner.get_cluster().await)
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        call!(
            self,
            "writing the member key",
            self.inner.touch_member(data).await
        )
    }

    async fn attempt_to_acquire_leader(&self) -> Result<bool, DcsError> {
        call!(
            self,
            "acquiring the leader key",
            self.inner.attempt_to_acquire_leader().await
        )
    }

    async fn update_leader(&self) -> Result<bool, DcsError> {
        call!(
            self,
            "refreshing the leader key",
            self.inner.update_leader().await
        )
    }

    async fn delete_leader(&self) -> Result<(), DcsError> {
        call!(
            self,
            "deleting the leader key",
            self.inner.delete_leader().await
        )
    }

    async fn claim_initialize(&self) -> Result<bool, DcsError> {
        call!(
            self,
            "creating the initialize key",
            self.inner.claim_initialize().await
        )
    }

    async fn write_initialize(&self, sysid: &str) -> Result<(), DcsError> {
        call!(
            self,
            "writing the initialize key",
            self.inner.write_initialize(sysid).await
        )
    }

    async fn cancel_initialization(&self) -> Result<(), DcsError> {
        call!(
            self,
            "deleting the initialize key",
            self.inner.cancel_initialization().await
        )
    }

    async fn set_config_value(&self, value: &str, index: Option<i64>) -> Result<bool, DcsError> {
        call!(
            self,
            "writing the config key",
            self.inner.set_config_value(value, index).await
        )
    }

    async fn set_failover(
        &self,
        request: &pgherd_dcs::Failover,
        index: Option<i64>,
    ) -> Result<bool, DcsError> {
        call!(
            self,
            "writing the failover key",
            self.inner.set_failover(request, index).await
        )
    }

    async fn set_sync_state(
        &self,
        value: &SyncState,
        index: Option<i64>,
    ) -> Result<bool, DcsError> {
        call!(
            self,
            "writing the sync key",
            self.inner.set_sync_state(value, index).await
        )
    }

    async fn delete_sync_state(&self, index: Option<i64>) -> Result<bool, DcsError> {
        call!(
            self,
            "deleting the sync key",
            self.inner.delete_sync_state(index).await
        )
    }

    async fn write_status(&self, value: &Status) -> Result<(), DcsError> {
        call!(
            self,
            "writing the status key",
            self.inner.write_status(value).await
        )
    }

    async fn write_failsafe(
        &self,
        topology: &pgherd_dcs::FailsafeTopology,
    ) -> Result<(), DcsError> {
        call!(
            self,
            "writing the failsafe key",
            self.inner.write_failsafe(topology).await
        )
    }

    async fn set_history_value(&self, value: &str) -> Result<(), DcsError> {
        call!(
            self,
            "writing the history key",
            self.inner.set_history_value(value).await
        )
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        call!(
            self,
            "deleting the cluster",
            self.inner.delete_cluster().await
        )
    }

    async fn put_ephemeral(&self, relative_key: &str, value: &str) -> Result<(), DcsError> {
        call!(
            self,
            "writing an ephemeral key",
            self.inner.put_ephemeral(relative_key, value).await
        )
    }

    async fn set_ttl(&self, ttl: Duration) {
        self.inner.set_ttl(ttl).await;
    }

    async fn release_lease(&self) -> Result<(), DcsError> {
        call!(self, "revoking the lease", self.inner.release_lease().await)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        match self.node {
            Some(n) => lock(&self.world).nodes[n].watch.subscribe(),
            None => self.inner.subscribe(),
        }
    }
}
