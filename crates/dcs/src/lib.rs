//! The distributed configuration store (DCS) layer.
//!
//! Key layout and value formats are Patroni 3.0's (the key names under `/<namespace>/<scope>/`
//! and their JSON values), so patronictl, confd templates and vip-manager read a pgherd cluster
//! unchanged.
//! Backends implement [`Dcs`]; the HA engine only ever sees the [`Cluster`] snapshot.

#![forbid(unsafe_code)]

mod cluster;
mod error;
pub mod etcd;
mod failsafe;
mod keys;
pub mod memory;
mod open;
mod proxies;
mod values;
pub mod zookeeper;

pub use cluster::{Cluster, Leader, Member, Versioned};
pub use error::DcsError;
pub use failsafe::FailsafeTopology;
pub use keys::{slot_name_for_member, KeyLayout};
pub use open::open;
pub use proxies::{proxies_routing_to, proxy_key, ProxyRegistration};
pub use values::{
    history_from_json, history_to_json, Failover, HistoryEntry, MemberData, Role, Status,
    SyncState, REPLICATION_NOT_STREAMING, REPLICATION_STREAMING,
};

use async_trait::async_trait;
use std::time::Duration;

/// One agent's (or one client's) handle on the store.
///
/// Every method is one round trip (plus retries within `retry_timeout`); none blocks on the
/// others. A backend owns at most one lease of `ttl`; the member key and the leader key are
/// attached to it, so both vanish within `ttl` of the holder dying.
#[async_trait]
pub trait Dcs: Send + Sync {
    /// Reads the whole `<base>/` prefix in one request.
    async fn get_cluster(&self) -> Result<Cluster, DcsError>;

    /// Writes `members/<name>` on our lease (creating or refreshing the lease as needed).
    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError>;

    /// Atomically creates the leader key with our name if it is absent. `Ok(false)`: someone
    /// else holds it.
    async fn attempt_to_acquire_leader(&self) -> Result<bool, DcsError>;

    /// Keeps our lease alive and makes sure the leader key still holds our name.
    /// `Ok(false)`: the key is gone or belongs to another member (we are no longer leader).
    async fn update_leader(&self) -> Result<bool, DcsError>;

    /// Deletes the leader key only if it still holds our name.
    async fn delete_leader(&self) -> Result<(), DcsError>;

    /// Creates an empty `initialize` if absent, atomically (the bootstrap race): `Ok(false)`
    /// if it existed.
    async fn claim_initialize(&self) -> Result<bool, DcsError>;

    /// Overwrites `initialize` with the new cluster's system identifier (a bootstrap's end).
    async fn write_initialize(&self, sysid: &str) -> Result<(), DcsError>;

    /// Deletes `initialize` (a failed bootstrap).
    async fn cancel_initialization(&self) -> Result<(), DcsError>;

    /// Writes `config`; with `index`, only if its mod revision still equals `index`.
    async fn set_config_value(&self, value: &str, index: Option<i64>) -> Result<bool, DcsError>;

    /// Writes `failover` (`Failover::none()` withdraws a request); with `index`,
    /// compare-and-swap on its mod revision.
    async fn set_failover(&self, request: &Failover, index: Option<i64>) -> Result<bool, DcsError>;

    /// Writes `sync`; with `index`, compare-and-swap on its mod revision.
    async fn set_sync_state(&self, value: &SyncState, index: Option<i64>)
        -> Result<bool, DcsError>;

    /// Deletes `sync`; with `index`, only if unchanged.
    async fn delete_sync_state(&self, index: Option<i64>) -> Result<bool, DcsError>;

    /// Writes `status` (`{"optime":..,"slots":..}`).
    async fn write_status(&self, value: &Status) -> Result<(), DcsError>;

    /// Writes `failsafe` (no lease: it outlives the leader, as Patroni's).
    async fn write_failsafe(&self, topology: &FailsafeTopology) -> Result<(), DcsError>;

    /// Writes `history`.
    async fn set_history_value(&self, value: &str) -> Result<(), DcsError>;

    /// Deletes every key under `<base>/` (patronictl remove).
    async fn delete_cluster(&self) -> Result<(), DcsError>;

    /// Writes an arbitrary key under `<base>/` on our lease (used by proxies to register).
    async fn put_ephemeral(&self, relative_key: &str, value: &str) -> Result<(), DcsError>;

    /// Changes the lease TTL used from now on (a new lease is granted on the next write).
    async fn set_ttl(&self, ttl: Duration);

    /// Drops our lease: the member key (and leader key, if ours) vanish at once.
    async fn release_lease(&self) -> Result<(), DcsError>;

    /// A receiver that ticks whenever something under `<base>/` changes (leader key, failover,
    /// config, status, members). Wakes the HA loop early; the value is a change counter (one
    /// per changed key, our own writes included). The etcd backend starts its watch on the
    /// first call, which must be made inside a tokio runtime.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
}
