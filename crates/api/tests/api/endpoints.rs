//! The other GET endpoints (docs/compat.md#status-body, docs/compat.md#other-get-endpoints)
//! and the not-yet-implemented management calls.

use crate::common::*;
use axum::http::Method;
use chrono::DateTime;
use pgherd_api::{NodeSnapshot, Xlog, PATRONI_COMPAT_VERSION, PGHERD_VERSION};
use pgherd_dcs::Role;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test]
async fn patroni_body_on_leader_is_patronis() {
    let reply = call(&leader(), Method::GET, "/patroni").await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    // Byte for byte what Patroni 3.0.2 sends (Python separators, key order), plus `pgherd`.
    let expected = concat!(
        r#"{"state": "running", "postmaster_start_time": "2026-11-23 12:02:38.910808+00:00", "#,
        r#""role": "master", "server_version": 150018, "xlog": {"location": 67108960}, "#,
        r#""timeline": 1, "replication": [{"usename": "replicator", "application_name": "node1", "#,
        r#""client_addr": "127.0.0.1", "state": "streaming", "sync_state": "async", "sync_priority": 0}], "#,
        r#""dcs_last_seen": 1795435399, "database_system_identifier": "7711336143377005909", "#,
        r#""patroni": {"version": "3.0.2", "scope": "batman"}, "#,
    );
    let text = reply.text();
    assert!(text.starts_with(expected), "{text}");
    assert_eq!(reply.json()["pgherd"], json!({"version": PGHERD_VERSION}));
    assert_eq!(PATRONI_COMPAT_VERSION, "3.0.2");
    // Trailing segments are ignored, as in Patroni.
    assert_eq!(
        call(&leader(), Method::GET, "/patroni/x").await.text(),
        text
    );
}

#[tokio::test]
async fn patroni_body_on_replica() {
    let mut snap = replica_named("node1", LEADER_OPTIME - 10);
    snap.cluster = fresh_view(cluster_with(&[
        ("config", r#"{"synchronous_mode":"on","pause":true}"#),
        ("sync", r#"{"leader":"node0","sync_standby":"node1"}"#),
    ]));
    snap.postgres.as_mut().unwrap().xlog = Xlog::Replica {
        received_location: None,
        replayed_location: LEADER_OPTIME - 10,
        replayed_timestamp: Some(
            DateTime::parse_from_rfc3339("2026-11-23T12:05:00+00:00").unwrap(),
        ),
        paused: false,
    };
    snap.tags.insert("zone".into(), json!("a"));
    snap.pending_restart = true;
    snap.paused = true;
    snap.scheduled_restart = Some(json!({
        "schedule": "2030-01-01T00:00:00+00:00",
        "postmaster_start_time": "2026-11-23 12:02:38.910808+00:00",
        "role": "replica"
    }));
    let body = call(&snap, Method::GET, "/patroni").await.json();
    assert_eq!(
        body,
        json!({
            "state": "running",
            "postmaster_start_time": "2026-11-23 12:02:38.910808+00:00",
            "role": "replica",
            "server_version": 150018,
            "xlog": {
                "received_location": LEADER_OPTIME - 10,
                "replayed_location": LEADER_OPTIME - 10,
                "replayed_timestamp": "2026-11-23 12:05:00+00:00",
                "paused": false
            },
            "sync_standby": true,
            "timeline": 1,
            "replication_state": "streaming",
            "dcs_last_seen": 1795435399,
            "tags": {"zone": "a"},
            "database_system_identifier": "7711336143377005909",
            "pending_restart": true,
            "patroni": {"version": "3.0.2", "scope": "batman"},
            "scheduled_restart": {"schedule": "2030-01-01T00:00:00+00:00", "role": "replica"},
            "pause": true,
            "pgherd": {"version": PGHERD_VERSION}
        })
    );
}

#[tokio::test]
async fn patroni_body_when_postgres_is_not_queryable() {
    let mut snap = NodeSnapshot::new("node2", "batman");
    snap.state = "running".to_string();
    snap.role = Role::Replica;
    snap.failsafe_mode_is_active = true;
    snap.watchdog_failed = true;
    let body = call(&snap, Method::GET, "/patroni").await.json();
    assert_eq!(
        body,
        json!({
            "state": "unknown",
            "role": "replica",
            "cluster_unlocked": true,
            "failsafe_mode_is_active": true,
            "dcs_last_seen": 0,
            "patroni": {"version": "3.0.2", "scope": "batman"},
            "watchdog_failed": true,
            "pgherd": {"version": PGHERD_VERSION}
        })
    );
    // A leaderless (but fresh) view also means unlocked.
    let mut unlocked = replica();
    let mut cluster = patroni_cluster();
    cluster.leader = None;
    unlocked.cluster = fresh_view(cluster);
    let body = call(&unlocked, Method::GET, "/patroni").await.json();
    assert_eq!(body["cluster_unlocked"], true);
    assert!(call(&replica(), Method::GET, "/patroni")
        .await
        .json()
        .get("cluster_unlocked")
        .is_none());
}

#[tokio::test]
async fn cluster_lists_members_with_roles_and_lag() {
    let mut cluster = cluster_with(&[
        ("sync", r#"{"leader":"node0","sync_standby":"node1"}"#),
        (
            "members/node3",
            r#"{"conn_url":"postgres://10.0.0.3/postgres","api_url":"http://10.0.0.3:8008/patroni","state":"creating replica","role":"replica","version":"3.0.2","tags":{"nofailover":true},"pending_restart":true}"#,
        ),
        (
            "members/a-ahead",
            r#"{"conn_url":"postgres://10.0.0.4:5432/postgres","api_url":"http://10.0.0.4:8008/patroni","state":"running","role":"replica","version":"3.0.2","xlog_location":99999999999}"#,
        ),
        (
            "failover",
            r#"{"leader":"node0","member":"node2","scheduled_at":"2030-01-01T00:00:00+00:00"}"#,
        ),
        ("config", r#"{"ttl":30,"pause":true}"#),
    ]);
    cluster
        .members
        .get_mut("node0")
        .unwrap()
        .data
        .scheduled_restart = Some(json!({"schedule": "2030-01-01T00:00:00+00:00"}));
    let (_tx, ctx) = context(replica(), FixedDcs::new(Some(cluster)));
    let reply = call_ctx(ctx, Method::GET, "/cluster").await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(
        reply.json(),
        json!({
            "members": [
                {"name": "a-ahead", "role": "replica", "state": "running",
                 "api_url": "http://10.0.0.4:8008/patroni", "host": "10.0.0.4", "port": 5432, "lag": 0},
                {"name": "node0", "role": "leader", "state": "running",
                 "api_url": "http://127.0.0.1:8008/patroni", "host": "127.0.0.1", "port": 5432,
                 "timeline": 1, "scheduled_restart": {"schedule": "2030-01-01T00:00:00+00:00"}},
                {"name": "node1", "role": "sync_standby", "state": "running",
                 "api_url": "http://127.0.0.1:8009/patroni", "host": "127.0.0.1", "port": 5433,
                 "timeline": 1, "lag": 1000},
                {"name": "node2", "role": "replica", "state": "running",
                 "api_url": "http://127.0.0.1:8010/patroni", "host": "127.0.0.1", "port": 5434,
                 "timeline": 1, "lag": 0},
                {"name": "node3", "role": "replica", "state": "creating replica",
                 "api_url": "http://10.0.0.3:8008/patroni", "host": "10.0.0.3", "port": 5432,
                 "pending_restart": true, "tags": {"nofailover": true}, "lag": "unknown"}
            ],
            "pause": true,
            "scheduled_switchover": {"at": "2030-01-01T00:00:00+00:00", "from": "node0", "to": "node2"}
        })
    );
}

#[tokio::test]
async fn cluster_in_standby_mode_and_dcs_errors() {
    let standby = cluster_with(&[(
        "config",
        r#"{"standby_cluster":{"host":"10.1.0.1","port":5432}}"#,
    )]);
    let (_tx, ctx) = context(replica(), FixedDcs::new(Some(standby)));
    let body = call_ctx(ctx, Method::GET, "/cluster").await.json();
    assert_eq!(body["members"][0]["role"], "standby_leader");
    assert!(body.get("pause").is_none());
    assert!(body.get("scheduled_switchover").is_none());

    let (_tx, ctx) = context(replica(), FixedDcs::new(None));
    for path in ["/cluster", "/history", "/config"] {
        let reply = call_ctx(ctx.clone(), Method::GET, path).await;
        assert_eq!(reply.status.as_u16(), 503, "{path}");
        assert!(reply.text().contains("<p>Error code: 503</p>"), "{path}");
    }
}

#[tokio::test]
async fn config_and_history() {
    let (_tx, ctx) = context(replica(), FixedDcs::new(Some(patroni_cluster())));
    let reply = call_ctx(ctx.clone(), Method::GET, "/config").await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(reply.json(), json!({"ttl": 30, "loop_wait": 10}));
    assert_eq!(
        call_ctx(ctx, Method::GET, "/history").await.json(),
        json!([])
    );

    let mut bare = patroni_cluster();
    bare.config = None;
    bare.history = None;
    let (_tx, ctx) = context(replica(), FixedDcs::new(Some(bare)));
    let reply = call_ctx(ctx.clone(), Method::GET, "/config").await;
    assert_eq!(reply.status.as_u16(), 502);
    // Python's error page, byte for byte as Patroni's `send_error(502)`.
    assert_eq!(
        reply.content_type.as_deref(),
        Some("text/html;charset=utf-8")
    );
    assert_eq!(
        reply.text(),
        "<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n        \
         <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n        \
         <p>Error code: 502</p>\n        <p>Message: Bad Gateway.</p>\n        \
         <p>Error code explanation: 502 - Invalid responses from another server/proxy.</p>\n    \
         </body>\n</html>\n"
    );
    assert_eq!(
        call_ctx(ctx, Method::GET, "/history").await.json(),
        json!([])
    );

    let history = cluster_with(&[(
        "history",
        r#"[[1,67109256,"no recovery target specified","2026-11-23T12:03:43.568589+00:00","node1"],[2,67109728,"no recovery target specified"]]"#,
    )]);
    let (_tx, ctx) = context(replica(), FixedDcs::new(Some(history)));
    let reply = call_ctx(ctx, Method::GET, "/history").await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(
        reply.text(),
        r#"[[1, 67109256, "no recovery target specified", "2026-11-23T12:03:43.568589+00:00", "node1"], [2, 67109728, "no recovery target specified"]]"#
    );
}

#[tokio::test]
async fn metrics_names_and_values() {
    const NAMES: [&str; 20] = [
        "patroni_version",
        "patroni_postgres_running",
        "patroni_postmaster_start_time",
        "patroni_master",
        "patroni_primary",
        "patroni_xlog_location",
        "patroni_standby_leader",
        "patroni_replica",
        "patroni_sync_standby",
        "patroni_xlog_received_location",
        "patroni_xlog_replayed_location",
        "patroni_xlog_replayed_timestamp",
        "patroni_xlog_paused",
        "patroni_postgres_server_version",
        "patroni_cluster_unlocked",
        "patroni_failsafe_mode_is_active",
        "patroni_postgres_timeline",
        "patroni_dcs_last_seen",
        "patroni_pending_restart",
        "patroni_is_paused",
    ];
    let reply = call(&leader(), Method::GET, "/metrics").await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(
        reply.content_type.as_deref(),
        Some("text/plain; version=0.0.4")
    );
    let text = reply.text();
    let value = |name: &str| -> String {
        let prefix = format!("{name}{{scope=\"batman\"}} ");
        let line = text
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        line[prefix.len()..].to_string()
    };
    for name in NAMES {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        value(name);
    }
    // Exactly one sample per metric, no `_total` renaming.
    assert_eq!(
        text.lines().filter(|l| !l.starts_with('#')).count(),
        NAMES.len()
    );
    assert!(text.contains("# TYPE patroni_xlog_location counter"));
    assert_eq!(value("patroni_version"), "030002");
    assert_eq!(value("patroni_postgres_running"), "1");
    assert_eq!(value("patroni_postmaster_start_time"), "1795435358.910808");
    assert_eq!(value("patroni_master"), "1");
    assert_eq!(value("patroni_primary"), "1");
    assert_eq!(value("patroni_replica"), "0");
    assert_eq!(value("patroni_xlog_location"), LEADER_OPTIME.to_string());
    assert_eq!(value("patroni_xlog_replayed_location"), "0");
    assert_eq!(value("patroni_xlog_replayed_timestamp"), "0");
    assert_eq!(value("patroni_postgres_server_version"), "150018");
    assert_eq!(value("patroni_cluster_unlocked"), "0");
    assert_eq!(value("patroni_postgres_timeline"), "1");
    assert_eq!(value("patroni_dcs_last_seen"), "1795435399");
    assert_eq!(value("patroni_is_paused"), "0");

    // A stopped node: every value falls back to 0.
    let stopped = call(&NodeSnapshot::new("n", "batman"), Method::GET, "/metrics")
        .await
        .text();
    for line in stopped.lines().filter(|l| !l.starts_with('#')) {
        let (name, v) = line.split_once("} ").unwrap();
        match name {
            "patroni_version{scope=\"batman\"" => assert_eq!(v, "030002"),
            "patroni_cluster_unlocked{scope=\"batman\"" => assert_eq!(v, "1"),
            _ => assert_eq!(v, "0", "{line}"),
        }
    }

    let mut paused_replica = replica();
    paused_replica.paused = true;
    paused_replica.pending_restart = true;
    let text = call(&paused_replica, Method::GET, "/metrics").await.text();
    for (name, v) in [
        ("patroni_replica", "1"),
        ("patroni_master", "0"),
        ("patroni_is_paused", "1"),
        ("patroni_pending_restart", "1"),
        ("patroni_xlog_replayed_location", "67108960"),
        ("patroni_xlog_received_location", "67108960"),
    ] {
        assert!(
            text.contains(&format!("{name}{{scope=\"batman\"}} {v}\n")),
            "{name}:\n{text}"
        );
    }
}

#[tokio::test]
async fn liveness_bounds() {
    let ago = |secs: u64| Instant::now() - Duration::from_secs(secs);
    // ttl 30, loop_wait 10: a running primary may be overdue by ttl, others by 2*ttl.
    let cases = [
        ("fresh leader", leader(), 0, false, 200),
        ("leader 35s", leader(), 35, false, 200),
        ("leader 45s", leader(), 45, false, 503),
        ("replica 65s", replica(), 65, false, 200),
        ("replica 75s", replica(), 75, false, 503),
        ("paused replica 500s", replica(), 500, true, 200),
    ];
    for (name, mut snap, age, paused, code) in cases {
        snap.last_cycle_at = ago(age);
        snap.paused = paused;
        let reply = call(&snap, Method::GET, "/liveness").await;
        assert_eq!(reply.status.as_u16(), code, "{name}");
        assert!(reply.body.is_empty());
    }
}

#[tokio::test]
async fn readiness() {
    let mut no_view = replica();
    no_view.cluster = None;
    let mut leader_no_view = leader();
    leader_no_view.cluster = None;
    let cases = [
        ("leader", leader(), 200),
        ("leader without view", leader_no_view, 200),
        ("replica", replica(), 200),
        ("replica without view", no_view, 503),
        ("stopped", NodeSnapshot::new("n", "batman"), 503),
    ];
    for (name, snap, code) in cases {
        let reply = call(&snap, Method::GET, "/readiness").await;
        assert_eq!(reply.status.as_u16(), code, "{name}");
        assert!(reply.body.is_empty());
    }
}

#[tokio::test]
async fn failsafe_endpoint() {
    assert_eq!(
        call(&leader(), Method::GET, "/failsafe")
            .await
            .status
            .as_u16(),
        502
    );
    let mut snap = leader();
    snap.cluster = fresh_view(cluster_with(&[(
        "failsafe",
        r#"{"node0":"http://127.0.0.1:8008/patroni"}"#,
    )]));
    let reply = call(&snap, Method::GET, "/failsafe").await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(
        reply.json(),
        json!({"node0": "http://127.0.0.1:8008/patroni"})
    );
}

#[tokio::test]
async fn unsupported_management_calls() {
    // Patroni handlers pgherd does not serve: 501 without touching anything.
    for path in ["/citus", "/sigterm"] {
        let reply = call(&leader(), Method::POST, path).await;
        assert_eq!(reply.status.as_u16(), 501, "POST {path}");
        let page = reply.text();
        assert!(
            page.contains("<p>Message: Unsupported method ('POST').</p>"),
            "{page}"
        );
    }
    // Known paths without such a handler: 501 as in Patroni; unknown paths: 404.
    assert_eq!(
        call(&leader(), Method::POST, "/patroni")
            .await
            .status
            .as_u16(),
        501
    );
    assert_eq!(
        call(&leader(), Method::PUT, "/primary")
            .await
            .status
            .as_u16(),
        501
    );
    assert_eq!(
        call(&leader(), Method::POST, "/nope").await.status.as_u16(),
        404
    );
}

/// A live status provider with a fixed answer.
struct Live(pgherd_api::LivePostgres);

impl pgherd_api::LiveStatus for Live {
    fn status(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = pgherd_api::LivePostgres> + Send + '_>>
    {
        let answer = self.0.clone();
        Box::pin(async move { answer })
    }
}

fn live(snapshot: NodeSnapshot, answer: pgherd_api::LivePostgres) -> pgherd_api::ApiContext {
    let (_tx, ctx) = context(snapshot, FixedDcs::new(Some(patroni_cluster())));
    ctx.with_live_status(std::sync::Arc::new(Live(answer)))
}

#[tokio::test]
async fn status_and_health_report_postgres_as_it_is_at_request_time() {
    use pgherd_api::LivePostgres;
    // A newer WAL position than the snapshot's: /patroni and the health checks both see it.
    let mut status = leader().postgres.unwrap();
    status.xlog = Xlog::Primary {
        location: 99_000_000,
    };
    let ctx = live(leader(), LivePostgres::Answered(status));
    let reply = call_ctx(ctx.clone(), Method::GET, "/patroni").await;
    assert_eq!(reply.json()["xlog"]["location"], 99_000_000);
    let reply = call_ctx(ctx, Method::GET, "/primary").await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(reply.json()["xlog"]["location"], 99_000_000);

    // The postmaster died after the last HA cycle: down at once, not at the next cycle.
    let ctx = live(leader(), LivePostgres::Down);
    for path in ["/primary", "/leader", "/health", "/read-write"] {
        let reply = call_ctx(ctx.clone(), Method::GET, path).await;
        let expected = if path == "/leader" { 200 } else { 503 };
        assert_eq!(reply.status.as_u16(), expected, "{path}");
        assert_eq!(reply.json()["state"], "stopped", "{path}");
    }
    let ctx = live(replica_named("node1", LEADER_OPTIME), LivePostgres::Down);
    let reply = call_ctx(ctx.clone(), Method::OPTIONS, "/replica").await;
    assert_eq!(reply.status.as_u16(), 503);

    // The leader's postmaster runs but its status query did not answer in time (overloaded):
    // "unknown", still the primary to write to (Patroni keeps its cached role), not healthy.
    let ctx = live(leader(), LivePostgres::NoAnswer);
    for (path, expected) in [("/primary", 200), ("/leader", 200), ("/health", 503)] {
        let reply = call_ctx(ctx.clone(), Method::GET, path).await;
        assert_eq!(reply.status.as_u16(), expected, "{path}");
        assert_eq!(reply.json()["state"], "unknown", "{path}");
    }

    // Running but not answering (shutting down): "unknown", not a replica to route to.
    let ctx = live(
        replica_named("node1", LEADER_OPTIME),
        LivePostgres::NoAnswer,
    );
    let reply = call_ctx(ctx, Method::GET, "/replica").await;
    assert_eq!(reply.status.as_u16(), 503);
    assert_eq!(reply.json()["state"], "unknown");
}

#[tokio::test]
async fn a_replica_that_is_not_streaming_is_not_a_replica_to_route_to() {
    let mut s = replica_named("node1", LEADER_OPTIME);
    let reply = call(&s, Method::GET, "/replica").await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(reply.json()["replication_state"], "streaming");
    if let Some(pg) = s.postgres.as_mut() {
        pg.replication_state = Some("in archive recovery".to_string());
    }
    for path in ["/replica", "/read-only", "/async"] {
        let reply = call(&s, Method::GET, path).await;
        assert_eq!(reply.status.as_u16(), 503, "{path}");
        assert_eq!(reply.json()["replication_state"], "in archive recovery");
    }
    // Still alive and running: only the routing checks refuse it.
    assert_eq!(call(&s, Method::GET, "/health").await.status.as_u16(), 200);
}
