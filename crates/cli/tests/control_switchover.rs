//! Operator control, end to end: `pgherd switchover` with and without a candidate (and the
//! read-only `history`, `topology`, `dsn`, `version` on the result), scheduled switchovers and
//! `flush switchover`, and a manual `failover` while paused, against real etcd and real
//! PostgreSQL 15 clusters run by `pgherd agent`. Run serially (`--test-threads=1`).

mod common;

use common::*;
use pgherd_testkit::wait::poll;
use serde_json::Value;
use std::time::Duration;

#[test]
fn switchover_with_and_without_candidate_loses_nothing() {
    let (c, leader) = cluster("ctl-switch");
    c.sql(leader, "create table t(id serial primary key, v text)")
        .unwrap();
    c.sql(
        leader,
        "insert into t(v) select 'row' || g from generate_series(1, 100) g",
    )
    .unwrap();
    let old = c.members[leader].name.clone();
    let target = (leader + 1) % 3;
    let target_name = c.members[target].name.clone();

    // Runbook: switch over to a named replica.
    let out = pgherd(
        &c,
        &[
            "switchover",
            "--leader",
            &old,
            "--candidate",
            &target_name,
            "--force",
        ],
    )
    .ok();
    assert!(out.contains("Current cluster topology"), "{out}");
    assert!(
        out.contains(&format!("Successfully switched over to \"{target_name}\"")),
        "{out}"
    );
    writable_leader(&c, target);
    c.sql(
        target,
        "insert into t(v) select 'row' || g from generate_series(101, 150) g",
    )
    .unwrap();
    // The old leader comes back as a replica of the new one; no row is lost anywhere.
    all_streaming(&c, target);
    rows_everywhere(&c, "150");
    assert_eq!(c.sql(leader, "select pg_is_in_recovery()").unwrap(), "t");
    failover_request_cleared(&c);

    // Without a candidate: the cluster picks one.
    let out = pgherd(&c, &["switchover", "--force"]).ok();
    assert!(out.contains("Successfully switched over to"), "{out}");
    let third = check(
        &c,
        poll(
            "a leader other than the previous one",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || c.leader_index().filter(|&l| l != target),
        ),
    );
    writable_leader(&c, third);
    all_streaming(&c, third);
    rows_everywhere(&c, "150");

    // Both switchovers are in the history, readable by pgherd (the new leader publishes its
    // timeline's entry on a lock renewal after the promotion: wait for it).
    let rows: Value = check(
        &c,
        poll(
            "both switchovers in the history",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let history = pgherd(&c, &["history", "-f", "json"]).ok();
                let rows: Value = serde_json::from_str(&history).ok()?;
                (rows.as_array()?.len() >= 2).then_some(rows)
            },
        ),
    );
    let leaders: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["New Leader"].as_str().unwrap())
        .collect();
    assert_eq!(
        leaders,
        vec![target_name.as_str(), c.members[third].name.as_str()]
    );

    // Read-only commands while we have a cluster: topology, dsn, version.
    let topology = pgherd(&c, &["topology"]).ok();
    let first_row = topology.lines().nth(3).unwrap();
    assert!(first_row.contains(&c.members[third].name), "{topology}");
    assert_eq!(topology.matches("| + node").count(), 2, "{topology}");
    let dsn = pgherd(&c, &["dsn"]).ok();
    assert_eq!(
        dsn.trim(),
        format!("host=127.0.0.1 port={}", c.members[third].pg_port)
    );
    let dsn = pgherd(&c, &["dsn", &old]).ok();
    assert_eq!(
        dsn.trim(),
        format!("host=127.0.0.1 port={}", c.members[leader].pg_port)
    );
    let version = pgherd(&c, &["version", "ctl-switch"]).ok();
    for m in &c.members {
        assert!(
            version.contains(&format!("{}: pgherd ", m.name)),
            "{version}"
        );
    }
    assert!(version.contains("PostgreSQL 15."), "{version}");
}

#[test]
fn scheduled_switchover_is_listed_and_can_be_cancelled() {
    let (c, leader) = cluster("ctl-sched");
    let old = c.members[leader].name.clone();
    let target_name = c.members[(leader + 1) % 3].name.clone();

    let out = pgherd(
        &c,
        &[
            "switchover",
            "--candidate",
            &target_name,
            "--scheduled",
            "2099-01-01T00:00:00+00:00",
            "--force",
        ],
    )
    .ok();
    assert!(out.contains("Switchover scheduled"), "{out}");
    let request = dcs_json(&c, "failover").unwrap();
    assert_eq!(request["scheduled_at"], "2099-01-01T00:00:00+00:00");
    assert_eq!(request["member"], target_name.as_str());
    assert_eq!(request["leader"], old.as_str());
    let list = pgherd(&c, &["list"]).ok();
    assert!(
        list.contains(" Switchover scheduled at: 2099-01-01T00:00:00+00:00"),
        "{list}"
    );
    assert!(list.contains(&format!("from: {old}")), "{list}");
    assert!(list.contains(&format!("to: {target_name}")), "{list}");
    // A second request while one is pending is refused client-side in a paused cluster
    // only; here we cancel with `flush switchover` (DELETE /switchover on the leader).
    let out = pgherd(&c, &["flush", "switchover"]).ok();
    assert!(
        out.contains("Success: scheduled switchover deleted"),
        "{out}"
    );
    assert_eq!(dcs_json(&c, "failover"), Some(serde_json::json!({})));
    assert!(!pgherd(&c, &["list"]).ok().contains("Switchover scheduled"));
    let out = pgherd(&c, &["flush", "switchover"]).ok();
    assert!(out.contains("No pending scheduled switchover"), "{out}");
    assert_eq!(c.leader_index(), Some(leader));
}

#[test]
fn scheduled_switchover_fires_at_its_time() {
    let (c, leader) = cluster("ctl-sched-fire");
    c.sql(leader, "create table t(id serial primary key, v text)")
        .unwrap();
    let target = (leader + 1) % 3;
    let target_name = c.members[target].name.clone();
    // Whole seconds: the time written is the time the switchover is due.
    let at = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + 8, 0).unwrap();
    let at_text = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let out = pgherd(
        &c,
        &[
            "switchover",
            "--candidate",
            &target_name,
            "--scheduled",
            &at_text,
            "--force",
        ],
    )
    .ok();
    assert!(out.contains("Switchover scheduled"), "{out}");
    let switched_at = check(
        &c,
        poll(
            "the scheduled switchover",
            Duration::from_secs(45),
            Duration::from_millis(100),
            || (c.leader_index() == Some(target)).then(chrono::Utc::now),
        ),
    );
    assert!(
        switched_at >= at,
        "switched at {switched_at}, scheduled for {at}"
    );
    writable_leader(&c, target);
    all_streaming(&c, target);
    failover_request_cleared(&c);
}

#[test]
fn pause_blocks_failover_until_a_manual_failover() {
    let (mut c, leader) = cluster("ctl-pause");
    let out = pgherd(&c, &["pause", "--wait"]).ok();
    assert!(
        out.contains("Success: cluster management is paused"),
        "{out}"
    );
    for m in &c.members {
        let member = dcs_json(&c, &format!("members/{}", m.name)).unwrap();
        assert_eq!(member["pause"], true, "{}", m.name);
    }
    assert!(pgherd(&c, &["list"]).ok().contains(" Maintenance mode: on"));

    // The leader dies while paused: its key expires, and nobody is promoted.
    c.signal_node(leader, nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    check(
        &c,
        poll(
            "the dead leader's key to expire",
            Duration::from_secs(40),
            Duration::from_millis(200),
            || c.dcs_value("leader").is_none().then_some(()),
        ),
    );
    let replicas: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let nobody_promoted = holds_for(Duration::from_secs(5), || {
        c.dcs_value("leader").is_none()
            && replicas
                .iter()
                .all(|&r| c.sql(r, "select pg_is_in_recovery()").ok().as_deref() == Some("t"))
    });
    assert!(nobody_promoted, "a replica was promoted while paused");

    // The operator fails over to a chosen replica: no leader is needed for that.
    let target = replicas[1];
    let target_name = c.members[target].name.clone();
    let out = pgherd(&c, &["failover", "--candidate", &target_name, "--force"]).ok();
    assert!(
        out.contains(&format!("Successfully failed over to \"{target_name}\"")),
        "{out}"
    );
    check(
        &c,
        poll(
            "the candidate to accept writes",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || (c.sql(target, "select pg_is_in_recovery()").ok()? == "f").then_some(()),
        ),
    );
    let out = pgherd(&c, &["resume", "--wait"]).ok();
    assert!(
        out.contains("Success: cluster management is resumed"),
        "{out}"
    );
    assert!(!pgherd(&c, &["list"]).ok().contains("Maintenance mode"));
    // The other replica follows the new leader once management is back.
    check(
        &c,
        poll(
            "the remaining replica streaming",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || {
                let n: usize = c
                    .sql(
                        target,
                        "select count(*) from pg_stat_replication where state = 'streaming'",
                    )
                    .ok()?
                    .parse()
                    .ok()?;
                (n >= 1).then_some(())
            },
        ),
    );
}

/// Switchover in pause (docs/compat.md#pause), with patronictl: to a named candidate it
/// happens, the former leader streams from the new one, the cluster stays paused. One that
/// cannot happen (the candidate's PostgreSQL is down) is answered as failed and leaves no
/// request behind to fire on `resume`.
#[test]
fn switchover_while_paused_moves_the_leader_and_never_fires_later() {
    let (c, leader) = cluster("ctl-pause-sw");
    c.sql(leader, "create table t(id serial primary key, v text)")
        .unwrap();
    pgherd(&c, &["pause", "--wait"]).ok();
    let target = (leader + 1) % 3;
    let (leader_name, target_name) = (
        c.members[leader].name.clone(),
        c.members[target].name.clone(),
    );
    let out = patronictl(
        &c,
        &[
            "switchover",
            "--leader",
            &leader_name,
            "--candidate",
            &target_name,
            "--force",
        ],
    )
    .ok();
    assert!(
        out.contains(&format!("Successfully switched over to \"{target_name}\"")),
        "{out}"
    );
    writable_leader(&c, target);
    // The former leader comes back as a standby of the new one, though paused.
    check(
        &c,
        poll(
            "the former leader streaming from the new leader",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || {
                let q = format!(
                    "select count(*) from pg_stat_replication where state = 'streaming' and application_name = '{leader_name}'"
                );
                (c.sql(target, &q).ok()? == "1").then_some(())
            },
        ),
    );
    assert!(pgherd(&c, &["list"]).ok().contains(" Maintenance mode: on"));
    let request = dcs_json(&c, "failover");
    assert!(
        request
            .as_ref()
            .is_none_or(|v| v.as_object().is_some_and(|o| o.is_empty())),
        "{request:?}"
    );

    // A candidate whose PostgreSQL is down (paused: nobody restarts it) cannot take over.
    let down = (target + 1) % 3;
    let down_name = c.members[down].name.clone();
    c.kill_postmaster(down).unwrap();
    check(
        &c,
        poll(
            "the agent to see its PostgreSQL down",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let (_, body) = c.api(down, "GET", "/patroni").ok()?;
                (!body.contains("\"state\": \"running\"")).then_some(())
            },
        ),
    );
    let refused = patronictl(
        &c,
        &[
            "switchover",
            "--leader",
            &target_name,
            "--candidate",
            &down_name,
            "--force",
        ],
    );
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        !said.contains("Successfully"),
        "a switchover to a stopped candidate succeeded: {said}"
    );
    let request = dcs_json(&c, "failover");
    assert!(
        request
            .as_ref()
            .is_none_or(|v| v.as_object().is_some_and(|o| o.is_empty())),
        "a failed switchover left its request behind: {request:?}"
    );
    // Resume: the stopped member is started again and nothing fires.
    pgherd(&c, &["resume", "--wait"]).ok();
    let kept = holds_for(Duration::from_secs(8), || c.leader_index() == Some(target));
    assert!(kept, "the leader moved after resume");
    writable_leader(&c, target);
}
