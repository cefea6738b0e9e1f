//! Management endpoints against the in-memory DCS: Patroni's validation order, status codes
//! and messages, access control, and the commands handed to the agent.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use pgherd_api::tls::ConnInfo;
use pgherd_api::{router, ApiCommand, ApiContext, ApiSettings, NodeSnapshot, RestartRole};
use pgherd_dcs::memory::{MemoryDcs, MemoryStore};
use pgherd_dcs::{Dcs, Failover, KeyLayout, MemberData, Role};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

const BASE: &str = "/service/batman";

fn layout() -> KeyLayout {
    KeyLayout::new("/service", "batman")
}

fn client(store: &MemoryStore, name: Option<&str>) -> MemoryDcs {
    MemoryDcs::new(
        store.clone(),
        layout(),
        name.map(str::to_string),
        Duration::from_secs(30),
    )
}

/// node0 leads, node1 and node2 replicate; each member's `api_url` is `api`.
async fn three_nodes(api: &str, config: &str) -> (MemoryStore, Vec<MemoryDcs>) {
    let store = MemoryStore::new();
    let mut nodes = Vec::new();
    for (i, name) in ["node0", "node1", "node2"].iter().enumerate() {
        let dcs = client(&store, Some(name));
        let data = MemberData {
            conn_url: format!("postgres://127.0.0.1:{}/postgres", 5432 + i),
            api_url: api.to_string(),
            state: "running".into(),
            role: Some(if i == 0 { Role::Primary } else { Role::Replica }),
            version: "3.0.2".into(),
            xlog_location: Some(100),
            timeline: Some(1),
            ..MemberData::default()
        };
        dcs.touch_member(&data).await.unwrap();
        nodes.push(dcs);
    }
    assert!(nodes[0].attempt_to_acquire_leader().await.unwrap());
    nodes[0].set_config_value(config, None).await.unwrap();
    (store, nodes)
}

struct Api {
    ctx: ApiContext,
    _snapshots: watch::Sender<Arc<NodeSnapshot>>,
}

fn api(store: &MemoryStore, me: &str, settings: ApiSettings) -> Api {
    let mut snap = NodeSnapshot::new(me, "batman");
    snap.state = "running".into();
    snap.loop_wait = Duration::from_secs(1);
    let (tx, rx) = watch::channel(Arc::new(snap));
    let ctx = ApiContext::new(rx, Arc::new(client(store, None))).with_settings(settings);
    Api {
        ctx,
        _snapshots: tx,
    }
}

struct Reply {
    status: u16,
    body: String,
    www_authenticate: Option<String>,
}

impl Reply {
    /// The message of a refusal: Patroni's plain text, or the status phrase of Python's
    /// error page (`send_error`).
    fn error(&self) -> String {
        match self.body.split_once("<p>Message: ") {
            Some((_, rest)) => rest.split_once(".</p>").unwrap().0.to_string(),
            None => self.body.clone(),
        }
    }
}

async fn send(ctx: &ApiContext, method: Method, uri: &str, body: Option<&str>) -> Reply {
    send_with(ctx, method, uri, body, &[], None).await
}

async fn send_with(
    ctx: &ApiContext,
    method: Method,
    uri: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
    conn: Option<ConnInfo>,
) -> Reply {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(b) = body {
        builder = builder.header("content-length", b.len());
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let mut request = builder
        .body(Body::from(body.unwrap_or("").to_string()))
        .unwrap();
    if let Some(conn) = conn {
        request.extensions_mut().insert(ConnectInfo(conn));
    }
    let response = router(ctx.clone()).oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let www_authenticate = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
        www_authenticate,
    }
}

fn failover_key(store: &MemoryStore) -> Option<Value> {
    store
        .get(&format!("{BASE}/failover"))
        .map(|v| serde_json::from_str(&v).unwrap())
}

/// A peer that answers probes like a healthy Patroni replica.
async fn healthy_peer() -> String {
    let app = axum::Router::new()
        .fallback(|| async { axum::Json(json!({"state": "running", "role": "replica"})) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/patroni")
}

const CONFIG: &str = r#"{"ttl":30,"loop_wait":1}"#;
const PAUSED: &str = r#"{"ttl":30,"loop_wait":1,"pause":true}"#;

#[tokio::test]
async fn switchover_requests_are_validated_in_patroni_order() {
    let (store, _nodes) = three_nodes("http://127.0.0.1:9/patroni", CONFIG).await;
    let a = api(&store, "node0", ApiSettings::default());
    let post = |body: &'static str| send(&a.ctx, Method::POST, "/switchover", Some(body));

    let r = post(r#"{"candidate":"node1"}"#).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (
            400,
            "Switchover could be performed only from a specific leader"
        )
    );
    let r = send(
        &a.ctx,
        Method::POST,
        "/failover",
        Some(r#"{"leader":"node0"}"#),
    )
    .await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (
            400,
            "Failover could be performed only to a specific candidate"
        )
    );
    let r = post(r#"{"leader":"node1","candidate":"node2"}"#).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (412, "leader name does not match")
    );
    let r = post(r#"{"leader":"node0","candidate":"node7"}"#).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (412, "candidate does not exists")
    );
    // Nobody answers probes on port 9.
    let r = post(r#"{"leader":"node0","candidate":"node1"}"#).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (
            412,
            "switchover is not possible: no good candidates have been found"
        )
    );
    let r = post(r#"{"leader":"node0","scheduled_at":"2099-01-01T00:00:00"}"#).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (
            400,
            "Timezone information is mandatory for the scheduled switchover"
        )
    );
    let r = post(r#"{"leader":"node0","scheduled_at":"2001-01-01T00:00:00+00:00"}"#).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (422, "Cannot schedule switchover in the past")
    );
    let r = post(r#"{"leader":"node0","scheduled_at":"next tuesday"}"#).await;
    assert_eq!(r.status, 422);
    assert!(
        r.error().starts_with("Unable to parse scheduled timestamp"),
        "{}",
        r.body
    );
    let r = send(
        &a.ctx,
        Method::POST,
        "/failover",
        Some(r#"{"candidate":"node1","scheduled_at":"2099-01-01T00:00:00+00:00"}"#),
    )
    .await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (
            400,
            "Scheduled failover is possible only from a specific leader"
        )
    );

    // Malformed bodies.
    for (body, status) in [("{", 400), ("[1]", 400), ("{}", 400), ("", 400)] {
        let r = post(body).await;
        assert_eq!(r.status, status, "{body:?}: {}", r.body);
        assert!(!r.error().is_empty());
    }
    let r = send(&a.ctx, Method::POST, "/switchover", None).await;
    assert_eq!(r.status, 411);
    let r = send_with(
        &a.ctx,
        Method::POST,
        "/switchover",
        Some(r#"{"leader":"node0"}"#),
        &[("content-type", "application/xml")],
        None,
    )
    .await;
    assert_eq!(r.status, 415);
    // curl -d sends a form content type: still read as JSON, as Patroni does.
    let r = send_with(
        &a.ctx,
        Method::POST,
        "/switchover",
        Some(r#"{"leader":"node3"}"#),
        &[("content-type", "application/x-www-form-urlencoded")],
        None,
    )
    .await;
    assert_eq!(r.status, 412);

    // None of the refused requests wrote anything.
    assert_eq!(failover_key(&store), None);
}

#[tokio::test]
async fn paused_cluster_needs_a_candidate_and_refuses_schedules() {
    let (store, _nodes) = three_nodes("http://127.0.0.1:9/patroni", PAUSED).await;
    let a = api(&store, "node0", ApiSettings::default());
    let r = send(
        &a.ctx,
        Method::POST,
        "/switchover",
        Some(r#"{"leader":"node0"}"#),
    )
    .await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (
            400,
            "Switchover is possible only to a specific candidate in a paused state"
        )
    );
    let r = send(
        &a.ctx,
        Method::POST,
        "/switchover",
        Some(
            r#"{"leader":"node0","candidate":"node1","scheduled_at":"2099-01-01T00:00:00+00:00"}"#,
        ),
    )
    .await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (400, "Can't schedule switchover in the paused state")
    );
    let r = send(
        &a.ctx,
        Method::POST,
        "/restart",
        Some(r#"{"schedule":"2099-01-01T00:00:00+00:00"}"#),
    )
    .await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (500, "Can't schedule restart in the paused state")
    );
    assert_eq!(failover_key(&store), None);
}

#[tokio::test]
async fn scheduled_switchover_is_stored_and_cancelled() {
    let (store, _nodes) = three_nodes("http://127.0.0.1:9/patroni", CONFIG).await;
    let a = api(&store, "node1", ApiSettings::default());
    let r = send(
        &a.ctx,
        Method::POST,
        "/switchover",
        Some(r#"{"leader":"node0","member":"node2","scheduled_at":"2099-01-01T02:00:00+02:00"}"#),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (202, "Switchover scheduled"));
    assert_eq!(
        failover_key(&store),
        Some(
            json!({"leader": "node0", "member": "node2", "scheduled_at": "2099-01-01T02:00:00+02:00"})
        )
    );
    // Patroni's compact JSON.
    assert!(!store
        .get(&format!("{BASE}/failover"))
        .unwrap()
        .contains(": "));

    let r = send(&a.ctx, Method::DELETE, "/switchover", None).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "scheduled switchover deleted")
    );
    assert_eq!(failover_key(&store), Some(json!({})));
    let r = send(&a.ctx, Method::DELETE, "/switchover", None).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (404, "no switchover is scheduled")
    );
}

#[tokio::test]
async fn switchover_waits_for_the_new_leader() {
    let peer = healthy_peer().await;
    let (store, nodes) = three_nodes(&peer, CONFIG).await;
    let a = api(&store, "node0", ApiSettings::default());
    // Plays the engine: when the request appears, node0 steps down and node1 takes over.
    let engine = tokio::spawn({
        let store = store.clone();
        async move {
            loop {
                if failover_key(&store).is_some_and(|v| v.get("member").is_some()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            nodes[0].delete_leader().await.unwrap();
            assert!(nodes[1].attempt_to_acquire_leader().await.unwrap());
            nodes[1]
                .set_failover(&Failover::none(), None)
                .await
                .unwrap();
            nodes
        }
    });
    let r = send(
        &a.ctx,
        Method::POST,
        "/switchover",
        Some(r#"{"leader":"node0","candidate":"node1"}"#),
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "Successfully switched over to \"node1\"")
    );
    let nodes = engine.await.unwrap();

    // Failover from the new leader without a healthy candidate answer: the request is
    // written, and an engine that clears it without moving the lock makes it a 503.
    let clearer = tokio::spawn({
        let store = store.clone();
        async move {
            loop {
                if failover_key(&store).is_some_and(|v| v.get("member").is_some()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            nodes[1]
                .set_failover(&Failover::none(), None)
                .await
                .unwrap();
        }
    });
    let r = send(
        &a.ctx,
        Method::POST,
        "/failover",
        Some(r#"{"candidate":"node2"}"#),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (503, "Failover failed"));
    clearer.await.unwrap();
}

#[tokio::test]
async fn config_patch_and_put() {
    let (store, _nodes) = three_nodes("http://127.0.0.1:9/patroni", CONFIG).await;
    let a = api(&store, "node0", ApiSettings::default());
    let r = send(
        &a.ctx,
        Method::PATCH,
        "/config",
        Some(r#"{"pause":true,"postgresql":{"parameters":{"work_mem":"8MB"}}}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let merged: Value = serde_json::from_str(&r.body).unwrap();
    let expected = json!({"ttl": 30, "loop_wait": 1, "pause": true, "postgresql": {"parameters": {"work_mem": "8MB"}}});
    assert_eq!(merged, expected);
    let stored: Value =
        serde_json::from_str(&store.get(&format!("{BASE}/config")).unwrap()).unwrap();
    assert_eq!(stored, expected);
    // `null` removes (patronictl resume).
    let r = send(&a.ctx, Method::PATCH, "/config", Some(r#"{"pause":null}"#)).await;
    assert_eq!(r.status, 200);
    let stored: Value =
        serde_json::from_str(&store.get(&format!("{BASE}/config")).unwrap()).unwrap();
    assert!(stored.get("pause").is_none());

    let r = send(&a.ctx, Method::PUT, "/config", Some(r#"{"ttl":20}"#)).await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"ttl": 20}"#));
    assert_eq!(
        store.get(&format!("{BASE}/config")).unwrap(),
        r#"{"ttl":20}"#
    );
    let r = send(&a.ctx, Method::PATCH, "/config", Some("[]")).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn unsafe_calls_need_credentials_and_change_nothing() {
    let (store, _nodes) = three_nodes("http://127.0.0.1:9/patroni", CONFIG).await;
    let restapi = pgherd_config::RestApi {
        authentication: Some(pgherd_config::BasicAuth {
            username: Some("admin".into()),
            password: Some("s3cret".into()),
        }),
        ..Default::default()
    };
    let settings = ApiSettings::from_config(&restapi, &Default::default()).unwrap();
    let a = api(&store, "node0", settings);
    let body = Some(r#"{"pause":true}"#);
    let r = send(&a.ctx, Method::PATCH, "/config", body).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (401, "no auth header received")
    );
    assert_eq!(
        r.www_authenticate.as_deref(),
        Some(r#"Basic realm="Patroni""#)
    );
    // admin:wrong
    let bad = [("authorization", "Basic YWRtaW46d3Jvbmc=")];
    let r = send_with(&a.ctx, Method::PATCH, "/config", body, &bad, None).await;
    assert_eq!((r.status, r.error().as_str()), (401, "not authenticated"));
    let r = send_with(
        &a.ctx,
        Method::POST,
        "/switchover",
        Some(r#"{"leader":"node0","scheduled_at":"2099-01-01T00:00:00+00:00"}"#),
        &bad,
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(store.get(&format!("{BASE}/config")).unwrap(), CONFIG);
    assert_eq!(failover_key(&store), None);
    // GET never needs credentials.
    assert_eq!(send(&a.ctx, Method::GET, "/config", None).await.status, 200);
    // admin:s3cret
    let good = [("authorization", "Basic YWRtaW46czNjcmV0")];
    let r = send_with(&a.ctx, Method::PATCH, "/config", body, &good, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn allowlist_and_members() {
    let (store, _nodes) = three_nodes("http://127.0.0.2:8008/patroni", CONFIG).await;
    let restapi = pgherd_config::RestApi {
        allowlist: vec!["10.0.0.0/8".into()],
        ..Default::default()
    };
    let settings = ApiSettings::from_config(&restapi, &Default::default()).unwrap();
    let a = api(&store, "node0", settings);
    let from = |ip: &str| ConnInfo {
        peer: format!("{ip}:40000").parse().unwrap(),
        tls: false,
        client_cert: false,
    };
    let body = Some(r#"{"ttl":31}"#);
    let r = send_with(
        &a.ctx,
        Method::PATCH,
        "/config",
        body,
        &[],
        Some(from("127.0.0.1")),
    )
    .await;
    assert_eq!((r.status, r.error().as_str()), (403, "Access is denied"));
    let r = send_with(
        &a.ctx,
        Method::PATCH,
        "/config",
        body,
        &[],
        Some(from("10.1.2.3")),
    )
    .await;
    assert_eq!(r.status, 200);

    // allowlist_include_members: the members' api_url hosts (from the last cluster view).
    let restapi = pgherd_config::RestApi {
        allowlist_include_members: true,
        ..Default::default()
    };
    let settings = ApiSettings::from_config(&restapi, &Default::default()).unwrap();
    let mut snap = NodeSnapshot::new("node0", "batman");
    snap.cluster = Some(pgherd_api::ClusterView {
        cluster: Arc::new(client(&store, None).get_cluster().await.unwrap()),
        read_at: tokio::time::Instant::now(),
    });
    let (_tx, rx) = watch::channel(Arc::new(snap));
    let ctx = ApiContext::new(rx, Arc::new(client(&store, None))).with_settings(settings);
    let r = send_with(
        &ctx,
        Method::PATCH,
        "/config",
        body,
        &[],
        Some(from("127.0.0.1")),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = send_with(
        &ctx,
        Method::PATCH,
        "/config",
        body,
        &[],
        Some(from("127.0.0.2")),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn local_calls_are_handed_to_the_agent() {
    let (store, _nodes) = three_nodes("http://127.0.0.1:9/patroni", CONFIG).await;
    let a = api(&store, "node1", ApiSettings::default());
    // Without a command channel: 503, nothing else happens.
    let r = send(&a.ctx, Method::POST, "/restart", None).await;
    assert_eq!(r.status, 503);

    let (tx, mut rx) = mpsc::channel(8);
    let ctx = a.ctx.clone().with_commands(tx);
    let agent = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(command) = rx.recv().await {
            match command {
                ApiCommand::Restart { request, reply } => {
                    let ok = request.conditions_met(Role::Replica, 150018, false);
                    seen.push(format!(
                        "restart role={:?} pending={}",
                        request.role, request.restart_pending
                    ));
                    let _ = reply.send(match ok {
                        Ok(()) => Ok("restarted successfully".into()),
                        Err(_) => Err(pgherd_api::Refusal::conditions_not_satisfied()),
                    });
                }
                ApiCommand::ScheduleRestart { request, reply } => {
                    seen.push(format!(
                        "schedule {:?}",
                        request.schedule.map(|s| s.to_rfc3339())
                    ));
                    let _ = reply.send(Ok("Restart scheduled".into()));
                }
                ApiCommand::CancelScheduledRestart { reply } => {
                    seen.push("cancel".into());
                    let _ = reply.send(true);
                }
                ApiCommand::Reload => seen.push("reload".into()),
                ApiCommand::Reinitialize { force, reply } => {
                    seen.push(format!("reinit force={force}"));
                    let _ = reply.send(Ok("reinitialize started".into()));
                }
                ApiCommand::Wake => {}
            }
        }
        seen
    });
    let r = send(
        &ctx,
        Method::POST,
        "/restart",
        Some(r#"{"role":"replica"}"#),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "restarted successfully"));
    let r = send(
        &ctx,
        Method::POST,
        "/restart",
        Some(r#"{"restart_pending":true}"#),
    )
    .await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (503, "restart conditions are not satisfied")
    );
    let r = send(
        &ctx,
        Method::POST,
        "/restart",
        Some(r#"{"schedule":"2099-01-01T00:00:00+00:00"}"#),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (202, "Restart scheduled"));
    let r = send(&ctx, Method::POST, "/restart", Some(r#"{"role":"leader"}"#)).await;
    assert_eq!(r.status, 400);
    let r = send(&ctx, Method::DELETE, "/restart", None).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "scheduled restart deleted")
    );
    let r = send(&ctx, Method::POST, "/reload", None).await;
    assert_eq!((r.status, r.body.as_str()), (202, "reload scheduled"));
    let r = send(
        &ctx,
        Method::POST,
        "/reinitialize",
        Some(r#"{"force":true}"#),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "reinitialize started"));
    drop(ctx);
    drop(a);
    let seen = agent.await.unwrap();
    assert_eq!(
        seen,
        vec![
            format!(
                "restart role={:?} pending=false",
                Some(RestartRole::Replica)
            ),
            "restart role=None pending=true".to_string(),
            "schedule Some(\"2099-01-01T00:00:00+00:00\")".to_string(),
            "cancel".to_string(),
            "reload".to_string(),
            "reinit force=true".to_string(),
        ]
    );

    // The leader refuses to reinitialize itself before asking the agent.
    let leader = api(&store, "node0", ApiSettings::default());
    let r = send(&leader.ctx, Method::POST, "/reinitialize", None).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (503, "I am the leader, can not reinitialize")
    );
    assert_eq!(
        StatusCode::from_u16(r.status).unwrap(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// `POST /failsafe` (docs/compat.md#failsafe-mode): Patroni's codes and plain-text bodies, and
/// the pinging leader recorded for the agent only when accepted.
#[tokio::test]
async fn failsafe_pings() {
    let store = MemoryStore::new();
    let pings = pgherd_api::FailsafePings::default();
    let snapshot = |failsafe_mode: bool, role: Role| {
        let mut snap = NodeSnapshot::new("node1", "batman");
        snap.state = "running".into();
        snap.role = role;
        snap.failsafe_mode = failsafe_mode;
        snap
    };
    let ping = r#"{"name": "node0", "conn_url": "postgres://127.0.0.1:5432/postgres", "api_url": "http://127.0.0.1:8008/patroni"}"#;
    let ttl = Duration::from_secs(30);
    let cases = [
        (snapshot(false, Role::Replica), Some(ping), 502),
        (
            snapshot(true, Role::Replica),
            Some(r#"{"name": "node0"}"#),
            400,
        ),
        (snapshot(true, Role::Primary), Some(ping), 500),
        (snapshot(true, Role::Replica), Some(ping), 200),
    ];
    for (i, (snap, body, code)) in cases.into_iter().enumerate() {
        let (_tx, rx) = watch::channel(Arc::new(snap));
        let ctx = ApiContext::new(rx, Arc::new(client(&store, None))).with_failsafe(pings.clone());
        let reply = send(&ctx, Method::POST, "/failsafe", body).await;
        assert_eq!(reply.status, code, "case {i}: {}", reply.body);
        let expected = match code {
            400 => Some("Bad request"),
            500 => Some("Running as a leader"),
            200 => Some("Accepted"),
            _ => None,
        };
        if let Some(text) = expected {
            assert_eq!(reply.body, text, "case {i}");
        }
        assert_eq!(pings.leader_within(ttl).is_some(), code == 200, "case {i}");
    }
    let leader = pings.leader_within(ttl).unwrap();
    assert_eq!(leader.name, "node0");
    assert_eq!(leader.api_url, "http://127.0.0.1:8008/patroni");
}
