//! `postgresql.callbacks`: `<cmd> <action> <role> <scope>`, started in the background so
//! the HA loop never waits for them.

use pgherd_config::Config;
use pgherd_dcs::Role;
use pgherd_postgres::{CallbackAction, Postgres};
use tracing::warn;

pub fn run(pg: &Postgres, cfg: &Config, action: CallbackAction, role: Role) {
    let cb = &cfg.postgresql.callbacks;
    let command = match action {
        CallbackAction::OnStart => &cb.on_start,
        CallbackAction::OnStop => &cb.on_stop,
        CallbackAction::OnRestart => &cb.on_restart,
        CallbackAction::OnReload => &cb.on_reload,
        CallbackAction::OnRoleChange => &cb.on_role_change,
    };
    if let Some(command) = command {
        if let Err(e) = pg.run_callback(command, action, role.as_str(), &cfg.scope) {
            warn!("callback {} failed to start: {e}", action.as_str());
        }
    }
}
