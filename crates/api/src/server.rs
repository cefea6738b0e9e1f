//! The HTTP server: one dispatch function over [`crate::routing::resolve`], and the GET
//! handlers.

use crate::cluster_view::{config_json, history_json, ClusterJson};
use crate::commands::ApiCommand;
use crate::error::{EndpointError, ServeError};
use crate::health::{self, HealthQuery};
use crate::json::{error_page, json_response, not_found, status_only, with_content_type};
use crate::metrics;
use crate::routing::{resolve, GetEndpoint, Route};
use crate::settings::ApiSettings;
use crate::snapshot::{NodeSnapshot, PostgresStatus};
use crate::status::StatusBody;
use crate::tls::{ConnInfo, TlsListener};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use pgherd_dcs::Dcs;

use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// What the handlers need. Build it with [`ApiContext::new`] and the `with_*` methods.
#[derive(Clone)]
pub struct ApiContext {
    /// The agent's latest state; health checks read only this.
    pub snapshot: watch::Receiver<Arc<NodeSnapshot>>,
    /// For the endpoints that report the whole cluster (`/cluster`, `/history`, `/config`),
    /// which read the DCS afresh on each request, and for the cluster-wide management calls
    /// (switchover, failover, configuration), which write it.
    pub dcs: Arc<dyn Dcs>,
    /// Where node-local management calls (restart, reload, reinitialize) go; see
    /// [`ApiCommand`] for what the agent must do with each. `None`: those calls answer 503.
    pub commands: Option<mpsc::Sender<ApiCommand>>,
    /// Access control, TLS, extra headers, peer client (`restapi:` configuration); replaced
    /// on reload through [`ApiContext::settings_updater`].
    settings: watch::Receiver<Arc<ApiSettings>>,
    settings_tx: Arc<watch::Sender<Arc<ApiSettings>>>,
    /// Fresh PostgreSQL status for `GET /patroni`; `None`: the snapshot's.
    pub live: Option<Arc<dyn LiveStatus>>,
    /// How switchover/failover candidates are probed; `None`: over HTTP with the settings'
    /// peer client.
    pub peers: Option<Arc<dyn PeerStatus>>,
    /// Where `POST /failsafe` records the leader that pinged us (shared with the agent).
    pub failsafe: Option<crate::FailsafePings>,
}

/// Replaces the REST API's settings while it runs; see [`ApiContext::settings_updater`].
#[derive(Clone)]
pub struct SettingsUpdater(Arc<watch::Sender<Arc<ApiSettings>>>);

impl SettingsUpdater {
    /// Switching between HTTP and HTTPS needs a new listener (an agent restart): the TLS part
    /// of `new` is then ignored and the current one kept; the returned note says so.
    pub fn replace(&self, mut new: ApiSettings) -> Option<&'static str> {
        let current = self.0.borrow().clone();
        let note = (current.tls_enabled() != new.tls_enabled()).then(|| {
            new.tls = current.tls.clone();
            "switching the REST API between HTTP and HTTPS needs an agent restart; TLS settings kept"
        });
        self.0.send_replace(Arc::new(new));
        note
    }
}

/// PostgreSQL's state at the moment of a request. Peers compare WAL positions through
/// `GET /patroni` during an election, and load balancers poll the health endpoints; the
/// agent's snapshot can be up to one loop_wait old, so a stale position could get a lagging
/// replica promoted and a dead server could be reported up. Patroni queries per request too.
pub trait LiveStatus: Send + Sync {
    fn status(&self) -> std::pin::Pin<Box<dyn Future<Output = LivePostgres> + Send + '_>>;
}

/// Another member's `GET <api_url>` body, or `None` when it does not answer in time. The
/// agent reaches peers over HTTP; the simulator routes the probe to the member's router.
pub trait PeerStatus: Send + Sync {
    fn status<'a>(
        &'a self,
        api_url: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<serde_json::Value>> + Send + 'a>>;
}

/// One live look at PostgreSQL.
#[derive(Debug, Clone)]
pub enum LivePostgres {
    /// It answered the status query.
    Answered(PostgresStatus),
    /// No postmaster is running.
    Down,
    /// A postmaster runs but did not answer (starting, shutting down, overloaded).
    NoAnswer,
}

/// How long a request waits for the live query; past it PostgreSQL counts as not answering.
const LIVE_STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// The snapshot with PostgreSQL's state replaced by a live look, when the agent offers one.
async fn live_snapshot(ctx: &ApiContext) -> Arc<NodeSnapshot> {
    let snap = Arc::clone(&ctx.snapshot.borrow());
    let Some(live) = &ctx.live else {
        return snap;
    };
    // Only where the agent itself believes PostgreSQL is up: a member that is stopped,
    // bootstrapping or cloning reports what its agent says.
    if snap.postgres.is_none() && snap.state != "running" {
        return snap;
    }
    let answer = tokio::time::timeout(LIVE_STATUS_TIMEOUT, live.status())
        .await
        .unwrap_or(LivePostgres::NoAnswer);
    let mut fresh = (*snap).clone();
    match answer {
        LivePostgres::Answered(status) => {
            fresh.postgres = Some(status);
            fresh.state = "running".into();
        }
        LivePostgres::Down => {
            fresh.postgres = None;
            fresh.state = "stopped".into();
        }
        // Reported as `unknown` (Patroni's word for a running server that does not answer).
        LivePostgres::NoAnswer => fresh.postgres = None,
    }
    Arc::new(fresh)
}

impl ApiContext {
    /// An open API over plain HTTP without a command channel.
    pub fn new(snapshot: watch::Receiver<Arc<NodeSnapshot>>, dcs: Arc<dyn Dcs>) -> ApiContext {
        let (settings_tx, settings) = watch::channel(Arc::new(ApiSettings::default()));
        ApiContext {
            snapshot,
            dcs,
            commands: None,
            settings,
            settings_tx: Arc::new(settings_tx),
            live: None,
            peers: None,
            failsafe: None,
        }
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<ApiSettings> {
        self.settings.borrow().clone()
    }

    /// Replaces the settings of a running API (SIGHUP): access control and extra headers
    /// apply to the next request, a new certificate to the next TLS handshake.
    pub fn settings_updater(&self) -> SettingsUpdater {
        SettingsUpdater(self.settings_tx.clone())
    }

    /// `GET /patroni` and the health endpoints report PostgreSQL's state at request time.
    pub fn with_live_status(mut self, live: Arc<dyn LiveStatus>) -> ApiContext {
        self.live = Some(live);
        self
    }

    /// `POST /failsafe` records the pinging leader in `pings`, which the agent reads.
    pub fn with_failsafe(mut self, pings: crate::FailsafePings) -> ApiContext {
        self.failsafe = Some(pings);
        self
    }

    /// Candidate probes go through `peers` instead of HTTP.
    pub fn with_peers(mut self, peers: Arc<dyn PeerStatus>) -> ApiContext {
        self.peers = Some(peers);
        self
    }

    /// Node-local management calls are sent to `commands` (the agent holds the receiver).
    pub fn with_commands(mut self, commands: mpsc::Sender<ApiCommand>) -> ApiContext {
        self.commands = Some(commands);
        self
    }

    /// Access control and TLS from [`ApiSettings::from_config`].
    pub fn with_settings(self, settings: ApiSettings) -> ApiContext {
        self.settings_tx.send_replace(Arc::new(settings));
        self
    }
}

/// All routes. Routing is ours (Patroni-style first-segment and substring matching), so axum
/// only sees a fallback.
pub fn router(ctx: ApiContext) -> Router {
    Router::new().fallback(dispatch).with_state(ctx)
}

/// Serves the API on `listener` (HTTPS when the settings carry a certificate) until
/// `shutdown` completes, then finishes in-flight requests.
pub async fn serve<F>(listener: TcpListener, ctx: ApiContext, shutdown: F) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().ok();
    let https = ctx.settings().tls_enabled();
    let settings = ctx.settings.clone();
    let app = router(ctx).into_make_service_with_connect_info::<ConnInfo>();
    match https {
        false => {
            tracing::info!(listen = ?addr, "REST API listening (http)");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        true => {
            tracing::info!(listen = ?addr, "REST API listening (https)");
            axum::serve(TlsListener::new(listener, settings), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
    .map_err(|err| ServeError::io(addr, err))
}

async fn dispatch(State(ctx): State<ApiContext>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let path = uri.path();
    let mut response = match resolve(&method, path) {
        Route::Manage(endpoint) => crate::manage::handle(&ctx, endpoint, request).await,
        Route::Get(endpoint) => get(&ctx, endpoint).await,
        Route::Health(check) => {
            let snap = live_snapshot(&ctx).await;
            let now = Instant::now();
            let body = StatusBody::build(&snap, now);
            let code = health::evaluate(check, &HealthQuery::parse(uri.query()), &body, &snap, now);
            if method == Method::GET {
                json_response(code, &body)
            } else {
                // HAProxy reads only the status line of HEAD/OPTIONS checks.
                status_only(code)
            }
        }
        // Python's answer to a method without handler.
        Route::NotImplemented | Route::UnsupportedMethod => error_page(
            StatusCode::NOT_IMPLEMENTED,
            Some(&format!("Unsupported method ('{method}')")),
        ),
        Route::NotFound => not_found(path),
    };
    if method == Method::HEAD {
        *response.body_mut() = Body::empty();
    }
    for (name, value) in &ctx.settings().extra_headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    tracing::debug!(
        %method,
        %uri,
        status = response.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        "REST API request"
    );
    response
}

async fn get(ctx: &ApiContext, endpoint: GetEndpoint) -> Response {
    let snap = Arc::clone(&ctx.snapshot.borrow());
    let now = Instant::now();
    let result = match endpoint {
        GetEndpoint::Patroni => {
            let snap = live_snapshot(ctx).await;
            Ok(json_response(
                StatusCode::OK,
                &StatusBody::build(&snap, now),
            ))
        }
        GetEndpoint::Metrics => Ok(with_content_type(
            StatusCode::OK,
            Body::from(metrics::render(&StatusBody::build(&snap, now), &snap)),
            METRICS_CONTENT_TYPE,
        )),
        GetEndpoint::Liveness => Ok(status_only(health::liveness(&snap, now))),
        GetEndpoint::Readiness => Ok(status_only(health::readiness(&snap, now))),
        GetEndpoint::Failsafe => failsafe(&snap),
        GetEndpoint::Cluster => read_cluster(ctx)
            .await
            .map(|c| json_response(StatusCode::OK, &ClusterJson::build(&c))),
        GetEndpoint::History => read_cluster(ctx)
            .await
            .map(|c| json_response(StatusCode::OK, &history_json(&c))),
        GetEndpoint::Config => read_cluster(ctx).await.and_then(|c| {
            config_json(&c)
                .map(|config| json_response(StatusCode::OK, &config))
                .ok_or(EndpointError::NoConfig)
        }),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A fresh read: after `PATCH /config` or a switchover the caller expects to see the change,
/// and these endpoints are far too rare to need the cached view.
async fn read_cluster(ctx: &ApiContext) -> Result<pgherd_dcs::Cluster, EndpointError> {
    ctx.dcs.get_cluster().await.map_err(|err| {
        tracing::warn!(error = %err, "REST API: DCS read failed");
        EndpointError::Dcs(err)
    })
}

/// `GET /failsafe`: the `failsafe` key as of the last DCS read (however old, like Patroni's
/// `dcs.failsafe`), if it is an object.
fn failsafe(snap: &NodeSnapshot) -> Result<Response, EndpointError> {
    let topology = snap
        .cluster
        .as_ref()
        .and_then(|view| view.cluster.failsafe.as_ref())
        .ok_or(EndpointError::NoFailsafe)?;
    Ok(json_response(StatusCode::OK, &topology.0))
}
