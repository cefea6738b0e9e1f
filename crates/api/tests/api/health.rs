//! Status codes of every health path, for GET, HEAD and OPTIONS, per node situation
//! (docs/compat.md#health-endpoints).

use crate::common::*;
use axum::http::Method;
use pgherd_api::{NodeSnapshot, Xlog};
use pgherd_dcs::Role;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Asserts `expected` (path, code) for GET, HEAD and OPTIONS. GET bodies must be the status
/// JSON (or the 404 error); HEAD bodies are empty; OPTIONS bodies are empty for health paths.
async fn expect(situation: &str, snap: &NodeSnapshot, expected: &[(&str, u16)]) {
    for (path, code) in expected {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            let reply = call(snap, method.clone(), path).await;
            assert_eq!(
                reply.status.as_u16(),
                *code,
                "{situation}: {method} {path}: body {}",
                reply.text()
            );
            match (method.as_str(), code) {
                ("HEAD", _) => assert!(reply.body.is_empty(), "{situation}: HEAD {path}"),
                (_, 404) => {
                    assert_eq!(reply.json()["error"], "not found");
                    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
                }
                ("GET", _) => {
                    let body = reply.json();
                    assert!(body["state"].is_string(), "{situation}: GET {path}");
                    assert_eq!(body["patroni"]["scope"], "batman");
                    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
                }
                _ => assert!(reply.body.is_empty(), "{situation}: OPTIONS {path}"),
            }
        }
    }
}

fn paused_primary_without_dcs() -> NodeSnapshot {
    let mut s = leader();
    s.leader_until = None;
    s.cluster = None;
    s.paused = true;
    s
}

#[tokio::test]
async fn leader_with_valid_lock() {
    expect(
        "leader",
        &leader(),
        &[
            ("/", 200),
            ("/primary", 200),
            ("/primary/", 200),
            ("/master", 200),
            ("/read-write", 200),
            ("/leader", 200),
            ("/standby-leader", 503),
            ("/standby_leader", 503),
            ("/replica", 503),
            ("/read-only", 200),
            ("/sync", 503),
            ("/synchronous", 503),
            ("/async", 503),
            ("/asynchronous", 503),
            ("/read-only-sync", 200),
            ("/read-only-synchronous", 200),
            ("/health", 200),
            // Leader checks ignore tag filters.
            ("/primary?tag_zone=nowhere", 200),
        ],
    )
    .await;
}

#[tokio::test]
async fn primary_without_valid_lock_is_not_primary() {
    let mut expired = leader();
    expired.leader_until = Some(Instant::now() - Duration::from_millis(1));
    let mut never = leader();
    never.leader_until = None;
    for (name, snap) in [("expired lock", expired), ("no lock", never)] {
        expect(
            name,
            &snap,
            &[
                ("/", 503),
                ("/primary", 503),
                ("/master", 503),
                ("/read-write", 503),
                ("/leader", 503),
                ("/replica", 503),
                ("/read-only", 503),
                ("/read-only-sync", 503),
                ("/health", 200),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn running_replica() {
    expect(
        "replica",
        &replica(),
        &[
            ("/", 503),
            ("/primary", 503),
            ("/leader", 503),
            ("/standby-leader", 503),
            ("/replica", 200),
            ("/replica/", 200),
            ("/read-only", 200),
            ("/sync", 503),
            ("/async", 200),
            ("/asynchronous", 200),
            ("/async/", 200),
            ("/read-only-sync", 503),
            ("/health", 200),
        ],
    )
    .await;
}

#[tokio::test]
async fn lagging_replica_respects_lag_argument() {
    // 2 MiB behind the leader's last known position.
    let snap = replica_named("node1", LEADER_OPTIME - 2 * 1024 * 1024);
    expect(
        "lagging replica",
        &snap,
        &[
            ("/replica", 200),
            ("/replica?lag=1MB", 503),
            ("/replica?lag=1048576", 503),
            ("/replica?lag=1GB", 200),
            ("/replica?lag=16MB", 200),
            ("/replica?lag=2MB", 200),
            ("/replica?lag=garbage", 200),
            ("/read-only?lag=1MB", 503),
            ("/read-only?lag=1GB", 200),
            ("/async?lag=1MB", 503),
            ("/health?lag=1MB", 200),
        ],
    )
    .await;
}

#[tokio::test]
async fn noloadbalance_replica_is_not_a_read_target() {
    let mut snap = replica();
    snap.tags.insert("noloadbalance".into(), json!(true));
    expect(
        "noloadbalance replica",
        &snap,
        &[
            ("/replica", 503),
            ("/read-only", 503),
            ("/async", 503),
            ("/health", 200),
        ],
    )
    .await;
    // A leader with the tag still serves reads as the primary.
    let mut snap = leader();
    snap.tags.insert("noloadbalance".into(), json!(true));
    expect(
        "noloadbalance leader",
        &snap,
        &[("/primary", 200), ("/read-only", 200), ("/replica", 503)],
    )
    .await;
}

#[tokio::test]
async fn sync_and_async_standbys() {
    let sync_rows = [
        (
            "config",
            r#"{"ttl":30,"loop_wait":10,"synchronous_mode":true}"#,
        ),
        ("sync", r#"{"leader":"node0","sync_standby":"node1"}"#),
    ];
    let mut sync = replica_named("node1", LEADER_OPTIME);
    sync.cluster = fresh_view(cluster_with(&sync_rows));
    expect(
        "sync standby",
        &sync,
        &[
            ("/sync", 200),
            ("/synchronous", 200),
            ("/async", 503),
            ("/asynchronous", 503),
            ("/read-only-sync", 200),
            ("/replica", 200),
            ("/read-only", 200),
        ],
    )
    .await;

    let mut async_replica = replica_named("node2", LEADER_OPTIME);
    async_replica.cluster = fresh_view(cluster_with(&sync_rows));
    expect(
        "async replica in synchronous mode",
        &async_replica,
        &[
            ("/sync", 503),
            ("/async", 200),
            ("/read-only-sync", 503),
            ("/replica", 200),
        ],
    )
    .await;

    // Listed in `sync` but synchronous_mode off: Patroni does not call it a sync standby.
    let mut listed = replica_named("node1", LEADER_OPTIME);
    listed.cluster = fresh_view(cluster_with(&sync_rows[1..]));
    expect(
        "sync key without synchronous_mode",
        &listed,
        &[("/sync", 503), ("/async", 200)],
    )
    .await;
}

#[tokio::test]
async fn replica_without_fresh_dcs_view() {
    let mut stale = replica();
    if let Some(view) = stale.cluster.as_mut() {
        view.read_at = Instant::now() - Duration::from_secs(31);
    }
    let mut none = replica();
    none.cluster = None;
    for (name, snap) in [("stale view", stale), ("no view", none)] {
        expect(
            name,
            &snap,
            &[
                // The sync checks need the DCS view; the rest answer from local state.
                ("/sync", 503),
                ("/async", 503),
                ("/read-only-sync", 503),
                ("/replica", 200),
                ("/replica?lag=1", 200),
                ("/read-only", 200),
                ("/health", 200),
                ("/primary", 503),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn stopped_node() {
    let mut snap = NodeSnapshot::new("node1", "batman");
    snap.role = Role::Replica;
    snap.state = "stopped".to_string();
    expect(
        "stopped",
        &snap,
        &[
            ("/health", 503),
            ("/replica", 503),
            ("/read-only", 503),
            ("/primary", 503),
            ("/leader", 503),
            ("/async", 503),
        ],
    )
    .await;
    // Running but not answering queries: reported as "unknown", not healthy.
    let mut unknown = replica();
    unknown.postgres = None;
    expect(
        "unqueryable",
        &unknown,
        &[("/health", 503), ("/replica", 503)],
    )
    .await;
}

#[tokio::test]
async fn tag_filters() {
    let mut snap = replica();
    snap.tags.insert("zone".into(), json!("a"));
    snap.tags.insert("nofailover".into(), json!(true));
    snap.tags.insert("weight".into(), json!(2));
    expect(
        "tagged replica",
        &snap,
        &[
            ("/replica?tag_zone=a", 200),
            ("/replica?tag_zone=b", 503),
            ("/replica?tag_rack=r1", 503),
            ("/replica?tag_zone=a&tag_nofailover=true", 200),
            ("/replica?tag_weight=2", 200),
            ("/replica?tag_zone=a&tag_weight=3", 503),
            ("/read-only?tag_zone=a", 200),
            ("/health?tag_zone=b", 503),
            ("/async?tag_zone=a", 200),
            // Falsy built-in tags are not in the effective tags, so this never matches.
            ("/replica?tag_noloadbalance=false", 503),
        ],
    )
    .await;
    let mut tagged_leader = leader();
    tagged_leader.tags.insert("zone".into(), json!("a"));
    expect(
        "tagged leader",
        &tagged_leader,
        &[
            ("/leader?tag_zone=b", 200),
            ("/primary?tag_zone=b", 200),
            ("/read-only?tag_zone=b", 503),
            ("/read-only?tag_zone=a", 200),
        ],
    )
    .await;
}

#[tokio::test]
async fn paused_without_dcs_view_answers_by_postgres_role() {
    expect(
        "paused primary, no DCS",
        &paused_primary_without_dcs(),
        &[
            ("/primary", 200),
            ("/leader", 200),
            ("/standby-leader", 503),
            ("/replica", 503),
            ("/read-only", 200),
        ],
    )
    .await;
    let mut paused_replica = replica();
    paused_replica.cluster = None;
    paused_replica.paused = true;
    expect(
        "paused replica, no DCS",
        &paused_replica,
        &[("/primary", 503), ("/leader", 503), ("/replica", 200)],
    )
    .await;
    // With a DCS view the lock decides again, paused or not.
    let mut paused_with_view = leader();
    paused_with_view.leader_until = None;
    paused_with_view.paused = true;
    expect(
        "paused with view, no lock",
        &paused_with_view,
        &[("/primary", 503)],
    )
    .await;
}

#[tokio::test]
async fn standby_cluster() {
    let mut standby_leader = replica_named("node0", LEADER_OPTIME);
    standby_leader.role = Role::StandbyLeader;
    standby_leader.standby_cluster = true;
    standby_leader.leader_until = Some(Instant::now() + Duration::from_secs(30));
    expect(
        "standby leader",
        &standby_leader,
        &[
            ("/standby-leader", 200),
            ("/standby_leader", 200),
            ("/leader", 200),
            ("/primary", 503),
            ("/", 503),
            ("/master", 503),
            ("/replica", 503),
            ("/read-only", 200),
            ("/health", 200),
        ],
    )
    .await;
    let body = call(&standby_leader, Method::GET, "/patroni").await.json();
    assert_eq!(body["role"], "standby_leader");

    let mut standby_replica = replica();
    standby_replica.standby_cluster = true;
    expect(
        "standby cluster replica",
        &standby_replica,
        &[
            ("/standby-leader", 503),
            ("/replica", 200),
            ("/primary", 503),
        ],
    )
    .await;
}

#[tokio::test]
async fn unknown_paths_are_404_json() {
    expect(
        "unknown",
        &leader(),
        &[("/foo", 404), ("/nothing/here", 404), ("/restart", 404)],
    )
    .await;
    let reply = call(&leader(), Method::GET, "/foo?x=1").await;
    assert_eq!(reply.json(), json!({"error": "not found", "path": "/foo"}));
}

#[tokio::test]
async fn head_and_options_of_non_health_endpoints_are_503_like_patroni() {
    for path in [
        "/patroni",
        "/liveness",
        "/readiness",
        "/cluster",
        "/metrics",
        "/config",
    ] {
        for method in [Method::HEAD, Method::OPTIONS] {
            let reply = call(&leader(), method.clone(), path).await;
            assert_eq!(reply.status.as_u16(), 503, "{method} {path}");
            assert!(reply.body.is_empty());
        }
    }
}

#[tokio::test]
async fn answers_follow_the_watch_channel() {
    let (tx, ctx) = context(replica(), FixedDcs::new(None));
    assert_eq!(
        call_ctx(ctx.clone(), Method::OPTIONS, "/primary")
            .await
            .status,
        503
    );
    // Promotion: the agent publishes a new snapshot, the next check sees it.
    let mut promoted = leader();
    promoted.name = "node1".to_string();
    tx.send(Arc::new(promoted)).unwrap();
    assert_eq!(
        call_ctx(ctx.clone(), Method::OPTIONS, "/primary")
            .await
            .status,
        200
    );
    assert_eq!(call_ctx(ctx, Method::OPTIONS, "/replica").await.status, 503);
}

#[tokio::test]
async fn replica_xlog_positions_drive_lag() {
    // received may run ahead of replayed; lag is measured on replayed.
    let mut snap = replica();
    snap.postgres.as_mut().unwrap().xlog = Xlog::Replica {
        received_location: Some(LEADER_OPTIME),
        replayed_location: LEADER_OPTIME - 4096,
        replayed_timestamp: None,
        paused: true,
    };
    expect(
        "replay behind receive",
        &snap,
        &[("/replica?lag=4kB", 200), ("/replica?lag=4095", 503)],
    )
    .await;
}
