//! Planned switchovers under write load, with real etcd, three real PostgreSQL 15 servers, the
//! agent and the proxy: a client writes a row through the proxy's write port every 20 ms (a new
//! connection each time) while `pgherd switchover --force` runs 20 times in a row, without a
//! candidate and with one. Every switchover must leave exactly one new timeline and one history
//! entry, every acknowledged row on the new leader, and every member streaming on the leader's
//! timeline. Run serially (`--test-threads=1`).

use pgherd_testkit::cluster::{ClusterOptions, TestCluster};
use pgherd_testkit::proxy::ProxyProcess;
use pgherd_testkit::wait::poll;
use pgherd_testkit::writer::Writer;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

const PGHERD: &str = env!("CARGO_BIN_EXE_pgherd");
const ROUNDS: usize = 20;

fn dump_logs(c: &TestCluster) {
    for i in 0..c.members.len() {
        eprintln!("--- {} ---\n{}", c.members[i].name, c.log_tail(i, 80));
    }
}

fn check<T>(c: &TestCluster, result: anyhow::Result<T>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => {
            dump_logs(c);
            panic!("{e:#}");
        }
    }
}

/// The member's timeline as its REST API reports it.
fn timeline(c: &TestCluster, i: usize) -> Option<u64> {
    let (code, body) = c.api(i, "GET", "/patroni").ok()?;
    let v: Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
    v["timeline"].as_u64()
}

/// Waits until `leader` is the only leader, accepts writes, and every other member streams
/// from it on its timeline; returns that timeline.
fn settled(c: &TestCluster, leader: usize) -> u64 {
    check(
        c,
        poll(
            "the new leader writable and every replica streaming on its timeline",
            Duration::from_secs(90),
            Duration::from_millis(100),
            || {
                (c.leader_index() == Some(leader)).then_some(())?;
                c.sql(leader, "select 1 where not pg_is_in_recovery()")
                    .ok()
                    .filter(|o| o == "1")?;
                let tl = timeline(c, leader)?;
                for i in (0..c.members.len()).filter(|&i| i != leader) {
                    let row = c
                        .sql(
                            i,
                            "select status || '/' || received_tli from pg_stat_wal_receiver",
                        )
                        .ok()?;
                    (row == format!("streaming/{tl}")).then_some(())?;
                }
                Some(tl)
            },
        ),
    )
}

fn ids_on(c: &TestCluster, i: usize) -> BTreeSet<i64> {
    check(c, c.sql(i, "select id from w"))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `history` entries as `(timeline, new leader)`.
fn history(c: &TestCluster) -> Vec<(u64, String)> {
    let raw = c.dcs_value("history").unwrap_or_else(|| "[]".into());
    let rows: Vec<Value> = serde_json::from_str(&raw).unwrap_or_default();
    rows.iter()
        .map(|r| {
            (
                r[0].as_u64().unwrap_or(0),
                r[4].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn switchovers(scope: &str, with_candidate: bool) {
    let options = ClusterOptions {
        scope: scope.into(),
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::new(Path::new(PGHERD), options).expect("cluster directories and etcd");
    c.start_all().expect("agents");
    let mut leader = check(&c, c.wait_healthy(2, Duration::from_secs(120)));
    check(&c, c.sql(leader, "create table w(id bigint primary key)"));
    let mut tl = settled(&c, leader);
    assert_eq!(tl, 1);
    let px = ProxyProcess::start(Path::new(PGHERD), &c, "px", false).expect("pgherd proxy");
    let writer = Writer::start(px.primary, "w", Duration::from_millis(20)).expect("writer");
    let started = Instant::now();

    for round in 1..=ROUNDS {
        // Writes are flowing before each switchover.
        let before = writer.report().acked.len();
        check(
            &c,
            poll(
                "acknowledged writes through the proxy",
                Duration::from_secs(30),
                Duration::from_millis(20),
                || (writer.report().acked.len() >= before + 5).then_some(()),
            ),
        );
        let candidate = (leader + 1) % c.members.len();
        let candidate_name = c.members[candidate].name.clone();
        let mut args = vec!["switchover", "--force"];
        if with_candidate {
            args.extend(["--candidate", candidate_name.as_str()]);
        }
        let out = check(&c, c.ctl(leader, &args));
        let new_name = out
            .lines()
            .find_map(|l| l.split("Successfully switched over to \"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| {
                dump_logs(&c);
                panic!("round {round}: no success line in:\n{out}")
            })
            .to_string();
        let new = c
            .members
            .iter()
            .position(|m| m.name == new_name)
            .expect("a member");
        assert_ne!(new, leader, "round {round}: the old leader took over again");
        if with_candidate {
            assert_eq!(new, candidate, "round {round}");
        }

        // Exactly one new timeline, everyone streaming on it.
        let new_tl = settled(&c, new);
        assert_eq!(
            new_tl,
            tl + 1,
            "round {round}: one timeline step per switchover"
        );
        // One history entry per switchover, naming the new leader (published by the new
        // leader's first cycle after its promotion).
        let expected = (tl, new_name.clone());
        let published = poll(
            "the history entry of the switchover",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                let h = history(&c);
                (h.last() == Some(&expected)).then_some(h)
            },
        );
        let h = published.unwrap_or_else(|e| {
            let h = history(&c);
            dump_logs(&c);
            panic!("round {round}: {e}: history {h:?}")
        });
        assert_eq!(h.len(), round, "round {round}: history {h:?}");
        // Every acknowledged write is on the new leader.
        let acked = writer.report();
        let missing = acked.missing_in(&ids_on(&c, new));
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged ids missing on the new leader: {missing:?}"
        );
        leader = new;
        tl = new_tl;
    }

    let report = writer.stop();
    let elapsed = started.elapsed();
    // Every member ends with every acknowledged row.
    for i in 0..c.members.len() {
        let r = poll(
            "every acknowledged row on every member",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || report.missing_in(&ids_on(&c, i)).is_empty().then_some(()),
        );
        check(&c, r);
    }
    println!(
        "{ROUNDS} switchovers ({}) in {elapsed:.1?}: {} acknowledged writes, 0 lost, {} refused, {} indeterminate, longest gap between acknowledged writes {:.2?} (ended at {:?})",
        if with_candidate {
            "with a candidate"
        } else {
            "without a candidate"
        },
        report.acked.len(),
        report.refused,
        report.indeterminate.len(),
        report.max_gap,
        report.max_gap_ended
    );
    drop(px);
    c.shutdown();
}

#[test]
fn twenty_switchovers_without_candidate_lose_no_acknowledged_write() {
    switchovers("so-nocand", false);
}

#[test]
fn twenty_switchovers_to_a_candidate_lose_no_acknowledged_write() {
    switchovers("so-cand", true);
}
