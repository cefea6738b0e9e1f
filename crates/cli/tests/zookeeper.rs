//! pgherd on ZooKeeper (Debian's package, run with java on loopback) instead of etcd, with
//! three real PostgreSQL servers: automatic failover after kill -9 of the leader's node, a
//! planned switchover, and Patroni's tools both ways (Debian's `patronictl` 3.0 lists a pgherd
//! cluster on ZooKeeper; `pgherd list` reads a Patroni 3.0 cluster on ZooKeeper). The same
//! runbooks as failover.rs, control_switchover.rs and patroni_interop.rs run on etcd. The
//! failover runs once more on ZooKeeper over TLS with client certificates and x509 ACLs. Run
//! serially (`--test-threads=1`).

mod common;

use common::*;
use nix::sys::signal::Signal;
use pgherd_testkit::cluster::{AgentKind, ClusterOptions, DcsKind, TestCluster, ZooKeeperTlsFiles};
use pgherd_testkit::pki::ZooKeeperPki;
use pgherd_testkit::wait::poll;
use pgherd_testkit::zookeeper::{AclEntry, ZooKeeperTls};
use std::time::Duration;

fn zookeeper_cluster(scope: &str, agent: AgentKind) -> (TestCluster, usize) {
    let options = ClusterOptions {
        scope: scope.into(),
        agent,
        dcs: DcsKind::ZooKeeper,
        ..ClusterOptions::default()
    };
    let c = cluster_from(options, |_, yaml| {
        assert!(yaml.contains("\nzookeeper:\n  hosts: 127.0.0.1:"), "{yaml}");
        yaml
    });
    let leader = healthy(&c, 2);
    (c, leader)
}

/// Table `t` on member `i` with `n` rows `row1`..`row<n>` (what rows_everywhere counts).
fn rows_table(c: &TestCluster, i: usize, n: u32) {
    let sql = format!(
        "create table t(id serial primary key, v text); \
         insert into t(v) select 'row' || g from generate_series(1, {n}) g"
    );
    c.sql(i, &sql).unwrap();
}

/// The leader znode's value, read with ZooKeeper's own Java client.
fn leader_in_dcs(c: &TestCluster) -> Option<String> {
    c.dcs_value("leader")
}

#[test]
fn a_killed_leader_fails_over_on_zookeeper() {
    let (mut c, leader) = zookeeper_cluster("zk-crash", AgentKind::Pgherd);
    assert_eq!(
        leader_in_dcs(&c).as_deref(),
        Some(c.members[leader].name.as_str()),
        "the leader znode names the leader"
    );
    rows_table(&c, leader, 50);
    rows_everywhere(&c, "50");

    // kill -9 the leader's agent and postmaster together: its session is no longer pinged,
    // ZooKeeper expires it after ttl, and the leader znode goes with it.
    c.signal_node(leader, Signal::SIGKILL).unwrap();
    let new_leader = check(
        &c,
        poll(
            "a new leader that accepts writes",
            Duration::from_secs(90),
            Duration::from_millis(100),
            || {
                let l = (0..3)
                    .find(|&i| i != leader && matches!(c.api(i, "GET", "/leader"), Ok((200, _))))?;
                c.sql(l, "insert into t(v) values ('probe')").ok()?;
                Some(l)
            },
        ),
    );
    assert_eq!(
        leader_in_dcs(&c).as_deref(),
        Some(c.members[new_leader].name.as_str())
    );
    let other = (0..3).find(|&i| i != leader && i != new_leader).unwrap();
    check(
        &c,
        poll(
            "the other replica streams from the new leader",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                let n = c
                    .sql(
                        new_leader,
                        &format!(
                            "select count(*) from pg_stat_replication where application_name = '{}' and state = 'streaming'",
                            c.members[other].name
                        ),
                    )
                    .ok()?;
                (n == "1").then_some(())
            },
        ),
    );
    // The killed node's member znode expired with its session.
    check(
        &c,
        poll(
            "the killed member's znode to expire",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                c.dcs_value(&format!("members/{}", c.members[leader].name))
                    .is_none()
                    .then_some(())
            },
        ),
    );
}

#[test]
fn a_killed_leader_fails_over_on_zookeeper_over_tls_with_x509_acls() {
    let certs = tempfile::tempdir().unwrap();
    let pki = ZooKeeperPki::generate(certs.path()).unwrap();
    let options = ClusterOptions {
        scope: "zk-tls".into(),
        dcs: DcsKind::ZooKeeper,
        zookeeper_tls: Some(ZooKeeperTlsFiles {
            server: ZooKeeperTls {
                key_store: pki.server_key_store.clone(),
                trust_store: pki.ca.clone(),
            },
            client: ZooKeeperTls {
                key_store: pki.client.key_store.clone(),
                trust_store: pki.ca.clone(),
            },
        }),
        ..ClusterOptions::default()
    };
    let tls_keys = format!(
        "\nzookeeper:\n  use_ssl: true\n  cacert: {}\n  cert: {}\n  key: {}\n  set_acls:\n    {}: [ALL]\n",
        pki.ca.display(),
        pki.client.cert.display(),
        pki.client.key.display(),
        pki.client.principal,
    );
    let mut c = cluster_from(options, |_, yaml| {
        assert!(yaml.contains("\nzookeeper:\n  hosts: 127.0.0.1:"), "{yaml}");
        yaml.replace("\nzookeeper:\n", &tls_keys)
    });
    let leader = healthy(&c, 2);
    let zk = c.zookeeper().unwrap();
    let client = ZooKeeperTls {
        key_store: pki.client.key_store.clone(),
        trust_store: pki.ca.clone(),
    };
    assert_eq!(
        zk.get_acl("/service/zk-tls/leader", &client).unwrap(),
        [AclEntry {
            scheme: "x509".into(),
            id: pki.client.principal.clone(),
            permissions: "cdrwa".into(),
        }],
        "the leader znode carries set_acls' ACL"
    );
    rows_table(&c, leader, 20);
    rows_everywhere(&c, "20");

    c.signal_node(leader, Signal::SIGKILL).unwrap();
    let new_leader = check(
        &c,
        poll(
            "a new leader that accepts writes",
            Duration::from_secs(90),
            Duration::from_millis(100),
            || {
                let l = (0..3)
                    .find(|&i| i != leader && matches!(c.api(i, "GET", "/leader"), Ok((200, _))))?;
                c.sql(l, "insert into t(v) values ('probe')").ok()?;
                Some(l)
            },
        ),
    );
    let count = c
        .sql(new_leader, "select count(*) from t where v like 'row%'")
        .unwrap();
    assert_eq!(count, "20", "no acknowledged row lost");
}

#[test]
fn a_switchover_on_zookeeper_moves_the_leader_and_loses_nothing() {
    let (c, leader) = zookeeper_cluster("zk-switch", AgentKind::Pgherd);
    rows_table(&c, leader, 100);
    let target = (leader + 1) % 3;
    let target_name = c.members[target].name.clone();
    let out = pgherd(&c, &["switchover", "--candidate", &target_name, "--force"]).ok();
    assert!(
        out.contains(&format!("Successfully switched over to \"{target_name}\"")),
        "{out}"
    );
    writable_leader(&c, target);
    all_streaming(&c, target);
    rows_everywhere(&c, "100");
    assert_eq!(c.sql(leader, "select pg_is_in_recovery()").unwrap(), "t");
    assert_eq!(leader_in_dcs(&c).as_deref(), Some(target_name.as_str()));
    failover_request_cleared(&c);

    // A new ttl needs new ZooKeeper sessions: every agent opens one and moves its znodes to
    // it, the leader keeps the leader key throughout.
    let sessions = |i: usize| {
        c.log_tail(i, 400)
            .matches("ZooKeeper session opened")
            .count()
    };
    let before: Vec<usize> = (0..3).map(sessions).collect();
    assert!(before.iter().all(|n| *n >= 1), "{before:?}");
    let out = pgherd(&c, &["edit-config", "-s", "ttl=14", "--force"]).ok();
    assert!(out.contains("Configuration changed"), "{out}");
    for (i, before) in before.into_iter().enumerate() {
        check(
            &c,
            poll(
                "a new ZooKeeper session after the ttl change",
                Duration::from_secs(60),
                Duration::from_millis(200),
                || (sessions(i) > before).then_some(()),
            ),
        );
    }
    assert!(
        holds_for(Duration::from_secs(5), || c.leader_index() == Some(target)),
        "the leader changed after the ttl change:\n{}",
        c.log_tail(target, 40)
    );
    assert_eq!(leader_in_dcs(&c).as_deref(), Some(target_name.as_str()));
    writable_leader(&c, target);
}

#[test]
fn patronictl_lists_a_pgherd_cluster_on_zookeeper() {
    let (c, leader) = zookeeper_cluster("zk-patronictl", AgentKind::Pgherd);
    let list = check(
        &c,
        poll(
            "patronictl list with a leader and two running replicas",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                let out = patronictl(&c, &["list"]);
                (out.code == 0
                    && out.stdout.matches("| Replica ").count() == 2
                    && out.stdout.matches("| running ").count() == 3)
                    .then_some(out.stdout)
            },
        ),
    );
    assert!(list.contains("Cluster: zk-patronictl"), "{list}");
    let leader_row = list
        .lines()
        .find(|l| l.contains(&format!("| {} ", c.members[leader].name)))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(leader_row.contains("| Leader "), "{list}");
    // pgherd list agrees.
    let ours = pgherd(&c, &["list"]).ok();
    let ours_row = ours
        .lines()
        .find(|l| l.contains(&format!("| {} ", c.members[leader].name)))
        .unwrap_or_else(|| panic!("{ours}"));
    assert!(ours_row.contains("| Leader "), "{ours}");
}

#[test]
fn pgherd_lists_a_patroni_cluster_on_zookeeper() {
    let (c, leader) = zookeeper_cluster("zk-patroni", AgentKind::Patroni);
    pgherd_lists_patroni(&c, leader, "zk-patroni");
    let config = pgherd(&c, &["show-config"]).ok();
    assert!(config.contains("loop_wait: 1"), "{config}");
}
