//! ZooKeeper backend, with Patroni 3.0's znode layout and semantics (docs/compat.md,
//! "ZooKeeper"): the same paths under `/<namespace>/<scope>/`, the same values, `leader`,
//! `members/<name>` and proxy registrations as EPHEMERAL znodes of our session, everything
//! else persistent. The client is the `zookeeper-client` crate, over plain TCP or, with
//! `zookeeper.use_ssl`, through in-process TLS forwarders ([`tls`]: rustls with ring, not the
//! crate's own TLS, which needs aws-lc).
//!
//! * **ACLs**: znodes are created open to anyone (kazoo's default), or with
//!   `zookeeper.set_acls`, with those `x509` ACLs (Patroni's `default_acl`), parents included.
//!
//! * **Session** ([`session`]): opened lazily by the first operation with a session timeout of
//!   `ttl` (as Patroni), detached (dropping a [`ZooKeeperDcs`] does not close it: its
//!   ephemeral znodes expire after `ttl`, like an etcd lease). A session the server expired, or
//!   one opened with another ttl ([`Dcs::set_ttl`]), is replaced by the next operation; our
//!   ephemeral znodes still owned by an older session of ours are taken over atomically (one
//!   multi-op: delete at its version, create ephemeral), so the leader key never disappears
//!   in between.
//! * **Retries**: every operation gets a budget of `retry_timeout`; each request has its own
//!   deadline (`max(retry_timeout / 3, 1 s)`, capped by the budget), connection loss and
//!   timeouts are retried with backoff, and when the budget is spent the caller gets
//!   [`DcsError::ZookeeperUnavailable`]. So no call outlives `retry_timeout`, whatever
//!   ZooKeeper does, and a leader cut off from ZooKeeper learns it within one HA cycle and
//!   demotes, before its session (of `ttl`) expires and another member can take the key.
//! * **Index**: the trait's `index` is the znode `version` (Patroni's CAS on config, sync and
//!   failover); a member's or leader's `session` is the znode's `ephemeralOwner`.
//! * **Watch** ([`watch`]): the first [`Dcs::subscribe`] starts a task holding one persistent
//!   recursive watch on the base znode.
//!
//! Differences from Patroni that no client can observe: `update_leader` returns false when
//! the leader znode is gone (Patroni re-creates it), and a member znode is updated in place
//! rather than deleted and re-created when its tags or state change (Patroni does that to fire
//! its child watches; pgherd's watch is recursive). `release_lease` deletes our ephemeral
//! znodes instead of restarting the session.

mod session;
mod tls;
mod watch;

use crate::etcd::watch::AbortOnDrop;
use crate::{
    Cluster, Dcs, DcsError, Failover, FailsafeTopology, KeyLayout, MemberData, Status, SyncState,
};
use async_trait::async_trait;
use futures::future::try_join_all;
use pgherd_config::{ZookeeperAcl, ZookeeperTls};
use session::{lock, Session, Sessions, Transport};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn};
use zookeeper_client as zk;

/// Where the store lives and how to reach it (see `pgherd_config::DcsSettings::Zookeeper`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZooKeeperSettings {
    /// `host:port` entries.
    pub hosts: Vec<String>,
    /// `use_ssl: true`: TLS to every host, with these files.
    pub tls: Option<ZookeeperTls>,
    /// `set_acls`: the `x509` ACL of every znode created (empty: open to anyone).
    pub acls: Vec<ZookeeperAcl>,
}

/// A `set_acls` entry as ZooKeeper's ACL: scheme `x509`, the principal, the permissions.
fn x509_acl(acl: &ZookeeperAcl) -> zk::Acl {
    let mut permission = zk::Permission::NONE;
    for (granted, bit) in [
        (acl.read, zk::Permission::READ),
        (acl.write, zk::Permission::WRITE),
        (acl.create, zk::Permission::CREATE),
        (acl.delete, zk::Permission::DELETE),
        (acl.admin, zk::Permission::ADMIN),
    ] {
        if granted {
            permission = permission | bit;
        }
    }
    zk::Acl::new(permission, zk::AuthId::new("x509", &acl.principal))
}

/// Children of the base znode that only hold other znodes.
const DIRECTORIES: [&str; 3] = ["members", "proxies", "optime"];

/// One row of the tree: relative key, value, version, ephemeral owner, mzxid.
type Row = (String, String, i64, i64, i64);

/// A [`Dcs`] backed by ZooKeeper. See the module documentation.
pub struct ZooKeeperDcs {
    sessions: Arc<Sessions>,
    layout: KeyLayout,
    /// `None`: ctl mode (no member key, no leader race).
    name: Option<String>,
    /// `(value, session)` of our last successful member write, to skip identical rewrites.
    member_written: Mutex<Option<(String, i64)>>,
    /// Ephemeral znodes written by `put_ephemeral` (deleted by `release_lease`).
    ephemerals: Mutex<BTreeSet<String>>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    watcher: Mutex<Option<AbortOnDrop>>,
}

/// The parent znode of `path`.
fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Creates `path` (`ephemeral` or persistent), and its missing parents (persistent, same
/// ACL), like kazoo's `makepath=True`.
async fn create(s: &Session, path: &str, data: &[u8], ephemeral: bool) -> Result<(), zk::Error> {
    let options = if ephemeral {
        s.ephemeral()
    } else {
        s.persistent()
    };
    match s.client.create(path, data, &options).await {
        Err(zk::Error::NoNode) => {
            s.client.mkdir(parent(path), &s.persistent()).await?;
            s.client.create(path, data, &options).await.map(|_| ())
        }
        other => other.map(|_| ()),
    }
}

/// Overwrites `path` (any version), creating it (persistent) if absent.
async fn set_or_create(s: &Session, path: &str, data: &[u8]) -> Result<(), zk::Error> {
    match s.client.set_data(path, data, None).await {
        Err(zk::Error::NoNode) => match create(s, path, data, false).await {
            Err(zk::Error::NodeExists) => s.client.set_data(path, data, None).await.map(|_| ()),
            other => other,
        },
        other => other.map(|_| ()),
    }
}

/// Writes the ephemeral `path` of our session: created if absent, updated if ours, taken over
/// in one multi-op (delete at the seen version, create) if an older session of ours (or of a
/// previous run of this member) still owns it. `Ok(false)`: it changed under us (try again).
async fn write_ephemeral(s: &Session, path: &str, data: &[u8]) -> Result<bool, zk::Error> {
    match s.client.check_stat(path).await? {
        None => match create(s, path, data, true).await {
            Ok(()) => Ok(true),
            Err(zk::Error::NodeExists) => Ok(false),
            Err(e) => Err(e),
        },
        Some(stat) if stat.ephemeral_owner == s.id => {
            match s.client.set_data(path, data, Some(stat.version)).await {
                Ok(_) => Ok(true),
                Err(zk::Error::NoNode | zk::Error::BadVersion) => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(stat) => take_over(s, path, data, stat.version).await,
    }
}

/// Replaces the znode at `path` (still at `version`) by an ephemeral one of our session,
/// atomically. `Ok(false)`: it changed in between.
async fn take_over(s: &Session, path: &str, data: &[u8], version: i32) -> Result<bool, zk::Error> {
    let mut multi = s.client.new_multi_writer();
    multi.add_delete(path, Some(version))?;
    multi.add_create(path, data, &s.ephemeral())?;
    match multi.commit().await {
        Ok(_) => Ok(true),
        Err(zk::MultiWriteError::OperationFailed {
            source: zk::Error::NoNode | zk::Error::BadVersion | zk::Error::NodeExists,
            ..
        }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletes `path` and everything under it (children first); absent znodes are fine.
async fn delete_tree(client: &zk::Client, path: &str) -> Result<(), zk::Error> {
    // Depth-first without recursion in async: collect the tree, delete deepest first.
    let mut order = vec![path.to_string()];
    let mut i = 0;
    while i < order.len() {
        match client.list_children(&order[i]).await {
            Ok(children) => {
                let base = order[i].clone();
                order.extend(children.into_iter().map(|c| format!("{base}/{c}")));
            }
            Err(zk::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
        i += 1;
    }
    for node in order.iter().rev() {
        match client.delete(node, None).await {
            Ok(()) | Err(zk::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads `path`: `None` when absent.
async fn get(client: &zk::Client, path: &str) -> Result<Option<(String, zk::Stat)>, zk::Error> {
    match client.get_data(path).await {
        Ok((data, stat)) => Ok(Some((String::from_utf8_lossy(&data).into_owned(), stat))),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Children of `path` (none when absent).
async fn children(client: &zk::Client, path: &str) -> Result<Vec<String>, zk::Error> {
    match client.list_children(path).await {
        Err(zk::Error::NoNode) => Ok(Vec::new()),
        other => other,
    }
}

/// The base znode's child `name` and, when it has children, theirs (`members/<name>`...).
async fn read_child(client: &zk::Client, base: &str, name: String) -> Result<Vec<Row>, zk::Error> {
    let path = format!("{base}/{name}");
    let Some((value, stat)) = get(client, &path).await? else {
        return Ok(Vec::new());
    };
    let row = |key: String, value: String, stat: &zk::Stat| {
        (
            key,
            value,
            i64::from(stat.version),
            stat.ephemeral_owner,
            stat.mzxid,
        )
    };
    let mut rows = Vec::new();
    let directory = DIRECTORIES.contains(&name.as_str()) || stat.num_children > 0;
    if stat.num_children > 0 {
        let grandchildren = children(client, &path).await?;
        let reads = grandchildren.iter().map(|g| {
            let path = format!("{path}/{g}");
            async move { get(client, &path).await }
        });
        for (g, node) in grandchildren.iter().zip(try_join_all(reads).await?) {
            if let Some((v, st)) = node {
                rows.push(row(format!("{name}/{g}"), v, &st));
            }
        }
    }
    // Patroni's ZooKeeper backend clears `sync` by writing `{}` (docs/compat.md): that is
    // no sync state, as a deleted key is for etcd.
    let cleared_sync = name == "sync"
        && serde_json::from_str::<SyncState>(&value)
            .is_ok_and(|s| s.leader.is_none() && s.standbys().is_empty());
    let empty_directory = directory && value.is_empty();
    if !empty_directory && !cleared_sync {
        rows.push(row(name, value, &stat));
    }
    Ok(rows)
}

impl ZooKeeperDcs {
    /// Validates the settings and reads the TLS files; does not contact ZooKeeper (the first
    /// operation does, inside a tokio runtime, and starts the TLS forwarders).
    /// `member_name: None` is ctl mode.
    pub fn new(
        settings: ZooKeeperSettings,
        layout: KeyLayout,
        member_name: Option<String>,
        ttl: Duration,
        retry_timeout: Duration,
    ) -> Result<ZooKeeperDcs, DcsError> {
        if settings.hosts.is_empty() {
            return Err(DcsError::Config(
                "zookeeper.hosts: no ZooKeeper server listed".to_string(),
            ));
        }
        let transport = match &settings.tls {
            None => Transport::Plain,
            Some(files) => {
                for host in &settings.hosts {
                    tls::server_name(host)?;
                }
                Transport::Tls {
                    hosts: settings.hosts.clone(),
                    config: tls::client_config(files)?,
                    forwarders: tokio::sync::OnceCell::new(),
                }
            }
        };
        let label = member_name.clone().unwrap_or_else(|| "ctl".to_string());
        let (changes, _) = tokio::sync::watch::channel(0);
        Ok(ZooKeeperDcs {
            sessions: Arc::new(Sessions::new(
                settings.hosts.join(","),
                transport,
                settings.acls.iter().map(x509_acl).collect(),
                label,
                ttl,
                retry_timeout,
            )),
            layout,
            name: member_name,
            member_written: Mutex::new(None),
            ephemerals: Mutex::new(BTreeSet::new()),
            changes: Arc::new(changes),
            watcher: Mutex::new(None),
        })
    }

    /// The id of the current session (`None` before the first operation or after it was
    /// lost): the `session` of our member and leader keys.
    pub async fn session_id(&self) -> Option<i64> {
        let deadline = tokio::time::Instant::now() + self.sessions.request_timeout();
        self.sessions.session(deadline).await.ok().map(|s| s.id)
    }

    fn name(&self, doing: &'static str) -> Result<&str, DcsError> {
        self.name.as_deref().ok_or_else(|| DcsError::Rejected {
            doing,
            message: "this client has no member name (ctl mode)".to_string(),
        })
    }

    async fn set_or_create(
        &self,
        doing: &'static str,
        path: String,
        value: String,
    ) -> Result<(), DcsError> {
        self.sessions
            .retry(doing, |s| {
                let (path, value) = (&path, &value);
                async move { set_or_create(&s, path, value.as_bytes()).await }
            })
            .await
    }

    /// With an index: `setData` at that version (`Ok(false)` if it moved on or the znode is
    /// gone); without: overwrite or create.
    async fn cas_put(
        &self,
        doing: &'static str,
        path: String,
        value: String,
        index: Option<i64>,
    ) -> Result<bool, DcsError> {
        let Some(index) = index else {
            return self.set_or_create(doing, path, value).await.map(|()| true);
        };
        let Ok(version) = i32::try_from(index) else {
            return Ok(false);
        };
        self.sessions
            .retry(doing, |s| {
                let (path, value) = (&path, &value);
                async move {
                    match s
                        .client
                        .set_data(path, value.as_bytes(), Some(version))
                        .await
                    {
                        Ok(_) => Ok(true),
                        Err(zk::Error::BadVersion | zk::Error::NoNode) => Ok(false),
                        Err(e) => Err(e),
                    }
                }
            })
            .await
    }

    /// Forgets the session after deleting the ephemeral znodes it owns (member, leader if
    /// ours, proxy registrations). `Ok(None)`: there was no session.
    async fn release(&self) -> Result<Option<i64>, zk::Error> {
        let Some(session) = self.sessions.drop_session().await else {
            return Ok(None);
        };
        let mut paths: Vec<String> = lock(&self.ephemerals).iter().cloned().collect();
        if let Some(name) = &self.name {
            paths.push(self.layout.member(name));
            paths.push(self.layout.leader());
        }
        for path in &paths {
            // Only znodes of this session: someone else's leader key stays.
            if let Some((_, st)) = get(&session.client, path).await? {
                if st.ephemeral_owner == session.id {
                    match session.client.delete(path, Some(st.version)).await {
                        Ok(()) | Err(zk::Error::NoNode | zk::Error::BadVersion) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(Some(session.id))
    }

    /// Writes an ephemeral znode of our session (see [`write_own`]).
    async fn put_own(&self, doing: &'static str, path: &str, value: &str) -> Result<i64, DcsError> {
        self.sessions
            .retry(doing, |s| async move { write_own(&s, path, value).await })
            .await
    }
}

/// [`write_ephemeral`], read again when another writer came in between (bounded); returns our
/// session id.
async fn write_own(s: &Session, path: &str, value: &str) -> Result<i64, zk::Error> {
    for _ in 0..3 {
        if write_ephemeral(s, path, value.as_bytes()).await? {
            return Ok(s.id);
        }
    }
    Err(zk::Error::BadVersion)
}

#[async_trait]
impl Dcs for ZooKeeperDcs {
    async fn get_cluster(&self) -> Result<Cluster, DcsError> {
        let base = self.layout.base().to_string();
        let rows = self
            .sessions
            .retry("reading the cluster", |s| {
                let base = &base;
                async move {
                    let names = children(&s.client, base).await?;
                    let reads = names
                        .into_iter()
                        .map(|name| read_child(&s.client, base, name));
                    Ok(try_join_all(reads).await?.concat())
                }
            })
            .await?;
        if let Some(name) = &self.name {
            // Our member znode changed behind our back (e.g. `remove`): rewrite it next time.
            let relative = format!("members/{name}");
            let stored = rows
                .iter()
                .find(|r| r.0 == relative)
                .map(|r| (r.1.as_str(), r.3));
            let mut written = lock(&self.member_written);
            if written.as_ref().map(|(v, s)| (v.as_str(), *s)) != stored {
                *written = None;
            }
        }
        let revision = rows.iter().map(|r| r.4).max().unwrap_or_default();
        Ok(Cluster::from_rows(
            rows.iter()
                .map(|(k, v, version, owner, _)| (k.as_str(), v.as_str(), *version, *owner)),
            revision,
        ))
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        const DOING: &str = "writing the member key";
        let path = self.layout.member(self.name(DOING)?);
        let value = data.to_json();
        let written = self
            .sessions
            .retry(DOING, |s| {
                let (path, value) = (&path, &value);
                async move {
                    let unchanged = lock(&self.member_written)
                        .as_ref()
                        .is_some_and(|(v, id)| v == value && *id == s.id);
                    if unchanged {
                        return Ok(s.id);
                    }
                    write_own(&s, path, value).await
                }
            })
            .await;
        // After a failure the znode may hold either value: write it again next time.
        *lock(&self.member_written) = written.as_ref().ok().map(|s| (value, *s));
        written.map(|_| ())
    }

    async fn attempt_to_acquire_leader(&self) -> Result<bool, DcsError> {
        const DOING: &str = "acquiring the leader key";
        let name = self.name(DOING)?;
        let path = self.layout.leader();
        let (won, holder) = self
            .sessions
            .retry(DOING, |s| {
                let path = &path;
                async move {
                    match create(&s, path, name.as_bytes(), true).await {
                        Ok(()) => Ok((true, None)),
                        Err(zk::Error::NodeExists) => {
                            // A try that timed out may have landed before we retried: the key
                            // is ours if our session owns it.
                            let holder = get(&s.client, path).await?;
                            let ours = holder
                                .as_ref()
                                .is_some_and(|(v, st)| v == name && st.ephemeral_owner == s.id);
                            Ok((ours, holder.map(|h| h.0)))
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        if won {
            info!(member = name, "acquired the leader key");
        } else {
            info!(member = name, holder = ?holder, "could not take the leader key: held by another member");
        }
        Ok(won)
    }

    async fn update_leader(&self) -> Result<bool, DcsError> {
        const DOING: &str = "refreshing the leader key";
        let name = self.name(DOING)?;
        let path = self.layout.leader();
        let ours = self
            .sessions
            .retry(DOING, |s| {
                let path = &path;
                async move {
                    match get(&s.client, path).await? {
                        Some((v, st)) if v == name && st.ephemeral_owner == s.id => Ok(true),
                        // Ours from an older session of ours (new ttl, or a previous run of
                        // this member): move it to this session without a gap.
                        Some((v, st)) if v == name => {
                            warn!(
                                member = name,
                                "recreating the leader znode due to ownership mismatch"
                            );
                            take_over(&s, path, name.as_bytes(), st.version).await
                        }
                        _ => Ok(false),
                    }
                }
            })
            .await?;
        if ours {
            debug!(member = name, "leader key refreshed");
        } else {
            warn!(
                member = name,
                "the leader key is gone or held by another member"
            );
        }
        Ok(ours)
    }

    async fn delete_leader(&self) -> Result<(), DcsError> {
        const DOING: &str = "deleting the leader key";
        let name = self.name(DOING)?;
        let path = self.layout.leader();
        let deleted = self
            .sessions
            .retry(DOING, |s| {
                let path = &path;
                async move {
                    match get(&s.client, path).await? {
                        Some((v, st)) if v == name => {
                            match s.client.delete(path, Some(st.version)).await {
                                Ok(()) => Ok(true),
                                Err(zk::Error::NoNode | zk::Error::BadVersion) => Ok(false),
                                Err(e) => Err(e),
                            }
                        }
                        _ => Ok(false),
                    }
                }
            })
            .await?;
        if deleted {
            info!(member = name, "deleted the leader key");
        } else {
            debug!(member = name, "leader key not ours; nothing deleted");
        }
        Ok(())
    }

    async fn claim_initialize(&self) -> Result<bool, DcsError> {
        let path = self.layout.initialize();
        self.sessions
            .retry("creating the initialize key", |s| {
                let path = &path;
                async move {
                    match create(&s, path, b"", false).await {
                        Ok(()) => Ok(true),
                        Err(zk::Error::NodeExists) => Ok(false),
                        Err(e) => Err(e),
                    }
                }
            })
            .await
    }

    async fn write_initialize(&self, sysid: &str) -> Result<(), DcsError> {
        self.set_or_create(
            "writing the initialize key",
            self.layout.initialize(),
            sysid.to_string(),
        )
        .await
    }

    async fn cancel_initialization(&self) -> Result<(), DcsError> {
        let path = self.layout.initialize();
        self.sessions
            .retry("deleting the initialize key", |s| {
                let path = &path;
                async move {
                    match s.client.delete(path, None).await {
                        Ok(()) | Err(zk::Error::NoNode) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            })
            .await
    }

    async fn set_config_value(&self, value: &str, index: Option<i64>) -> Result<bool, DcsError> {
        let path = self.layout.config();
        self.cas_put("writing the config key", path, value.to_string(), index)
            .await
    }

    async fn set_failover(&self, request: &Failover, index: Option<i64>) -> Result<bool, DcsError> {
        let path = self.layout.failover();
        self.cas_put("writing the failover key", path, request.to_json(), index)
            .await
    }

    async fn set_sync_state(
        &self,
        value: &SyncState,
        index: Option<i64>,
    ) -> Result<bool, DcsError> {
        let path = self.layout.sync();
        self.cas_put("writing the sync key", path, value.to_json(), index)
            .await
    }

    /// Patroni's ZooKeeper backend writes `{}` instead of deleting (docs/compat.md).
    async fn delete_sync_state(&self, index: Option<i64>) -> Result<bool, DcsError> {
        let path = self.layout.sync();
        self.cas_put("clearing the sync key", path, "{}".to_string(), index)
            .await
    }

    async fn write_status(&self, value: &Status) -> Result<(), DcsError> {
        self.set_or_create(
            "writing the status key",
            self.layout.status(),
            value.to_json(),
        )
        .await
    }

    async fn write_failsafe(&self, topology: &FailsafeTopology) -> Result<(), DcsError> {
        self.set_or_create(
            "writing the failsafe key",
            self.layout.failsafe(),
            topology.to_json(),
        )
        .await
    }

    async fn set_history_value(&self, value: &str) -> Result<(), DcsError> {
        self.set_or_create(
            "writing the history key",
            self.layout.history(),
            value.to_string(),
        )
        .await
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        let base = self.layout.base().to_string();
        self.sessions
            .retry("deleting the cluster", |s| {
                let base = &base;
                async move { delete_tree(&s.client, base).await }
            })
            .await?;
        info!(member = %self.sessions.label, base = %base, "deleted every key of the cluster");
        Ok(())
    }

    async fn put_ephemeral(&self, relative_key: &str, value: &str) -> Result<(), DcsError> {
        let path = self.layout.key(relative_key);
        self.put_own("writing an ephemeral key", &path, value)
            .await?;
        lock(&self.ephemerals).insert(path);
        Ok(())
    }

    async fn set_ttl(&self, ttl: Duration) {
        self.sessions.set_ttl(ttl);
    }

    async fn release_lease(&self) -> Result<(), DcsError> {
        const DOING: &str = "deleting our ephemeral keys";
        let budget = self.sessions.retry_timeout();
        let released = tokio::time::timeout(budget, self.release()).await;
        // Whatever happened, this session is done with: the next operation opens a new one.
        lock(&self.ephemerals).clear();
        *lock(&self.member_written) = None;
        match released {
            Ok(Ok(Some(id))) => {
                info!(member = %self.sessions.label, session = %zk::SessionId(id), "released our ZooKeeper session's keys");
                Ok(())
            }
            Ok(Ok(None)) => Ok(()),
            // They vanish when the session expires, after ttl.
            Ok(Err(cause)) => Err(DcsError::ZookeeperUnavailable {
                hosts: self.sessions.hosts.clone(),
                doing: DOING,
                cause: cause.to_string(),
            }),
            Err(_) => Err(DcsError::Timeout {
                doing: DOING,
                seconds: budget.as_secs_f64(),
            }),
        }
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        let mut watcher = lock(&self.watcher);
        if watcher.is_none() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let task = runtime.spawn(watch::watch_tree(
                        self.sessions.clone(),
                        self.layout.base().to_string(),
                        self.changes.clone(),
                    ));
                    *watcher = Some(AbortOnDrop(task.abort_handle()));
                }
                Err(e) => warn!(
                    member = %self.sessions.label,
                    "cannot watch ZooKeeper outside a tokio runtime ({e}); changes will only be seen by polling"
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
        let dcs = ZooKeeperDcs::new(
            ZooKeeperSettings {
                hosts: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
                ..ZooKeeperSettings::default()
            },
            KeyLayout::new("/service", "b"),
            Some("n1".into()),
            Duration::from_secs(30),
            Duration::from_secs(10),
        );
        let dcs = dcs.unwrap_or_else(|e| panic!("offline construction failed: {e}"));
        assert_eq!(dcs.sessions.hosts, "127.0.0.1:1,127.0.0.1:2");
        assert!(ZooKeeperDcs::new(
            ZooKeeperSettings::default(),
            KeyLayout::new("/service", "b"),
            None,
            Duration::from_secs(30),
            Duration::from_secs(10),
        )
        .is_err());
    }

    #[test]
    fn parents() {
        assert_eq!(parent("/service/b/members/n1"), "/service/b/members");
        assert_eq!(parent("/service"), "/");
    }
}
