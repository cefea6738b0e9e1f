//! Shared fixtures: a DCS double that serves a fixed cluster, snapshot builders for the usual
//! node situations, and a one-shot request helper.

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::DateTime;
use pgherd_api::{
    router, ApiContext, ClusterView, NodeSnapshot, PostgresStatus, ReplicationRow, Xlog,
};
use pgherd_dcs::{Cluster, Dcs, DcsError, Failover, MemberData, Role, Status, SyncState};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

pub const LEADER_OPTIME: u64 = 67108960;

/// A DCS whose `get_cluster` returns a preset cluster (or fails when none is set). Every
/// other operation is refused: the read-only API must never write.
pub struct FixedDcs {
    pub cluster: Mutex<Option<Cluster>>,
}

impl FixedDcs {
    pub fn new(cluster: Option<Cluster>) -> Arc<FixedDcs> {
        Arc::new(FixedDcs {
            cluster: Mutex::new(cluster),
        })
    }
}

fn refused(doing: &'static str) -> DcsError {
    DcsError::Rejected {
        doing,
        message: "the read-only REST API must not write".to_string(),
    }
}

#[async_trait]
impl Dcs for FixedDcs {
    async fn get_cluster(&self) -> Result<Cluster, DcsError> {
        self.cluster
            .lock()
            .unwrap()
            .clone()
            .ok_or(DcsError::Timeout {
                doing: "get_cluster",
                seconds: 10.0,
            })
    }
    async fn touch_member(&self, _: &MemberData) -> Result<(), DcsError> {
        Err(refused("touch_member"))
    }
    async fn attempt_to_acquire_leader(&self) -> Result<bool, DcsError> {
        Err(refused("attempt_to_acquire_leader"))
    }
    async fn update_leader(&self) -> Result<bool, DcsError> {
        Err(refused("update_leader"))
    }
    async fn delete_leader(&self) -> Result<(), DcsError> {
        Err(refused("delete_leader"))
    }
    async fn claim_initialize(&self) -> Result<bool, DcsError> {
        Err(refused("claim_initialize"))
    }
    async fn write_initialize(&self, _: &str) -> Result<(), DcsError> {
        Err(refused("write_initialize"))
    }
    async fn cancel_initialization(&self) -> Result<(), DcsError> {
        Err(refused("cancel_initialization"))
    }
    async fn set_config_value(&self, _: &str, _: Option<i64>) -> Result<bool, DcsError> {
        Err(refused("set_config_value"))
    }
    async fn set_failover(&self, _: &Failover, _: Option<i64>) -> Result<bool, DcsError> {
        Err(refused("set_failover"))
    }
    async fn set_sync_state(&self, _: &SyncState, _: Option<i64>) -> Result<bool, DcsError> {
        Err(refused("set_sync_state"))
    }
    async fn delete_sync_state(&self, _: Option<i64>) -> Result<bool, DcsError> {
        Err(refused("delete_sync_state"))
    }
    async fn write_status(&self, _: &Status) -> Result<(), DcsError> {
        Err(refused("write_status"))
    }
    async fn write_failsafe(&self, _: &pgherd_dcs::FailsafeTopology) -> Result<(), DcsError> {
        Err(refused("write_failsafe"))
    }
    async fn set_history_value(&self, _: &str) -> Result<(), DcsError> {
        Err(refused("set_history_value"))
    }
    async fn delete_cluster(&self) -> Result<(), DcsError> {
        Err(refused("delete_cluster"))
    }
    async fn put_ephemeral(&self, _: &str, _: &str) -> Result<(), DcsError> {
        Err(refused("put_ephemeral"))
    }
    async fn set_ttl(&self, _: Duration) {}
    async fn release_lease(&self) -> Result<(), DcsError> {
        Err(refused("release_lease"))
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        watch::channel(0).1
    }
}

/// A three-node cluster as Patroni stores it: node0 leads, node1 and node2 replicate.
pub fn patroni_cluster() -> Cluster {
    let member = |port: u16, role: &str, xlog: u64| {
        format!(
            r#"{{"conn_url":"postgres://127.0.0.1:{port}/postgres","api_url":"http://127.0.0.1:{}/patroni","state":"running","role":"{role}","version":"3.0.2","xlog_location":{xlog},"timeline":1}}"#,
            port + 2576
        )
    };
    let node0 = member(5432, "master", LEADER_OPTIME);
    let node1 = member(5433, "replica", LEADER_OPTIME - 1000);
    let node2 = member(5434, "replica", LEADER_OPTIME);
    let status = format!(r#"{{"optime":{LEADER_OPTIME}}}"#);
    let rows = vec![
        ("config", r#"{"ttl":30,"loop_wait":10}"#),
        ("initialize", "7711336143377005909"),
        ("leader", "node0"),
        ("members/node0", node0.as_str()),
        ("members/node1", node1.as_str()),
        ("members/node2", node2.as_str()),
        ("status", status.as_str()),
        ("history", "[]"),
    ];
    Cluster::from_rows(rows.into_iter().map(|(k, v)| (k, v, 1, 0)), 10)
}

/// `patroni_cluster()` with extra or replaced rows.
pub fn cluster_with(rows: &[(&str, &str)]) -> Cluster {
    let mut cluster = patroni_cluster();
    let extra = Cluster::from_rows(rows.iter().map(|(k, v)| (*k, *v, 2, 0)), 11);
    if extra.config.is_some() {
        cluster.config = extra.config;
    }
    if extra.sync.is_some() {
        cluster.sync = extra.sync;
    }
    if extra.status.is_some() {
        cluster.status = extra.status;
    }
    if extra.failover.is_some() {
        cluster.failover = extra.failover;
    }
    if extra.history.is_some() {
        cluster.history = extra.history;
    }
    if extra.failsafe.is_some() {
        cluster.failsafe = extra.failsafe;
    }
    cluster.members.extend(extra.members);
    cluster.other.extend(extra.other);
    cluster
}

pub fn fresh_view(cluster: Cluster) -> Option<ClusterView> {
    Some(ClusterView {
        cluster: Arc::new(cluster),
        read_at: Instant::now(),
    })
}

pub fn started() -> chrono::DateTime<chrono::FixedOffset> {
    DateTime::parse_from_rfc3339("2026-11-23T12:02:38.910808+00:00").unwrap()
}

/// node0: holds a valid leader lock, PostgreSQL running as primary.
pub fn leader() -> NodeSnapshot {
    let mut s = NodeSnapshot::new("node0", "batman");
    s.state = "running".to_string();
    s.role = Role::Primary;
    s.postgres = Some(PostgresStatus {
        postmaster_start_time: started(),
        server_version: 150018,
        timeline: Some(1),
        xlog: Xlog::Primary {
            location: LEADER_OPTIME,
        },
        replication: vec![ReplicationRow {
            usename: Some("replicator".to_string()),
            application_name: "node1".to_string(),
            client_addr: Some("127.0.0.1".to_string()),
            state: "streaming".to_string(),
            sync_state: "async".to_string(),
            sync_priority: 0,
        }],
        replication_state: None,
    });
    s.leader_until = Some(Instant::now() + Duration::from_secs(30));
    s.cluster = fresh_view(patroni_cluster());
    s.dcs_last_seen = 1795435399;
    s.database_system_identifier = Some("7711336143377005909".to_string());
    s
}

/// A running replica named `name` that replayed up to `replayed`.
pub fn replica_named(name: &str, replayed: u64) -> NodeSnapshot {
    let mut s = NodeSnapshot::new(name, "batman");
    s.state = "running".to_string();
    s.role = Role::Replica;
    s.postgres = Some(PostgresStatus {
        postmaster_start_time: started(),
        server_version: 150018,
        timeline: Some(1),
        xlog: Xlog::Replica {
            received_location: Some(replayed),
            replayed_location: replayed,
            replayed_timestamp: None,
            paused: false,
        },
        replication: Vec::new(),
        replication_state: Some("streaming".to_string()),
    });
    s.cluster = fresh_view(patroni_cluster());
    s.dcs_last_seen = 1795435399;
    s.database_system_identifier = Some("7711336143377005909".to_string());
    s
}

pub fn replica() -> NodeSnapshot {
    replica_named("node1", LEADER_OPTIME)
}

pub fn context(
    snapshot: NodeSnapshot,
    dcs: Arc<dyn Dcs>,
) -> (watch::Sender<Arc<NodeSnapshot>>, ApiContext) {
    let (tx, rx) = watch::channel(Arc::new(snapshot));
    (tx, ApiContext::new(rx, dcs))
}

pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

/// One request through the router, without a socket.
pub async fn call_ctx(ctx: ApiContext, method: Method, uri: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let response = router(ctx).oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    Reply {
        status,
        content_type,
        body,
    }
}

/// One request against `snapshot`, with a DCS holding `patroni_cluster()`.
pub async fn call(snapshot: &NodeSnapshot, method: Method, uri: &str) -> Reply {
    let (_tx, ctx) = context(snapshot.clone(), FixedDcs::new(Some(patroni_cluster())));
    call_ctx(ctx, method, uri).await
}
