//! `EtcdDcs` against a real etcd (Debian's etcd-server) started per test on loopback.
//! Every wait is a poll with a generous deadline: these run on small, busy CI machines.
//! What the tests read and write behind the client's back goes through `etcdctl` (Debian's
//! etcd-client package), an independent etcd v3 client.

use base64::Engine as _;
use pgherd_dcs::etcd::{EtcdDcs, EtcdSettings};
use pgherd_dcs::{Dcs, DcsError, Failover, KeyLayout, MemberData, Role, Status, SyncState};
use pgherd_testkit::etcd::{EtcdServer, EtcdTls};
use pgherd_testkit::pki::Pki;
use serde_json::Value;
use std::future::Future;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::time::{sleep, timeout};

/// How long a subscriber may take to notice a change (a local watch takes milliseconds).
const WAKE_BOUND: Duration = Duration::from_secs(3);
/// How long one etcdctl run may take before it is killed.
const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(20);

struct Env {
    etcd: EtcdServer,
    _dir: TempDir,
}

fn start_etcd() -> Env {
    start_etcd_with(&[])
}

fn start_etcd_with(args: &[&str]) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdServer::start_with(dir.path(), args).expect("start etcd");
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
    client_with(settings(url), name, ttl_s, retry_s)
}

fn client_with(settings: EtcdSettings, name: Option<&str>, ttl_s: u64, retry_s: u64) -> EtcdDcs {
    EtcdDcs::new(
        settings,
        layout(),
        name.map(str::to_string),
        Duration::from_secs(ttl_s),
        Duration::from_secs(retry_s),
    )
    .expect("EtcdDcs::new")
}

/// Runs `etcdctl --endpoints=<url> <args>` and returns its standard output; the process is
/// killed (by PID, when the future is dropped) if it outlives [`ETCDCTL_TIMEOUT`].
async fn etcdctl(url: &str, args: &[&str]) -> String {
    let mut command = tokio::process::Command::new("etcdctl");
    command
        .arg(format!("--endpoints={url}"))
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = timeout(ETCDCTL_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("etcdctl {args:?} did not finish within {ETCDCTL_TIMEOUT:?}"))
        .expect("etcdctl (Debian package etcd-client)");
    assert!(
        output.status.success(),
        "etcdctl {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn etcdctl_json(url: &str, args: &[&str]) -> Value {
    let args = [args, &["-w", "json"]].concat();
    let out = etcdctl(url, &args).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("etcdctl {args:?} printed {out}: {e}"))
}

/// A base64 `bytes` field of etcdctl's JSON, as text.
fn text(v: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_default())
        .expect("etcdctl prints base64");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An int64 field of etcdctl's JSON (absent: 0, as protobuf).
fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// `(value, lease, mod_revision)` of a full key, read directly from etcd.
async fn raw_get(url: &str, key: &str) -> Option<(String, i64, i64)> {
    let resp = etcdctl_json(url, &["get", key]).await;
    let kv = resp["kvs"].get(0)?;
    Some((
        text(&kv["value"]),
        int(&kv["lease"]),
        int(&kv["mod_revision"]),
    ))
}

async fn raw_put(url: &str, key: &str, value: &str, lease: Option<i64>) {
    let lease = lease.map(|l| format!("--lease={l:x}"));
    let mut args = vec!["put", key, value];
    args.extend(lease.as_deref());
    etcdctl(url, &args).await;
}

async fn raw_delete(url: &str, key: &str) {
    etcdctl(url, &["del", key]).await;
}

async fn lease_granted_ttl(url: &str, lease: i64) -> i64 {
    let lease = format!("{lease:x}");
    int(&etcdctl_json(url, &["lease", "timetolive", &lease]).await["granted-ttl"])
}

async fn lease_count(url: &str) -> usize {
    let resp = etcdctl_json(url, &["lease", "list"]).await;
    resp["leases"].as_array().map_or(0, Vec::len)
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
    let (value, lease, _) = raw_get(&url, "/service/batman/leader").await.unwrap();
    assert_eq!(value, winner, "the leader key holds the bare member name");
    assert_eq!(
        lease, member_lease,
        "leader and member keys share the agent's lease"
    );
    assert_eq!(cluster.leader.as_ref().unwrap().session, lease);
    assert_eq!(lease_granted_ttl(&url, lease).await, 3);

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

    let (value, lease, rev) = raw_get(&url, "/service/batman/members/node-a")
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
        raw_get(&url, "/service/batman/members/node-a")
            .await
            .unwrap()
            .2,
        rev
    );

    a.touch_member(&member("stopped", 5432)).await.unwrap();
    let (value, _, rev2) = raw_get(&url, "/service/batman/members/node-a")
        .await
        .unwrap();
    assert!(rev2 > rev);
    assert!(value.contains(r#""state":"stopped""#));

    // Removed behind our back (patronictl remove): the next cycle's read notices, and the
    // following touch rewrites it.
    raw_delete(&url, "/service/batman/members/node-a").await;
    a.get_cluster().await.unwrap();
    a.touch_member(&member("stopped", 5432)).await.unwrap();
    assert!(raw_get(&url, "/service/batman/members/node-a")
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
    assert_eq!(lease_granted_ttl(&url, new).await, 5);
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
        .set_failover(
            &Failover {
                leader: Some("node-a".into()),
                ..Failover::none()
            },
            None
        )
        .await
        .unwrap());
    let f = a.get_cluster().await.unwrap().failover.unwrap().index;
    assert!(!a
        .set_failover(&Failover::none(), Some(f - 1))
        .await
        .unwrap());
    assert!(a.set_failover(&Failover::none(), Some(f)).await.unwrap());
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
    assert!(a.claim_initialize().await.unwrap());
    assert!(!b.claim_initialize().await.unwrap());
    a.write_initialize("7711336143377005909").await.unwrap();
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
    assert_eq!(
        raw_get(&url, "/service/batman/status").await.unwrap().0,
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

    ctl.set_failover(
        &Failover {
            leader: Some("node-a".into()),
            member: Some("node-b".into()),
            ..Failover::none()
        },
        None,
    )
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

/// SIGSTOP of etcd (by PID) for as long as it lives; SIGCONT when dropped, also when the test
/// fails, so that the etcd process can be stopped normally.
struct Frozen<'a>(&'a EtcdServer);

impl<'a> Frozen<'a> {
    fn new(etcd: &'a EtcdServer) -> Frozen<'a> {
        etcd.pause().expect("SIGSTOP etcd");
        Frozen(etcd)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.resume() {
            eprintln!("SIGCONT etcd: {e:#}");
        }
    }
}

/// Runs `call` and checks that it fails within the retry budget (plus one second of slack).
async fn fails_in_time<T: std::fmt::Debug>(
    what: &str,
    budget: Duration,
    call: impl Future<Output = Result<T, DcsError>>,
) -> DcsError {
    let started = Instant::now();
    // The outer timeout only turns a hang into a readable failure.
    let result = timeout(budget * 3, call).await;
    let took = started.elapsed();
    let result = result.unwrap_or_else(|_| panic!("{what} still blocked after {took:?}"));
    let err = result.expect_err(&format!("{what} must fail"));
    eprintln!("{what}: failed after {took:?}: {err}");
    assert!(
        took <= budget + Duration::from_secs(1),
        "{what} took {took:?}, budget {budget:?}: {err}"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_etcd_fails_every_call_within_retry_timeout_and_the_client_recovers() {
    let env = start_etcd();
    let url = env.etcd.client_url();
    let budget = Duration::from_secs(2);
    // The lease outlives the freeze, so that the keys are still ours afterwards.
    let a = client(&url, Some("node-a"), 60, 2);
    a.touch_member(&member("running", 5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    let mut rx = a.subscribe();
    wait_watch_live(&a, &mut rx).await;

    let fresh = client(&url, Some("node-b"), 60, 2);
    let mut fresh_rx = {
        let _frozen = Frozen::new(&env.etcd);
        let err = fails_in_time("get_cluster", budget, a.get_cluster()).await;
        assert!(matches!(err, DcsError::Unavailable { .. }), "{err}");
        assert!(err.to_string().contains(&url), "{err}");
        let stopped = member("stopped", 5432);
        fails_in_time("touch_member", budget, a.touch_member(&stopped)).await;
        let acquire = a.attempt_to_acquire_leader();
        fails_in_time("attempt_to_acquire_leader", budget, acquire).await;
        let err = fails_in_time("update_leader", budget, a.update_leader()).await;
        assert!(matches!(err, DcsError::Unavailable { .. }), "{err}");
        fails_in_time("delete_leader", budget, a.delete_leader()).await;
        fails_in_time("release_lease", budget, a.release_lease()).await;
        let none = Failover::none();
        let failover = a.set_failover(&none, None);
        fails_in_time("set_failover", budget, failover).await;

        // Callers queued behind the lease lock share the same budget.
        let started = Instant::now();
        let (touched, refreshed) = tokio::join!(a.touch_member(&stopped), a.update_leader());
        let took = started.elapsed();
        assert!(touched.is_err() && refreshed.is_err());
        assert!(
            took <= budget + Duration::from_secs(1),
            "concurrent calls took {took:?}"
        );

        // A client that never connected: connecting and the first watch are bounded too.
        let started = Instant::now();
        let fresh_rx = fresh.subscribe();
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "subscribe never blocks"
        );
        fails_in_time("a new client's get_cluster", budget, fresh.get_cluster()).await;
        let touch = fresh.touch_member(&stopped);
        fails_in_time("a new client's touch_member", budget, touch).await;
        fresh_rx
    };

    eventually(
        "the new client to reach etcd after SIGCONT",
        Duration::from_secs(20),
        || async { fresh.get_cluster().await.is_ok() },
    )
    .await;
    wait_watch_live(&fresh, &mut fresh_rx).await;

    // Requests of the frozen period may still be applied when etcd wakes up (they sat in its
    // socket buffers), so recovery is judged by the end state: both keys are ours again.
    eventually(
        "node-a to hold the leader key and its member key again",
        Duration::from_secs(20),
        || async {
            if let Ok(c) = a.get_cluster().await {
                if c.leader_name() == Some("node-a")
                    && c.members
                        .get("node-a")
                        .is_some_and(|m| m.data.state == "running")
                {
                    return true;
                }
            }
            // As the HA loop would: write what is missing, and look again next round.
            let _ = a.touch_member(&member("running", 5432)).await;
            let _ = a.attempt_to_acquire_leader().await;
            false
        },
    )
    .await;
    assert!(a.update_leader().await.unwrap());
    wait_watch_live(&a, &mut rx).await;
    a.release_lease().await.unwrap();
    assert!(a.get_cluster().await.unwrap().leader.is_none());
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
    a.set_failover(&Failover::none(), None).await.unwrap();
    timeout(Duration::from_secs(15), rx.changed())
        .await
        .expect("the watch resumes after an etcd restart")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_cluster_reads_a_patroni_dump() {
    let env = start_etcd();
    let url = env.etcd.client_url();
    let lease = int(&etcdctl_json(&url, &["lease", "grant", "30"]).await["ID"]);
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
        raw_put(&url, k, v, None).await;
    }
    raw_put(&url, "/service/batman/leader", "node0", Some(lease)).await;
    raw_put(&url, "/service/batman/members/node0", node0, Some(lease)).await;

    let ctl = client(&url, None, 30, 10);
    let c = ctl.get_cluster().await.unwrap();
    let all = etcdctl_json(&url, &["get", "--prefix", "/service/batman/"]).await;
    assert_eq!(c.revision, int(&all["header"]["revision"]));

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
    assert!(raw_get(&url, "/service/batman/config").await.is_none());
    assert!(raw_get(&url, "/service/batmanx/leader").await.is_some());
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
    assert!(ctl.set_failover(&Failover::none(), None).await.unwrap());
    ctl.release_lease().await.unwrap();
    assert!(lease_count(&url).await == 0, "ctl mode took no lease");

    // A proxy-style registration takes a lease only when asked to.
    ctl.put_ephemeral("proxies/p1", "{}").await.unwrap();
    let (_, lease, _) = raw_get(&url, "/service/batman/proxies/p1").await.unwrap();
    assert_ne!(lease, 0);
    ctl.release_lease().await.unwrap();
    assert!(raw_get(&url, "/service/batman/proxies/p1").await.is_none());
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

/// A refusal that is not worth retrying and names the settings to check.
fn assert_credentials_refused(err: &DcsError) {
    assert!(matches!(err, DcsError::Rejected { .. }), "{err}");
    assert!(
        err.to_string().contains("etcd3 username and password"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_sends_a_token_and_renews_it_when_etcd_refuses_it() {
    // Tokens expire after one idle second, so that the test meets a refused token.
    let env = start_etcd_with(&["--auth-token-ttl=1"]);
    let url = env.etcd.client_url();
    let setup: [&[&str]; 6] = [
        &["user", "add", "root:root-pass"],
        &["role", "add", "pgherd"],
        &[
            "role",
            "grant-permission",
            "pgherd",
            "--prefix=true",
            "readwrite",
            "/service/",
        ],
        &["user", "add", "pgherd:secret"],
        &["user", "grant-role", "pgherd", "pgherd"],
        &["auth", "enable"],
    ];
    for args in setup {
        etcdctl(&url, args).await;
    }
    let as_user = |user: &str, password: &str| EtcdSettings {
        username: Some(user.to_string()),
        password: Some(password.to_string()),
        ..settings(&url)
    };

    // Without credentials, or with a wrong password: refused at once, naming the settings.
    let started = Instant::now();
    let anonymous = client(&url, None, 10, 3);
    let err = anonymous
        .get_cluster()
        .await
        .expect_err("etcd requires a user");
    assert_credentials_refused(&err);
    let wrong = client_with(as_user("pgherd", "wrong"), Some("node-b"), 10, 3);
    let err = wrong
        .touch_member(&member("running", 5433))
        .await
        .expect_err("bad password");
    assert_credentials_refused(&err);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusals are not retried: {:?}",
        started.elapsed()
    );

    let a = client_with(as_user("pgherd", "secret"), Some("node-a"), 10, 3);
    a.touch_member(&member("running", 5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    let mut rx = a.subscribe();
    wait_watch_live(&a, &mut rx).await;
    let root = ["--user", "root:root-pass", "get", "/service/batman/leader"];
    assert!(etcdctl(&url, &root).await.contains("node-a"));

    // The fault: idle for longer than the token lives.
    sleep(Duration::from_millis(2500)).await;
    assert!(a.update_leader().await.unwrap(), "a new token is fetched");
    assert_eq!(a.get_cluster().await.unwrap().leader_name(), Some("node-a"));
    let log = std::fs::read_to_string(env.etcd.log_path()).unwrap_or_default();
    assert!(
        log.contains("invalid auth token"),
        "etcd refused the expired token (log {})",
        env.etcd.log_path().display()
    );
    // The watch was authorised when it was created and keeps delivering.
    wait_watch_live(&a, &mut rx).await;

    // Authenticating against a frozen etcd is bounded by the budget too.
    let fresh = client_with(as_user("pgherd", "secret"), Some("node-c"), 10, 2);
    {
        let _frozen = Frozen::new(&env.etcd);
        let err = fails_in_time(
            "authenticating",
            Duration::from_secs(2),
            fresh.get_cluster(),
        )
        .await;
        assert!(err.to_string().contains("authenticating"), "{err}");
    }
    eventually(
        "the new client to authenticate after SIGCONT",
        Duration::from_secs(20),
        || async { fresh.get_cluster().await.is_ok() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_our_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(dir.path()).expect("certificates");
    let tls = EtcdTls {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: pki.ca.clone(),
    };
    let etcd = EtcdServer::start_tls(&dir.path().join("etcd"), tls).expect("start etcd");
    let https = etcd.tls_client_url().expect("an https listener");
    let with = |cacert: bool, identity: bool| EtcdSettings {
        cacert: cacert.then(|| pki.ca.clone()),
        cert: identity.then(|| pki.client_cert.clone()),
        key: identity.then(|| pki.client_key.clone()),
        ..settings(&https)
    };

    let a = client_with(with(true, true), Some("node-a"), 10, 3);
    a.touch_member(&member("running", 5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    let mut rx = a.subscribe();
    wait_watch_live(&a, &mut rx).await;
    let (holder, lease, _) = raw_get(&etcd.client_url(), "/service/batman/leader")
        .await
        .expect("the leader key");
    assert_eq!(holder, "node-a");
    assert_ne!(lease, 0);

    // A bare host:port is https when TLS files are configured.
    let bare = EtcdSettings {
        endpoints: vec![https.trim_start_matches("https://").to_string()],
        ..with(true, true)
    };
    let c = client_with(bare, None, 10, 3).get_cluster().await.unwrap();
    assert_eq!(c.leader_name(), Some("node-a"));

    // Without a client certificate, or without the CA that signed etcd's: refused in the
    // handshake, an error that names the endpoint, within the budget.
    let budget = Duration::from_secs(2);
    for (what, settings) in [
        ("no client certificate", with(true, false)),
        ("no CA", with(false, true)),
    ] {
        let err = fails_in_time(
            what,
            budget,
            client_with(settings, None, 10, 2).get_cluster(),
        )
        .await;
        assert!(err.to_string().contains(&https), "{what}: {err}");
    }
}

/// The common Patroni setup: one certificate made by `openssl req -x509` (`CA:TRUE`) as etcd's
/// certificate and CA (`--client-cert-auth`), and as our CA file and client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_single_openssl_self_signed_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) =
        pgherd_testkit::pki::openssl_self_signed(dir.path(), "single").expect("openssl");
    let (stranger, stranger_key) =
        pgherd_testkit::pki::openssl_self_signed(dir.path(), "stranger").expect("openssl");
    let tls = EtcdTls {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: cert.clone(),
    };
    let etcd = EtcdServer::start_tls(&dir.path().join("etcd"), tls).expect("start etcd");
    let https = etcd.tls_client_url().expect("an https listener");
    let with =
        |cacert: &std::path::Path, cert: &std::path::Path, key: &std::path::Path| EtcdSettings {
            cacert: Some(cacert.to_path_buf()),
            cert: Some(cert.to_path_buf()),
            key: Some(key.to_path_buf()),
            ..settings(&https)
        };

    let a = client_with(with(&cert, &cert, &key), Some("node-a"), 10, 3);
    a.touch_member(&member("running", 5432)).await.unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    let c = a.get_cluster().await.unwrap();
    assert_eq!(c.leader_name(), Some("node-a"));

    // etcd refuses a client certificate it does not trust; we refuse an etcd certificate we
    // do not trust.
    let budget = Duration::from_secs(2);
    for (what, settings) in [
        (
            "an untrusted client certificate",
            with(&cert, &stranger, &stranger_key),
        ),
        (
            "an untrusted etcd certificate",
            with(&stranger, &cert, &key),
        ),
    ] {
        let err = fails_in_time(
            what,
            budget,
            client_with(settings, None, 10, 2).get_cluster(),
        )
        .await;
        assert!(err.to_string().contains(&https), "{what}: {err}");
    }
}
