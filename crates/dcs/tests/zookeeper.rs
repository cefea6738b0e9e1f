//! `ZooKeeperDcs` specifics against a real ZooKeeper (Debian's package, run with java) started
//! per test on loopback and stopped by PID on drop: Patroni's znode layout (which znodes are
//! ephemeral, whose session owns them, the values), reading a tree written the way Patroni
//! writes it, ttl changes, and a frozen server. The behaviour all backends share is in
//! conformance.rs. What the tests read and write behind the backend's back goes through a
//! plain `zookeeper_client::Client` of their own.

use pgherd_dcs::zookeeper::{ZooKeeperDcs, ZooKeeperSettings};
use pgherd_dcs::{Dcs, DcsError, KeyLayout, MemberData, Role, Status, SyncState};
use pgherd_testkit::zookeeper::ZooKeeperServer;
use std::future::Future;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::time::{sleep, timeout};
use zookeeper_client as zk;

const BASE: &str = "/service/batman";

struct Env {
    server: ZooKeeperServer,
    _dir: TempDir,
}

async fn start() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let server = tokio::task::spawn_blocking(move || ZooKeeperServer::start(&path))
        .await
        .expect("join")
        .expect("start ZooKeeper");
    Env { server, _dir: dir }
}

fn client(env: &Env, name: Option<&str>, ttl_s: u64, retry_s: u64) -> ZooKeeperDcs {
    ZooKeeperDcs::new(
        ZooKeeperSettings {
            hosts: vec![env.server.host()],
            ..ZooKeeperSettings::default()
        },
        KeyLayout::new("/service", "batman"),
        name.map(str::to_string),
        Duration::from_secs(ttl_s),
        Duration::from_secs(retry_s),
    )
    .expect("client")
}

/// The test's own connection, for looking behind the backend's back.
async fn raw(env: &Env) -> zk::Client {
    zk::Client::connector()
        .with_session_timeout(Duration::from_secs(20))
        .connect(&env.server.host())
        .await
        .expect("raw ZooKeeper client")
}

async fn node(raw: &zk::Client, relative: &str) -> Option<(String, zk::Stat)> {
    match raw.get_data(&format!("{BASE}/{relative}")).await {
        Ok((data, stat)) => Some((String::from_utf8(data).expect("utf-8"), stat)),
        Err(zk::Error::NoNode) => None,
        Err(e) => panic!("reading {relative}: {e}"),
    }
}

fn member(port: u16) -> MemberData {
    MemberData {
        conn_url: format!("postgres://127.0.0.1:{port}/postgres"),
        api_url: format!("http://127.0.0.1:{}/patroni", port + 1000),
        state: "running".into(),
        role: Some(Role::Primary),
        version: "3.0.2".into(),
        xlog_location: Some(67108960),
        timeline: Some(1),
        ..MemberData::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn znodes_follow_patronis_layout() {
    let env = start().await;
    let raw = raw(&env).await;
    let a = client(&env, Some("node0"), 10, 5);
    a.touch_member(&member(5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    assert!(a.claim_initialize().await.unwrap());
    a.write_initialize("7711336143377005909").await.unwrap();
    a.set_config_value(r#"{"ttl":10}"#, None).await.unwrap();
    a.write_status(&Status {
        optime: 67108960,
        ..Status::default()
    })
    .await
    .unwrap();
    a.set_history_value("[]").await.unwrap();
    a.set_sync_state(&SyncState::new("node0", &[]), None)
        .await
        .unwrap();
    a.put_ephemeral("proxies/p1", "{}").await.unwrap();
    let session = a.session_id().await.expect("a session");

    let (leader, stat) = node(&raw, "leader").await.expect("leader znode");
    assert_eq!(leader, "node0", "the bare member name");
    assert_eq!(stat.ephemeral_owner, session, "ephemeral, of our session");
    let (value, stat) = node(&raw, "members/node0").await.expect("member znode");
    assert_eq!(stat.ephemeral_owner, session);
    assert_eq!(value, member(5432).to_json(), "compact JSON, as Patroni");
    assert!(value.starts_with(r#"{"conn_url":"postgres://127.0.0.1:5432/postgres""#));
    // Rewritten only when the value changed.
    a.touch_member(&member(5432)).await.unwrap();
    assert_eq!(
        node(&raw, "members/node0").await.unwrap().1.version,
        stat.version
    );
    a.touch_member(&member(5433)).await.unwrap();
    assert_eq!(
        node(&raw, "members/node0").await.unwrap().1.version,
        stat.version + 1
    );
    let (_, stat) = node(&raw, "proxies/p1").await.expect("proxy znode");
    assert_eq!(stat.ephemeral_owner, session);
    for (key, expected) in [
        ("initialize", "7711336143377005909"),
        ("config", r#"{"ttl":10}"#),
        ("status", r#"{"optime":67108960}"#),
        ("history", "[]"),
        ("sync", r#"{"leader":"node0","sync_standby":null}"#),
    ] {
        let (value, stat) = node(&raw, key)
            .await
            .unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(value, expected, "{key}");
        assert_eq!(stat.ephemeral_owner, 0, "{key} is persistent");
    }

    // Index = znode version (Patroni's CAS); session = ephemeralOwner.
    let cluster = a.get_cluster().await.unwrap();
    let (_, config_stat) = node(&raw, "config").await.unwrap();
    assert_eq!(
        cluster.config.as_ref().unwrap().index,
        i64::from(config_stat.version)
    );
    assert_eq!(cluster.leader.as_ref().unwrap().session, session);
    assert_eq!(cluster.members["node0"].session, session);

    // Clearing sync writes `{}` (Patroni's ZooKeeper backend), read back as no sync state.
    let index = cluster.sync.as_ref().unwrap().index;
    assert!(a.delete_sync_state(Some(index)).await.unwrap());
    assert_eq!(node(&raw, "sync").await.unwrap().0, "{}");
    assert!(a.get_cluster().await.unwrap().sync.is_none());

    // Releasing deletes our ephemeral znodes at once, not the persistent ones.
    a.release_lease().await.unwrap();
    for key in ["leader", "members/node0", "proxies/p1"] {
        assert!(node(&raw, key).await.is_none(), "{key} left behind");
    }
    assert!(node(&raw, "initialize").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_tree_written_as_patroni_writes_it() {
    let env = start().await;
    let raw = raw(&env).await;
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    raw.mkdir(&format!("{BASE}/members"), &persistent)
        .await
        .unwrap();
    let patroni_member = r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"running","role":"master","version":"3.0.2","xlog_location":67108960,"timeline":2}"#;
    let writes = [
        ("members/node1", patroni_member, &ephemeral),
        ("leader", "node1", &ephemeral),
        ("initialize", "7711336143377005909", &persistent),
        // patronictl edit-config writes Python's default separators.
        ("config", r#"{"ttl": 30, "loop_wait": 10}"#, &persistent),
        (
            "failover",
            r#"{"leader":"node1","member":"node2"}"#,
            &persistent,
        ),
        (
            "history",
            r#"[[1,67109256,"no recovery target specified","2026-11-23T12:03:43.568589+00:00","node1"]]"#,
            &persistent,
        ),
        ("status", r#"{"optime":67109536}"#, &persistent),
        (
            "failsafe",
            r#"{"node1":"http://10.0.0.1:8008/patroni"}"#,
            &persistent,
        ),
    ];
    for (key, value, options) in writes {
        raw.create(&format!("{BASE}/{key}"), value.as_bytes(), options)
            .await
            .unwrap_or_else(|e| panic!("creating {key}: {e}"));
    }
    let ctl = client(&env, None, 10, 5);
    let cluster = ctl.get_cluster().await.unwrap();
    assert_eq!(cluster.leader_name(), Some("node1"));
    assert_eq!(cluster.leader.as_ref().unwrap().session, raw.session_id().0);
    let node1 = &cluster.members["node1"];
    assert_eq!(node1.data.role, Some(Role::Primary));
    assert_eq!(node1.data.timeline, Some(2));
    assert_eq!(cluster.sysid(), Some("7711336143377005909"));
    assert_eq!(cluster.config.as_ref().unwrap().value["loop_wait"], 10);
    assert_eq!(
        cluster.failover_request().unwrap().member.as_deref(),
        Some("node2")
    );
    assert_eq!(cluster.timeline(), 2);
    assert_eq!(cluster.optime(), Some(67109536));
    assert!(cluster.failsafe.is_some());
    assert!(cluster.other.is_empty(), "{:?}", cluster.other);

    // A member whose ephemeral znode is held by another session (a previous run of it) takes
    // it over: the value is ours and the owner our session.
    let again = client(&env, Some("node1"), 10, 5);
    again.touch_member(&member(5433)).await.unwrap();
    let (value, stat) = node(&raw, "members/node1").await.unwrap();
    assert_eq!(value, member(5433).to_json());
    assert_eq!(stat.ephemeral_owner, again.session_id().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_change_moves_the_leader_to_a_new_session_without_a_gap() {
    let env = start().await;
    let raw = raw(&env).await;
    let old_ttl = Duration::from_secs(2);
    let a = client(&env, Some("node0"), old_ttl.as_secs(), 2);
    a.touch_member(&member(5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    let first = a.session_id().await.unwrap();
    let mut rx = raw
        .watch(&format!("{BASE}/leader"), zk::AddWatchMode::Persistent)
        .await
        .expect("watch the leader znode");
    let mut changes = a.subscribe();
    // The watch is set (on the first session) before the ttl changes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        changes.borrow_and_update();
        a.set_history_value("[]").await.unwrap();
        if timeout(Duration::from_secs(1), changes.changed())
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the watch never woke");
    }

    a.set_ttl(Duration::from_secs(6)).await;
    assert!(a.update_leader().await.unwrap(), "still the leader");
    let second = a.session_id().await.unwrap();
    assert_ne!(first, second, "a new session for the new ttl");
    a.touch_member(&member(5432)).await.unwrap();
    // The old session (detached, no longer pinged) expires after its ttl and takes nothing
    // with it: both znodes belong to the new one. Watched for several old ttls.
    let until = Instant::now() + old_ttl * 4;
    while Instant::now() < until {
        let (value, stat) = node(&raw, "leader").await.expect("leader kept");
        assert_eq!(value, "node0");
        assert_eq!(stat.ephemeral_owner, second, "moved to the new session");
        let (_, stat) = node(&raw, "members/node0").await.expect("member kept");
        assert_eq!(stat.ephemeral_owner, second);
        sleep(Duration::from_millis(200)).await;
    }
    assert!(a.update_leader().await.unwrap());
    // Nothing of the client holds the old session any more (the watch moved to the new one):
    // it is gone from the server's connections, and the watch still wakes the client.
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.server.connected_sessions().unwrap().contains(&first) {
        assert!(
            Instant::now() < deadline,
            "the old session is still connected"
        );
        sleep(Duration::from_millis(200)).await;
    }
    assert!(env.server.connected_sessions().unwrap().contains(&second));
    changes.borrow_and_update();
    let c = client(&env, Some("node1"), 6, 3);
    c.set_config_value("{}", None).await.unwrap();
    timeout(Duration::from_secs(10), changes.changed())
        .await
        .expect("the watch wakes after the session change")
        .unwrap();
    // Watchers saw exactly one take-over (the multi-op deleting the old znode and creating
    // the new one in one transaction), and nothing when the old session expired.
    let mut events = Vec::new();
    while let Ok(event) = timeout(Duration::from_millis(500), rx.changed()).await {
        events.push(event.event_type);
    }
    assert_eq!(
        events,
        [zk::EventType::NodeDeleted, zk::EventType::NodeCreated],
        "one take-over"
    );
}

/// SIGSTOP of ZooKeeper (by PID) for as long as it lives; SIGCONT when dropped, also when the
/// test fails, so that the process can be stopped normally.
struct Frozen<'a>(&'a ZooKeeperServer);

impl<'a> Frozen<'a> {
    fn new(server: &'a ZooKeeperServer) -> Frozen<'a> {
        server.pause().expect("SIGSTOP ZooKeeper");
        Frozen(server)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.resume() {
            eprintln!("SIGCONT ZooKeeper: {e:#}");
        }
    }
}

/// Runs `call` and checks that it fails, and returns at all (within three budgets: the bound
/// is what matters, not its exact value).
async fn fails<T: std::fmt::Debug>(
    what: &str,
    budget: Duration,
    call: impl Future<Output = Result<T, DcsError>>,
) -> DcsError {
    let started = Instant::now();
    let result = timeout(budget * 3, call)
        .await
        .unwrap_or_else(|_| panic!("{what} still blocked after {:?}", started.elapsed()));
    let err = result.expect_err(&format!("{what} must fail"));
    eprintln!("{what}: failed after {:?}: {err}", started.elapsed());
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_zookeeper_fails_every_call_in_bounded_time_and_the_client_recovers() {
    let env = start().await;
    let budget = Duration::from_secs(3);
    let a = client(&env, Some("node0"), 30, 3);
    a.touch_member(&member(5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    {
        let _frozen = Frozen::new(&env.server);
        let err = fails("update_leader", budget, a.update_leader()).await;
        assert!(err.is_unavailable(), "{err}");
        assert!(err.to_string().contains("zookeeper.hosts"), "{err}");
        fails("get_cluster", budget, a.get_cluster()).await;
        fails("touch_member", budget, a.touch_member(&member(5433))).await;
        fails("set_history_value", budget, a.set_history_value("[]")).await;
        fails("delete_leader", budget, a.delete_leader()).await;
    }
    // Thawed well within the 30 s session: nothing was lost.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match a.update_leader().await {
            Ok(ours) => {
                assert!(ours, "the leader key survived the freeze");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no recovery: {e}"),
        }
    }
    a.touch_member(&member(5433)).await.unwrap();
    let cluster = a.get_cluster().await.unwrap();
    assert_eq!(cluster.leader_name(), Some("node0"));
    assert_eq!(
        cluster.members["node0"].data.conn_url,
        member(5433).conn_url
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_zookeeper_gives_a_clear_error_and_is_reconnected_after_restart() {
    let mut env = start().await;
    let a = client(&env, Some("node0"), 30, 2);
    a.touch_member(&member(5432)).await.unwrap();
    env.server.stop().expect("stop ZooKeeper");
    let err = fails("get_cluster", Duration::from_secs(2), a.get_cluster()).await;
    let text = err.to_string();
    assert!(text.contains(&env.server.host()), "{text}");
    assert!(text.contains("is ZooKeeper running?"), "{text}");
    env.server.restart().expect("restart ZooKeeper");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match a.get_cluster().await {
            Ok(cluster) => {
                assert!(cluster.members.contains_key("node0"), "session survived");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no recovery: {e}"),
        }
    }
}
