//! The pgherd agent: one per PostgreSQL node. Wires the configuration, the DCS, PostgreSQL
//! control, the REST API and the pure HA engine together and runs the HA loop.

mod agent;
mod callbacks;
mod clock;
mod commands;
mod execute;
mod fence;
mod leader;
mod observe;
mod peers;
mod proxy_fence;
mod report;
mod settings;
mod shutdown;
mod tasks;

use agent::Agent;
use anyhow::{bail, Context, Result};
use pgherd_api::{ApiContext, NodeSnapshot};
use pgherd_config::DynamicConfig;
use pgherd_dcs::Role;
use pgherd_postgres::Postgres;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Loads the configuration, refuses to start on any error (before touching anything), then
/// runs the HA loop until SIGTERM/SIGINT.
pub async fn run(config_path: Option<&Path>) -> Result<()> {
    let loaded = pgherd_config::load_from_process_env(config_path)?;
    for w in &loaded.warnings {
        warn!("{w}");
    }
    let cfg = loaded.config;
    cfg.validate_for_agent()?;
    let name = cfg.name.clone().context("name is required")?;
    let bootstrap_dynamic = match cfg.bootstrap.as_ref() {
        Some(b) if b.dcs.is_object() => DynamicConfig::from_value(&b.dcs).0,
        _ => DynamicConfig::default(),
    };
    let pg_options = settings::pg_options(&cfg)?;
    let pg = Arc::new(Postgres::new(pg_options).context(
        "PostgreSQL refuses to run as root: pgherd runs it as postgresql.run_as (default 'postgres')",
    )?);
    let dcs = pgherd_dcs::open(
        &cfg,
        &cfg.scope,
        Some(name.clone()),
        bootstrap_dynamic.ttl,
        bootstrap_dynamic.retry_timeout,
    )?;
    let conn_url = cfg.conn_url()?;
    let api_url = cfg.api_url()?;
    let (api_host, api_port) = cfg.restapi_listen()?;
    let cfg = Arc::new(cfg);

    let (snapshot_tx, snapshot_rx) =
        watch::channel(Arc::new(NodeSnapshot::new(name.clone(), cfg.scope.clone())));
    let bind = if api_host.is_empty() || api_host == "*" {
        "0.0.0.0".to_string()
    } else {
        api_host
    };
    let listener = tokio::net::TcpListener::bind((bind.as_str(), api_port))
        .await
        .with_context(|| format!("restapi.listen: cannot listen on {bind}:{api_port}"))?;
    let (commands_tx, mut commands_rx) = tokio::sync::mpsc::channel(16);
    let (api_stop_tx, api_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let api_ctx = ApiContext::new(snapshot_rx, dcs.clone())
        .with_commands(commands_tx)
        .with_live_status(Arc::new(report::LiveStatus(pg.clone())))
        .with_settings(
            pgherd_api::ApiSettings::from_config(&cfg.restapi, &cfg.ctl)
                .context("restapi: TLS or authentication settings")?,
        );
    let api_settings = api_ctx.settings_updater();
    let api = tokio::spawn(pgherd_api::serve(listener, api_ctx, async move {
        let _ = api_stop_rx.await;
    }));
    info!(member = %name, scope = %cfg.scope, "pgherd agent starting; REST API on {bind}:{api_port}");

    let settings = settings::engine_settings(&cfg, &name, &bootstrap_dynamic);
    let fence = fence::spawn(pg.clone());
    let standby_signal = pg.options().data_dir.join("standby.signal").exists();
    let mut agent = Agent {
        cfg: cfg.clone(),
        name: name.clone(),
        conn_url,
        api_url,
        dcs: dcs.clone(),
        pg: pg.clone(),
        engine: pgherd_ha::Engine::new(),
        dynamic: bootstrap_dynamic,
        dynamic_index: None,
        settings,
        clock: clock::Clock::new(),
        lock_confirmed_at: None,
        task: None,
        upstream: standby_signal.then(String::new),
        rewind_failures: 0,
        pg_state: None,
        crashed: false,
        was_running: false,
        role: Role::Uninitialized,
        sysid: None,
        snapshot_tx,
        api_settings,
        http: peers::client(&cfg)?,
        fence,
        last_reason: String::new(),
        dcs_last_seen: 0,
        last_cluster: None,
        applied_params: None,
        member_slots: None,
        not_streaming_since: None,
        last_known_leader: None,
        config_path: config_path.map(Path::to_path_buf),
        scheduled_restart: None,
        scheduled_restart_start_time: None,
        restored_schedule: false,
        sync_standby_names: None,
        promotion_blocked_until: None,
    };

    let mut stop_requested = shutdown::install_signal_handlers()?;
    let result = tokio::select! {
        result = run_loop(&mut agent, &mut commands_rx) => result,
        // A cycle in progress is abandoned: with the DCS hung it could take several
        // retry_timeouts, and nothing it was doing matters more than stopping.
        _ = stop_requested.wait_for(|stop| *stop) => Ok(()),
    };
    if let Err(e) = &result {
        error!("{e:#}");
    }
    shutdown::stop(&mut agent, result.is_ok()).await;
    let _ = api_stop_tx.send(());
    if tokio::time::timeout(shutdown::API_STOP_TIMEOUT, api)
        .await
        .is_err()
    {
        warn!(
            "REST API connections still open after {:?}; closing them",
            shutdown::API_STOP_TIMEOUT
        );
    }
    result
}

async fn run_loop(
    agent: &mut Agent,
    commands: &mut tokio::sync::mpsc::Receiver<pgherd_api::ApiCommand>,
) -> Result<()> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let mut changes = agent.dcs.subscribe();
    loop {
        let started = tokio::time::Instant::now();
        agent.cycle().await?;
        let loop_wait = Duration::from_millis(agent.settings.loop_wait);
        let fingerprint = agent.last_cluster.as_deref().map(wake_fingerprint);
        let deadline = next_scheduled_switchover(agent)
            .map_or(started + loop_wait, |at| at.min(started + loop_wait));
        // Sleep until the next cycle, waking early when something that matters changes in
        // the DCS (the leader key, a failover request, the configuration) or a task ends.
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = hangup.recv() => {
                    info!("SIGHUP received: reloading the configuration");
                    commands::reload(agent).await;
                    break;
                }
                Some(command) = commands.recv() => {
                    if commands::handle(agent, command).await {
                        break;
                    }
                }
                // A postmaster that died (or came up) is acted on at once rather than at the
                // next loop_wait: a cheap pid check, no query.
                _ = tokio::time::sleep(Duration::from_millis(200)), if agent.task.is_none() => {
                    if agent.pg.is_running().is_some() != agent.was_running {
                        break;
                    }
                }
                // A background action that ends (start, clone, rewind) is followed by a cycle at
                // once, not up to loop_wait later.
                _ = tokio::time::sleep(Duration::from_millis(100)), if agent.task.is_some() => {
                    if agent.task.as_ref().is_some_and(|t| t.handle.is_finished()) {
                        break;
                    }
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        bail!("the DCS watch ended");
                    }
                    if let Ok(c) = agent.dcs.get_cluster().await {
                        if Some(wake_fingerprint(&c)) != fingerprint {
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// The parts of the cluster whose change should run a cycle at once (compat §1.4 wake-ups):
/// leader, failover index, config index, sync index, initialize.
type WakeFingerprint = (
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

fn wake_fingerprint(c: &pgherd_dcs::Cluster) -> WakeFingerprint {
    (
        c.leader_name().map(str::to_string),
        c.failover.as_ref().map(|f| f.index),
        c.config.as_ref().map(|f| f.index),
        c.sync.as_ref().map(|f| f.index),
        c.initialize.clone(),
    )
}

/// The leader wakes up exactly at a scheduled switchover's time instead of up to one
/// loop_wait later.
fn next_scheduled_switchover(agent: &Agent) -> Option<tokio::time::Instant> {
    let cluster = agent.last_cluster.as_ref()?;
    if cluster.leader_name() != Some(agent.name.as_str()) {
        return None;
    }
    let at = cluster.failover_request()?.scheduled_at.as_deref()?;
    let when = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    let ahead = (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()?;
    Some(tokio::time::Instant::now() + ahead)
}
