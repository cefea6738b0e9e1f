//! Automatic failover with real etcd and three real PostgreSQL 15 servers: node crash,
//! postmaster crash (restart in place or fail over), frozen node, DCS outage.
//! Each test reads like the runbook it verifies. Run serially (`--test-threads=1`).

#![allow(
    clippy::disallowed_methods,
    reason = "synchronous tests: they wait on the test thread and plain threads, no async runtime"
)]

mod common;

use nix::sys::signal::Signal;
use pgherd_testkit::cluster::{ClusterOptions, TestCluster};
use pgherd_testkit::wait::poll;
use std::path::Path;
use std::time::Duration;

const PGHERD: &str = env!("CARGO_BIN_EXE_pgherd");

fn start(scope: &str, extra_dcs: &str) -> (TestCluster, usize) {
    let options = ClusterOptions {
        scope: scope.into(),
        extra_dcs: extra_dcs.into(),
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::new(Path::new(PGHERD), options).expect("cluster");
    c.start_all().expect("agents");
    let leader = healthy(&c, 3);
    (c, leader)
}

fn healthy(c: &TestCluster, members: usize) -> usize {
    match c.wait_healthy(members - 1, Duration::from_secs(120)) {
        Ok(l) => l,
        Err(e) => {
            dump_logs(c);
            panic!("{e}");
        }
    }
}

fn dump_logs(c: &TestCluster) {
    for i in 0..c.members.len() {
        eprintln!("--- {} ---\n{}", c.members[i].name, c.log_tail(i, 60));
    }
}

/// Waits for a leader other than `old` that accepts writes; returns it.
fn new_writable_leader(c: &TestCluster, old: usize, timeout: Duration) -> usize {
    let found = poll(
        "a new leader that accepts writes",
        timeout,
        Duration::from_millis(100),
        || {
            let l = (0..c.members.len())
                .find(|&i| i != old && matches!(c.api(i, "GET", "/leader"), Ok((200, _))))?;
            c.sql(l, "insert into t(v) values ('probe')").ok()?;
            Some(l)
        },
    );
    match found {
        Ok(l) => l,
        Err(e) => {
            dump_logs(c);
            panic!("{e}");
        }
    }
}

fn count_on(c: &TestCluster, i: usize, expected: &str) {
    let r = poll(
        "rows replicated",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            (c.sql(i, "select count(*) from t where v like 'row%'")
                .ok()?
                == expected)
                .then_some(())
        },
    );
    if let Err(e) = r {
        dump_logs(c);
        panic!("{} on {}: {e}", expected, c.members[i].name);
    }
}

#[test]
fn node_crash_fails_over_and_old_leader_rejoins() {
    let (mut c, leader) = start("crash", "");
    c.sql(leader, "create table t(id serial primary key, v text)")
        .unwrap();
    c.sql(
        leader,
        "insert into t(v) select 'row' || g from generate_series(1, 50) g",
    )
    .unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &r in &others {
        count_on(&c, r, "50");
    }

    // kill -9 the leader's agent and postmaster together: the node is gone.
    c.signal_node(leader, Signal::SIGKILL).unwrap();
    let new_leader = new_writable_leader(&c, leader, Duration::from_secs(60));
    c.sql(
        new_leader,
        "insert into t(v) select 'row' || g from generate_series(51, 100) g",
    )
    .unwrap();
    // The other replica follows the new leader.
    let other = others.into_iter().find(|&i| i != new_leader).unwrap();
    let follower = poll(
        "other replica streams from the new leader",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let n = c.sql(new_leader, &format!(
            "select count(*) from pg_stat_replication where application_name = '{}' and state = 'streaming'",
            c.members[other].name
        )).ok()?;
            (n == "1").then_some(())
        },
    );
    if let Err(e) = follower {
        dump_logs(&c);
        panic!("{e}");
    }
    count_on(&c, other, "100");

    // The killed node comes back as a replica of the new leader (rewound if needed).
    for pid in c.postgres_pids(leader) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
    c.start(leader).unwrap();
    let rejoined = poll(
        "old leader rejoins as a streaming replica",
        Duration::from_secs(90),
        Duration::from_millis(250),
        || {
            let n = c.sql(new_leader, &format!(
            "select count(*) from pg_stat_replication where application_name = '{}' and state = 'streaming'",
            c.members[leader].name
        )).ok()?;
            (n == "1").then_some(())
        },
    );
    if let Err(e) = rejoined {
        dump_logs(&c);
        panic!("{e}");
    }
    assert_eq!(c.sql(leader, "select pg_is_in_recovery()").unwrap(), "t");
    for i in 0..3 {
        count_on(&c, i, "100");
    }
    // history records the promotion.
    let (code, body) = c.api(new_leader, "GET", "/history").unwrap();
    assert_eq!(code, 200);
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(h[0][4], c.members[new_leader].name.as_str());
}

#[test]
fn postmaster_crash_restarts_in_place_by_default() {
    let (c, leader) = start("pmcrash", "");
    c.sql(leader, "create table t(id serial primary key, v text)")
        .unwrap();
    let old_pid = c.kill_postmaster(leader).unwrap();
    let back = poll(
        "the same leader is writable again",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let pid = c.postmaster_pid(leader)?;
            (pid != old_pid).then_some(())?;
            c.sql(leader, "insert into t(v) values ('row1')").ok()?;
            matches!(c.api(leader, "GET", "/primary"), Ok((200, _))).then_some(())
        },
    );
    if let Err(e) = back {
        dump_logs(&c);
        panic!("{e}");
    }
    for i in (0..3).filter(|&i| i != leader) {
        assert_eq!(c.api(i, "GET", "/leader").unwrap().0, 503);
    }
}

#[test]
fn postmaster_crash_fails_over_with_zero_start_timeout() {
    let (mut c, leader) = start("pmzero", "    primary_start_timeout: 0\n");
    c.sql(leader, "create table t(id serial primary key, v text)")
        .unwrap();
    c.sql(leader, "insert into t(v) values ('row1')").unwrap();
    for r in (0..3).filter(|&i| i != leader) {
        count_on(&c, r, "1");
    }
    // The leader's engine picks its failover candidate from the member keys: a replica still
    // finishing its clone has not said `running` yet, and the leader would then restart in
    // place instead (as Patroni does when no failover is possible).
    common::healthy(&c, 2);
    c.kill_postmaster(leader).unwrap();
    let new_leader = new_writable_leader(&c, leader, Duration::from_secs(60));
    assert_ne!(new_leader, leader);
    // The former leader rejoins as a replica on its own (its agent is alive).
    let rejoined = poll(
        "former leader replicates",
        Duration::from_secs(90),
        Duration::from_millis(250),
        || (c.sql(leader, "select pg_is_in_recovery()").ok()? == "t").then_some(()),
    );
    if let Err(e) = rejoined {
        dump_logs(&c);
        panic!("{e}");
    }
    count_on(&c, leader, "1");
    let _ = &mut c;
}

#[test]
fn etcd_outage_stops_writes_in_time_and_cluster_recovers() {
    let (mut c, leader) = start("etcdout", "");
    c.sql(leader, "create table t(id serial primary key, v text)")
        .unwrap();
    c.sql(
        leader,
        "insert into t(v) select 'row' || g from generate_series(1, 20) g",
    )
    .unwrap();
    for r in (0..3).filter(|&i| i != leader) {
        count_on(&c, r, "20");
    }
    c.etcd_mut().stop().unwrap();
    // The leader must stop accepting writes (demoted to read-only or stopped).
    let fenced = poll(
        "leader no longer writable without the DCS",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            c.sql(leader, "insert into t(v) values ('during-outage')")
                .is_err()
                .then_some(())
        },
    );
    if let Err(e) = fenced {
        dump_logs(&c);
        panic!("{e}");
    }
    c.etcd_mut().restart().unwrap();
    let l = healthy(&c, 3);
    c.sql(l, "insert into t(v) values ('row21')").unwrap();
    for i in 0..3 {
        count_on(&c, i, "21");
    }
}

/// A writer that records every acknowledged commit, and counts indeterminate ones (the
/// connection broke during COMMIT), until told to stop.
struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<(Vec<i64>, usize)>>,
}

impl Writer {
    /// Writes to whichever member `target` names (re-evaluated on each attempt).
    fn start(ports: Vec<u16>, target: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Writer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut indeterminate = 0;
            let mut id: i64 = 1_000_000;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                id += 1;
                let port = ports[target.load(std::sync::atomic::Ordering::SeqCst)];
                match pgherd_testkit::cluster::psql(
                    port,
                    &format!("insert into acked(id) values ({id})"),
                ) {
                    Ok(_) => acked.push(id),
                    Err(e) => {
                        let msg = e.to_string();
                        // The server may or may not have committed: neither success nor failure.
                        if msg.contains("server closed the connection")
                            || msg.contains("terminating connection")
                        {
                            indeterminate += 1;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            (acked, indeterminate)
        });
        Writer {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (Vec<i64>, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

/// Waits until the `sync` key names a synchronous standby.
fn wait_sync_standby(c: &TestCluster, leader: usize) {
    let sync = poll(
        "a synchronous standby",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let (_, body) = c.api(leader, "GET", "/cluster").ok()?;
            body.contains("sync_standby").then_some(())
        },
    );
    if let Err(e) = sync {
        dump_logs(c);
        panic!("{e}");
    }
}

/// Waits until member `i` holds more than `more_than` rows in `acked`.
fn wait_acked(c: &TestCluster, i: usize, more_than: u64, what: &str) {
    poll(
        what,
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let n: u64 = c.sql(i, "select count(*) from acked").ok()?.parse().ok()?;
            (n > more_than).then_some(())
        },
    )
    .unwrap();
}

fn ids_on(c: &TestCluster, i: usize) -> std::collections::BTreeSet<i64> {
    c.sql(i, "select id from acked")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn synchronous_mode_loses_no_acknowledged_commit() {
    let (mut c, leader) = start("syncmode", "    synchronous_mode: true\n");
    c.sql(leader, "create table acked(id bigint primary key)")
        .unwrap();
    wait_sync_standby(&c, leader);
    let ports: Vec<u16> = c.members.iter().map(|m| m.pg_port).collect();
    let target = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(leader));
    let writer = Writer::start(ports, target.clone());
    wait_acked(&c, leader, 50, "some commits acknowledged");
    c.signal_node(leader, Signal::SIGKILL).unwrap();
    let new_leader = new_writable_leader_sync(&c, leader);
    target.store(new_leader, std::sync::atomic::Ordering::SeqCst);
    wait_acked(&c, new_leader, 0, "writes continue on the new leader");
    let (acked, indeterminate) = writer.finish();
    let present = ids_on(&c, new_leader);
    let lost: Vec<&i64> = acked.iter().filter(|id| !present.contains(id)).collect();
    eprintln!(
        "acknowledged commits: {}, indeterminate: {indeterminate}, lost: {}",
        acked.len(),
        lost.len()
    );
    assert!(acked.len() > 50);
    assert!(
        lost.is_empty(),
        "acknowledged commits missing on the new leader: {lost:?}"
    );
    let _ = &mut c;
}

fn new_writable_leader_sync(c: &TestCluster, old: usize) -> usize {
    let found = poll(
        "a new leader",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            (0..c.members.len())
                .find(|&i| i != old && matches!(c.api(i, "GET", "/primary"), Ok((200, _))))
        },
    );
    match found {
        Ok(l) => l,
        Err(e) => {
            dump_logs(c);
            panic!("{e}");
        }
    }
}

#[test]
fn frozen_leader_never_accepts_writes_after_takeover_and_rejoins() {
    // Synchronous mode: a primary that wakes up after others took over cannot acknowledge a
    // commit (its synchronous standby follows the new leader) before its fence stops it.
    let (mut c, leader) = start("frozen", "    synchronous_mode: true\n");
    c.sql(leader, "create table acked(id bigint primary key)")
        .unwrap();
    wait_sync_standby(&c, leader);
    let ports: Vec<u16> = c.members.iter().map(|m| m.pg_port).collect();
    // The writer keeps hitting the frozen node throughout.
    let writer = Writer::start(
        ports,
        std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(leader)),
    );
    wait_acked(&c, leader, 20, "commits before the freeze");
    c.signal_node(leader, Signal::SIGSTOP).unwrap();
    let new_leader = new_writable_leader_sync(&c, leader);
    c.sql(new_leader, "insert into acked(id) values (1)")
        .unwrap();
    c.signal_node(leader, Signal::SIGCONT).unwrap();
    let rejoined = poll(
        "old leader rejoins as replica",
        Duration::from_secs(90),
        Duration::from_millis(250),
        || (c.sql(leader, "select pg_is_in_recovery()").ok()? == "t").then_some(()),
    );
    let (acked, indeterminate) = writer.finish();
    if let Err(e) = rejoined {
        dump_logs(&c);
        panic!("{e}");
    }
    let present = ids_on(&c, new_leader);
    let lost: Vec<&i64> = acked.iter().filter(|id| !present.contains(id)).collect();
    eprintln!(
        "acknowledged on the old leader: {}, indeterminate: {indeterminate}",
        acked.len()
    );
    assert!(
        lost.is_empty(),
        "the old leader acknowledged writes the new leader does not have: {lost:?}"
    );
    let _ = &mut c;
}

/// `failsafe_mode: true` (docs/compat.md#failsafe-mode): with etcd gone for longer than two
/// ttls, the leader reaches every member, so it stays primary and keeps acknowledging writes;
/// no acknowledged write is lost when etcd returns. A second outage while one member's agent
/// is frozen (it cannot acknowledge) makes the leader stop accepting writes, as without
/// failsafe mode.
#[test]
fn failsafe_mode_keeps_writes_through_an_etcd_outage() {
    let (mut c, leader) = start("failsafe", "    failsafe_mode: true\n");
    // The leader publishes the topology after its next lock update.
    let topology = poll(
        "the failsafe topology in etcd",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let v: serde_json::Value = serde_json::from_str(&c.dcs_value("failsafe")?).ok()?;
            (v.as_object()?.len() == 3).then_some(v)
        },
    )
    .unwrap();
    for m in &c.members {
        assert!(topology[&m.name].as_str().is_some(), "{topology}");
    }
    c.sql(leader, "create table acked(id bigint primary key)")
        .unwrap();
    let writer = pgherd_testkit::writer::Writer::start(
        c.members[leader].pg_port,
        "acked",
        Duration::from_millis(50),
    )
    .unwrap();
    wait_acked(&c, leader, 10, "writes before the outage");

    c.etcd_mut().stop().unwrap();
    let outage = std::time::Instant::now();
    let replica = (0..3).find(|&i| i != leader).unwrap();
    let active = poll(
        "failsafe_mode_is_active on the leader and a replica",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let active = |i: usize| {
                let (_, body) = c.api(i, "GET", "/patroni").ok()?;
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                Some(v["failsafe_mode_is_active"] == true)
            };
            (active(leader)? && active(replica)?).then_some(())
        },
    );
    if let Err(e) = active {
        dump_logs(&c);
        panic!("{e}");
    }
    // Hold the outage for 2.5 ttls (ttl 10 s): without failsafe mode the leader demotes
    // within one. Writes must still be acknowledged in its last 5 s.
    let acked_at = |secs: u64| {
        std::thread::sleep(Duration::from_secs(secs).saturating_sub(outage.elapsed()));
        writer.report().acked.len()
    };
    let (at_20s, at_25s) = (acked_at(20), acked_at(25));
    let still_primary = c.sql(leader, "select pg_is_in_recovery()");
    let write = c.sql(leader, "insert into acked(id) values (-1)");
    let (status, failsafe) = c.api(replica, "GET", "/failsafe").unwrap();
    c.etcd_mut().restart().unwrap();
    if !matches!(still_primary.as_deref(), Ok("f")) || write.is_err() {
        dump_logs(&c);
        panic!("leader stopped accepting writes during the outage: {still_primary:?} {write:?}");
    }
    assert_eq!(status, 200, "{failsafe}");
    assert!(failsafe.contains(&c.members[leader].name), "{failsafe}");

    let after = healthy(&c, 3);
    assert_eq!(
        after, leader,
        "the leader that kept running takes its key back"
    );
    let report = writer.stop();
    // The figure the issue asks for (a write gap of 0 s across the outage, one write per 50 ms).
    println!(
        "failsafe_outage_max_write_gap={:.3} s acked={} refused={} indeterminate={}",
        report.max_gap.as_secs_f64(),
        report.acked.len(),
        report.refused,
        report.indeterminate.len()
    );
    assert!(
        at_25s > at_20s,
        "no write acknowledged between 20 s and 25 s into the outage ({at_20s} acked)"
    );
    let present = ids_on(&c, leader);
    assert_eq!(report.missing_in(&present), Vec::<i64>::new());

    // One member cannot acknowledge (its agent is frozen): the leader must stop.
    let frozen = c.agent_pid(replica).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(frozen), Signal::SIGSTOP).unwrap();
    c.etcd_mut().stop().unwrap();
    let fenced = poll(
        "leader no longer writable: a member did not acknowledge it",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || match c.sql(leader, "select pg_is_in_recovery()").as_deref() {
            Ok("f") => None,
            other => Some(format!("{other:?}")),
        },
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(frozen), Signal::SIGCONT).unwrap();
    c.etcd_mut().restart().unwrap();
    match fenced {
        Ok(how) => eprintln!("the leader stopped being a primary: {how}"),
        Err(e) => {
            dump_logs(&c);
            panic!("{e}");
        }
    }
    healthy(&c, 3);
}

/// Reads Patroni's testing watchdog device (a named pipe) for a test: what the agent wrote,
/// in order. The pipe is opened before the agent starts (the testing driver refuses to arm a
/// pipe nobody reads) and read until the reader is dropped.
struct WatchdogPipe {
    written: std::sync::Arc<std::sync::Mutex<String>>,
    /// When the last bytes arrived.
    last_write: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WatchdogPipe {
    fn create(path: &Path) -> WatchdogPipe {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Non-blocking: opening for reading does not wait for a writer, reading does not
        // wait for data (EOF while no writer holds it: poll again).
        let mut pipe = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(path)
            .unwrap();
        let written = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let last_write = std::sync::Arc::new(std::sync::Mutex::new(None));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (w, s, l) = (written.clone(), stop.clone(), last_write.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                match pipe.read(&mut buf) {
                    Ok(n) if n > 0 => {
                        w.lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n]));
                        *l.lock().unwrap() = Some(std::time::Instant::now());
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        WatchdogPipe {
            written,
            last_write,
            stop,
            thread: Some(thread),
        }
    }

    fn written(&self) -> String {
        self.written.lock().unwrap().clone()
    }

    /// How long nothing was written (no keepalive) up to now.
    fn silent_for(&self) -> Duration {
        self.last_write
            .lock()
            .unwrap()
            .map_or(Duration::ZERO, |at| at.elapsed())
    }
}

impl Drop for WatchdogPipe {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The watchdog (docs/compat.md#watchdog) in `required` mode with Patroni's testing driver:
/// the leader arms it with `ttl - fencing margin` (8 s at ttl 10) and keeps it alive, the
/// replicas never touch it, a clean stop releases it with the magic close before the next
/// leader arms its own; a member whose device is missing reports `watchdog_failed`, is
/// refused as a switchover candidate and never leads; a frozen leader's agent lets the
/// watchdog run out.
#[test]
fn watchdog_is_armed_by_the_leader_only_and_released_on_a_clean_stop() {
    let options = ClusterOptions {
        scope: "watchdog".into(),
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::new(Path::new(PGHERD), options).expect("cluster");
    // node1 and node2 have a pipe; node3's device does not exist.
    let mut pipes = Vec::new();
    for (i, m) in c.members.iter().enumerate() {
        let device = m.dir.join("watchdog");
        if i < 2 {
            pipes.push(WatchdogPipe::create(&device));
        }
        let yaml = std::fs::read_to_string(&m.config).unwrap();
        let section = format!(
            "watchdog:\n  mode: required\n  driver: testing\n  device: {}\n",
            device.display()
        );
        std::fs::write(
            &m.config,
            yaml.replace("watchdog:\n  mode: off\n", &section),
        )
        .unwrap();
    }
    c.start(0).unwrap();
    let leader = healthy(&c, 1);
    assert_eq!(leader, 0, "only node1 may lead before node2 starts");
    c.sql(0, "create table t(id serial primary key, v text)")
        .unwrap();
    c.start(1).unwrap();
    c.start(2).unwrap();
    healthy(&c, 3);

    let armed = poll(
        "the leader arms its watchdog and keeps it alive",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let w = pipes[0].written();
            let after = w.split_once("Ctimeout=8\n")?.1;
            (after.matches('1').count() >= 3).then_some(w)
        },
    );
    if let Err(e) = armed {
        dump_logs(&c);
        panic!("{e}: {:?}", pipes[0].written());
    }
    assert_eq!(pipes[1].written(), "", "a replica never arms the watchdog");

    let (_, status) = c.api(2, "GET", "/patroni").unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["watchdog_failed"], true, "{status}");
    let refused = c.ctl(0, &["switchover", "--candidate", "node3", "--force"]);
    assert!(refused.is_err(), "switchover to node3: {refused:?}");
    assert_eq!(c.leader_index(), Some(0));

    // A clean stop disarms (magic close `V`) once PostgreSQL is down; node2 takes over and
    // arms its own; node3 never leads.
    c.stop(0, Duration::from_secs(60)).unwrap();
    let w = pipes[0].written();
    assert!(w.ends_with('V'), "no magic close on a clean stop: {w:?}");
    let l = new_writable_leader(&c, 0, Duration::from_secs(60));
    assert_eq!(l, 1, "node3 has no watchdog and must not lead");
    poll(
        "the new leader arms its watchdog",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || pipes[1].written().contains("Ctimeout=8\n").then_some(()),
    )
    .unwrap();

    // A frozen agent (SIGSTOP past the 8 s timeout) sends no keepalive: a real device would
    // reset the machine, which is what the watchdog is for.
    let frozen = c.agent_pid(1).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(frozen), Signal::SIGSTOP).unwrap();
    let silent = poll(
        "no keepalive for longer than the watchdog timeout",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || (pipes[1].silent_for() > Duration::from_secs(8)).then_some(()),
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(frozen), Signal::SIGCONT).unwrap();
    silent.unwrap();
    assert!(
        !pipes[1].written().ends_with('V'),
        "the frozen leader disarmed its watchdog"
    );
}

/// `maximum_lag_on_syncnode` (docs/compat.md#synchronous-replication), in pause: the
/// synchronous standby hangs (SIGSTOP of its PostgreSQL) while a large transaction waits
/// for it; the leader names the other standby instead once the hung one is further behind
/// than the limit, and the commit returns. Patroni manages synchronous replication in pause
/// too.
#[test]
fn a_hung_synchronous_standby_is_replaced_in_pause() {
    let (c, leader) = start(
        "syncnode",
        "    synchronous_mode: true\n    maximum_lag_on_syncnode: 1048576\n",
    );
    c.sql(leader, "create table big(id int, pad text)").unwrap();
    wait_sync_standby(&c, leader);
    let out = c.ctl(leader, &["pause", "--wait"]).unwrap();
    assert!(out.contains("paused"), "{out}");
    let sync_name = || -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&c.dcs_value("sync")?).ok()?;
        v["sync_standby"].as_str().map(str::to_string)
    };
    let hung_name = sync_name().expect("a synchronous standby");
    let hung = c.members.iter().position(|m| m.name == hung_name).unwrap();
    let pids = c.postgres_pids(hung);
    for &pid in &pids {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    }
    // About 20 MB of WAL: the other standby receives it, the hung one cannot.
    let port = c.members[leader].pg_port;
    let commit = std::thread::spawn(move || {
        pgherd_testkit::cluster::psql(
            port,
            "insert into big select g, repeat('x', 100) from generate_series(1, 150000) g",
        )
    });
    let replaced = poll(
        "another synchronous standby",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || sync_name().filter(|n| *n != hung_name),
    );
    let committed = poll(
        "the waiting commit to return",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || commit.is_finished().then_some(()),
    );
    for &pid in &pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGCONT);
    }
    if replaced.is_err() || committed.is_err() {
        dump_logs(&c);
        panic!("{replaced:?} {committed:?}");
    }
    commit.join().unwrap().unwrap();
    assert_eq!(c.sql(leader, "select count(*) from big").unwrap(), "150000");
}
