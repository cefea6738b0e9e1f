//! The pgherd agent: one per PostgreSQL node. The agent ([`Agent`]) runs the pure HA engine
//! against its [`World`] (PostgreSQL, the DCS, the other members' REST API, hooks, the wall
//! clock, its configuration); [`run`] is `pgherd agent`: the real world, the REST API and the
//! signals. The deterministic simulator (`crates/sim`) runs the same [`Agent`] in a
//! simulated world.

#![forbid(unsafe_code)]

mod agent;
mod commands;
mod execute;
mod failsafe;
mod fence;
mod leader;
mod lease;
mod observe;
mod peers;
mod proxy_fence;
pub mod real;
mod report;
mod runtime;
pub mod settings;
mod shutdown;
mod slots;
mod tasks;
mod vip;
mod watchdog;
pub mod world;

pub use agent::{Agent, AgentHandles, PlantedBug};
pub use peers::parse_status;
pub use report::LiveStatus;
pub use runtime::MAX_REWIND_ATTEMPTS;
pub use world::{
    ConfigSource, Hooks, NoTrace, Peers, PgControl, Trace, WallClock, WatchdogDevice,
    WatchdogDevices, World,
};

use anyhow::{Context, Result};
use pgherd_api::ApiContext;
use pgherd_postgres::Postgres;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

/// How long open REST API connections may delay the exit.
const API_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// `pgherd agent`: loads the configuration, refuses to start on any error (before touching
/// anything), then runs the HA loop until SIGTERM/SIGINT. A second signal exits at once.
pub async fn run(config_path: Option<&Path>) -> Result<()> {
    let source = real::FileConfig(config_path.map(Path::to_path_buf));
    let loaded = source.load()?;
    for w in &loaded.warnings {
        warn!("{w}");
    }
    let cfg = loaded.config;
    cfg.validate_for_agent()?;
    let bootstrap_dynamic = match cfg.bootstrap.as_ref() {
        Some(b) if b.dcs.is_object() => pgherd_config::DynamicConfig::from_value(&b.dcs).0,
        _ => pgherd_config::DynamicConfig::default(),
    };
    let name = cfg.name.clone().context("name is required")?;
    let pg = Arc::new(Postgres::new(settings::pg_options(&cfg)?).context(
        "PostgreSQL refuses to run as root: pgherd runs it as postgresql.run_as (default 'postgres')",
    )?);
    let dcs = pgherd_dcs::open(
        &cfg,
        &cfg.scope,
        Some(name.clone()),
        bootstrap_dynamic.ttl,
        bootstrap_dynamic.retry_timeout,
    )?;
    let (api_host, api_port) = cfg.restapi_listen()?;
    let api_settings = pgherd_api::ApiSettings::from_config(&cfg.restapi, &cfg.ctl)
        .context("restapi: TLS or authentication settings")?;
    let world = World {
        pg: Arc::new(real::RealPostgres(pg.clone())),
        dcs: dcs.clone(),
        peers: Arc::new(real::HttpPeers::new(&cfg)?),
        hooks: Arc::new(real::ShellHooks {
            pg,
            scope: cfg.scope.clone(),
            post_bootstrap_over_socket: cfg.postgresql.use_unix_socket,
        }),
        clock: Arc::new(real::SystemClock),
        config: Arc::new(source),
        trace: Arc::new(NoTrace),
        watchdogs: Arc::new(real::DeviceWatchdogs),
        addresses: Arc::new(real::IpAddresses),
    };
    let scope = cfg.scope.clone();
    let live = LiveStatus(world.pg.clone());
    let (agent, handles) = Agent::new(cfg, world)?;

    let bind = if api_host.is_empty() || api_host == "*" {
        "0.0.0.0".to_string()
    } else {
        api_host
    };
    let listener = tokio::net::TcpListener::bind((bind.as_str(), api_port))
        .await
        .with_context(|| format!("restapi.listen: cannot listen on {bind}:{api_port}"))?;
    let api_ctx = ApiContext::new(handles.snapshot, dcs)
        .with_commands(handles.commands.clone())
        .with_live_status(Arc::new(live))
        .with_settings(api_settings)
        .with_failsafe(handles.failsafe);
    let agent = agent.with_api_settings(api_ctx.settings_updater());
    let (api_stop_tx, api_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(pgherd_api::serve(listener, api_ctx, async move {
        let _ = api_stop_rx.await;
    }));
    info!(member = %name, scope = %scope, "pgherd agent starting; REST API on {bind}:{api_port}");

    // SIGHUP reloads the configuration, through the same path as `POST /reload`.
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let commands = handles.commands;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            info!("SIGHUP received: reloading the configuration");
            if commands.send(pgherd_api::ApiCommand::Reload).await.is_err() {
                return;
            }
        }
    });
    let stop = stop_signals()?;
    let result = agent.run(stop).await;
    let _ = api_stop_tx.send(());
    if tokio::time::timeout(API_STOP_TIMEOUT, api).await.is_err() {
        warn!("REST API connections still open after {API_STOP_TIMEOUT:?}; closing them");
    }
    result
}

/// Resolves at the first SIGTERM or SIGINT; the second one ends the process at once,
/// whatever the clean stop is waiting for.
fn stop_signals() -> Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!("{first} received: shutting down");
        let _ = tx.send(());
        let second = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        warn!("{second} received during shutdown (second signal): exiting at once");
        std::process::exit(1);
    });
    Ok(async move {
        let _ = rx.await;
    })
}
