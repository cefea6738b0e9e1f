//! The stats and admin HTTP server on `stats.bind`:
//!
//! * `GET /` — an HTML page (HAProxy-stats-like) that refreshes itself;
//! * `GET /stats.json` — the same data as JSON;
//! * `GET /metrics` — Prometheus text format;
//! * `POST /admin/servers/<member>/<ready|drain|maint>` — behind `stats.admin` basic auth.
//!
//! All three views render one [`snapshot`], so they never disagree.

mod html;
mod metrics;

use crate::config::ProxyConfig;
use crate::controller::AdminCommand;
use crate::gate::ListenerGate;
use crate::routing::{AdminState, ListenerTable, Table};
use crate::session::Totals;
use crate::split::counters::RoutingCounters;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

pub use html::render as render_html;
pub use metrics::render as render_metrics;

/// What the stats server reads.
#[derive(Clone)]
pub struct StatsState {
    pub cfg: Arc<ProxyConfig>,
    pub table: watch::Receiver<Arc<Table>>,
    pub gates: Vec<Arc<ListenerGate>>,
    /// Per listener: its pools when it is pooled.
    pub pools: Vec<Option<Arc<crate::pool::PoolCtx>>>,
    pub totals: Arc<Totals>,
    /// Per listener: the routing decisions of an auto listener (`None` for other roles).
    pub routing: Vec<Option<Arc<RoutingCounters>>>,
    pub admin: mpsc::Sender<AdminCommand>,
    pub started: Instant,
}

pub fn router(state: StatsState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/stats.json", get(stats_json))
        .route("/metrics", get(prometheus))
        .route("/admin/servers/{member}/{state}", post(admin))
        .with_state(state)
}

async fn page(State(s): State<StatsState>) -> Response {
    let snap = snapshot(&s);
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html::render(
            &snap,
            s.cfg
                .stats
                .as_ref()
                .map_or(2, |st| st.refresh.as_secs().max(1)),
        ),
    )
        .into_response()
}

async fn stats_json(State(s): State<StatsState>) -> Response {
    axum::Json(snapshot(&s)).into_response()
}

async fn prometheus(State(s): State<StatsState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&snapshot(&s)),
    )
        .into_response()
}

async fn admin(
    State(s): State<StatsState>,
    Path((member, state)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(auth) = s.cfg.stats.as_ref().and_then(|st| st.admin.as_ref()) else {
        return (
            StatusCode::FORBIDDEN,
            "admin actions are disabled: set proxy.stats.admin.username and password\n",
        )
            .into_response();
    };
    if !authorized(&headers, &auth.username, &auth.password) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"pgherd proxy\"")],
            "not authenticated\n",
        )
            .into_response();
    }
    let Some(state) = AdminState::parse(&state) else {
        return (
            StatusCode::BAD_REQUEST,
            "state must be ready, drain or maint\n",
        )
            .into_response();
    };
    let (reply, rx) = oneshot::channel();
    if s.admin
        .send(AdminCommand {
            member: member.clone(),
            state,
            reply,
        })
        .await
        .is_err()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "proxy is shutting down\n").into_response();
    }
    match rx.await {
        Ok(Ok(())) => (
            StatusCode::OK,
            format!("{member} set to {state:?}\n").to_lowercase(),
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "proxy is shutting down\n").into_response(),
    }
}

fn authorized(headers: &HeaderMap, user: &str, password: &str) -> bool {
    use subtle::ConstantTimeEq;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    given.trim().as_bytes().ct_eq(expected.as_bytes()).into()
}

fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

fn secs(since: Instant) -> f64 {
    (since.elapsed().as_millis() as f64) / 1000.0
}

/// One row per server of a rotation.
fn servers_json(lt: &ListenerTable) -> Vec<Value> {
    lt.entries
        .iter()
        .map(|e| {
            let c = e.backend.counters();
            json!({
                "name": e.member,
                "addr": e.addr,
                "state": e.state.as_str(),
                "reason": e.reason,
                "since_s": secs(e.since),
                "weight": e.weight,
                "sessions": c.active,
                "sessions_max": c.max,
                "sessions_total": c.total,
                "bytes_in": c.bytes_in,
                "bytes_out": c.bytes_out,
                "errors": c.errors,
            })
        })
        .collect()
}

/// The whole state as JSON (the `/stats.json` body). An auto listener also has `replicas`
/// (its replica rotation) and `routing` (decisions by target and reason).
pub fn snapshot(s: &StatsState) -> Value {
    let table = s.table.borrow().clone();
    let tasks = tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_alive_tasks())
        .ok();
    let listeners: Vec<Value> = s
        .cfg
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let g = s.gates[i].counters();
            let lt = table.listeners.get(i);
            let servers: Vec<Value> = lt.map(servers_json).unwrap_or_default();
            let sum = |k: &str| servers.iter().filter_map(|v| v[k].as_u64()).sum::<u64>();
            json!({
                "name": l.name,
                "bind": l.bind.to_string(),
                "role": l.role.as_str(),
                "balance": l.balance,
                "readiness": lt.map(|lt| lt.readiness),
                "max_lag": l.max_lag,
                "fallback": if l.fallback_primary { "primary" } else { "none" },
                "accept_proxy": l.accept_proxy,
                "maxconn": g.maxconn,
                "maxqueue": l.maxqueue,
                "hold_timeout_s": l.hold_timeout.as_secs_f64(),
                "clients": g.clients,
                "clients_max": g.clients_max,
                "clients_total": g.clients_total,
                "queued": g.queued,
                "queued_max": g.queued_max,
                "holding": g.holding,
                "refused": {
                    "hold_timeout": g.refused_hold_timeout,
                    "queue_full": g.refused_queue_full,
                    "queue_timeout": g.refused_queue_timeout,
                    "connect_failed": g.refused_connect_failed,
                    "proxy_header": g.refused_proxy_header,
                },
                "sessions": sum("sessions"),
                "sessions_total": sum("sessions_total"),
                "bytes_in": sum("bytes_in"),
                "bytes_out": sum("bytes_out"),
                "errors": sum("errors"),
                "servers": servers,
                "replicas": lt.and_then(|lt| lt.replicas.as_deref()).map(|r| json!({
                    "readiness": r.readiness,
                    "servers": servers_json(r),
                })),
                "routing": s.routing.get(i).and_then(|r| r.as_ref()).map(|r| r.to_json()),
                "pool": s.pools.get(i).and_then(|p| p.as_ref()).map(|p| json!({
                    "mode": p.cfg.mode.as_str(),
                    "pool_size": p.cfg.pool_size,
                    "max_client_conn": p.cfg.max_client_conn,
                    "clients": p.cfg.max_client_conn - p.clients.available_permits(),
                    "parked": p.parking.parked(),
                    "pools": p.pools.snapshot(),
                })),
            })
        })
        .collect();
    let members: Vec<Value> = table
        .topology
        .members
        .values()
        .map(|m| {
            let h = table.health.get(&m.name);
            let verdict = |v: Option<crate::health::Verdict>| match v {
                Some(v) if v.is_up() => "up",
                Some(crate::health::Verdict::Down { .. }) => "down",
                _ => "unknown",
            };
            json!({
                "name": m.name,
                "leader": table.topology.leader.as_deref() == Some(m.name.as_str()),
                "role": m.role,
                "state": m.state,
                "addr": m.pg_addr,
                "api": m.api_base,
                "lag": m.lag,
                "sync_standby": m.sync_standby,
                "noloadbalance": m.noloadbalance,
                "weight": m.weight,
                "admin": table.admin.get(&m.name).copied().unwrap_or_default(),
                "health": {
                    "primary": verdict(h.map(|h| h.primary)),
                    "replica": verdict(h.map(|h| h.replica)),
                    "last_result": h.map(|h| h.last_result.clone()),
                    "last_check_age_s": h.and_then(|h| h.last_checked).map(secs),
                    "latency_ms": h.map(|h| h.last_latency_ms),
                },
            })
        })
        .collect();
    json!({
        "proxy": {
            "name": s.cfg.name,
            "scope": s.cfg.scope,
            "uptime_s": secs(s.started),
            "generation": table.generation,
            "discovered": table.discovered,
            "leader": table.topology.leader,
            "routing_leader": crate::registration::routing_leader(&table),
            "bytes_in": s.totals.bytes_in.load(Ordering::Relaxed),
            "bytes_out": s.totals.bytes_out.load(Ordering::Relaxed),
            "tasks": tasks,
            "open_fds": open_fds(),
            "maxconn": s.cfg.maxconn,
        },
        "listeners": listeners,
        "members": members,
        "proxies": table.topology.proxies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "a", "b"));
        h.insert(header::AUTHORIZATION, "Basic YTpi".parse().unwrap());
        assert!(authorized(&h, "a", "b"));
        assert!(!authorized(&h, "a", "c"));
    }
}
