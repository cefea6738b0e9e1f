//! Management calls that act on the local node (restart, reload, reinitialize, scheduled
//! restarts) are not carried out by the API: they are sent to the agent as [`ApiCommand`]s,
//! so that they go through the agent's loop like everything else it does. Cluster-wide calls
//! (switchover, failover, configuration) are DCS writes done by the API itself.
//!
//! # Contract for the agent
//!
//! The agent owns the receiving end of the `mpsc` channel given to
//! [`ApiContext::with_commands`](crate::ApiContext::with_commands) and handles each command
//! as below. Every `reply` must be answered (dropping it makes the API answer 503); the API
//! waits for it while the HTTP client waits for its answer.
//!
//! - [`ApiCommand::Restart`] (`POST /restart` without `schedule`): if
//!   [`RestartRequest::conditions_met`] fails, reply `Err(Refusal::conditions_not_satisfied())`;
//!   if another long action runs, `Err(Refusal::in_progress("<action>"))`; otherwise restart
//!   PostgreSQL in its current role (a primary keeps the leader key and is restarted as
//!   primary; the start wait is bounded by `request.timeout`, default `primary_start_timeout`)
//!   and reply **after** it is up again: `Ok("restarted successfully")`, or
//!   `Err(Refusal::restart_failed())`.
//! - [`ApiCommand::ScheduleRestart`] (`POST /restart` with a future `schedule`): if a restart
//!   is already scheduled, `Err(Refusal::already_scheduled())`; otherwise store the request,
//!   publish it in the member key and `NodeSnapshot::scheduled_restart` as
//!   [`RestartRequest::to_member_value`] (with the current postmaster start time), and reply
//!   `Ok("Restart scheduled")` at once. At `schedule` (Patroni: run when due, drop it if more
//!   than `1.5 * loop_wait` late), run it like `Restart` (conditions checked then) and clear it.
//!   Cancel it if the postmaster start time changed meanwhile. To survive an agent restart,
//!   read it back from our own member key at startup with
//!   [`RestartRequest::from_member_value`].
//! - [`ApiCommand::CancelScheduledRestart`] (`DELETE /restart`): clear the scheduled restart
//!   (member key and snapshot); reply `true` if there was one.
//! - [`ApiCommand::Reload`] (`POST /reload`): like SIGHUP: re-read the configuration file and
//!   apply what changed (PostgreSQL parameters: rewrite and reload). No reply: the API answers
//!   202 `reload scheduled` as Patroni.
//! - [`ApiCommand::Reinitialize`] (`POST /reinitialize`): the API already refused when the
//!   cluster has no leader or we hold it (re-check: `Err(Refusal::unavailable("Cluster has no
//!   leader, can not reinitialize"))` / `"I am the leader, can not reinitialize"`). If another
//!   long action runs: with `force`, cancel it; else `Err(Refusal::in_progress("<action>"))`.
//!   Then stop PostgreSQL immediately, wipe the data directory and clone from the leader (or
//!   a `clonefrom` member) in the background, and reply `Ok("reinitialize started")` as soon
//!   as it started. The member state is `creating replica` until the clone is done.
//! - [`ApiCommand::Wake`]: run an HA cycle now (the DCS `config` or `failover` key was just
//!   written). Never answered.

use chrono::{DateTime, FixedOffset};
use pgherd_dcs::Role;
use serde_json::{Map, Value};
use std::time::Duration;
use tokio::sync::oneshot;

/// What the agent answers: the success message, or why not.
pub type CommandResult = Result<String, Refusal>;

/// A request the API hands to the agent.
#[derive(Debug)]
pub enum ApiCommand {
    Restart {
        request: RestartRequest,
        reply: oneshot::Sender<CommandResult>,
    },
    ScheduleRestart {
        request: RestartRequest,
        reply: oneshot::Sender<CommandResult>,
    },
    CancelScheduledRestart {
        reply: oneshot::Sender<bool>,
    },
    Reload,
    Reinitialize {
        force: bool,
        reply: oneshot::Sender<CommandResult>,
    },
    Wake,
}

/// A refusal: HTTP status and Patroni's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    pub fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }

    /// 503 with any message.
    pub fn unavailable(message: impl Into<String>) -> Refusal {
        Refusal::new(503, message)
    }

    /// 503 `restart conditions are not satisfied`.
    pub fn conditions_not_satisfied() -> Refusal {
        Refusal::unavailable("restart conditions are not satisfied")
    }

    /// 503 `<action> already in progress`, e.g. `restart already in progress`.
    pub fn in_progress(action: &str) -> Refusal {
        Refusal::unavailable(format!("{action} already in progress"))
    }

    /// 503 `postgres is still starting`.
    pub fn still_starting() -> Refusal {
        Refusal::unavailable("postgres is still starting")
    }

    /// 503 `restart failed`.
    pub fn restart_failed() -> Refusal {
        Refusal::unavailable("restart failed")
    }

    /// 409 `Another restart is already scheduled`.
    pub fn already_scheduled() -> Refusal {
        Refusal::new(409, "Another restart is already scheduled")
    }
}

/// `role` filter of a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartRole {
    Primary,
    Replica,
}

impl RestartRole {
    /// Patroni's spelling in the member key.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartRole::Primary => "master",
            RestartRole::Replica => "replica",
        }
    }
}

/// A validated `POST /restart` body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RestartRequest {
    /// When to restart (`None`: now).
    pub schedule: Option<DateTime<FixedOffset>>,
    /// Restart only if our role is this one.
    pub role: Option<RestartRole>,
    /// Restart only if the running server is older than this (`X.Y` or `X.Y.Z`), kept as given.
    pub postgres_version: Option<String>,
    /// Bound on the start wait (default `primary_start_timeout`).
    pub timeout: Option<Duration>,
    /// Restart only if a parameter change is pending a restart.
    pub restart_pending: bool,
}

impl RestartRequest {
    /// Patroni's `restart_matches`: `Err(reason)` when a filter excludes this node.
    /// `server_version` is `server_version_num` (e.g. `150018`).
    pub fn conditions_met(
        &self,
        role: Role,
        server_version: u32,
        pending_restart: bool,
    ) -> Result<(), &'static str> {
        if let Some(wanted) = self.role {
            let matches = match wanted {
                RestartRole::Primary => role == Role::Primary,
                RestartRole::Replica => role == Role::Replica,
            };
            if !matches {
                return Err("host role mismatch");
            }
        }
        if let Some(v) = self
            .postgres_version
            .as_deref()
            .and_then(postgres_version_num)
        {
            if v <= server_version {
                return Err("postgres version mismatch");
            }
        }
        if self.restart_pending && !pending_restart {
            return Err("pending restart flag is not set");
        }
        Ok(())
    }

    /// The member key's `scheduled_restart` object, as Patroni publishes it.
    pub fn to_member_value(&self, postmaster_start_time: Option<&str>) -> Value {
        let mut o = Map::new();
        if let Some(at) = &self.schedule {
            o.insert(
                "schedule".into(),
                crate::schedule::python_isoformat(at).into(),
            );
        }
        if let Some(role) = self.role {
            o.insert("role".into(), role.as_str().into());
        }
        if let Some(v) = &self.postgres_version {
            o.insert("postgres_version".into(), v.clone().into());
        }
        if let Some(t) = self.timeout {
            o.insert("timeout".into(), t.as_secs().into());
        }
        if self.restart_pending {
            o.insert("restart_pending".into(), true.into());
        }
        if let Some(t) = postmaster_start_time {
            o.insert("postmaster_start_time".into(), t.into());
        }
        Value::Object(o)
    }

    /// Reads back [`Self::to_member_value`] (e.g. from our member key after a restart of the
    /// agent). `None` if it has no valid `schedule`.
    pub fn from_member_value(value: &Value) -> Option<RestartRequest> {
        let o = value.as_object()?;
        let schedule = match crate::schedule::parse_timestamp(o.get("schedule")?.as_str()?)? {
            crate::schedule::Timestamp::Aware(at) => at,
            crate::schedule::Timestamp::Naive(_) => return None,
        };
        Some(RestartRequest {
            schedule: Some(schedule),
            role: match o.get("role").and_then(Value::as_str) {
                Some("master" | "primary") => Some(RestartRole::Primary),
                Some("replica") => Some(RestartRole::Replica),
                _ => None,
            },
            postgres_version: o
                .get("postgres_version")
                .and_then(Value::as_str)
                .map(str::to_string),
            timeout: o
                .get("timeout")
                .and_then(Value::as_u64)
                .map(Duration::from_secs),
            restart_pending: o.get("restart_pending").is_some_and(crate::pyvalue::truthy),
        })
    }
}

/// Patroni's `postgres_version_to_int`: `9.5.3` -> 90503, `10.1` -> 100001. `None` if the
/// text is not a version Patroni accepts.
pub fn postgres_version_num(text: &str) -> Option<u32> {
    postgres_version_check(text).ok()
}

/// [`postgres_version_num`] with Patroni's error message.
pub(crate) fn postgres_version_check(text: &str) -> Result<u32, String> {
    let parts: Result<Vec<u32>, _> = text.split('.').map(str::parse::<u32>).collect();
    let Ok(mut parts) = parts else {
        return Err(format!("Invalid PostgreSQL version: {text}"));
    };
    if parts.len() < 2 || (parts.len() == 2 && parts[0] < 10) || parts.len() > 3 {
        return Err(format!(
            "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {text}"
        ));
    }
    if parts.len() == 2 {
        parts.insert(1, 0);
    }
    if parts[1] > 99 || parts[2] > 99 {
        return Err(format!("Invalid PostgreSQL version: {text}"));
    }
    Ok(parts[0] * 10_000 + parts[1] * 100 + parts[2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_like_patroni() {
        assert_eq!(postgres_version_num("9.5.3"), Some(90503));
        assert_eq!(postgres_version_num("10.1"), Some(100001));
        assert_eq!(postgres_version_num("15.18"), Some(150018));
        assert_eq!(
            postgres_version_check("10"),
            Err("Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 10".into())
        );
        assert!(postgres_version_check("9.6").is_err());
        assert_eq!(
            postgres_version_check("a.b.c"),
            Err("Invalid PostgreSQL version: a.b.c".into())
        );
    }

    #[test]
    fn conditions() {
        let any = RestartRequest::default();
        assert!(any.conditions_met(Role::Replica, 150018, false).is_ok());
        let pending = RestartRequest {
            restart_pending: true,
            ..RestartRequest::default()
        };
        assert!(pending
            .conditions_met(Role::Primary, 150018, false)
            .is_err());
        assert!(pending.conditions_met(Role::Primary, 150018, true).is_ok());
        let primary = RestartRequest {
            role: Some(RestartRole::Primary),
            ..RestartRequest::default()
        };
        assert!(primary.conditions_met(Role::Replica, 150018, true).is_err());
        let older = RestartRequest {
            postgres_version: Some("15.18".into()),
            ..RestartRequest::default()
        };
        assert!(older.conditions_met(Role::Replica, 150018, true).is_err());
        assert!(older.conditions_met(Role::Replica, 150017, true).is_ok());
    }

    #[test]
    fn member_value_round_trip() {
        let req = RestartRequest {
            schedule: Some(DateTime::parse_from_rfc3339("2030-01-01T00:00:00+00:00").unwrap()),
            role: Some(RestartRole::Replica),
            postgres_version: Some("16.1".into()),
            timeout: Some(Duration::from_secs(30)),
            restart_pending: true,
        };
        let v = req.to_member_value(Some("2026-01-01 00:00:00.1+00:00"));
        assert_eq!(
            v,
            json!({"schedule": "2030-01-01T00:00:00+00:00", "role": "replica",
                   "postgres_version": "16.1", "timeout": 30, "restart_pending": true,
                   "postmaster_start_time": "2026-01-01 00:00:00.1+00:00"})
        );
        assert_eq!(RestartRequest::from_member_value(&v), Some(req));
    }
}
