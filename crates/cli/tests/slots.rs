//! Replication slots with real etcd and PostgreSQL 15 (docs/compat.md#replication-slots):
//! cascading replication through a replica's slot, permanent slots from the DCS `config`,
//! `ignore_slots`, unknown slots dropped. Run serially (`--test-threads=1`).

#![allow(
    clippy::disallowed_methods,
    reason = "synchronous tests: they wait on the test thread, no async runtime"
)]

mod common;

use common::{check, dcs_json, holds_for, pgherd, writable_leader, PGHERD};
use pgherd_testkit::cluster::{ClusterOptions, TestCluster};
use pgherd_testkit::wait::poll;
use std::path::Path;
use std::time::Duration;

/// A cluster whose member files are rewritten by `edit(member_name, yaml)`; not started.
fn new_cluster(scope: &str, members: usize, edit: impl Fn(&str, String) -> String) -> TestCluster {
    let options = ClusterOptions {
        scope: scope.into(),
        members,
        ..ClusterOptions::default()
    };
    let c = TestCluster::new(Path::new(PGHERD), options).expect("cluster directories and etcd");
    for m in &c.members {
        let yaml = std::fs::read_to_string(&m.config).unwrap();
        std::fs::write(&m.config, edit(&m.name, yaml)).unwrap();
    }
    c
}

/// A leader and `replicas` streaming replicas (of the members started so far).
fn healthy(c: &TestCluster, replicas: usize) -> usize {
    check(c, c.wait_healthy(replicas, Duration::from_secs(120)))
}

/// `slot_name:type:active` of member `i`'s slots, sorted.
fn slots_on(c: &TestCluster, i: usize) -> Option<Vec<String>> {
    let out = c
        .sql(
            i,
            "select coalesce(string_agg(slot_name || ':' || slot_type || ':' || active, ',' \
             order by slot_name), '') from pg_replication_slots",
        )
        .ok()?;
    Some(
        out.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

fn wait_slots(c: &TestCluster, i: usize, what: &str, ok: impl Fn(&[String]) -> bool) {
    check(
        c,
        poll(
            what,
            Duration::from_secs(90),
            Duration::from_millis(250),
            || slots_on(c, i).filter(|s| ok(s)).map(|_| ()),
        ),
    );
}

fn has(slots: &[String], prefix: &str) -> bool {
    slots.iter().any(|s| s.starts_with(prefix))
}

fn lacks(slots: &[String], name: &str) -> bool {
    !slots.iter().any(|s| s.split(':').next() == Some(name))
}

#[test]
fn cascading_replica_streams_through_its_upstreams_slot() {
    // node3 replicates from node2, which replicates from the leader node1.
    let mut c = new_cluster("slots-cascade", 3, |name, yaml| {
        if name == "node3" {
            yaml.replace("tags:\n", "tags:\n  replicatefrom: node2\n")
        } else {
            yaml
        }
    });
    c.start(0).expect("node1");
    assert_eq!(healthy(&c, 0), 0, "node1 bootstraps alone");
    c.start(1).expect("node2");
    healthy(&c, 1);
    c.start(2).expect("node3");

    // node2 holds node3's slot, and node3 streams from node2 with it.
    wait_slots(&c, 1, "node3's slot on node2, in use", |s| {
        has(s, "node3:physical:t")
    });
    check(
        &c,
        poll(
            "node3 streaming from node2",
            Duration::from_secs(90),
            Duration::from_millis(250),
            || {
                let out = c
                    .sql(
                        1,
                        "select application_name from pg_stat_replication where state = 'streaming'",
                    )
                    .ok()?;
                (out == "node3").then_some(())
            },
        ),
    );
    // The leader has node2's slot only, and only node2 streams from it.
    wait_slots(&c, 0, "node2's slot alone on the leader", |s| {
        has(s, "node2:physical:t") && lacks(s, "node3")
    });
    assert_eq!(
        c.sql(
            0,
            "select string_agg(application_name, ',') from pg_stat_replication"
        )
        .unwrap(),
        "node2"
    );
    c.sql(0, "create table t(id int); insert into t values (1)")
        .unwrap();
    check(
        &c,
        poll(
            "the row on node3",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || (c.sql(2, "select count(*) from t").ok()? == "1").then_some(()),
        ),
    );

    // node3 leaves: once its member key is gone, node2 drops the slot.
    c.stop(2, Duration::from_secs(60)).expect("stop node3");
    wait_slots(&c, 1, "node3's slot dropped on node2", |s| {
        lacks(s, "node3")
    });
    wait_slots(&c, 0, "no slot for node3 on the leader", |s| {
        lacks(s, "node3")
    });

    // node3 is back, through node2; then node2 stops: node3 falls back to the leader, which
    // now keeps a slot for it.
    c.start(2).expect("node3 again");
    wait_slots(&c, 1, "node3's slot on node2 again, in use", |s| {
        has(s, "node3:physical:t")
    });
    c.stop(1, Duration::from_secs(60)).expect("stop node2");
    wait_slots(&c, 0, "node3's slot on the leader, in use", |s| {
        has(s, "node3:physical:t")
    });
    c.shutdown();
}

const PERMANENT: &str = "    slots:
      perm_phys:
        type: physical
      perm_logical:
        type: logical
        database: postgres
        plugin: test_decoding
    ignore_slots:
    - name: keep_me
      type: physical
";

#[test]
fn permanent_slots_are_created_unknown_ones_dropped_ignored_ones_kept() {
    let mut c = new_cluster("slots-permanent", 2, |_, yaml| {
        yaml.replace(
            "        max_connections: 50\n",
            &format!("        max_connections: 50\n        wal_level: logical\n{PERMANENT}"),
        )
    });
    c.start(0).expect("node1");
    assert_eq!(healthy(&c, 0), 0, "node1 bootstraps alone");
    c.start(1).expect("node2");
    healthy(&c, 1);

    wait_slots(
        &c,
        0,
        "the permanent slots and node2's on the leader",
        |s| {
            has(s, "node2:physical:t")
                && has(s, "perm_logical:logical:")
                && has(s, "perm_phys:physical:")
        },
    );
    // An unknown slot is dropped; one that ignore_slots matches is kept.
    c.sql(
        0,
        "select pg_create_physical_replication_slot('stray'); \
         select pg_create_physical_replication_slot('keep_me')",
    )
    .unwrap();
    wait_slots(&c, 0, "the stray slot dropped", |s| lacks(s, "stray"));
    let slots = slots_on(&c, 0).unwrap();
    assert!(has(&slots, "keep_me:physical:"), "{slots:?}");
    // The leader publishes the permanent logical slot's position in `status`, as Patroni.
    check(
        &c,
        poll(
            "perm_logical in the status key",
            Duration::from_secs(30),
            Duration::from_millis(250),
            || dcs_json(&c, "status")?["slots"]["perm_logical"].as_u64(),
        ),
    );

    // The replica restarts once to copy the permanent logical slot (Patroni 3.0); wait for
    // that copy so that the statement below does not meet the restart.
    wait_slots(&c, 1, "perm_logical copied to the replica", |s| {
        has(s, "perm_logical:logical:")
    });
    // The replica keeps no permanent physical slot and drops unknown ones too (Patroni 3.0).
    check(
        &c,
        poll(
            "stray2 created on the replica",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || {
                c.sql(1, "select pg_create_physical_replication_slot('stray2')")
                    .ok()
            },
        ),
    );
    wait_slots(&c, 1, "the stray slot dropped on the replica", |s| {
        lacks(s, "stray2") && lacks(s, "perm_phys")
    });

    // In pause nothing is dropped; after resume the unknown slot goes.
    pgherd(&c, &["pause", "--wait"]).ok();
    c.sql(
        0,
        "select pg_create_physical_replication_slot('stray_paused')",
    )
    .unwrap();
    let kept = holds_for(Duration::from_secs(5), || {
        slots_on(&c, 0).is_some_and(|s| has(&s, "stray_paused:"))
    });
    assert!(kept, "an unknown slot was dropped in pause");
    pgherd(&c, &["resume", "--wait"]).ok();
    wait_slots(&c, 0, "the unknown slot dropped after resume", |s| {
        lacks(s, "stray_paused")
    });

    // After a switchover the new leader has the permanent slots and the old leader's slot.
    c.sql(0, "create table t(id serial primary key, v text)")
        .unwrap();
    let out = pgherd(&c, &["switchover", "--candidate", "node2", "--force"]).ok();
    assert!(out.contains("Successfully switched over to"), "{out}");
    writable_leader(&c, 1);
    wait_slots(&c, 1, "the permanent slots on the new leader", |s| {
        has(s, "node1:physical:t")
            && has(s, "perm_logical:logical:")
            && has(s, "perm_phys:physical:")
    });
    // The old leader, now a replica, dropped node2's slot and the permanent physical one and
    // kept the permanent logical slot and the ignored one.
    wait_slots(&c, 0, "the old leader's slots as a replica's", |s| {
        lacks(s, "node2")
            && lacks(s, "perm_phys")
            && has(s, "perm_logical:logical:")
            && has(s, "keep_me:physical:")
    });
    c.shutdown();
}

/// `confirmed_flush_lsn` of `slot` on member `i`, as a number.
fn confirmed_flush(c: &TestCluster, i: usize, slot: &str) -> Option<u64> {
    c.sql(
        i,
        &format!(
            "select pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint \
             from pg_replication_slots where slot_name = '{slot}'"
        ),
    )
    .ok()?
    .trim()
    .parse()
    .ok()
}

/// Patroni 3.0's logical slot failover: the replica gets a copy of the permanent logical
/// slot (copied from the primary, PostgreSQL 15 cannot create one on a standby), keeps it
/// advanced to the position the primary publishes, runs with hot_standby_feedback, and
/// after the primary dies the new primary decodes from where the consumer left off.
#[test]
fn permanent_logical_slots_are_copied_to_replicas_and_survive_a_failover() {
    let mut c = new_cluster("slots-logical", 2, |_, yaml| {
        yaml.replace(
            "        max_connections: 50\n",
            "        max_connections: 50\n        wal_level: logical\n    slots:\n      cdc:\n        type: logical\n        database: postgres\n        plugin: test_decoding\n",
        )
    });
    c.start(0).expect("node1");
    assert_eq!(healthy(&c, 0), 0, "node1 bootstraps alone");
    c.start(1).expect("node2");
    healthy(&c, 1);
    wait_slots(&c, 0, "cdc on the leader", |s| has(s, "cdc:logical:"));
    wait_slots(&c, 1, "cdc copied to the replica", |s| {
        has(s, "cdc:logical:")
    });
    let feedback = c.sql(1, "show hot_standby_feedback").unwrap();
    assert_eq!(feedback.trim(), "on", "hot_standby_feedback on the replica");

    // A consumer reads the first changes on the leader: the replica's copy follows.
    c.sql(
        0,
        "create table cdc_t(id int primary key, v text); \
         create table t(id serial primary key, v text)",
    )
    .unwrap();
    c.sql(0, "insert into cdc_t values (1, 'consumed')")
        .unwrap();
    let consumed = c
        .sql(
            0,
            "select count(*) from pg_logical_slot_get_changes('cdc', null, null)",
        )
        .unwrap();
    assert!(
        consumed.trim().parse::<u64>().unwrap_or(0) > 0,
        "{consumed}"
    );
    let target = confirmed_flush(&c, 0, "cdc").expect("cdc position on the leader");
    check(
        &c,
        poll(
            "the replica's cdc advanced to the consumer's position",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || confirmed_flush(&c, 1, "cdc").filter(|&lsn| lsn >= target),
        ),
    );

    // Changes the consumer has not read yet, replicated, then the leader dies.
    c.sql(0, "insert into cdc_t values (2, 'pending')").unwrap();
    check(
        &c,
        poll(
            "the pending row on the replica",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                c.sql(1, "select count(*) from cdc_t where id = 2")
                    .ok()
                    .filter(|n| n.trim() == "1")
            },
        ),
    );
    c.kill_agent(0).expect("kill node1's agent");
    c.kill_postmaster(0).expect("kill node1's postmaster");
    writable_leader(&c, 1);
    let changes = c
        .sql(
            1,
            "select coalesce(string_agg(data, E'\\n'), '') from pg_logical_slot_get_changes('cdc', null, null)",
        )
        .unwrap();
    assert!(
        changes.contains("'pending'"),
        "the new leader's cdc slot decodes the change the consumer had not read: {changes}"
    );
    assert!(
        !changes.contains("'consumed'"),
        "the new leader's cdc slot re-sent a change the consumer had confirmed: {changes}"
    );
    c.shutdown();
}
