//! Compatibility with Patroni's tools, both ways: Debian's `patronictl` 3.0 drives a pgherd
//! cluster, and `pgherd list` (and friends) read a Patroni 3.0 cluster. Real etcd and real
//! PostgreSQL 15. Run serially (`--test-threads=1`).

mod common;

use common::*;
use pgherd_testkit::cluster::AgentKind;
use pgherd_testkit::wait::poll;
use serde_json::Value;
use std::time::Duration;

#[test]
fn patronictl_drives_a_pgherd_cluster() {
    let (c, leader) = cluster("ctl-patronictl");
    c.sql(leader, "create table t(id serial primary key, v text)")
        .unwrap();
    c.sql(leader, "insert into t(v) values ('row1')").unwrap();

    let list = patronictl(&c, &["list"]).ok();
    assert!(list.contains("Cluster: ctl-patronictl"), "{list}");
    let leader_row = list
        .lines()
        .find(|l| l.contains(&format!("| {} ", c.members[leader].name)))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(leader_row.contains("| Leader "), "{list}");
    assert_eq!(list.matches("| Replica ").count(), 2, "{list}");
    assert_eq!(list.matches("| running ").count(), 3, "{list}");

    // switchover --force to a named candidate.
    let target = (leader + 1) % 3;
    let out = patronictl(
        &c,
        &[
            "switchover",
            "--candidate",
            &c.members[target].name,
            "--force",
        ],
    )
    .ok();
    assert!(
        out.contains(&format!(
            "Successfully switched over to \"{}\"",
            c.members[target].name
        )),
        "{out}"
    );
    writable_leader(&c, target);
    all_streaming(&c, target);

    // failover --force (a switchover to the named candidate while the leader is healthy).
    let third = (target + 1) % 3;
    let out = patronictl(
        &c,
        &["failover", "--candidate", &c.members[third].name, "--force"],
    )
    .ok();
    assert!(
        out.contains(&format!(
            "Successfully failed over to \"{}\"",
            c.members[third].name
        )),
        "{out}"
    );
    writable_leader(&c, third);
    all_streaming(&c, third);
    rows_everywhere(&c, "1");

    // history shows both.
    let history = patronictl(&c, &["history", "-f", "json"]).ok();
    let rows: Value = serde_json::from_str(history.trim()).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{history}");
    assert_eq!(rows[1]["New Leader"], c.members[third].name.as_str());

    // pause / resume.
    let out = patronictl(&c, &["pause"]).ok();
    assert!(
        out.contains("Success: cluster management is paused"),
        "{out}"
    );
    assert!(patronictl(&c, &["list"])
        .ok()
        .contains("Maintenance mode: on"));
    let out = patronictl(&c, &["resume"]).ok();
    assert!(
        out.contains("Success: cluster management is resumed"),
        "{out}"
    );

    // edit-config --set: a direct CAS write with Python's spacing, picked up by the agents.
    let out = patronictl(
        &c,
        &[
            "edit-config",
            "--set",
            "postgresql.parameters.work_mem=9MB",
            "--force",
        ],
    )
    .ok();
    assert!(out.contains("Configuration changed"), "{out}");
    assert!(
        c.dcs_value("config").unwrap().contains(": "),
        "patronictl writes spaced JSON"
    );
    for i in 0..3 {
        check(
            &c,
            poll(
                "work_mem from patronictl",
                Duration::from_secs(30),
                Duration::from_millis(200),
                || (c.sql(i, "show work_mem").ok()? == "9MB").then_some(()),
            ),
        );
    }
    // And pgherd reads what patronictl wrote.
    assert!(pgherd(&c, &["show-config"]).ok().contains("work_mem: 9MB"));
}

#[test]
fn pgherd_lists_a_patroni_cluster() {
    let c = cluster_with("ctl-patroni", 3, AgentKind::Patroni, |_, y| y);
    let leader = healthy(&c, 2);
    let leader_name = c.members[leader].name.clone();
    let rows = pgherd_lists_patroni(&c, leader, "ctl-patroni");
    for row in rows.as_array().unwrap() {
        if row["Member"] != leader_name.as_str() {
            assert!(row["Lag in MB"].is_number(), "{rows}");
        }
    }
    let pretty = pgherd(&c, &["list"]).ok();
    assert!(pretty.contains("| Leader "), "{pretty}");
    let topology = pgherd(&c, &["topology"]).ok();
    assert_eq!(topology.matches("| + node").count(), 2, "{topology}");
    let config = pgherd(&c, &["show-config"]).ok();
    assert!(config.contains("loop_wait: 1"), "{config}");
    let version = pgherd(&c, &["version", "ctl-patroni"]).ok();
    assert!(
        version.contains(&format!("{leader_name}: Patroni 3.0.2 PostgreSQL 15.")),
        "{version}"
    );
}
