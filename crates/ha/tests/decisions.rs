//! Decisions as data: each scenario asserts the actions and the reason sentence.

use pgherd_dcs::{Cluster, MemberData, Role};
use pgherd_ha::{
    Action, DataDir, DemoteMode, Engine, LocalPg, Observation, PeerProbe, PeerReply, Replication,
    Settings,
};

const SYSID: &str = "7711336143377005909";

fn member(name: &str, role: Role, xlog: u64) -> (String, String) {
    let data = MemberData {
        conn_url: format!("postgres://127.0.0.1:5432/{name}"),
        api_url: format!("http://127.0.0.1:8008/{name}"),
        state: "running".into(),
        role: Some(role),
        version: "3.0.2".into(),
        xlog_location: Some(xlog),
        timeline: Some(1),
        ..MemberData::default()
    };
    (format!("members/{name}"), data.to_json())
}

fn cluster(leader: Option<&str>, extra: &[(&str, &str)]) -> Cluster {
    let mut rows: Vec<(String, String)> = vec![
        ("initialize".into(), SYSID.into()),
        ("config".into(), r#"{"ttl":10}"#.into()),
        ("status".into(), r#"{"optime":1000}"#.into()),
        member("n1", Role::Primary, 1000),
        member("n2", Role::Replica, 1000),
        member("n3", Role::Replica, 900),
    ];
    if let Some(l) = leader {
        rows.push(("leader".into(), l.into()));
    }
    for (k, v) in extra {
        rows.push((k.to_string(), v.to_string()));
    }
    Cluster::from_rows(rows.iter().map(|(k, v)| (k.as_str(), v.as_str(), 1, 0)), 1)
}

fn replica(wal: u64, following: &str) -> LocalPg {
    LocalPg {
        data_dir: DataDir::Initialized {
            sysid: SYSID.into(),
        },
        running: true,
        queryable: true,
        in_recovery: true,
        wal_position: wal,
        timeline: 1,
        following: Some(if following.is_empty() {
            Replication::Detached
        } else {
            Replication::From(following.into())
        }),
        streaming: !following.is_empty(),
        stopped_cleanly_as_primary: false,
        diverged: None,
        replication: Vec::new(),
        sync_standby_names: Vec::new(),
    }
}

fn primary(wal: u64) -> LocalPg {
    LocalPg {
        in_recovery: false,
        following: None,
        ..replica(wal, "")
    }
}

fn peer(name: &str, wal: u64, is_primary: bool) -> PeerProbe {
    PeerProbe {
        name: name.into(),
        reply: Some(PeerReply {
            running: true,
            starting: false,
            is_primary,
            wal_position: Some(wal),
            timeline: Some(1),
            nofailover: false,
            failover_priority: 1,
        }),
    }
}

fn obs<'a>(
    s: &'a Settings,
    c: Option<&'a Cluster>,
    pg: &'a LocalPg,
    peers: &'a [PeerProbe],
) -> Observation<'a> {
    Observation {
        now: 100_000,
        settings: s,
        cluster: c,
        pg,
        peers,
        in_progress: None,
        lock_confirmed_at: None,
        promotion_blocked_until: None,
        wall_clock_ms: 1_900_000_000_000,
        watchdog_allows_leadership: true,
        failsafe_confirmed: false,
    }
}

#[test]
fn empty_cluster_bootstraps() {
    let s = Settings::for_member("n1");
    let c = Cluster::default();
    let pg = LocalPg::stopped(DataDir::Empty);
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(d.actions, vec![Action::Bootstrap]);
    assert_eq!(d.reason, "trying to bootstrap a new cluster");
}

#[test]
fn empty_node_clones_from_leader() {
    let s = Settings::for_member("n4");
    let c = cluster(Some("n1"), &[]);
    let pg = LocalPg::stopped(DataDir::Empty);
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(
        d.actions,
        vec![Action::Clone {
            source: "n1".into(),
            upstream: "n1".into()
        }]
    );
    assert_eq!(d.reason, "bootstrapping from leader (n1)");
}

#[test]
fn bootstrap_in_progress_waits() {
    let s = Settings::for_member("n2");
    let c = Cluster {
        initialize: Some(String::new()),
        ..Cluster::default()
    };
    let pg = LocalPg::stopped(DataDir::Empty);
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert!(d.actions.is_empty());
    assert_eq!(d.reason, "waiting for leader to bootstrap");
}

#[test]
fn leader_renews_and_publishes() {
    let s = Settings::for_member("n1");
    let c = cluster(Some("n1"), &[]);
    let pg = primary(1000);
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(
        d.actions,
        vec![Action::RenewLock, Action::PublishLeaderState]
    );
    assert_eq!(d.reason, "no action. I am (n1), the leader with the lock");
}

#[test]
fn replica_follows_leader() {
    let s = Settings::for_member("n2");
    let c = cluster(Some("n1"), &[]);
    let pg = replica(1000, "n1");
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert!(d.actions.is_empty());
    assert_eq!(
        d.reason,
        "no action. I am (n2), a secondary, and following a leader (n1)"
    );
    let pg = replica(1000, "n3");
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(
        d.actions,
        vec![Action::Follow {
            upstream: "n1".into()
        }]
    );
}

#[test]
fn primary_without_lock_demotes() {
    let s = Settings::for_member("n2");
    let c = cluster(Some("n1"), &[]);
    let pg = primary(1000);
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(d.actions, vec![Action::Demote(DemoteMode::ImmediateNoLock)]);
}

#[test]
fn healthiest_replica_promotes_and_ties_break_by_name() {
    let c = cluster(None, &[]);
    let s2 = Settings::for_member("n2");
    let s3 = Settings::for_member("n3");
    let pg = replica(1000, "n1");
    let peers = [peer("n3", 1000, false), peer("n1", 0, false)];
    let d = Engine::new().step(&obs(&s2, Some(&c), &pg, &peers[..1]));
    assert_eq!(d.actions, vec![Action::AcquireLock, Action::Promote,]);
    assert!(
        d.reason
            .starts_with("promoted self to leader by acquiring session lock"),
        "{}",
        d.reason
    );
    let peers3 = [peer("n2", 1000, false)];
    let d = Engine::new().step(&obs(&s3, Some(&c), &pg, &peers3));
    assert!(d.actions.is_empty());
    assert_eq!(
        d.reason,
        "no leader, not racing: n2 has the same WAL position and wins the tie"
    );
}

#[test]
fn replica_behind_does_not_race() {
    let c = cluster(None, &[]);
    let s = Settings::for_member("n3");
    let pg = replica(900, "n1");
    let peers = [peer("n2", 1000, false)];
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &peers));
    assert!(d.actions.is_empty());
    assert!(d.reason.contains("is ahead of mine"), "{}", d.reason);
}

#[test]
fn member_still_starting_holds_back_the_race_for_one_ttl() {
    // Whole-cluster restart: n2 is up first; n3's agent answers but its PostgreSQL is still
    // starting, and may hold more WAL (it was the primary).
    let c = cluster(None, &[]);
    let s = Settings::for_member("n2");
    let pg = replica(1000, "");
    let peers = peers_starting("n3");
    let mut engine = Engine::new();
    let mut o = obs(&s, Some(&c), &pg, &peers);
    let d = engine.step(&o);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert!(d.reason.contains("n3 is still starting"), "{}", d.reason);
    o.now += s.ttl - 1;
    assert!(engine.step(&o).actions.is_empty());
    // One ttl after the key became free, a member stuck starting no longer blocks failover.
    o.now += 1;
    let d = engine.step(&o);
    assert_eq!(
        d.actions.first(),
        Some(&Action::AcquireLock),
        "{}",
        d.reason
    );
    // Once it runs, its WAL position decides.
    let peers = [peer("n3", 1200, false)];
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &peers));
    assert!(d.actions.is_empty());
    assert!(d.reason.contains("is ahead of mine"), "{}", d.reason);

    // After a live leader's loss (we streamed from it), a starting member does not hold
    // back the race: it is the failed primary restarting, or a replica.
    let mut engine = Engine::new();
    let led = cluster(Some("n1"), &[]);
    let following = replica(1000, "n1");
    engine.step(&obs(&s, Some(&led), &following, &[]));
    let d = engine.step(&obs(&s, Some(&c), &pg, &peers_starting("n1")));
    assert_eq!(
        d.actions.first(),
        Some(&Action::AcquireLock),
        "{}",
        d.reason
    );

    // A leader key left over from a whole-cluster crash (nothing streams from it) is not a
    // live leader: once it expires, the start-up wait applies.
    let mut engine = Engine::new();
    let mut not_streaming = replica(1000, "n1");
    not_streaming.streaming = false;
    engine.step(&obs(&s, Some(&led), &not_streaming, &[]));
    let d = engine.step(&obs(&s, Some(&c), &pg, &peers_starting("n1")));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert!(d.reason.contains("n1 is still starting"), "{}", d.reason);

    // ... unless the leader was seen rewriting its member key (it was alive then).
    let mut engine = Engine::new();
    let mut rewritten = led.clone();
    if let Some(m) = rewritten.members.get_mut("n1") {
        m.index += 1;
    }
    engine.step(&obs(&s, Some(&led), &not_streaming, &[]));
    engine.step(&obs(&s, Some(&rewritten), &not_streaming, &[]));
    let d = engine.step(&obs(&s, Some(&c), &pg, &peers_starting("n1")));
    assert_eq!(
        d.actions.first(),
        Some(&Action::AcquireLock),
        "{}",
        d.reason
    );
}

fn peers_starting(name: &str) -> [PeerProbe; 1] {
    let mut p = peer(name, 0, false);
    if let Some(r) = p.reply.as_mut() {
        r.running = false;
        r.starting = true;
        r.wal_position = None;
    }
    [p]
}

#[test]
fn replica_too_far_behind_is_ineligible_even_alone() {
    let c = cluster(None, &[("status", r#"{"optime":50000000}"#)]);
    let s = Settings::for_member("n3");
    let pg = replica(900, "n1");
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert!(d.actions.is_empty());
    assert!(d.reason.contains("maximum_lag_on_failover"), "{}", d.reason);
}

#[test]
fn live_primary_blocks_election() {
    let c = cluster(None, &[]);
    let s = Settings::for_member("n2");
    let pg = replica(1000, "n1");
    let peers = [peer("n1", 1000, true)];
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &peers));
    assert!(d.actions.is_empty());
    assert_eq!(
        d.reason,
        "no leader, not racing: primary (n1) is still alive"
    );
}

#[test]
fn nofailover_never_races() {
    let c = cluster(None, &[]);
    let mut s = Settings::for_member("n2");
    s.nofailover = true;
    let pg = replica(5000, "n1");
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert!(d.actions.is_empty());
    assert_eq!(d.reason, "no leader, not racing: tagged nofailover");
}

#[test]
fn dcs_loss_demotes_primary() {
    let s = Settings::for_member("n1");
    let pg = primary(1000);
    let d = Engine::new().step(&obs(&s, None, &pg, &[]));
    assert_eq!(d.actions, vec![Action::Demote(DemoteMode::Offline)]);
}

#[test]
fn stale_lease_fences_primary_before_expiry() {
    let s = Settings::for_member("n1");
    let c = cluster(Some("n1"), &[]);
    let pg = primary(1000);
    let mut o = obs(&s, Some(&c), &pg, &[]);
    o.lock_confirmed_at = Some(o.now - (s.ttl - s.fencing_margin));
    let d = Engine::new().step(&o);
    assert_eq!(d.actions, vec![Action::Demote(DemoteMode::ImmediateNoLock)]);
    o.lock_confirmed_at = Some(o.now - s.loop_wait);
    let d = Engine::new().step(&o);
    assert_eq!(
        d.actions,
        vec![Action::RenewLock, Action::PublishLeaderState]
    );
}

#[test]
fn sysid_mismatch_is_fatal_and_deletes_nothing() {
    let s = Settings::for_member("n2");
    let c = cluster(Some("n1"), &[]);
    let mut pg = replica(1000, "n1");
    pg.data_dir = DataDir::Initialized {
        sysid: "1111111111111111111".into(),
    };
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert!(matches!(d.actions.as_slice(), [Action::Fatal { .. }]));
    assert!(d.reason.contains("belongs to another cluster"));
}

#[test]
fn crashed_primary_restarts_in_place_or_fails_over() {
    let c = cluster(Some("n1"), &[]);
    let mut s = Settings::for_member("n1");
    let mut pg = primary(1000);
    pg.running = false;
    pg.queryable = false;
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    // Read-only first (the data directory may be a standby's); the next cycle promotes.
    assert_eq!(
        d.actions,
        vec![
            Action::RenewLock,
            Action::StartPostgres(Replication::Detached)
        ]
    );
    s.primary_start_timeout = 0;
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(
        d.actions,
        vec![
            Action::ReleaseLock,
            Action::StartPostgres(Replication::Detached)
        ]
    );
    assert!(
        d.reason.contains("primary_start_timeout is 0"),
        "{}",
        d.reason
    );
}

#[test]
fn former_primary_with_diverged_timeline_rewinds() {
    let c = cluster(Some("n2"), &[]);
    let s = Settings::for_member("n1");
    let mut pg = LocalPg::stopped(DataDir::Initialized {
        sysid: SYSID.into(),
    });
    pg.diverged = Some(true);
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(
        d.actions,
        vec![Action::Rewind {
            source: "n2".into()
        }]
    );
    let mut s = s;
    s.use_pg_rewind = false;
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert!(d.actions.is_empty());
    assert!(d.reason.contains("staying stopped"));
}

#[test]
fn paused_cluster_takes_no_automatic_action() {
    let c = cluster(None, &[("config", r#"{"pause":true}"#)]);
    let s = Settings::for_member("n2");
    let pg = replica(1000, "n1");
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert!(d.actions.is_empty());
    assert_eq!(
        d.reason,
        "PAUSE: no leader; no automatic failover while paused"
    );
}

/// A primary may have lost its key while paused (nothing is fenced then): after the resume,
/// only a running primary races for one ttl, so it takes its key back (or sees another leader
/// and demotes) before any replica promotes. Found by a simulated maintenance-mode fault
/// (split brain: a replica promoted at the resume while the keyless primary still ran).
#[test]
fn after_a_resume_replicas_leave_a_free_key_to_a_running_primary_for_one_ttl() {
    let paused = cluster(None, &[("config", r#"{"ttl":10,"pause":true}"#)]);
    let resumed = cluster(None, &[("config", r#"{"ttl":10}"#)]);
    let s = Settings::for_member("n2");
    let pg = replica(1000, "n1");
    let mut engine = Engine::new();
    let at = |now: u64| Observation {
        now,
        ..obs(&s, Some(&resumed), &pg, &[])
    };
    engine.step(&obs(&s, Some(&paused), &pg, &[]));
    let d = engine.step(&at(100_000));
    assert!(d.actions.is_empty(), "{d:?}");
    assert!(
        d.reason
            .starts_with("no leader, not racing: maintenance mode ended 0 ms ago"),
        "{}",
        d.reason
    );
    let d = engine.step(&at(100_000 + s.ttl - 1));
    assert!(d.actions.is_empty(), "{d:?}");
    let d = engine.step(&at(100_000 + s.ttl));
    assert_eq!(
        d.actions,
        vec![Action::AcquireLock, Action::Promote],
        "{}",
        d.reason
    );

    // The primary itself takes its key back at once.
    let mut engine = Engine::new();
    let p = primary(1000);
    engine.step(&obs(&s, Some(&paused), &p, &[]));
    let d = engine.step(&obs(&s, Some(&resumed), &p, &[]));
    assert_eq!(
        d.actions,
        vec![Action::AcquireLock, Action::PublishLeaderState],
        "{}",
        d.reason
    );
}

#[test]
fn switchover_request_demotes_leader_gracefully() {
    let c = cluster(
        Some("n1"),
        &[("failover", r#"{"leader":"n1","member":"n2"}"#)],
    );
    let s = Settings::for_member("n1");
    let mut pg = primary(1000);
    pg.replication = vec![link("n2", false), link("n3", false)];
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(
        d.actions,
        vec![
            Action::RenewLock,
            Action::PublishLeaderState,
            Action::Demote(DemoteMode::Graceful)
        ]
    );
}

fn sync_settings(name: &str) -> Settings {
    let mut s = Settings::for_member(name);
    s.synchronous_mode = true;
    s
}

fn link(name: &str, synchronous: bool) -> pgherd_ha::StandbyLink {
    pgherd_ha::StandbyLink {
        name: name.into(),
        streaming: true,
        synchronous,
        lsn: 1000,
    }
}

#[test]
fn sync_mode_names_a_standby_then_publishes_it_once_confirmed() {
    let s = sync_settings("n1");
    let c = cluster(
        Some("n1"),
        &[("sync", r#"{"leader":"n1","sync_standby":null}"#)],
    );
    let mut pg = primary(1000);
    pg.replication = vec![link("n2", false), link("n3", false)];
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(
        d.actions,
        vec![
            Action::RenewLock,
            Action::PublishLeaderState,
            Action::SetSynchronousStandbys {
                names: vec!["n2".into()],
                strict: false
            }
        ]
    );
    assert!(
        d.reason.contains("setting synchronous standbys to n2"),
        "{}",
        d.reason
    );
    // PostgreSQL now waits for n2 and reports it synchronous: only then does `sync` name it.
    pg.sync_standby_names = vec!["n2".into()];
    pg.replication = vec![link("n2", true), link("n3", false)];
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(
        d.actions[2],
        Action::WriteSync {
            standbys: vec!["n2".into()],
            index: Some(1)
        }
    );
}

#[test]
fn sync_standby_leaves_sync_key_before_postgres_stops_waiting() {
    let s = sync_settings("n1");
    let c = cluster(
        Some("n1"),
        &[("sync", r#"{"leader":"n1","sync_standby":"n2"}"#)],
    );
    let mut pg = primary(1000);
    pg.sync_standby_names = vec!["n2".into()];
    pg.replication = vec![link("n3", false)];
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(
        &d.actions[2..],
        &[
            Action::WriteSync {
                standbys: vec![],
                index: Some(1)
            },
            Action::SetSynchronousStandbys {
                names: vec!["n3".into()],
                strict: false
            },
        ]
    );
}

#[test]
fn sync_mode_falls_back_to_async_or_blocks_when_strict() {
    let mut s = sync_settings("n1");
    let c = cluster(
        Some("n1"),
        &[("sync", r#"{"leader":"n1","sync_standby":null}"#)],
    );
    let mut pg = primary(1000);
    pg.sync_standby_names = vec!["n2".into()];
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert!(
        d.reason
            .contains("falling back to asynchronous replication"),
        "{}",
        d.reason
    );
    assert!(d.actions.contains(&Action::SetSynchronousStandbys {
        names: vec![],
        strict: false
    }));
    s.synchronous_mode_strict = true;
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert!(d.reason.contains("commits wait"), "{}", d.reason);
    assert!(d.actions.contains(&Action::SetSynchronousStandbys {
        names: vec![],
        strict: true
    }));
}

/// Also on request: a failover to a member the `sync` key does not list would lose the
/// commits only the leader and its synchronous standbys hold (found by the simulator: a stale
/// failover request promoted a member behind the leader's acknowledged commits).
#[test]
fn a_failover_candidate_outside_the_sync_key_does_not_promote() {
    let s3 = sync_settings("n3");
    let c = cluster(
        None,
        &[
            ("sync", r#"{"leader":"n1","sync_standby":"n2"}"#),
            ("failover", r#"{"member":"n3"}"#),
        ],
    );
    let pg = replica(1000, "n1");
    let d = Engine::new().step(&obs(&s3, Some(&c), &pg, &[]));
    assert!(d.actions.is_empty(), "{d:?}");
    assert!(
        d.reason.contains("the sync key does not list me"),
        "{}",
        d.reason
    );
}

#[test]
fn only_sync_standbys_may_be_promoted() {
    let s3 = sync_settings("n3");
    let c = cluster(None, &[("sync", r#"{"leader":"n1","sync_standby":"n2"}"#)]);
    let pg = replica(1000, "n1");
    let d = Engine::new().step(&obs(&s3, Some(&c), &pg, &[]));
    assert!(d.actions.is_empty());
    assert!(
        d.reason.contains("not a synchronous standby"),
        "{}",
        d.reason
    );
    let s2 = sync_settings("n2");
    let peers = [peer("n3", 5000, false)];
    let d = Engine::new().step(&obs(&s2, Some(&c), &pg, &peers));
    assert_eq!(d.actions.first(), Some(&Action::AcquireLock));
    assert_eq!(d.actions.last(), Some(&Action::Promote));
    assert!(d.actions.contains(&Action::SetSynchronousStandbys {
        names: vec![],
        strict: true
    }));
}

#[test]
fn pre_promote_refusal_keeps_node_out_of_the_race() {
    let s = Settings::for_member("n2");
    let c = cluster(None, &[]);
    let pg = replica(1000, "n1");
    let mut o = obs(&s, Some(&c), &pg, &[]);
    o.promotion_blocked_until = Some(o.now + 1);
    let d = Engine::new().step(&o);
    assert!(d.actions.is_empty());
    assert!(d.reason.contains("pre_promote"), "{}", d.reason);
}

#[test]
fn replica_past_the_fork_stops_to_rewind() {
    let s = Settings::for_member("n1");
    let c = cluster(Some("n2"), &[]);
    let mut pg = replica(1000, "n2");
    pg.diverged = Some(true);
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    // A standby stops cleanly (fast): pg_rewind then needs no crash recovery.
    assert_eq!(
        d.actions,
        vec![Action::Demote(DemoteMode::StandbyForRewind)]
    );
    assert!(d.reason.contains("forked its timeline"), "{}", d.reason);
}

#[test]
fn scheduled_switchover_waits_fires_and_expires() {
    let s = Settings::for_member("n1");
    let mut pg = primary(1000);
    pg.replication = vec![link("n2", false)];
    // 1_900_000_000_000 ms = 2030-03-17T17:46:40Z
    let ahead = cluster(
        Some("n1"),
        &[(
            "failover",
            r#"{"leader":"n1","member":"n2","scheduled_at":"2030-03-17T18:00:00+00:00"}"#,
        )],
    );
    let d = Engine::new().step(&obs(&s, Some(&ahead), &pg, &[]));
    assert_eq!(
        d.actions,
        vec![Action::RenewLock, Action::PublishLeaderState]
    );
    assert!(d.reason.contains("switchover scheduled at"), "{}", d.reason);
    let due = cluster(
        Some("n1"),
        &[(
            "failover",
            r#"{"leader":"n1","member":"n2","scheduled_at":"2030-03-17T17:46:40+00:00"}"#,
        )],
    );
    let d = Engine::new().step(&obs(&s, Some(&due), &pg, &[]));
    assert_eq!(
        d.actions.last(),
        Some(&Action::Demote(DemoteMode::Graceful))
    );
    let missed = cluster(
        Some("n1"),
        &[(
            "failover",
            r#"{"leader":"n1","member":"n2","scheduled_at":"2030-03-17T17:00:00+00:00"}"#,
        )],
    );
    let d = Engine::new().step(&obs(&s, Some(&missed), &pg, &[]));
    assert_eq!(d.actions.last(), Some(&Action::ClearFailover { index: 1 }));
}

/// The former leader, stopped by its switchover demotion (a clean shutdown as primary).
fn stopped_former_primary(wal: u64) -> LocalPg {
    LocalPg {
        wal_position: wal,
        timeline: 1,
        stopped_cleanly_as_primary: true,
        ..LocalPg::stopped(DataDir::Initialized {
            sysid: SYSID.into(),
        })
    }
}

fn unreachable(name: &str) -> PeerProbe {
    PeerProbe {
        name: name.into(),
        reply: None,
    }
}

#[test]
fn former_leader_named_in_the_request_never_races_while_another_can_take_over() {
    let s = Settings::for_member("n1");
    let c = cluster(None, &[("failover", r#"{"leader":"n1"}"#)]);
    let peers = [peer("n2", 1000, false), peer("n3", 900, false)];
    // Stopped by the switchover: PostgreSQL stays down (no start as a standby to race from).
    let stopped = stopped_former_primary(1100);
    let d = Engine::new().step(&obs(&s, Some(&c), &stopped, &peers));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(
        d.reason,
        "switchover from me in progress: waiting for n2 to take over; postgres stays stopped meanwhile"
    );
    // Running (an agent restarted mid-switchover) and holding the most WAL: still no race.
    let running = replica(1100, "");
    let d = Engine::new().step(&obs(&s, Some(&c), &running, &peers));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert!(d.reason.contains("waiting for n2"), "{}", d.reason);
}

#[test]
fn switchover_without_candidate_elects_among_the_other_members() {
    let s = Settings::for_member("n2");
    let c = cluster(None, &[("failover", r#"{"leader":"n1"}"#)]);
    // The former leader is ahead (its shutdown checkpoint) and would win the tie on its name:
    // it is left out of the comparison.
    let peers = [peer("n1", 1100, false), peer("n3", 900, false)];
    let pg = replica(1000, "n1");
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &peers));
    assert_eq!(
        d.actions,
        vec![
            Action::AcquireLock,
            Action::ClearFailover { index: 1 },
            Action::Promote,
        ]
    );
    assert!(
        d.reason.contains("healthiest of 2 candidates"),
        "{}",
        d.reason
    );
    // n3 is behind n2: it waits.
    let s3 = Settings::for_member("n3");
    let peers3 = [peer("n1", 1100, false), peer("n2", 1000, false)];
    let pg3 = replica(900, "n1");
    let d = Engine::new().step(&obs(&s3, Some(&c), &pg3, &peers3));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
}

#[test]
fn promotion_clears_a_standing_request_before_promoting() {
    let s = Settings::for_member("n2");
    let c = cluster(None, &[("failover", r#"{"leader":"n1","member":"n2"}"#)]);
    let pg = replica(1000, "n1");
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(
        d.actions,
        vec![
            Action::AcquireLock,
            Action::ClearFailover { index: 1 },
            Action::Promote,
        ]
    );
}

#[test]
fn a_candidate_behind_another_member_leaves_the_lock_to_the_most_advanced() {
    // The former leader died during the switchover before sending n3 everything n2 has.
    let c = cluster(None, &[("failover", r#"{"leader":"n1","member":"n3"}"#)]);
    let s3 = Settings::for_member("n3");
    let d = Engine::new().step(&obs(
        &s3,
        Some(&c),
        &replica(900, "n1"),
        &[peer("n2", 1000, false)],
    ));
    assert!(d.actions.is_empty(), "{:?}: {}", d.actions, d.reason);
    let s2 = Settings::for_member("n2");
    let d = Engine::new().step(&obs(
        &s2,
        Some(&c),
        &replica(1000, "n1"),
        &[peer("n3", 900, false)],
    ));
    assert_eq!(
        d.actions,
        vec![
            Action::AcquireLock,
            Action::ClearFailover { index: 1 },
            Action::Promote,
        ],
        "{}",
        d.reason
    );
    // Level with the others, the candidate takes over and they wait for it.
    let d = Engine::new().step(&obs(
        &s3,
        Some(&c),
        &replica(1000, "n1"),
        &[peer("n2", 1000, false)],
    ));
    assert!(d.actions.contains(&Action::Promote), "{}", d.reason);
    let d = Engine::new().step(&obs(
        &s2,
        Some(&c),
        &replica(1000, "n1"),
        &[peer("n3", 1000, false)],
    ));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert!(d.reason.contains("waiting for n3"), "{}", d.reason);
}

#[test]
fn abandoned_switchover_resumes_the_former_leader_on_its_timeline() {
    let s = Settings::for_member("n1");
    let c = cluster(None, &[("failover", r#"{"leader":"n1","member":"n2"}"#)]);
    let mut stopped = peer("n3", 100, false);
    if let Some(r) = stopped.reply.as_mut() {
        r.running = false;
    }
    let peers = [unreachable("n2"), stopped];
    let pg = stopped_former_primary(1100);
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &peers));
    // Lock first, then the request cleared by compare-and-set (nobody promoted meanwhile),
    // then PostgreSQL started as the primary it was: no promotion, no new timeline.
    assert_eq!(
        d.actions,
        vec![
            Action::AcquireLock,
            Action::ClearFailover { index: 1 },
            Action::StartPostgres(Replication::Primary)
        ]
    );
    assert!(
        d.reason.starts_with("switchover abandoned: no other member can take over (n2: not reachable; n3: not running)"),
        "{}",
        d.reason
    );
    assert!(
        d.reason.ends_with("on timeline 1 without a promotion"),
        "{}",
        d.reason
    );
}

#[test]
fn former_leader_takes_the_lock_back_when_nobody_took_over_within_ttl() {
    let s = Settings::for_member("n1");
    let c = cluster(None, &[("failover", r#"{"leader":"n1"}"#)]);
    let peers = [peer("n2", 1000, false)];
    let pg = stopped_former_primary(1100);
    let mut engine = Engine::new();
    let mut o = obs(&s, Some(&c), &pg, &peers);
    assert!(engine.step(&o).actions.is_empty());
    o.now += s.ttl - 1;
    assert!(engine.step(&o).actions.is_empty());
    o.now += 1;
    let d = engine.step(&o);
    assert_eq!(
        d.actions.last(),
        Some(&Action::StartPostgres(Replication::Primary))
    );
    assert!(
        d.reason.contains("nobody took over within ttl"),
        "{}",
        d.reason
    );
}

#[test]
fn former_leader_follows_the_new_leader_once_it_holds_the_lock() {
    let s = Settings::for_member("n1");
    let c = cluster(Some("n2"), &[]);
    let pg = stopped_former_primary(1100);
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(
        d.actions,
        vec![Action::StartPostgres(Replication::From("n2".into()))]
    );
}

#[test]
fn leader_hands_over_only_to_a_member_streaming_from_it() {
    // n2's member key says running and caught up, but it is not streaming from us: our clean
    // shutdown would not reach it.
    let c = cluster(
        Some("n1"),
        &[("failover", r#"{"leader":"n1","member":"n2"}"#)],
    );
    let s = Settings::for_member("n1");
    let mut pg = primary(1000);
    pg.replication = vec![link("n3", false)];
    let mut engine = Engine::new();
    let mut o = obs(&s, Some(&c), &pg, &[]);
    // It may be catching up after a reconnect: the request waits, up to one ttl.
    let d = engine.step(&o);
    assert_eq!(
        d.actions,
        vec![Action::RenewLock, Action::PublishLeaderState]
    );
    assert_eq!(
        d.reason,
        "manual failover: waiting for n2 to stream from me before handing over"
    );
    o.now += s.ttl;
    let d = engine.step(&o);
    assert_eq!(d.actions.last(), Some(&Action::ClearFailover { index: 1 }));
    assert_eq!(
        d.reason,
        "manual failover: no healthy candidate found; request cleared"
    );
    // Without a candidate, n3 (streaming) is chosen.
    let c = cluster(Some("n1"), &[("failover", r#"{"leader":"n1"}"#)]);
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(
        d.actions.last(),
        Some(&Action::Demote(DemoteMode::Graceful))
    );
    assert_eq!(
        d.reason,
        "manual failover: demoting myself, n3 will take over"
    );
}

#[test]
fn required_watchdog_without_a_device_keeps_a_member_from_leading() {
    fn no_watchdog(o: Observation<'_>) -> Observation<'_> {
        Observation {
            watchdog_allows_leadership: false,
            ..o
        }
    }
    // No race for the lock, whatever the WAL.
    let s = Settings::for_member("n2");
    let c = cluster(None, &[]);
    let pg = replica(1000, "n1");
    let d = Engine::new().step(&no_watchdog(obs(&s, Some(&c), &pg, &[])));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert!(d.reason.contains("watchdog"), "{}", d.reason);
    // A leader whose device cannot be armed demotes.
    let s1 = Settings::for_member("n1");
    let c1 = cluster(Some("n1"), &[]);
    let d = Engine::new().step(&no_watchdog(obs(&s1, Some(&c1), &primary(1000), &[])));
    assert_eq!(d.actions, vec![Action::Demote(DemoteMode::Immediate)]);
    // A running primary without the lock does not take it.
    let d = Engine::new().step(&no_watchdog(obs(&s1, Some(&c), &primary(1000), &[])));
    assert_eq!(d.actions, vec![Action::Demote(DemoteMode::ImmediateNoLock)]);
}

/// Pause (docs/compat.md#pause): a switchover to a named candidate still happens, the former
/// leader starts again as a standby once the candidate leads; one without a candidate is
/// refused and cleared; a standby is re-pointed to the leader.
#[test]
fn switchover_while_paused() {
    let paused = r#"{"ttl":10,"pause":true}"#;
    let s = Settings::for_member("n1");
    let mut leader_pg = primary(1000);
    leader_pg.replication = vec![link("n2", false), link("n3", false)];
    let mut engine = Engine::new();

    let c = cluster(
        Some("n1"),
        &[("config", paused), ("failover", r#"{"leader":"n1"}"#)],
    );
    let d = engine.step(&obs(&s, Some(&c), &leader_pg, &[]));
    assert_eq!(
        d.actions,
        vec![
            Action::RenewLock,
            Action::PublishLeaderState,
            Action::ClearFailover { index: 1 }
        ]
    );
    assert_eq!(
        d.reason,
        "PAUSE: Switchover is possible only to a specific candidate in a paused state: request cleared"
    );

    let c = cluster(
        Some("n1"),
        &[
            ("config", paused),
            ("failover", r#"{"leader":"n1","member":"n2"}"#),
        ],
    );
    let d = engine.step(&obs(&s, Some(&c), &leader_pg, &[]));
    assert_eq!(
        d.actions.last(),
        Some(&Action::Demote(DemoteMode::Graceful)),
        "{}",
        d.reason
    );
    // Stopped; the candidate has not taken the lock yet: stay down.
    let stopped = stopped_former_primary(1100);
    let c = cluster(
        None,
        &[
            ("config", paused),
            ("failover", r#"{"leader":"n1","member":"n2"}"#),
        ],
    );
    let d = engine.step(&obs(&s, Some(&c), &stopped, &[]));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    // n2 leads: start as its standby, even in pause.
    let c = cluster(Some("n2"), &[("config", paused)]);
    let d = engine.step(&obs(&s, Some(&c), &stopped, &[]));
    assert_eq!(
        d.actions,
        vec![Action::StartPostgres(Replication::From("n2".into()))]
    );
    assert_eq!(
        d.reason,
        "PAUSE: starting as a standby of the new leader (n2) after the switchover"
    );
    // Once: a later stop in pause is the operator's.
    let d = engine.step(&obs(&s, Some(&c), &stopped, &[]));
    assert!(d.actions.is_empty(), "{:?}", d.actions);

    // The candidate in pause takes the lock and promotes.
    let s2 = Settings::for_member("n2");
    let c = cluster(
        None,
        &[
            ("config", paused),
            ("failover", r#"{"leader":"n1","member":"n2"}"#),
        ],
    );
    let d = Engine::new().step(&obs(&s2, Some(&c), &replica(1100, "n1"), &[]));
    assert_eq!(
        d.actions.first(),
        Some(&Action::AcquireLock),
        "{}",
        d.reason
    );
    assert!(d.actions.contains(&Action::Promote), "{:?}", d.actions);
    // ... but not when another member holds more WAL (it would be lost): paused, nobody
    // takes over then, the operator decides.
    let ahead = [peer("n3", 1200, false)];
    let d = Engine::new().step(&obs(&s2, Some(&c), &replica(1100, "n1"), &ahead));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(
        d.reason,
        "PAUSE: manual failover while paused: another member has more WAL than me; not promoting"
    );

    // A standby still following the former leader is re-pointed, in pause too.
    let s3 = Settings::for_member("n3");
    let c = cluster(Some("n2"), &[("config", paused)]);
    let d = Engine::new().step(&obs(&s3, Some(&c), &replica(1000, "n1"), &[]));
    assert_eq!(
        d.actions,
        vec![Action::Follow {
            upstream: "n2".into()
        }]
    );
}

/// `maximum_lag_on_syncnode`: a synchronous standby stuck further behind than the limit is
/// replaced by a healthy one (it leaves `sync` first); without a limit it stays.
#[test]
fn a_lagging_synchronous_standby_is_replaced() {
    let c = cluster(
        Some("n1"),
        &[("sync", r#"{"leader":"n1","sync_standby":"n2"}"#)],
    );
    let mut pg = primary(50_000);
    pg.sync_standby_names = vec!["n2".into()];
    let stuck = pgherd_ha::StandbyLink {
        lsn: 1000,
        ..link("n2", true)
    };
    let healthy = pgherd_ha::StandbyLink {
        lsn: 50_000,
        ..link("n3", false)
    };
    pg.replication = vec![stuck, healthy];

    let s = sync_settings("n1");
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(d.actions.len(), 2, "no limit: n2 stays ({:?})", d.actions);

    let mut s = sync_settings("n1");
    s.maximum_lag_on_syncnode = 10_000;
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert_eq!(
        &d.actions[2..],
        &[
            Action::WriteSync {
                standbys: vec![],
                index: Some(1)
            },
            Action::SetSynchronousStandbys {
                names: vec!["n3".into()],
                strict: false
            },
        ]
    );

    // The same in pause (Patroni manages synchronous replication in pause too).
    let c = cluster(
        Some("n1"),
        &[
            ("config", r#"{"ttl":10,"pause":true}"#),
            ("sync", r#"{"leader":"n1","sync_standby":"n2"}"#),
        ],
    );
    let d = Engine::new().step(&obs(&s, Some(&c), &pg, &[]));
    assert!(
        d.actions.contains(&Action::SetSynchronousStandbys {
            names: vec!["n3".into()],
            strict: false
        }),
        "{:?}",
        d.actions
    );
}
