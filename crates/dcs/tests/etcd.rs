//! `EtcdDcs` against a real etcd (Debian's etcd-server) started per test on loopback.
//! Every wait is a poll with a generous deadline: these run on small, busy CI machines.

use etcd_client::{Client, GetOptions, PutOptions};
use pgherd_dcs::etcd::{EtcdDcs, EtcdSettings};
use pgherd_dcs::{Dcs, DcsError, KeyLayout, MemberData, Role, Status, SyncState};
use pgherd_testkit::etcd::EtcdServer;
use std::future::Future;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::time::{sleep, timeout};

/// How long a subscriber may take to notice a change (a local watch takes milliseconds).
const WAKE_BOUND: Duration = Duration::from_secs(3);

struct Env {
    etcd: EtcdServer,
    _dir: TempDir,
}

fn start_etcd() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdServer::start(dir.path()).expect("start etcd");
    Env { etcd, _dir: dir }
}

fn layout() -> KeyLayout {
    KeyLayout::new("/service", "batman")
}

fn settings(url: &str) -> EtcdSettings {
    EtcdSettings {
        endpoints: vec![url.to_string()],
        ..EtcdSettings::default()
    }
}

fn client(url: &str, name: Option<&str>, ttl_s: u64, retry_s: u64) -> EtcdDcs {
    EtcdDcs::new(
        settings(url),
        layout(),
        name.map(str::to_string),
        Duration::from_secs(ttl_s),
        Duration::from_secs(retry_s),
    )
    .expect("EtcdDcs::new")
}

async fn raw(url: &str) -> Client {
    Client::connect([url], None).await.expect("raw etcd client")
}

/// `(value, lease, mod_revision)` of a full key, read directly from etcd.
async fn raw_get(c: &mut Client, key: &str) -> Option<(String, i64, i64)> {
    let resp = c.get(key, None).await.expect("raw get");
    resp.kvs().first().map(|kv| {
        (
            String::from_utf8_lossy(kv.value()).into_owned(),
            kv.lease(),
            kv.mod_revision(),
        )
    })
}

fn member(state: &str, port: u16) -> MemberData {
    MemberData {
        conn_url: format!("postgres://127.0.0.1:{port}/postgres"),
        api_url: format!("http://127.0.0.1:{}/patroni", port + 1000),
        state: state.into(),
        role: Some(Role::Replica),
        version: "3.0.2".into(),
        xlog_location: Some(67108960),
        timeline: Some(1),
        ..MemberData::default()
    }
}

async fn eventually<F, Fut>(what: &str, limit: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !probe().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// Returns once `rx` sees changes made after this call: writes the history key until a tick
/// arrives (the watch task opens its stream asynchronously), then marks everything seen.
async fn wait_watch_live(dcs: &EtcdDcs, rx: &mut watch::Receiver<u64>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        rx.borrow_and_update();
        dcs.set_history_value("[]").await.expect("write history");
        if timeout(Duration::from_secs(2), rx.changed()).await.is_ok() {
            rx.borrow_and_update();
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the watch never delivered a change"
        );
    }
}

async fn assert_wakes(rx: &mut watch::Receiver<u64>, what: &str) -> Duration {
    let started = Instant::now();
    timeout(WAKE_BOUND, rx.changed())
        .await
        .unwrap_or_else(|_| panic!("no wake-up within {WAKE_BOUND:?} after {what}"))
        .expect("watch sender alive");
    rx.borrow_and_update();
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_client_wins_the_leader_race() {
    let env = start_etcd();
    let url = env.etcd.client_url();
    let a = client(&url, Some("node-a"), 3, 10);
    let b = client(&url, Some("node-b"), 3, 10);
    a.touch_member(&member("running", 5432)).await.unwrap();
    b.touch_member(&member("running", 5433)).await.unwrap();

    let (ra, rb) = tokio::join!(a.attempt_to_acquire_leader(), b.attempt_to_acquire_leader());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra ^ rb, "exactly one winner, got a={ra} b={rb}");
    let (winner, loser) = if ra { ("node-a", &b) } else { ("node-b", &a) };

    let cluster = loser.get_cluster().await.unwrap();
    let member_lease = cluster.members[winner].session;
    assert_ne!(member_lease, 0);
    let mut etcd = raw(&url).await;
    let (value, lease, _) = raw_get(&mut etcd, "/service/batman/leader").await.unwrap();
    assert_eq!(value, winner, "the leader key holds the bare member name");
    assert_eq!(
        lease, member_lease,
        "leader and member keys share the agent's lease"
    );
    assert_eq!(cluster.leader.as_ref().unwrap().session, lease);
    let ttl = etcd.lease_time_to_live(lease, None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 3);

    // The loser keeps losing and cannot refresh or delete someone else's key.
    assert!(!loser.attempt_to_acquire_leader().await.unwrap());
    assert!(!loser.update_leader().await.unwrap());
    loser.delete_leader().await.unwrap();
    assert_eq!(
        loser.get_cluster().await.unwrap().leader_name(),
        Some(winner)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_keys_are_compact_json_and_rewritten_only_on_change() {
    let env = start_etcd();
    let url = env.etcd.client_url();
    let a = client(&url, Some("node-a"), 3, 10);
    let data = member("running", 5432);
    a.touch_member(&data).await.unwrap();

    let mut etcd = raw(&url).await;
    let (value, lease, rev) = raw_get(&mut etcd, "/service/batman/members/node-a")
        .await
        .unwrap();
    assert_eq!(
        value,
        r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:6432/patroni","state":"running","role":"replica","version":"3.0.2","xlog_location":67108960,"timeline":1}"#
    );
    assert_ne!(lease, 0);

    // Same value and lease: no write (but the lease is kept alive).
    a.touch_member(&data).await.unwrap();
    assert_eq!(
        raw_get(&mut etcd, "/service/batman/members/node-a")
            .await
            .unwrap()
            .2,
        rev
    );

    a.touch_member(&member("stopped", 5432)).await.unwrap();
    let (value, _, rev2) = raw_get(&mut etcd, "/service/batman/members/node-a")
        .await
        .unwrap();
    assert!(rev2 > rev);
    assert!(value.contains(r#""state":"stopped""#));

    // Removed behind our back (patronictl remove): the next cycle's read notices, and the
    // following touch rewrites it.
    etcd.delete("/service/batman/members/node-a", None)
        .await
        .unwrap();
    a.get_cluster().await.unwrap();
    a.touch_member(&member("stopped", 5432)).await.unwrap();
    assert!(raw_get(&mut etcd, "/service/batman/members/node-a")
        .await
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_leader_keeps_the_key_past_ttl() {
    let env = start_etcd();
    let url = env.etcd.client_url();
    let a = client(&url, Some("node-a"), 2, 10);
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert!(
            a.update_leader().await.unwrap(),
            "update_leader lost the key"
        );
        sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(a.get_cluster().await.unwrap().leader_name(), Some("node-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_key_vanishes_when_the_lease_is_released_or_the_holder_disappears() {
    let env = start_etcd();
    let url = env.etcd.client_url();
    let observer = client(&url, None, 2, 10);

    let a = client(&url, Some("node-a"), 2, 10);
    a.touch_member(&member("running", 5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    a.release_lease().await.unwrap();
    let c = observer.get_cluster().await.unwrap();
    assert!(
        c.leader.is_none(),
        "release_lease removes the leader key at once"
    );
    assert!(
        c.members.is_empty(),
        "release_lease removes the member key at once"
    );

    let b = client(&url, Some("node-b"), 2, 10);
    b.touch_member(&member("running", 5433)).await.unwrap();
    assert!(b.attempt_to_acquire_leader().await.unwrap());
    drop(b);
    eventually(
        "the dropped holder's keys to expire",
        Duration::from_secs(20),
        || async {
            let c = observer.get_cluster().await.unwrap();
            c.leader.is_none() && c.members.is_empty()
        },
    )
    .await;

    // With the key gone, update_leader must not resurrect it.
    let b2 = client(&url, Some("node-b"), 2, 10);
    assert!(!b2.update_leader().await.unwrap());
    assert!(observer.get_cluster().await.unwrap().leader.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_leader_is_false_when_another_member_holds_the_key() {
    let env = start_etcd();
    let url = env.etcd.client_url();
    let a = client(&url, Some("node-a"), 3, 10);
    let b = client(&url, Some("node-b"), 3, 10);
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    assert!(!b.update_leader().await.unwrap());

    a.delete_leader().await.unwrap();
    assert!(b.attempt_to_acquire_leader().await.unwrap());
    assert!(!a.update_leader().await.unwrap());
    assert!(b.update_leader().await.unwrap());
    assert_eq!(a.get_cluster().await.unwrap().leader_name(), Some("node-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_ttl_moves_the_leader_key_to_a_new_lease() {
    let env = start_etcd();
    let url = env.etcd.client_url();
    let a = client(&url, Some("node-a"), 3, 10);
    a.touch_member(&member("running", 5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    let old = a.get_cluster().await.unwrap().leader.unwrap().session;

    a.set_ttl(Duration::from_secs(5)).await;
    assert!(a.update_leader().await.unwrap());
    a.touch_member(&member("running", 5432)).await.unwrap();
    let c = a.get_cluster().await.unwrap();
    let new = c.leader.unwrap().session;
    assert_ne!(new, old);
    assert_eq!(c.members["node-a"].session, new);
    let mut etcd = raw(&url).await;
    assert_eq!(
        etcd.lease_time_to_live(new, None)
            .await
            .unwrap()
            .granted_ttl(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_writes_fail_on_a_stale_index() {
    let env = start_etcd();
    let url = env.etcd.client_url();
    let a = client(&url, Some("node-a"), 3, 10);

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

    assert!(a
        .set_failover_value(r#"{"leader":"node-a"}"#, None)
        .await
        .unwrap());
    let f = a.get_cluster().await.unwrap().failover.unwrap().index;
    assert!(!a.set_failover_value("{}", Some(f - 1)).await.unwrap());
    assert!(a.set_failover_value("{}", Some(f)).await.unwrap());
    assert!(a.get_cluster().await.unwrap().failover_request().is_none());

    let sync = SyncState::new("node-a", &["node-b".to_string()]);
    assert!(a.set_sync_state(&sync, None).await.unwrap());
    let s = a.get_cluster().await.unwrap().sync.unwrap();
    assert_eq!(s.value, sync);
    assert!(!a.set_sync_state(&sync, Some(s.index - 1)).await.unwrap());
    assert!(!a.delete_sync_state(Some(s.index - 1)).await.unwrap());
    assert!(a.delete_sync_state(Some(s.index)).await.unwrap());
    assert!(a.get_cluster().await.unwrap().sync.is_none());

    // initialize: one winner of the bootstrap race, then a plain overwrite with the sysid.
    let b = client(&url, Some("node-b"), 3, 10);
    assert!(a.initialize(true, "").await.unwrap());
    assert!(!b.initialize(true, "").await.unwrap());
    assert!(a.initialize(false, "7711336143377005909").await.unwrap());
    assert_eq!(
        b.get_cluster().await.unwrap().sysid(),
        Some("7711336143377005909")
    );
    a.cancel_initialization().await.unwrap();
    assert!(b.get_cluster().await.unwrap().initialize.is_none());

    a.write_status(&Status {
        optime: 67108960,
        ..Status::default()
    })
    .await
    .unwrap();
    let mut etcd = raw(&url).await;
    assert_eq!(
        raw_get(&mut etcd, "/service/batman/status")
            .await
            .unwrap()
            .0,
        r#"{"optime":67108960}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_wakes_subscribers_promptly() {
    let env = start_etcd();
    let url = env.etcd.client_url();
    let ctl = client(&url, None, 3, 10);
    let a = client(&url, Some("node-a"), 3, 10);
    assert!(a.attempt_to_acquire_leader().await.unwrap());

    let mut rx = ctl.subscribe();
    wait_watch_live(&ctl, &mut rx).await;

    a.delete_leader().await.unwrap();
    let took = assert_wakes(&mut rx, "deleting the leader key").await;
    eprintln!("woken {took:?} after the leader key was deleted");

    ctl.set_failover_value(r#"{"leader":"node-a","member":"node-b"}"#, None)
        .await
        .unwrap();
    let took = assert_wakes(&mut rx, "writing the failover key").await;
    eprintln!("woken {took:?} after the failover key was written");

    // A second subscriber shares the same task and counter.
    let mut rx2 = ctl.subscribe();
    rx2.borrow_and_update();
    a.set_config_value("{}", None).await.unwrap();
    assert_wakes(&mut rx2, "writing the config key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_shorter_than_retry_timeout_is_ridden_out() {
    let env = start_etcd();
    let url = env.etcd.client_url();
    let a = client(&url, Some("node-a"), 5, 10);
    a.touch_member(&member("running", 5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());

    env.etcd.pause().unwrap();
    let started = Instant::now();
    let (refreshed, ()) = tokio::join!(a.update_leader(), async {
        // The fault's duration, not a synchronisation.
        sleep(Duration::from_secs(2)).await;
        env.etcd.resume().unwrap();
    });
    let took = started.elapsed();
    assert!(
        refreshed.unwrap(),
        "update_leader succeeds once etcd answers again"
    );
    assert!(
        took >= Duration::from_millis(1500),
        "it did wait for etcd: {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "within retry_timeout: {took:?}"
    );
    assert_eq!(a.get_cluster().await.unwrap().leader_name(), Some("node-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_etcd_fails_operations_within_retry_timeout() {
    let env = start_etcd();
    let url = env.etcd.client_url();
    let a = client(&url, Some("node-a"), 10, 2);
    assert!(a.attempt_to_acquire_leader().await.unwrap());

    env.etcd.pause().unwrap();
    let started = Instant::now();
    let refreshed = a.update_leader().await;
    let took = started.elapsed();
    let read = a.get_cluster().await;
    env.etcd.resume().unwrap();

    let err = refreshed.expect_err("update_leader must not report success from a hung etcd");
    assert!(matches!(err, DcsError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    assert!(
        took < Duration::from_millis(3500),
        "bounded by retry_timeout: {took:?}"
    );
    assert!(read.is_err());

    eventually(
        "etcd to answer after resume",
        Duration::from_secs(20),
        || async { a.get_cluster().await.is_ok() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_etcd_gives_a_clear_error_and_is_reconnected_after_restart() {
    let mut env = start_etcd();
    let url = env.etcd.client_url();
    let a = client(&url, Some("node-a"), 10, 2);
    let observer = client(&url, None, 10, 10);
    a.touch_member(&member("running", 5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    let mut rx = observer.subscribe();
    wait_watch_live(&observer, &mut rx).await;

    env.etcd.stop().unwrap();
    let started = Instant::now();
    let err = a.get_cluster().await.expect_err("etcd is down");
    let took = started.elapsed();
    let text = err.to_string();
    eprintln!("error with etcd stopped: {text}");
    assert!(matches!(err, DcsError::Unavailable { .. }), "{text}");
    assert!(text.contains(&url), "names the endpoint: {text}");
    assert!(text.contains("etcd3.hosts"), "suggests the fix: {text}");
    assert!(
        took >= Duration::from_millis(1500),
        "retried for retry_timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "bounded by retry_timeout: {took:?}"
    );
    assert!(a.attempt_to_acquire_leader().await.is_err());
    assert!(a.update_leader().await.is_err());

    env.etcd.restart().unwrap();
    eventually(
        "the client to reconnect",
        Duration::from_secs(20),
        || async { a.get_cluster().await.is_ok() },
    )
    .await;
    rx.borrow_and_update();
    a.set_failover_value("{}", None).await.unwrap();
    timeout(Duration::from_secs(15), rx.changed())
        .await
        .expect("the watch resumes after an etcd restart")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_cluster_reads_a_patroni_dump() {
    let env = start_etcd();
    let url = env.etcd.client_url();
    let mut etcd = raw(&url).await;
    let lease = etcd.lease_grant(30, None).await.unwrap().id();
    let on_lease = || Some(PutOptions::new().with_lease(lease));
    let node0 = r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"master","version":"3.0.2","xlog_location":67108960,"timeline":1}"#;
    let node1 = r#"{"conn_url": "postgres://127.0.0.1:5433/postgres", "api_url": "http://127.0.0.1:8009/patroni", "state": "running", "role": "replica", "version": "3.0.2"}"#;
    let puts = [
        (
            "/service/batman/config",
            r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,"postgresql":{"use_pg_rewind":true,"parameters":{"wal_log_hints":"on"}}}"#,
        ),
        ("/service/batman/initialize", "7711336143377005909"),
        ("/service/batman/members/node1", node1),
        ("/service/batman/members/node1/extra", "x"),
        ("/service/batman/status", r#"{"optime":67108960}"#),
        ("/service/batman/failover", "{}"),
        (
            "/service/batman/sync",
            r#"{"leader":"node0","sync_standby":"node1"}"#,
        ),
        (
            "/service/batman/history",
            r#"[[1,67109256,"no recovery target specified","2026-11-23T12:03:43.568589+00:00","node1"]]"#,
        ),
        ("/service/batmanx/leader", "intruder"),
    ];
    for (k, v) in puts {
        etcd.put(k, v, None).await.unwrap();
    }
    etcd.put("/service/batman/leader", "node0", on_lease())
        .await
        .unwrap();
    etcd.put("/service/batman/members/node0", node0, on_lease())
        .await
        .unwrap();

    let ctl = client(&url, None, 30, 10);
    let c = ctl.get_cluster().await.unwrap();
    let all = etcd
        .get("/service/batman/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(c.revision, all.header().unwrap().revision());

    let leader = c.leader.as_ref().unwrap();
    assert_eq!(leader.name, "node0");
    assert_eq!(leader.session, lease);
    assert_eq!(c.leader_member().unwrap().data.role, Some(Role::Primary));
    assert_eq!(c.members.len(), 2);
    assert_eq!(c.members["node0"].session, lease);
    assert_eq!(c.members["node1"].session, 0);
    assert_eq!(
        c.members["node1"].data.api_host_port(),
        Some(("127.0.0.1".into(), 8009))
    );
    assert_eq!(c.sysid(), Some("7711336143377005909"));
    assert_eq!(c.optime(), Some(67108960));
    assert!(c.failover_request().is_none());
    assert!(c.sync_state().unwrap().is_sync_standby("node1"));
    assert_eq!(c.timeline(), 2);
    assert_eq!(c.config.as_ref().unwrap().value["loop_wait"], 10);
    assert!(!c.is_paused());
    assert_eq!(
        c.other.get("members/node1/extra").map(String::as_str),
        Some("x")
    );
    assert!(
        !c.other.values().any(|v| v == "intruder"),
        "keys of other scopes are ignored"
    );

    // delete_cluster removes exactly our prefix.
    ctl.delete_cluster().await.unwrap();
    assert!(raw_get(&mut etcd, "/service/batman/config").await.is_none());
    assert!(raw_get(&mut etcd, "/service/batmanx/leader")
        .await
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_mode_needs_no_lease_and_rejects_member_operations() {
    let env = start_etcd();
    let url = env.etcd.client_url();
    let ctl = client(&url, None, 3, 10);
    assert!(matches!(
        ctl.attempt_to_acquire_leader().await,
        Err(DcsError::Rejected { .. })
    ));
    assert!(matches!(
        ctl.touch_member(&member("running", 5432)).await,
        Err(DcsError::Rejected { .. })
    ));
    assert!(ctl.set_failover_value("{}", None).await.unwrap());
    ctl.release_lease().await.unwrap();
    let mut etcd = raw(&url).await;
    assert!(
        etcd.leases().await.unwrap().leases().is_empty(),
        "ctl mode took no lease"
    );

    // A proxy-style registration takes a lease only when asked to.
    ctl.put_ephemeral("proxies/p1", "{}").await.unwrap();
    let (_, lease, _) = raw_get(&mut etcd, "/service/batman/proxies/p1")
        .await
        .unwrap();
    assert_ne!(lease, 0);
    ctl.release_lease().await.unwrap();
    assert!(raw_get(&mut etcd, "/service/batman/proxies/p1")
        .await
        .is_none());
}

#[tokio::test]
async fn construction_needs_no_etcd_and_the_error_names_the_endpoint() {
    let port = pgherd_testkit::ports::free_ports(1).unwrap()[0];
    let url = format!("http://127.0.0.1:{port}");
    let a = client(&url, Some("node-a"), 3, 1);
    let err = a.get_cluster().await.expect_err("nothing listens there");
    let text = err.to_string();
    assert!(
        text.contains(&url) && text.contains("etcd3.hosts"),
        "{text}"
    );
    assert!(matches!(
        a.attempt_to_acquire_leader().await,
        Err(DcsError::Unavailable { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_among_several_is_tolerated() {
    let env = start_etcd();
    let dead = format!(
        "http://127.0.0.1:{}",
        pgherd_testkit::ports::free_ports(1).unwrap()[0]
    );
    let live = env.etcd.client_url();
    let a = EtcdDcs::new(
        EtcdSettings {
            endpoints: vec![dead.clone(), live.clone()],
            ..EtcdSettings::default()
        },
        layout(),
        Some("node-a".into()),
        Duration::from_secs(3),
        Duration::from_secs(10),
    )
    .unwrap();
    let mut rx = a.subscribe();
    for _ in 0..20 {
        let started = Instant::now();
        a.touch_member(&member("running", 5432)).await.unwrap();
        assert!(a.update_leader().await.is_ok());
        a.get_cluster().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    wait_watch_live(&a, &mut rx).await;
}
