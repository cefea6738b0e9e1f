//! A replica cut off from its upstream stops being a read target, and becomes one again soon
//! after the link is back (issue 9, item 4; docs/compat.md#health-endpoints). The cut is made
//! on loopback by freezing (SIGSTOP) the leader's WAL sender for the replica: the replica's
//! TCP connection stays open and silent, as behind a network partition. (bench/faults makes
//! the same cut with network namespaces and DROP rules, and measures the times.)
//! Run serially (`--test-threads=1`).

#![allow(
    clippy::disallowed_methods,
    reason = "synchronous tests: they wait on the test thread, no async runtime"
)]

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgherd_testkit::cluster::{ClusterOptions, TestCluster};
use pgherd_testkit::proxy::ProxyProcess;
use pgherd_testkit::wait::poll;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const PGHERD: &str = env!("CARGO_BIN_EXE_pgherd");
/// Generous bounds for a loaded 2-core machine: the figures (2 s, 5 s) are measured by
/// bench/faults, not asserted here.
const BOUND: Duration = Duration::from_secs(30);

/// Sends SIGCONT to the frozen process when dropped (also when the test fails).
struct Frozen(i32);

impl Frozen {
    fn stop(pid: i32) -> Frozen {
        kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP the WAL sender");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

fn dump_logs(c: &TestCluster, px: &ProxyProcess) {
    for i in 0..c.members.len() {
        eprintln!("--- {} ---\n{}", c.members[i].name, c.log_tail(i, 60));
    }
    eprintln!("--- proxy ---\n{}", px.log_tail(40));
}

fn replica_server_state(s: &Value, member: &str) -> String {
    s["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == "replicas"))
        .and_then(|l| l["servers"].as_array())
        .and_then(|ss| ss.iter().find(|v| v["name"] == member))
        .and_then(|v| v["state"].as_str())
        .unwrap_or("absent")
        .to_string()
}

/// Polls until `ok`, dumping the logs and failing the test on timeout; returns the time taken.
fn within(c: &TestCluster, px: &ProxyProcess, what: &str, mut ok: impl FnMut() -> bool) -> f64 {
    let start = Instant::now();
    if let Err(e) = poll(what, BOUND, Duration::from_millis(50), || {
        ok().then_some(())
    }) {
        dump_logs(c, px);
        panic!("{e}");
    }
    start.elapsed().as_secs_f64()
}

#[test]
fn a_replica_whose_stream_goes_silent_leaves_the_read_rotation_and_comes_back() {
    let options = ClusterOptions {
        scope: "cutoff".into(),
        members: 2,
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::new(Path::new(PGHERD), options).expect("cluster");
    c.start_all().expect("agents");
    let leader = c
        .wait_healthy(1, Duration::from_secs(120))
        .expect("a leader and a streaming replica");
    let replica = 1 - leader;
    let name = c.members[replica].name.clone();
    let px = ProxyProcess::start(Path::new(PGHERD), &c, "px-cutoff", false).expect("proxy");

    let replica_code = |path: &str| c.api(replica, "GET", path).map(|(code, _)| code).ok();
    within(&c, &px, "the replica in the read rotation", || {
        px.stats()
            .is_some_and(|s| replica_server_state(&s, &name) == "up")
    });
    assert_eq!(replica_code("/replica"), Some(200));
    assert_eq!(replica_code("/replica?lag=1MB"), Some(200));

    // Freeze the leader's WAL sender for the replica: the stream goes silent, its TCP
    // connection stays open.
    let sender: i32 = c
        .sql(
            leader,
            &format!("select pid from pg_stat_replication where application_name = '{name}'"),
        )
        .expect("pg_stat_replication")
        .parse()
        .expect("the WAL sender's pid");
    let frozen = Frozen::stop(sender);
    let rest_out = within(&c, &px, "GET /replica 503 on the cut-off replica", || {
        replica_code("/replica") == Some(503)
    });
    let proxy_out = within(&c, &px, "the replica out of the read rotation", || {
        px.stats()
            .is_some_and(|s| replica_server_state(&s, &name) != "up")
    });
    eprintln!(
        "cut off: /replica 503 after {rest_out:.2} s, out of rotation {proxy_out:.2} s later"
    );
    // Patroni's ?lag= semantics are kept: a lag limit never makes a silent replica healthy.
    assert_eq!(replica_code("/replica?lag=1GB"), Some(503));
    assert_eq!(replica_code("/read-only"), Some(503));
    // The replica stays a replica: nobody fails over for a replica's broken stream.
    assert_eq!(c.leader_index(), Some(leader));

    // Heal: the frozen sender resumes, finds its connection gone and exits (releasing the
    // replica's slot); the WAL receiver reconnects.
    drop(frozen);
    let healthy_again = within(&c, &px, "GET /replica 200 after the heal", || {
        replica_code("/replica") == Some(200)
    });
    let back = within(&c, &px, "the replica back in the read rotation", || {
        px.stats()
            .is_some_and(|s| replica_server_state(&s, &name) == "up")
    });
    eprintln!("healed: /replica 200 after {healthy_again:.2} s, in rotation {back:.2} s later");
    assert_eq!(c.leader_index(), Some(leader));
    c.shutdown();
}
