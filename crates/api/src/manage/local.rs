//! Calls carried out by the agent on this node: `POST /restart`, `DELETE /restart`,
//! `POST /reload`, `POST /reinitialize`. The API validates, then hands an [`ApiCommand`] to
//! the agent and relays its answer.

use super::{no_agent, text};
use crate::commands::{
    postgres_version_check, ApiCommand, CommandResult, RestartRequest, RestartRole,
};
use crate::pyvalue::parse_bool;
use crate::schedule::parse_schedule;
use crate::server::ApiContext;
use axum::response::Response;
use serde_json::{Map, Value};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a restart may take before the API gives up waiting for the agent's answer.
const RESTART_ANSWER_TIMEOUT: Duration = Duration::from_secs(900);
/// How long the agent may take to accept or refuse anything else.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn restart(ctx: &ApiContext, body: Map<String, Value>) -> Response {
    let paused = match ctx.dcs.get_cluster().await {
        Ok(c) => c.is_paused(),
        Err(_) => ctx.snapshot.borrow().paused,
    };
    if paused && body.contains_key("schedule") {
        return text(500, "Can't schedule restart in the paused state");
    }
    let request = match parse_restart(&body) {
        Ok(r) => r,
        Err((status, message)) => return text(status, &message),
    };
    let Some(tx) = ctx.commands.as_ref() else {
        return no_agent();
    };
    let scheduled = request.schedule.is_some();
    let (reply, answer) = oneshot::channel();
    let command = if scheduled {
        ApiCommand::ScheduleRestart { request, reply }
    } else {
        ApiCommand::Restart { request, reply }
    };
    let timeout = if scheduled {
        ANSWER_TIMEOUT
    } else {
        RESTART_ANSWER_TIMEOUT
    };
    match ask(tx, command, answer, timeout).await {
        Ok(message) => text(if scheduled { 202 } else { 200 }, &message),
        Err(refusal) => text(refusal.status, &refusal.message),
    }
}

/// Patroni's checks of the restart body, key by key; the first failure wins.
fn parse_restart(body: &Map<String, Value>) -> Result<RestartRequest, (u16, String)> {
    let mut request = RestartRequest::default();
    for (key, value) in body {
        match key.as_str() {
            "schedule" => {
                let text = value.as_str().unwrap_or_default();
                match parse_schedule(text, chrono::Utc::now()) {
                    Ok(at) => request.schedule = Some(at),
                    Err(e) => return Err((e.status(), e.message("restart"))),
                }
            }
            "role" => {
                request.role = match value.as_str() {
                    Some("master" | "primary") => Some(RestartRole::Primary),
                    Some("replica") => Some(RestartRole::Replica),
                    _ => {
                        return Err((
                            400,
                            "PostgreSQL role should be either primary or replica".into(),
                        ))
                    }
                }
            }
            "postgres_version" => {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                postgres_version_check(&text).map_err(|e| (400, e))?;
                request.postgres_version = Some(text);
            }
            "timeout" => {
                let seconds = match value {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => pgherd_config::parse_duration(s)
                        .ok()
                        .map(|d| d.as_secs_f64()),
                    _ => None,
                };
                match seconds.filter(|s| *s >= 1.0) {
                    Some(s) => request.timeout = Some(Duration::from_secs(s as u64)),
                    None => {
                        return Err((400, "Timeout should be a positive number of seconds".into()))
                    }
                }
            }
            "restart_pending" => request.restart_pending = crate::pyvalue::truthy(value),
            other => {
                return Err((
                    400,
                    format!("Unknown filter for the scheduled restart: {other}"),
                ))
            }
        }
    }
    Ok(request)
}

pub(super) async fn delete_restart(ctx: &ApiContext) -> Response {
    let Some(tx) = ctx.commands.as_ref() else {
        return no_agent();
    };
    let (reply, answer) = oneshot::channel();
    if tx
        .send(ApiCommand::CancelScheduledRestart { reply })
        .await
        .is_err()
    {
        return text(503, "the agent is not running");
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok(true)) => text(200, "scheduled restart deleted"),
        Ok(Ok(false)) => text(404, "no restarts are scheduled"),
        _ => text(503, "the agent did not answer"),
    }
}

pub(super) async fn reload(ctx: &ApiContext) -> Response {
    let Some(tx) = ctx.commands.as_ref() else {
        return no_agent();
    };
    if tx.send(ApiCommand::Reload).await.is_err() {
        return text(503, "the agent is not running");
    }
    text(202, "reload scheduled")
}

pub(super) async fn reinitialize(ctx: &ApiContext, body: Map<String, Value>) -> Response {
    let force = body.get("force").is_some_and(parse_bool);
    let name = ctx.snapshot.borrow().name.clone();
    match ctx.dcs.get_cluster().await {
        Ok(c) => match c.leader_name() {
            None => return text(503, "Cluster has no leader, can not reinitialize"),
            Some(leader) if leader == name => {
                return text(503, "I am the leader, can not reinitialize")
            }
            Some(_) => {}
        },
        Err(e) => return text(503, &format!("cannot read the DCS: {e}")),
    }
    let Some(tx) = ctx.commands.as_ref() else {
        return no_agent();
    };
    let (reply, answer) = oneshot::channel();
    match ask(
        tx,
        ApiCommand::Reinitialize { force, reply },
        answer,
        ANSWER_TIMEOUT,
    )
    .await
    {
        Ok(message) => text(200, &message),
        Err(refusal) => text(refusal.status, &refusal.message),
    }
}

/// Sends `command` and waits for the agent's answer.
async fn ask(
    tx: &tokio::sync::mpsc::Sender<ApiCommand>,
    command: ApiCommand,
    answer: oneshot::Receiver<CommandResult>,
    timeout: Duration,
) -> CommandResult {
    if tx.send(command).await.is_err() {
        return Err(crate::Refusal::unavailable("the agent is not running"));
    }
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(crate::Refusal::unavailable("the agent dropped the request")),
        Err(_) => Err(crate::Refusal::unavailable(
            "the agent did not answer in time",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<RestartRequest, (u16, String)> {
        parse_restart(v.as_object().unwrap())
    }

    #[test]
    fn restart_body_errors_are_patronis() {
        assert_eq!(
            parse(json!({"foo": 1})).unwrap_err(),
            (400, "Unknown filter for the scheduled restart: foo".into())
        );
        assert_eq!(
            parse(json!({"role": "leader"})).unwrap_err(),
            (
                400,
                "PostgreSQL role should be either primary or replica".into()
            )
        );
        assert_eq!(
            parse(json!({"postgres_version": "10"})).unwrap_err(),
            (
                400,
                "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 10".into()
            )
        );
        assert_eq!(
            parse(json!({"timeout": 0})).unwrap_err(),
            (400, "Timeout should be a positive number of seconds".into())
        );
        assert_eq!(
            parse(json!({"schedule": "2030-01-01T00:00:00"})).unwrap_err(),
            (
                400,
                "Timezone information is mandatory for the scheduled restart".into()
            )
        );
        assert_eq!(
            parse(json!({"schedule": "2001-01-01T00:00:00Z"}))
                .unwrap_err()
                .0,
            422
        );
        let ok = parse(
            json!({"role": "master", "timeout": "30s", "restart_pending": true,
                              "postgres_version": "16.1"}),
        )
        .unwrap();
        assert_eq!(ok.role, Some(RestartRole::Primary));
        assert_eq!(ok.timeout, Some(Duration::from_secs(30)));
        assert!(ok.restart_pending);
    }
}
