//! User callbacks (`postgresql.callbacks`): `<cmd> <action> <role> <scope>`, started without
//! waiting. Like Patroni, one callback runs at a time and a new one kills the previous one
//! (`on_reload` callbacks have their own slot), so a stale `on_role_change` never finishes
//! after a newer one.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::error::{PgError, Result};
use crate::postgres::Postgres;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackAction {
    OnStart,
    OnStop,
    OnRestart,
    OnReload,
    OnRoleChange,
}

impl CallbackAction {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackAction::OnStart => "on_start",
            CallbackAction::OnStop => "on_stop",
            CallbackAction::OnRestart => "on_restart",
            CallbackAction::OnReload => "on_reload",
            CallbackAction::OnRoleChange => "on_role_change",
        }
    }
}

/// Process groups of the running callbacks: `[other, on_reload]`.
#[derive(Default)]
pub(crate) struct CallbackRunner {
    running: Arc<Mutex<[Option<i32>; 2]>>,
}

impl Postgres {
    /// Starts `command action role scope` in the background (as the PostgreSQL user when the
    /// agent is root) and returns at once; the exit status is logged. Needs a tokio runtime.
    pub fn run_callback(
        &self,
        command: &str,
        action: CallbackAction,
        role: &str,
        scope: &str,
    ) -> Result<()> {
        let mut argv = shlex::split(command)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| PgError::Callback {
                command: command.to_string(),
            })?;
        argv.extend([
            action.as_str().to_string(),
            role.to_string(),
            scope.to_string(),
        ]);
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            // Its own group, so killing it also kills whatever it started.
            .process_group(0);
        if let Some(id) = self.owner() {
            id.apply(&mut cmd);
        }

        let slot = usize::from(action == CallbackAction::OnReload);
        let mut running = self
            .callbacks
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(pgid) = running[slot].take() {
            warn!(pgid, "killing the previous callback, still running");
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        let line = argv.join(" ");
        let mut child = cmd.spawn().map_err(|source| PgError::Spawn {
            command: line.clone(),
            source,
        })?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        running[slot] = pid;
        drop(running);
        info!(command = %line, "callback started");

        let registry = Arc::clone(&self.callbacks.running);
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) if status.success() => info!(command = %line, "callback finished"),
                Ok(status) => warn!(command = %line, %status, "callback failed"),
                Err(e) => warn!(command = %line, error = %e, "cannot wait for callback"),
            }
            let mut running = registry.lock().unwrap_or_else(|p| p.into_inner());
            if running[slot] == pid {
                running[slot] = None;
            }
        });
        Ok(())
    }
}
