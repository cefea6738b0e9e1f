//! In-memory backend, for unit tests of the agent loop and simulation only.
//!
//! It follows the etcd backend's semantics: a global revision counter, `mod_revision` CAS,
//! create-if-absent races, one lease per client holding its member and leader keys, and change
//! notifications. Time passes only when the caller says so: a lease expires when a test calls
//! [`MemoryStore::expire_session`], or when a simulation calls [`MemoryStore::expire_due`]
//! with a time past the lease's last keepalive plus its ttl (tokio's clock, virtual in the
//! simulator). Subscribers are notified of changes made by any client of the store.

use crate::{Cluster, Dcs, DcsError, Failover, KeyLayout, MemberData, Status, SyncState};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A store shared by every [`MemoryDcs`] of a test (clones share the same data).
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<StoreState>>,
    /// Bumped once per changed key; shared by every client of the store.
    changes: Arc<watch::Sender<u64>>,
}

#[derive(Default)]
struct StoreState {
    revision: i64,
    keys: BTreeMap<String, Entry>,
    /// Live leases.
    leases: BTreeMap<i64, LeaseState>,
    last_lease: i64,
    unavailable: bool,
}

struct LeaseState {
    /// The member owning it (`None`: a ctl-mode client).
    owner: Option<String>,
    ttl: Duration,
    /// Last keepalive (grant included): the lease lives until `kept_alive + ttl`.
    kept_alive: Instant,
}

struct Entry {
    value: String,
    mod_revision: i64,
    lease: i64,
}

impl StoreState {
    fn put(&mut self, key: String, value: &str, lease: i64) {
        self.revision += 1;
        let entry = Entry {
            value: value.to_string(),
            mod_revision: self.revision,
            lease,
        };
        self.keys.insert(key, entry);
    }

    fn delete_where(&mut self, doomed: impl Fn(&str, &Entry) -> bool) -> bool {
        let before = self.keys.len();
        self.keys.retain(|k, e| !doomed(k, e));
        let deleted = before - self.keys.len();
        // etcd gives one revision to a whole DeleteRange.
        if deleted > 0 {
            self.revision += 1;
        }
        deleted > 0
    }

    fn delete(&mut self, key: &str) -> bool {
        self.delete_where(|k, _| k == key)
    }

    /// The current `(value, lease)` of `key`.
    fn holder(&self, key: &str) -> Option<(&str, i64)> {
        self.keys.get(key).map(|e| (e.value.as_str(), e.lease))
    }

    /// `mod_revision` of `key`, 0 when absent (as etcd compares it).
    fn mod_revision(&self, key: &str) -> i64 {
        self.keys.get(key).map_or(0, |e| e.mod_revision)
    }

    fn revoke(&mut self, lease: i64) {
        self.leases.remove(&lease);
        self.delete_where(|_, e| e.lease == lease);
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore {
            state: Arc::new(Mutex::new(StoreState::default())),
            changes: Arc::new(watch::Sender::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StoreState> {
        // Test-only store: a panicking test thread must not poison the others' view.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` atomically, failing like an unreachable etcd while set unavailable, and
    /// notifies subscribers of the keys it changed.
    fn with<T>(
        &self,
        doing: &'static str,
        f: impl FnOnce(&mut StoreState) -> T,
    ) -> Result<T, DcsError> {
        let mut state = self.lock();
        if state.unavailable {
            return Err(DcsError::Unavailable {
                endpoints: "memory".to_string(),
                doing,
                cause: "the test made the memory store unavailable".into(),
            });
        }
        let before = state.revision;
        let out = f(&mut state);
        let changed = state.revision - before;
        drop(state);
        if changed > 0 {
            self.changes
                .send_modify(|c| *c = c.wrapping_add(changed.unsigned_abs()));
        }
        Ok(out)
    }

    /// Expires every lease of `member`: its member key, and the leader key if it held it,
    /// vanish at once. Its client gets a new lease on its next write.
    pub fn expire_session(&self, member: &str) {
        let mut state = self.lock();
        let before = state.revision;
        let doomed: Vec<i64> = state
            .leases
            .iter()
            .filter(|(_, l)| l.owner.as_deref() == Some(member))
            .map(|(id, _)| *id)
            .collect();
        for lease in doomed {
            state.revoke(lease);
        }
        let changed = state.revision - before;
        drop(state);
        if changed > 0 {
            self.changes
                .send_modify(|c| *c = c.wrapping_add(changed.unsigned_abs()));
        }
    }

    /// Revokes every lease not kept alive within its ttl before `now`; returns the members
    /// whose lease expired.
    pub fn expire_due(&self, now: Instant) -> Vec<String> {
        let mut state = self.lock();
        let before = state.revision;
        let doomed: Vec<(i64, Option<String>)> = state
            .leases
            .iter()
            .filter(|(_, l)| l.kept_alive + l.ttl <= now)
            .map(|(id, l)| (*id, l.owner.clone()))
            .collect();
        for (lease, _) in &doomed {
            state.revoke(*lease);
        }
        let changed = state.revision - before;
        drop(state);
        if changed > 0 {
            self.changes
                .send_modify(|c| *c = c.wrapping_add(changed.unsigned_abs()));
        }
        doomed.into_iter().filter_map(|(_, owner)| owner).collect()
    }

    /// Every lease counts as kept alive at `now` (an etcd that was down extends its leases
    /// when it comes back).
    pub fn refresh_leases(&self, now: Instant) {
        for l in self.lock().leases.values_mut() {
            l.kept_alive = l.kept_alive.max(now);
        }
    }

    /// The store's revision (bumped by every change).
    pub fn revision(&self) -> i64 {
        self.lock().revision
    }

    /// While `true`, every operation fails with [`DcsError::Unavailable`].
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
    }

    /// The value of a full key (e.g. `/service/batman/leader`), for assertions.
    pub fn get(&self, key: &str) -> Option<String> {
        self.lock().keys.get(key).map(|e| e.value.clone())
    }
}

/// One client of a [`MemoryStore`], with its own lease.
pub struct MemoryDcs {
    store: MemoryStore,
    layout: KeyLayout,
    /// `None`: ctl mode, as for the etcd backend.
    name: Option<String>,
    session: Mutex<Session>,
}

struct Session {
    lease: Option<i64>,
    ttl: Duration,
}

impl MemoryDcs {
    pub fn new(
        store: MemoryStore,
        layout: KeyLayout,
        member_name: Option<String>,
        ttl: Duration,
    ) -> MemoryDcs {
        MemoryDcs {
            store,
            layout,
            name: member_name,
            session: Mutex::new(Session { lease: None, ttl }),
        }
    }

    fn name(&self, doing: &'static str) -> Result<&str, DcsError> {
        self.name.as_deref().ok_or_else(|| DcsError::Rejected {
            doing,
            message: "this client has no member name (ctl mode)".to_string(),
        })
    }

    fn session(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with a live lease of ours (the "keepalive"; granted if expired or never taken).
    fn with_lease<T>(
        &self,
        doing: &'static str,
        f: impl FnOnce(&mut StoreState, i64) -> T,
    ) -> Result<T, DcsError> {
        let mut session = self.session();
        self.store.with(doing, |state| {
            let now = Instant::now();
            let lease = match session.lease {
                Some(id) if state.leases.contains_key(&id) => id,
                _ => {
                    state.last_lease += 1;
                    let id = state.last_lease;
                    let lease = LeaseState {
                        owner: self.name.clone(),
                        ttl: session.ttl,
                        kept_alive: now,
                    };
                    state.leases.insert(id, lease);
                    session.lease = Some(id);
                    id
                }
            };
            if let Some(l) = state.leases.get_mut(&lease) {
                l.kept_alive = now;
            }
            f(state, lease)
        })
    }

    fn put(&self, doing: &'static str, key: String, value: &str) -> Result<(), DcsError> {
        self.store.with(doing, |s| s.put(key, value, 0))
    }

    fn cas_put(
        &self,
        doing: &'static str,
        key: String,
        value: &str,
        index: Option<i64>,
    ) -> Result<bool, DcsError> {
        self.store.with(doing, |s| {
            if index.is_some_and(|i| s.mod_revision(&key) != i) {
                return false;
            }
            s.put(key, value, 0);
            true
        })
    }
}

#[async_trait]
impl Dcs for MemoryDcs {
    async fn get_cluster(&self) -> Result<Cluster, DcsError> {
        let prefix = self.layout.prefix();
        self.store.with("reading the cluster", |s| {
            let rows = s
                .keys
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter_map(|(k, e)| {
                    Some((
                        self.layout.relative(k)?,
                        e.value.as_str(),
                        e.mod_revision,
                        e.lease,
                    ))
                });
            Cluster::from_rows(rows, s.revision)
        })
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        const DOING: &str = "writing the member key";
        let key = self.layout.member(self.name(DOING)?);
        let value = data.to_json();
        self.with_lease(DOING, |s, lease| {
            if s.holder(&key) != Some((value.as_str(), lease)) {
                s.put(key, &value, lease);
            }
        })
    }

    async fn attempt_to_acquire_leader(&self) -> Result<bool, DcsError> {
        const DOING: &str = "acquiring the leader key";
        let name = self.name(DOING)?;
        let key = self.layout.leader();
        self.with_lease(DOING, |s, lease| match s.holder(&key) {
            None => {
                s.put(key, name, lease);
                true
            }
            // Same outcome as the etcd backend when an earlier try landed.
            Some(holder) => holder == (name, lease),
        })
    }

    async fn update_leader(&self) -> Result<bool, DcsError> {
        const DOING: &str = "refreshing the leader key";
        let name = self.name(DOING)?;
        let key = self.layout.leader();
        self.with_lease(DOING, |s, lease| {
            if s.holder(&key).map(|h| h.0) != Some(name) {
                return false;
            }
            s.put(key, name, lease);
            true
        })
    }

    async fn delete_leader(&self) -> Result<(), DcsError> {
        const DOING: &str = "deleting the leader key";
        let name = self.name(DOING)?;
        let key = self.layout.leader();
        self.store.with(DOING, |s| {
            if s.holder(&key).map(|h| h.0) == Some(name) {
                s.delete(&key);
            }
        })
    }

    async fn claim_initialize(&self) -> Result<bool, DcsError> {
        let key = self.layout.initialize();
        self.store.with("creating the initialize key", |s| {
            if s.keys.contains_key(&key) {
                return false;
            }
            s.put(key, "", 0);
            true
        })
    }

    async fn write_initialize(&self, sysid: &str) -> Result<(), DcsError> {
        let key = self.layout.initialize();
        self.store
            .with("writing the initialize key", |s| s.put(key, sysid, 0))
    }

    async fn cancel_initialization(&self) -> Result<(), DcsError> {
        let key = self.layout.initialize();
        self.store
            .with("deleting the initialize key", |s| s.delete(&key))
            .map(|_| ())
    }

    async fn set_config_value(&self, value: &str, index: Option<i64>) -> Result<bool, DcsError> {
        self.cas_put("writing the config key", self.layout.config(), value, index)
    }

    async fn set_failover(&self, request: &Failover, index: Option<i64>) -> Result<bool, DcsError> {
        self.cas_put(
            "writing the failover key",
            self.layout.failover(),
            &request.to_json(),
            index,
        )
    }

    async fn set_sync_state(
        &self,
        value: &SyncState,
        index: Option<i64>,
    ) -> Result<bool, DcsError> {
        self.cas_put(
            "writing the sync key",
            self.layout.sync(),
            &value.to_json(),
            index,
        )
    }

    async fn delete_sync_state(&self, index: Option<i64>) -> Result<bool, DcsError> {
        let key = self.layout.sync();
        self.store.with("deleting the sync key", |s| {
            if index.is_some_and(|i| s.mod_revision(&key) != i) {
                return false;
            }
            s.delete(&key);
            true
        })
    }

    async fn write_status(&self, value: &Status) -> Result<(), DcsError> {
        let key = self.layout.status();
        self.put("writing the status key", key, &value.to_json())
    }

    async fn write_failsafe(&self, topology: &crate::FailsafeTopology) -> Result<(), DcsError> {
        self.put(
            "writing the failsafe key",
            self.layout.failsafe(),
            &topology.to_json(),
        )
    }

    async fn set_history_value(&self, value: &str) -> Result<(), DcsError> {
        self.put("writing the history key", self.layout.history(), value)
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        let prefix = self.layout.prefix();
        self.store
            .with("deleting the cluster", |s| {
                s.delete_where(|k, _| k.starts_with(&prefix))
            })
            .map(|_| ())
    }

    async fn put_ephemeral(&self, relative_key: &str, value: &str) -> Result<(), DcsError> {
        let key = self.layout.key(relative_key);
        self.with_lease("writing an ephemeral key", |s, lease| {
            s.put(key, value, lease)
        })
    }

    async fn set_ttl(&self, ttl: Duration) {
        let mut session = self.session();
        if session.ttl != ttl {
            // As in etcd: the old lease is left to expire; the next write takes a new one.
            session.ttl = ttl;
            session.lease = None;
        }
    }

    async fn release_lease(&self) -> Result<(), DcsError> {
        let mut session = self.session();
        let Some(lease) = session.lease else {
            return Ok(());
        };
        self.store.with("revoking the lease", |s| s.revoke(lease))?;
        session.lease = None;
        Ok(())
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.store.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> KeyLayout {
        KeyLayout::new("/service", "batman")
    }

    fn client(store: &MemoryStore, name: &str) -> MemoryDcs {
        MemoryDcs::new(
            store.clone(),
            layout(),
            Some(name.to_string()),
            Duration::from_secs(30),
        )
    }

    fn member(state: &str) -> MemberData {
        MemberData {
            conn_url: "postgres://127.0.0.1:5432/postgres".into(),
            api_url: "http://127.0.0.1:8008/patroni".into(),
            state: state.into(),
            version: "3.0.2".into(),
            ..MemberData::default()
        }
    }

    #[tokio::test]
    async fn exactly_one_member_wins_the_leader_race() {
        let store = MemoryStore::new();
        let (a, b) = (client(&store, "a"), client(&store, "b"));
        assert!(a.attempt_to_acquire_leader().await.unwrap());
        assert!(!b.attempt_to_acquire_leader().await.unwrap());
        // Acquiring again while holding it is a success (idempotent retry).
        assert!(a.attempt_to_acquire_leader().await.unwrap());
        let c = a.get_cluster().await.unwrap();
        assert_eq!(c.leader_name(), Some("a"));
        assert_eq!(store.get("/service/batman/leader").as_deref(), Some("a"));
        assert!(b.update_leader().await.is_ok_and(|ours| !ours));
        assert!(a.update_leader().await.unwrap());
    }

    #[tokio::test]
    async fn expired_session_drops_keys_and_update_leader_fails() {
        let store = MemoryStore::new();
        let a = client(&store, "a");
        a.touch_member(&member("running")).await.unwrap();
        assert!(a.attempt_to_acquire_leader().await.unwrap());
        let before = a.get_cluster().await.unwrap();
        assert_eq!(
            before.leader.as_ref().unwrap().session,
            before.members["a"].session
        );

        store.expire_session("a");
        let after = a.get_cluster().await.unwrap();
        assert!(after.leader.is_none());
        assert!(after.members.is_empty());
        assert!(!a.update_leader().await.unwrap());

        // The next write takes a new lease, and the race is open again.
        a.touch_member(&member("running")).await.unwrap();
        let again = a.get_cluster().await.unwrap();
        assert_ne!(again.members["a"].session, before.members["a"].session);
        let b = client(&store, "b");
        assert!(b.attempt_to_acquire_leader().await.unwrap());
        assert!(!a.attempt_to_acquire_leader().await.unwrap());
    }

    #[tokio::test]
    async fn touch_member_skips_identical_writes() {
        let store = MemoryStore::new();
        let a = client(&store, "a");
        a.touch_member(&member("running")).await.unwrap();
        let first = a.get_cluster().await.unwrap();
        a.touch_member(&member("running")).await.unwrap();
        assert_eq!(a.get_cluster().await.unwrap().revision, first.revision);
        a.touch_member(&member("stopped")).await.unwrap();
        let c = a.get_cluster().await.unwrap();
        assert_eq!(c.members["a"].data.state, "stopped");
        assert!(c.revision > first.revision);
    }

    #[tokio::test]
    async fn cas_writes_fail_on_a_stale_index() {
        let store = MemoryStore::new();
        let a = client(&store, "a");
        assert!(a.set_config_value(r#"{"ttl":30}"#, None).await.unwrap());
        let index = a.get_cluster().await.unwrap().config.unwrap().index;
        assert!(a
            .set_config_value(r#"{"ttl":20}"#, Some(index))
            .await
            .unwrap());
        assert!(!a
            .set_config_value(r#"{"ttl":10}"#, Some(index))
            .await
            .unwrap());
        assert_eq!(
            a.get_cluster().await.unwrap().config.unwrap().value["ttl"],
            20
        );

        assert!(a.set_failover(&Failover::none(), None).await.unwrap());
        let f = a.get_cluster().await.unwrap().failover.unwrap().index;
        assert!(!a
            .set_failover(
                &Failover {
                    leader: Some("a".into()),
                    ..Failover::none()
                },
                Some(f + 1)
            )
            .await
            .unwrap());
        assert!(a
            .set_failover(
                &Failover {
                    leader: Some("a".into()),
                    ..Failover::none()
                },
                Some(f)
            )
            .await
            .unwrap());

        let sync = SyncState::new("a", &["b".to_string()]);
        assert!(a.set_sync_state(&sync, None).await.unwrap());
        let s = a.get_cluster().await.unwrap().sync.unwrap();
        assert_eq!(s.value, sync);
        assert!(!a.set_sync_state(&sync, Some(s.index - 1)).await.unwrap());
        assert!(!a.delete_sync_state(Some(s.index - 1)).await.unwrap());
        assert!(a.delete_sync_state(Some(s.index)).await.unwrap());
        assert!(a.get_cluster().await.unwrap().sync.is_none());
    }

    #[tokio::test]
    async fn delete_leader_only_when_ours() {
        let store = MemoryStore::new();
        let (a, b) = (client(&store, "a"), client(&store, "b"));
        assert!(a.attempt_to_acquire_leader().await.unwrap());
        b.delete_leader().await.unwrap();
        assert_eq!(a.get_cluster().await.unwrap().leader_name(), Some("a"));
        a.delete_leader().await.unwrap();
        assert!(a.get_cluster().await.unwrap().leader.is_none());
    }

    #[tokio::test]
    async fn initialize_race_has_one_winner() {
        let store = MemoryStore::new();
        let (a, b) = (client(&store, "a"), client(&store, "b"));
        assert!(a.claim_initialize().await.unwrap());
        assert!(!b.claim_initialize().await.unwrap());
        a.write_initialize("7711336143377005909").await.unwrap();
        let c = b.get_cluster().await.unwrap();
        assert_eq!(c.sysid(), Some("7711336143377005909"));
        a.cancel_initialization().await.unwrap();
        assert!(b.claim_initialize().await.unwrap());
    }

    #[tokio::test]
    async fn unavailable_store_fails_every_operation() {
        let store = MemoryStore::new();
        let a = client(&store, "a");
        store.set_unavailable(true);
        assert!(matches!(
            a.get_cluster().await,
            Err(DcsError::Unavailable { .. })
        ));
        assert!(matches!(
            a.attempt_to_acquire_leader().await,
            Err(DcsError::Unavailable { .. })
        ));
        store.set_unavailable(false);
        assert!(a.attempt_to_acquire_leader().await.unwrap());
    }

    #[tokio::test]
    async fn release_lease_and_ttl_change() {
        let store = MemoryStore::new();
        let a = client(&store, "a");
        a.touch_member(&member("running")).await.unwrap();
        assert!(a.attempt_to_acquire_leader().await.unwrap());
        let old = a.get_cluster().await.unwrap().leader.unwrap().session;

        // A new ttl moves the leader key to a new lease on the next refresh.
        a.set_ttl(Duration::from_secs(10)).await;
        assert!(a.update_leader().await.unwrap());
        let moved = a.get_cluster().await.unwrap().leader.unwrap().session;
        assert_ne!(moved, old);

        a.touch_member(&member("running")).await.unwrap();
        a.release_lease().await.unwrap();
        let c = a.get_cluster().await.unwrap();
        assert!(c.leader.is_none());
        assert!(c.members.is_empty());
    }

    #[tokio::test]
    async fn ctl_mode_rejects_member_operations_and_subscribers_see_changes() {
        let store = MemoryStore::new();
        let ctl = MemoryDcs::new(store.clone(), layout(), None, Duration::from_secs(30));
        assert!(matches!(
            ctl.attempt_to_acquire_leader().await,
            Err(DcsError::Rejected { .. })
        ));
        let mut rx = ctl.subscribe();
        let a = client(&store, "a");
        a.set_failover(
            &Failover {
                leader: Some("a".into()),
                ..Failover::none()
            },
            None,
        )
        .await
        .unwrap();
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        ctl.delete_cluster().await.unwrap();
        assert!(rx.has_changed().unwrap());
        assert!(ctl.get_cluster().await.unwrap().failover.is_none());
    }
}
