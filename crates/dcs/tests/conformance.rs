//! The `Dcs` trait contract, one set of test functions run against every backend: the
//! in-memory store, a real etcd (Debian's etcd-server) and a real ZooKeeper (Debian's
//! zookeeper, run with java), each started per test on loopback and stopped by PID on drop.
//! The core cases also run against ZooKeeper over TLS with client certificates and x509 ACLs
//! (`zookeeper_tls`).
//!
//! Faults are per client: a client under test talks to etcd or ZooKeeper through a loopback
//! TCP forwarder ([`Link`]) that the test can cut (a network partition of that client only),
//! while an observer client talks to the server directly. The in-memory store has no network:
//! its partition makes the whole store unavailable, and its leases expire when the test says
//! (`MemoryStore::expire_due`), so each wait below also drives that clock.
//!
//! Every wait is a poll with a generous deadline (small, busy CI machines); no timing target
//! is asserted, only outcomes.

use async_trait::async_trait;
use pgherd_dcs::etcd::{EtcdDcs, EtcdSettings};
use pgherd_dcs::memory::{MemoryDcs, MemoryStore};
use pgherd_dcs::zookeeper::{ZooKeeperDcs, ZooKeeperSettings};
use pgherd_dcs::{Dcs, Failover, KeyLayout, MemberData, Role, SyncState};
use pgherd_testkit::etcd::EtcdServer;
use pgherd_testkit::pki::ZooKeeperPki;
use pgherd_testkit::ports::free_ports;
use pgherd_testkit::zookeeper::{ZooKeeperServer, ZooKeeperTls};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

/// How long a subscriber may take to notice a change.
const WAKE_BOUND: Duration = Duration::from_secs(10);
/// The ttl and retry_timeout of most clients (ZooKeeper: the session timeout).
const TTL: Duration = Duration::from_secs(4);
const RETRY: Duration = Duration::from_secs(3);
/// Slack on top of a ttl before a vanished key counts as "never vanished".
const EXPIRY_SLACK: Duration = Duration::from_secs(20);

type Client = Box<dyn Dcs>;

/// One backend under test.
#[async_trait]
trait Backend: Send + Sync {
    /// A client of the store; `linked`: through this backend's cuttable link.
    fn client(&self, name: Option<&str>, ttl: Duration, retry: Duration, linked: bool) -> Client;
    /// Cuts the link (memory: the whole store becomes unavailable).
    fn cut(&self);
    fn heal(&self);
    /// Whether calls retry within retry_timeout (memory fails at once).
    fn retries(&self) -> bool;
    /// Drives lease expiry where time is the test's to move (memory).
    fn tick(&self) {}
}

fn layout() -> KeyLayout {
    KeyLayout::new("/service", "batman")
}

fn member(port: u16) -> MemberData {
    MemberData {
        conn_url: format!("postgres://127.0.0.1:{port}/postgres"),
        api_url: format!("http://127.0.0.1:{}/patroni", port + 1000),
        state: "running".into(),
        role: Some(Role::Replica),
        version: "3.0.2".into(),
        xlog_location: Some(67108960),
        timeline: Some(1),
        ..MemberData::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Backends

struct Memory {
    store: MemoryStore,
}

impl Memory {
    fn start() -> Memory {
        Memory {
            store: MemoryStore::new(),
        }
    }
}

#[async_trait]
impl Backend for Memory {
    fn client(&self, name: Option<&str>, ttl: Duration, _retry: Duration, _linked: bool) -> Client {
        Box::new(MemoryDcs::new(
            self.store.clone(),
            layout(),
            name.map(str::to_string),
            ttl,
        ))
    }
    fn cut(&self) {
        self.store.set_unavailable(true);
    }
    fn heal(&self) {
        self.store.set_unavailable(false);
    }
    fn retries(&self) -> bool {
        false
    }
    fn tick(&self) {
        self.store.expire_due(tokio::time::Instant::now());
    }
}

/// A real server (etcd or ZooKeeper) in a temporary directory, and a cuttable link to it.
struct Networked<S> {
    server: S,
    link: Link,
    _dir: TempDir,
}

/// What differs between the servers.
#[async_trait]
trait Server: Send + Sync + Sized + 'static {
    fn start(dir: &Path) -> anyhow::Result<Self>;
    /// `127.0.0.1:<port>` of the client listener.
    fn address(&self) -> String;
    /// Returns once the server answers clients at [`Server::address`] promptly.
    async fn ready(&self) {}
    /// A client for the server at `address` (the server's or the link's).
    fn client(
        &self,
        address: String,
        name: Option<String>,
        ttl: Duration,
        retry: Duration,
    ) -> Client;
}

#[async_trait]
impl Server for EtcdServer {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        EtcdServer::start(dir)
    }
    fn address(&self) -> String {
        self.client_url().trim_start_matches("http://").to_string()
    }
    fn client(
        &self,
        address: String,
        name: Option<String>,
        ttl: Duration,
        retry: Duration,
    ) -> Client {
        let settings = EtcdSettings {
            endpoints: vec![format!("http://{address}")],
            ..EtcdSettings::default()
        };
        Box::new(EtcdDcs::new(settings, layout(), name, ttl, retry).expect("etcd client"))
    }
}

#[async_trait]
impl Server for ZooKeeperServer {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        ZooKeeperServer::start(dir)
    }
    fn address(&self) -> String {
        self.host()
    }
    fn client(
        &self,
        address: String,
        name: Option<String>,
        ttl: Duration,
        retry: Duration,
    ) -> Client {
        let settings = ZooKeeperSettings {
            hosts: vec![address],
            ..ZooKeeperSettings::default()
        };
        Box::new(ZooKeeperDcs::new(settings, layout(), name, ttl, retry).expect("ZooKeeper client"))
    }
}

/// The shortest retry_timeout of a TLS client (2 s per request).
const TLS_MIN_RETRY: Duration = Duration::from_secs(6);

/// ZooKeeper serving TLS with client certificates; every client presents the same
/// certificate, verifies the server with the CA and creates znodes with an x509 ACL that
/// grants its principal everything.
struct TlsZooKeeper {
    server: ZooKeeperServer,
    pki: ZooKeeperPki,
}

#[async_trait]
impl Server for TlsZooKeeper {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        let pki = ZooKeeperPki::generate(dir)?;
        let tls = ZooKeeperTls {
            key_store: pki.server_key_store.clone(),
            trust_store: pki.ca.clone(),
        };
        let server = ZooKeeperServer::start_tls(dir, tls)?;
        Ok(TlsZooKeeper { server, pki })
    }
    fn address(&self) -> String {
        self.server.secure_host().expect("TLS port")
    }
    /// A freshly started JVM takes seconds over its first TLS handshakes on a loaded machine,
    /// more than the tests' retry_timeout: one read with a generous budget first.
    async fn ready(&self) {
        let client = self.client(self.address(), None, TTL, Duration::from_secs(60));
        client
            .get_cluster()
            .await
            .expect("ZooKeeper answers over TLS");
    }
    fn client(
        &self,
        address: String,
        name: Option<String>,
        ttl: Duration,
        retry: Duration,
    ) -> Client {
        // Each request gets retry_timeout / 3 (at least 1 s); a TLS handshake with the JVM
        // plus the session's creation can take longer than 1 s on a loaded 2-core machine.
        let retry = retry.max(TLS_MIN_RETRY);
        let settings = ZooKeeperSettings {
            hosts: vec![address],
            tls: Some(pgherd_config::ZookeeperTls {
                verify: true,
                cacert: Some(self.pki.ca.clone()),
                cert: Some(self.pki.client.cert.clone()),
                key: Some(self.pki.client.key.clone()),
                key_password: None,
            }),
            acls: vec![pgherd_config::ZookeeperAcl {
                principal: self.pki.client.principal.clone(),
                read: true,
                write: true,
                create: true,
                delete: true,
                admin: true,
            }],
        };
        Box::new(ZooKeeperDcs::new(settings, layout(), name, ttl, retry).expect("ZooKeeper client"))
    }
}

impl<S: Server> Networked<S> {
    async fn start() -> Networked<S> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let server = tokio::task::spawn_blocking(move || S::start(&path))
            .await
            .expect("join")
            .expect("start the server");
        server.ready().await;
        let link = Link::start(server.address()).await;
        Networked {
            server,
            link,
            _dir: dir,
        }
    }
}

#[async_trait]
impl<S: Server> Backend for Networked<S> {
    fn client(&self, name: Option<&str>, ttl: Duration, retry: Duration, linked: bool) -> Client {
        let address = if linked {
            self.link.address()
        } else {
            self.server.address()
        };
        self.server
            .client(address, name.map(str::to_string), ttl, retry)
    }
    fn cut(&self) {
        self.link.cut();
    }
    fn heal(&self) {
        self.link.heal();
    }
    fn retries(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------------
// A cuttable loopback TCP link: a partition of the clients that use it.

struct Link {
    port: u16,
    state: Arc<Mutex<LinkState>>,
    acceptor: JoinHandle<()>,
}

#[derive(Default)]
struct LinkState {
    cut: bool,
    connections: Vec<JoinHandle<()>>,
}

impl Link {
    async fn start(upstream: String) -> Link {
        let port = free_ports(1).expect("free port")[0];
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the link");
        let state = Arc::new(Mutex::new(LinkState::default()));
        let shared = state.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut state = shared.lock().unwrap();
                if state.cut {
                    // Dropped at once: the client sees its connection closed.
                    continue;
                }
                let upstream = upstream.clone();
                state.connections.push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Link {
            port,
            state,
            acceptor,
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes every forwarded connection and refuses new ones until [`Link::heal`].
    fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = true;
        for c in state.connections.drain(..) {
            c.abort();
        }
    }

    fn heal(&self) {
        self.state.lock().unwrap().cut = false;
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Polls `probe` (driving the backend's clock) until it holds; fails after `limit`.
async fn eventually<F, Fut>(backend: &dyn Backend, what: &str, limit: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        backend.tick();
        if probe().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

async fn leader_of(client: &dyn Dcs) -> Option<String> {
    client
        .get_cluster()
        .await
        .expect("get_cluster")
        .leader_name()
        .map(str::to_string)
}

/// Returns once `rx` sees changes made after this call: writes the history key until a tick
/// arrives (a watch task opens its stream asynchronously), then marks everything seen.
async fn wait_watch_live(writer: &dyn Dcs, rx: &mut watch::Receiver<u64>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        rx.borrow_and_update();
        writer.set_history_value("[]").await.expect("write history");
        if timeout(Duration::from_secs(2), rx.changed()).await.is_ok() {
            // Let a burst of ticks (the first events of a fresh watch) settle.
            while timeout(Duration::from_millis(300), rx.changed())
                .await
                .is_ok()
            {}
            rx.borrow_and_update();
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the watch never delivered a change"
        );
    }
}

async fn assert_wakes(rx: &mut watch::Receiver<u64>, what: &str) {
    timeout(WAKE_BOUND, rx.changed())
        .await
        .unwrap_or_else(|_| panic!("no wake-up within {WAKE_BOUND:?} after {what}"))
        .expect("watch sender alive");
    rx.borrow_and_update();
}

// ---------------------------------------------------------------------------------------------
// The contract

async fn initialize_race_has_one_winner(b: &dyn Backend) {
    let clients: Vec<Client> = (0..3)
        .map(|i| b.client(Some(&format!("node-{i}")), TTL, RETRY, false))
        .collect();
    let claims = futures::future::join_all(clients.iter().map(|c| c.claim_initialize())).await;
    let winners = claims
        .into_iter()
        .map(|r| r.expect("claim_initialize"))
        .filter(|won| *won)
        .count();
    assert_eq!(winners, 1, "exactly one client creates initialize");
    let cluster = clients[0].get_cluster().await.unwrap();
    assert_eq!(
        cluster.initialize.as_deref(),
        Some(""),
        "bootstrap in progress"
    );
    assert!(
        !clients[1].claim_initialize().await.unwrap(),
        "it exists now"
    );

    clients[0]
        .write_initialize("7711336143377005909")
        .await
        .unwrap();
    let cluster = clients[2].get_cluster().await.unwrap();
    assert_eq!(cluster.sysid(), Some("7711336143377005909"));
    clients[2].cancel_initialization().await.unwrap();
    assert_eq!(clients[1].get_cluster().await.unwrap().initialize, None);
    assert!(
        clients[1].claim_initialize().await.unwrap(),
        "claimable again"
    );
}

async fn leader_race_has_one_winner(b: &dyn Backend) {
    let clients: Vec<Client> = (0..3)
        .map(|i| b.client(Some(&format!("node-{i}")), TTL, RETRY, false))
        .collect();
    for (i, c) in clients.iter().enumerate() {
        c.touch_member(&member(5432 + i as u16)).await.unwrap();
    }
    let tries =
        futures::future::join_all(clients.iter().map(|c| c.attempt_to_acquire_leader())).await;
    let won: Vec<bool> = tries.into_iter().map(|r| r.expect("acquire")).collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "one winner: {won:?}");
    let winner = won.iter().position(|w| *w).unwrap();
    let name = format!("node-{winner}");

    let cluster = clients[0].get_cluster().await.unwrap();
    assert_eq!(cluster.leader_name(), Some(name.as_str()));
    assert_eq!(cluster.members.len(), 3);
    let leader = cluster.leader.as_ref().unwrap();
    assert_ne!(leader.session, 0, "the leader key is tied to a session");
    assert_eq!(
        leader.session, cluster.members[&name].session,
        "leader and member keys share the holder's session"
    );
    for (i, c) in clients.iter().enumerate() {
        if i != winner {
            assert!(!c.attempt_to_acquire_leader().await.unwrap());
            assert!(!c.update_leader().await.unwrap(), "not the holder");
            c.delete_leader().await.unwrap();
        }
    }
    assert!(clients[winner].update_leader().await.unwrap());
    assert!(
        clients[winner].attempt_to_acquire_leader().await.unwrap(),
        "acquiring a key we hold succeeds"
    );
    assert_eq!(
        leader_of(&*clients[0]).await.as_deref(),
        Some(name.as_str())
    );
}

async fn update_leader_fails_after_another_took_it(b: &dyn Backend) {
    let a = b.client(Some("node-a"), TTL, RETRY, false);
    let c = b.client(Some("node-c"), TTL, RETRY, false);
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    a.delete_leader().await.unwrap();
    assert_eq!(leader_of(&*c).await, None, "deleted");
    assert!(c.attempt_to_acquire_leader().await.unwrap());
    assert!(!a.update_leader().await.unwrap(), "node-c holds it now");
    a.delete_leader().await.unwrap();
    assert_eq!(
        leader_of(&*a).await.as_deref(),
        Some("node-c"),
        "not deleted by node-a"
    );
    assert!(c.update_leader().await.unwrap());
}

async fn released_keys_vanish_at_once(b: &dyn Backend) {
    let a = b.client(Some("node-a"), Duration::from_secs(60), RETRY, false);
    let c = b.client(None, TTL, RETRY, false);
    a.touch_member(&member(5432)).await.unwrap();
    a.put_ephemeral("proxies/p1", r#"{"x":1}"#).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    let cluster = c.get_cluster().await.unwrap();
    assert!(cluster.members.contains_key("node-a"));
    assert_eq!(
        cluster.other.get("proxies/p1").map(String::as_str),
        Some(r#"{"x":1}"#)
    );
    a.release_lease().await.unwrap();
    // With a 60 s ttl, only the release can have removed them.
    let cluster = c.get_cluster().await.unwrap();
    assert_eq!(cluster.leader_name(), None);
    assert!(cluster.members.is_empty(), "{:?}", cluster.members);
    assert!(!cluster.other.contains_key("proxies/p1"));
    // The client is usable again: a new lease/session.
    a.touch_member(&member(5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    assert_eq!(leader_of(&*c).await.as_deref(), Some("node-a"));
}

async fn keys_of_a_vanished_holder_expire_after_ttl(b: &dyn Backend) {
    let a = b.client(Some("node-a"), TTL, RETRY, false);
    let c = b.client(Some("node-c"), TTL, RETRY, false);
    a.touch_member(&member(5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    // The holder's process dies: nothing is released, nothing renewed.
    drop(a);
    let cluster = c.get_cluster().await.unwrap();
    assert_eq!(
        cluster.leader_name(),
        Some("node-a"),
        "the key outlives its holder until the ttl"
    );
    eventually(
        b,
        "the dead holder's keys to expire",
        TTL * 3 + EXPIRY_SLACK,
        || async {
            let cluster = c.get_cluster().await.expect("get_cluster");
            cluster.leader.is_none() && !cluster.members.contains_key("node-a")
        },
    )
    .await;
    assert!(c.attempt_to_acquire_leader().await.unwrap(), "free to take");
}

async fn cas_writes_fail_on_a_stale_index(b: &dyn Backend) {
    let a = b.client(Some("node-a"), TTL, RETRY, false);
    let c = b.client(None, TTL, RETRY, false);
    assert!(a.set_config_value(r#"{"ttl":30}"#, None).await.unwrap());
    let first = c.get_cluster().await.unwrap().config.unwrap();
    assert_eq!(first.value["ttl"], 30);
    assert!(c
        .set_config_value(r#"{"ttl":20}"#, Some(first.index))
        .await
        .unwrap());
    assert!(
        !a.set_config_value(r#"{"ttl":10}"#, Some(first.index))
            .await
            .unwrap(),
        "stale index"
    );
    let second = a.get_cluster().await.unwrap().config.unwrap();
    assert_eq!(second.value["ttl"], 20);
    assert_ne!(second.index, first.index);

    let request = Failover {
        leader: Some("node-a".into()),
        member: Some("node-b".into()),
        scheduled_at: None,
    };
    assert!(a.set_failover(&request, None).await.unwrap());
    let f = c.get_cluster().await.unwrap().failover.unwrap();
    assert_eq!(f.value, request);
    assert!(c
        .set_failover(&Failover::none(), Some(f.index))
        .await
        .unwrap());
    assert!(
        !a.set_failover(&request, Some(f.index)).await.unwrap(),
        "stale"
    );
    assert!(c.get_cluster().await.unwrap().failover_request().is_none());

    let sync = SyncState::new("node-a", &["node-b".to_string()]);
    assert!(a.set_sync_state(&sync, None).await.unwrap());
    let s = c.get_cluster().await.unwrap().sync.unwrap();
    assert_eq!(s.value, sync);
    let other = SyncState::new("node-a", &[]);
    assert!(a.set_sync_state(&other, Some(s.index)).await.unwrap());
    assert!(
        !a.set_sync_state(&sync, Some(s.index)).await.unwrap(),
        "stale"
    );
    assert!(!a.delete_sync_state(Some(s.index)).await.unwrap(), "stale");
    let s = c.get_cluster().await.unwrap().sync.unwrap();
    assert_eq!(s.value, other);
    assert!(a.delete_sync_state(Some(s.index)).await.unwrap());
    assert_eq!(c.get_cluster().await.unwrap().sync_state(), None, "cleared");
}

async fn watch_wakes_subscribers(b: &dyn Backend) {
    let a = b.client(Some("node-a"), TTL, RETRY, false);
    let c = b.client(Some("node-c"), TTL, RETRY, false);
    let mut rx = a.subscribe();
    wait_watch_live(&*c, &mut rx).await;
    assert!(c.attempt_to_acquire_leader().await.unwrap());
    assert_wakes(&mut rx, "another client took the leader key").await;
    c.set_config_value(r#"{"loop_wait":5}"#, None)
        .await
        .unwrap();
    assert_wakes(&mut rx, "another client wrote the config").await;
    c.touch_member(&member(5433)).await.unwrap();
    assert_wakes(&mut rx, "another client wrote its member key").await;
    c.delete_leader().await.unwrap();
    assert_wakes(&mut rx, "the leader key was deleted").await;
}

async fn an_outage_shorter_than_retry_timeout_keeps_the_leader(b: &dyn Backend) {
    // Most of retry_timeout: a client whose reconnection backs off exponentially (ZooKeeper's
    // library: 0.1 s doubling) would come back too late.
    let ttl = Duration::from_secs(20);
    let retry = Duration::from_secs(6);
    let outage = Duration::from_millis(4500);
    let a = b.client(Some("node-a"), ttl, retry, true);
    let observer = b.client(None, ttl, retry, false);
    a.touch_member(&member(5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());

    b.cut();
    let (during, ()) = tokio::join!(a.update_leader(), async {
        // The fault's duration, not a synchronisation.
        sleep(outage).await;
        b.heal();
    });
    if b.retries() {
        assert!(
            during.expect("a call spanning the outage succeeds once it is over"),
            "still the leader"
        );
    } else {
        assert!(during.expect_err("no retries").is_unavailable());
    }
    assert!(
        a.update_leader().await.unwrap(),
        "still the leader after the outage"
    );
    a.touch_member(&member(5432)).await.unwrap();
    let cluster = observer.get_cluster().await.unwrap();
    assert_eq!(cluster.leader_name(), Some("node-a"));
    assert_eq!(
        cluster.leader.unwrap().session,
        cluster.members["node-a"].session
    );
}

async fn an_outage_longer_than_ttl_loses_the_leader_and_never_makes_two(b: &dyn Backend) {
    let ttl = Duration::from_secs(3);
    let retry = Duration::from_secs(2);
    let a = b.client(Some("node-a"), ttl, retry, true);
    let c = b.client(Some("node-c"), ttl, retry, false);
    a.touch_member(&member(5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());

    b.cut();
    // Every call of the cut-off leader fails (bounded by retry_timeout): its HA loop demotes.
    let started = Instant::now();
    let err = timeout(retry * 5, a.update_leader())
        .await
        .expect("update_leader returns within its retry budget")
        .expect_err("no store, no leadership");
    assert!(err.is_unavailable(), "{err}");
    eprintln!("update_leader failed after {:?}: {err}", started.elapsed());

    // The store expires the cut-off client's lease/session after the ttl, seen by node-c on
    // the other side of the partition (memory: one store, seen once it is available again).
    if !b.retries() {
        b.heal();
    }
    eventually(
        b,
        "the cut-off leader's key to expire",
        ttl * 3 + EXPIRY_SLACK,
        || async { c.get_cluster().await.expect("get_cluster").leader.is_none() },
    )
    .await;
    assert!(
        c.attempt_to_acquire_leader().await.unwrap(),
        "node-c takes over"
    );
    b.heal();
    // Back on the network, the old leader learns it lost (it never gets the key back while
    // node-c holds it).
    eventually(
        b,
        "node-a to answer again",
        retry * 10 + EXPIRY_SLACK,
        || async {
            match a.update_leader().await {
                Ok(ours) => {
                    assert!(!ours, "two leaders: node-a refreshed a key node-c holds");
                    true
                }
                Err(_) => false,
            }
        },
    )
    .await;
    assert!(!a.attempt_to_acquire_leader().await.unwrap());
    assert!(c.update_leader().await.unwrap());
    let cluster = a.get_cluster().await.unwrap();
    assert_eq!(cluster.leader_name(), Some("node-c"));
    // node-a writes its member key again on a new lease/session.
    a.touch_member(&member(5432)).await.unwrap();
    eventually(b, "node-a's member key to be back", WAKE_BOUND, || async {
        c.get_cluster()
            .await
            .expect("get_cluster")
            .members
            .contains_key("node-a")
    })
    .await;
}

async fn delete_cluster_removes_everything(b: &dyn Backend) {
    let a = b.client(Some("node-a"), TTL, RETRY, false);
    a.touch_member(&member(5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    assert!(a.claim_initialize().await.unwrap());
    a.set_config_value("{}", None).await.unwrap();
    a.set_history_value("[]").await.unwrap();
    a.delete_cluster().await.unwrap();
    let cluster = a.get_cluster().await.unwrap();
    assert_eq!(cluster.leader_name(), None);
    assert!(cluster.members.is_empty());
    assert_eq!(cluster.initialize, None);
    assert_eq!(cluster.config, None);
    assert_eq!(cluster.history, None);
    // Writing again works (parents are re-created where the store needs them).
    a.touch_member(&member(5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
}

// ---------------------------------------------------------------------------------------------
// Instantiation: every contract test against every backend.

/// One module of tests for one backend, `$start` building the backend in each test.
macro_rules! per_backend {
    ($backend:ident, $start:expr, [$($test:ident),*]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let backend = $start;
                    super::$test(&backend).await;
                }
            )*
        }
    };
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        per_backend!(memory, Memory::start(), [$($test),*]);
        per_backend!(etcd, Networked::<EtcdServer>::start().await, [$($test),*]);
        per_backend!(zookeeper, Networked::<ZooKeeperServer>::start().await, [$($test),*]);
    };
}

// The core cases over TLS (each test starts its own JVM). The outage cases are left to the
// plain-TCP run: the transport under the session is the only difference, and the short-outage
// case leaves 1.5 s after the heal, which a reconnection plus a TLS handshake with the JVM
// does not always fit on a loaded 2-core machine.
per_backend!(
    zookeeper_tls,
    Networked::<TlsZooKeeper>::start().await,
    [
        initialize_race_has_one_winner,
        leader_race_has_one_winner,
        update_leader_fails_after_another_took_it,
        released_keys_vanish_at_once,
        keys_of_a_vanished_holder_expire_after_ttl,
        cas_writes_fail_on_a_stale_index,
        watch_wakes_subscribers,
        delete_cluster_removes_everything
    ]
);

conformance!(
    initialize_race_has_one_winner,
    leader_race_has_one_winner,
    update_leader_fails_after_another_took_it,
    released_keys_vanish_at_once,
    keys_of_a_vanished_holder_expire_after_ttl,
    cas_writes_fail_on_a_stale_index,
    watch_wakes_subscribers,
    an_outage_shorter_than_retry_timeout_keeps_the_leader,
    an_outage_longer_than_ttl_loses_the_leader_and_never_makes_two,
    delete_cluster_removes_everything,
);
