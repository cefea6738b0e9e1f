//! Operator control, end to end: `pgherd restart` (pending, scheduled, `flush restart`),
//! `reload` and `reinit`, against real etcd and real PostgreSQL 15 clusters run by
//! `pgherd agent`. Run serially (`--test-threads=1`).

mod common;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgherd_testkit::wait::poll;
use std::time::Duration;

#[test]
fn restart_pending_restarts_only_members_that_need_it() {
    let (c, _leader) = cluster("ctl-restart");
    let pids: Vec<Option<i32>> = (0..3).map(|i| c.postmaster_pid(i)).collect();
    // Nothing pending: nobody is restarted, and that is not an error.
    let out = pgherd(&c, &["restart", "--pending", "--force"]).ok();
    assert_eq!(
        out.matches("restart conditions are not satisfied").count(),
        3,
        "{out}"
    );
    assert_eq!(
        pids,
        (0..3).map(|i| c.postmaster_pid(i)).collect::<Vec<_>>()
    );

    // node1 gets a postmaster-level change through its own file... the whole cluster here.
    pgherd(
        &c,
        &["edit-config", "-p", "max_connections=60", "--force", "-q"],
    )
    .ok();
    for m in &c.members {
        check(
            &c,
            poll(
                "pending restart",
                Duration::from_secs(30),
                Duration::from_millis(200),
                || {
                    (dcs_json(&c, &format!("members/{}", m.name))?["pending_restart"] == true)
                        .then_some(())
                },
            ),
        );
    }
    let out = pgherd(
        &c,
        &["restart", "ctl-restart", "node2", "--pending", "--force"],
    )
    .ok();
    assert!(out.contains("Success: restart on member node2"), "{out}");
    let i = index_of(&c, "node2");
    assert_ne!(c.postmaster_pid(i), pids[i]);
    assert_eq!(c.sql(i, "show max_connections").unwrap(), "60");
    check(
        &c,
        poll(
            "pending flag cleared",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                dcs_json(&c, "members/node2")?
                    .get("pending_restart")
                    .is_none()
                    .then_some(())
            },
        ),
    );
    // The others were not touched.
    for j in (0..3).filter(|&j| j != i) {
        assert_eq!(c.postmaster_pid(j), pids[j]);
    }

    // A scheduled restart shows in list and can be flushed.
    let out = pgherd(
        &c,
        &[
            "restart",
            "node3",
            "--scheduled",
            "2099-01-01T00:00:00+00:00",
            "--force",
        ],
    )
    .ok();
    assert!(
        out.contains("Success: restart scheduled on member node3"),
        "{out}"
    );
    check(
        &c,
        poll(
            "scheduled restart published",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                pgherd(&c, &["list"])
                    .ok()
                    .contains("2099-01-01T00:00:00+00:00")
                    .then_some(())
            },
        ),
    );
    let out = pgherd(&c, &["flush", "restart", "node3", "--force"]).ok();
    assert!(
        out.contains("Success: flush scheduled restart for member node3"),
        "{out}"
    );
}

#[test]
fn reload_and_reinit() {
    let (c, leader) = cluster("ctl-reinit");
    let out = pgherd(&c, &["reload", "--force"]).ok();
    assert_eq!(
        out.matches("Reload request received for member").count(),
        3,
        "{out}"
    );

    // SIGHUP applies new REST API credentials to the running API, as Patroni's reload does.
    let target = (leader + 2) % 3;
    let m = &c.members[target];
    let port = m.api_port;
    let unsafe_call = |headers: &[(&str, &str)]| http(port, "POST", "/reload", headers, None).0;
    assert_eq!(unsafe_call(&[]), 202, "open API before the reload");
    let yaml = std::fs::read_to_string(&m.config).unwrap();
    let yaml = yaml.replacen(
        "restapi:\n",
        "restapi:\n  authentication:\n    username: admin\n    password: s3cret\n",
        1,
    );
    std::fs::write(&m.config, yaml).unwrap();
    kill(Pid::from_raw(c.agent_pid(target).unwrap()), Signal::SIGHUP).unwrap();
    poll(
        "new credentials required",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || (unsafe_call(&[]) == 401).then_some(()),
    )
    .unwrap();
    // "admin:s3cret"
    let auth = ("Authorization", "Basic YWRtaW46czNjcmV0");
    assert_eq!(unsafe_call(&[auth]), 202);

    let replica = (leader + 1) % 3;
    let name = c.members[replica].name.clone();
    c.sql(leader, "create table t(id serial primary key, v text)")
        .unwrap();
    c.sql(leader, "insert into t(v) values ('row1')").unwrap();
    let before = c.postmaster_pid(replica);
    let out = pgherd(&c, &["reinit", &name, "--force", "--wait"]).ok();
    assert!(
        out.contains(&format!("Success: reinitialize for member {name}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("Reinitialize is completed on: {name}")),
        "{out}"
    );
    assert_ne!(c.postmaster_pid(replica), before);
    all_streaming(&c, leader);
    rows_everywhere(&c, "1");
    // The leader cannot be reinitialized.
    let out = pgherd(&c, &["reinit", &c.members[leader].name, "--force"]);
    assert_eq!(out.code, 1);
}

/// Maintenance mode: PostgreSQL of a replica stopped by hand is started again by
/// `patronictl restart` (Patroni's restart is a stop, a no-op here, and a start); a restart
/// whose filters do not match is refused with Patroni's text (docs/compat.md#restart-requests).
#[test]
fn restart_starts_a_member_stopped_in_maintenance_mode() {
    let scope = "ctl-restart-paused";
    let c = cluster_with(
        scope,
        2,
        pgherd_testkit::cluster::AgentKind::Pgherd,
        |_, y| y,
    );
    let leader = healthy(&c, 1);
    let r = 1 - leader;
    let name = c.members[r].name.clone();
    let out = patronictl(&c, &["pause", "--wait"]).ok();
    assert!(
        out.contains("Success: cluster management is paused"),
        "{out}"
    );

    check(&c, c.pg_ctl(r, &["stop", "-m", "fast", "-w"]));
    check(
        &c,
        poll(
            "the stopped replica reported as stopped",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || (dcs_json(&c, &format!("members/{name}"))?["state"] == "stopped").then_some(()),
        ),
    );
    assert_eq!(
        c.postmaster_pid(r),
        None,
        "paused: the agent must not start it"
    );

    // Filters are checked against what the server said while it ran: refused, Patroni's text.
    let port = c.members[r].api_port;
    let (status, _, body) = http(
        port,
        "POST",
        "/restart",
        &[("Content-Type", "application/json")],
        Some(r#"{"role": "primary"}"#),
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_of(&body), "restart conditions are not satisfied");
    assert_eq!(c.postmaster_pid(r), None);

    let run = patronictl(&c, &["restart", scope, &name, "--force"]);
    let out = run.ok();
    assert!(
        out.contains(&format!("Success: restart on member {name}")),
        "{out}"
    );
    assert!(c.postmaster_pid(r).is_some(), "PostgreSQL was not started");
    assert_eq!(c.sql(r, "select pg_is_in_recovery()").unwrap(), "t");
    check(
        &c,
        poll(
            "the replica reported running again",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || (dcs_json(&c, &format!("members/{name}"))?["state"] == "running").then_some(()),
        ),
    );

    // The REST answer itself, once more from stopped: Patroni's 200 and text.
    check(&c, c.pg_ctl(r, &["stop", "-m", "fast", "-w"]));
    check(
        &c,
        poll(
            "the replica reported stopped again",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || (dcs_json(&c, &format!("members/{name}"))?["state"] == "stopped").then_some(()),
        ),
    );
    let (status, _, body) = http(port, "POST", "/restart", &[], None);
    assert_eq!((status, body.as_str()), (200, "restarted successfully"));
    assert!(c.postmaster_pid(r).is_some());
    // Still in maintenance mode, the leader untouched.
    assert_eq!(c.leader_index(), Some(leader));
    assert_eq!(dcs_json(&c, "config").unwrap()["pause"], true);
}

/// The leader key's create revision and lease: unchanged means nobody deleted, let expire or
/// re-created it in between.
fn leader_key_identity(c: &pgherd_testkit::cluster::TestCluster) -> (i64, i64) {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &c.etcd().client_url(),
            "get",
            "-w",
            "json",
            &format!("/service/{}/leader", c.options.scope),
        ])
        .output()
        .expect("etcdctl (Debian package etcd-client)");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kv = &v["kvs"][0];
    (
        kv["create_revision"].as_i64().unwrap(),
        kv["lease"].as_i64().unwrap(),
    )
}

/// Nothing the agent does stops it renewing its lease: a restart of the leader whose
/// PostgreSQL takes longer to stop than the lease's fencing window (its checkpointer stalled
/// for 8 s, so the shutdown checkpoint waits; ttl is 10 s) runs beside the HA loop. The
/// leader key is never lost (same key, same lease), the timeline does not change, and the
/// command reports success once PostgreSQL is back.
#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "the sleep is the fault's duration (checkpointer stalled 8 s), not a wait for a condition"
)]
fn a_slow_restart_of_the_leader_keeps_its_lease() {
    let (c, leader) = cluster("ctl-slowrestart");
    c.sql(leader, "create table t(id serial primary key, v text)")
        .unwrap();
    let leader_name = c.members[leader].name.clone();
    let before = leader_key_identity(&c);
    let timeline = "select timeline_id from pg_control_checkpoint()";
    let timeline_before = c.sql(leader, timeline).unwrap();
    let checkpointer = c
        .postgres_pids(leader)
        .into_iter()
        .find(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|b| String::from_utf8_lossy(&b).contains("checkpointer"))
        })
        .expect("the leader's checkpointer");
    kill(Pid::from_raw(checkpointer), Signal::SIGSTOP).unwrap();
    let resume = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(8));
        let _ = kill(Pid::from_raw(checkpointer), Signal::SIGCONT);
    });
    let started = std::time::Instant::now();
    let out = pgherd(&c, &["restart", "ctl-slowrestart", &leader_name, "--force"]);
    let took = started.elapsed();
    resume.join().unwrap();
    let out = out.ok();
    assert!(
        out.contains(&format!("Success: restart on member {leader_name}")),
        "{out}"
    );
    // The fault did what it should: the stop waited for the stalled checkpointer.
    assert!(took >= Duration::from_secs(5), "restart took only {took:?}");
    assert_eq!(
        leader_key_identity(&c),
        before,
        "the leader key changed hands"
    );
    writable_leader(&c, leader);
    assert_eq!(c.sql(leader, timeline).unwrap(), timeline_before);
}
