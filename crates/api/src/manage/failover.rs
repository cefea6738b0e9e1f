//! `POST /switchover`, `POST /failover`, `DELETE /switchover`
//! (docs/compat.md#switchover-and-failover-requests): validation in Patroni's order, the
//! `failover` key write, then waiting for the outcome in the DCS.

use super::{error_page, text, wake};
use crate::pyvalue::truthy;
use crate::schedule::{parse_schedule, python_isoformat};
use crate::server::ApiContext;
use axum::response::Response;
use pgherd_dcs::{Cluster, Failover, Member};
use serde_json::{Map, Value};
use std::time::Duration;

/// How often the outcome is re-read from the DCS while waiting.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// A planned switchover or a manual failover: `POST /switchover` / `POST /failover` here, and
/// `pgherd switchover` / `pgherd failover` in `pgherd-ctl`. The words are Patroni's, which
/// patronictl and scripts compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchoverAction {
    Switchover,
    Failover,
}

impl SwitchoverAction {
    /// `switchover` / `failover`: the endpoint's name and the word in messages.
    pub fn name(self) -> &'static str {
        match self {
            SwitchoverAction::Switchover => "switchover",
            SwitchoverAction::Failover => "failover",
        }
    }
    /// `Switchover` / `Failover`, at the start of a message.
    pub fn title(self) -> &'static str {
        match self {
            SwitchoverAction::Switchover => "Switchover",
            SwitchoverAction::Failover => "Failover",
        }
    }
    /// `Successfully switched over` / `failed over`.
    pub fn past(self) -> &'static str {
        match self {
            SwitchoverAction::Switchover => "switched",
            SwitchoverAction::Failover => "failed",
        }
    }
}

/// A string field; Patroni treats empty and non-string values as absent.
fn field<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub(super) async fn post(
    ctx: &ApiContext,
    action: SwitchoverAction,
    body: Map<String, Value>,
) -> Response {
    let leader = field(&body, "leader");
    let candidate = field(&body, "candidate").or_else(|| field(&body, "member"));
    let scheduled_at = body.get("scheduled_at").filter(|v| truthy(v));
    let cluster = match ctx.dcs.get_cluster().await {
        Ok(c) => c,
        Err(e) => return text(503, &format!("cannot read the DCS: {e}")),
    };
    tracing::info!(
        "received {} request with leader={leader:?} candidate={candidate:?} scheduled_at={scheduled_at:?}",
        action.name()
    );

    // 1. Who from, who to.
    if action == SwitchoverAction::Failover && candidate.is_none() {
        return text(
            400,
            "Failover could be performed only to a specific candidate",
        );
    }
    if action == SwitchoverAction::Switchover && leader.is_none() {
        return text(
            400,
            "Switchover could be performed only from a specific leader",
        );
    }
    // 2. Schedule.
    let mut schedule = None;
    if let Some(at) = scheduled_at {
        if leader.is_none() {
            return text(
                400,
                &format!(
                    "Scheduled {} is possible only from a specific leader",
                    action.name()
                ),
            );
        }
        if cluster.is_paused() {
            return text(
                400,
                &format!("Can't schedule {} in the paused state", action.name()),
            );
        }
        let Some(at) = at.as_str() else {
            return text(
                422,
                &crate::schedule::ScheduleError::Unparsable.message(action.name()),
            );
        };
        match parse_schedule(at, chrono::Utc::now()) {
            Ok(at) => schedule = Some(at),
            Err(e) => return text(e.status(), &e.message(action.name())),
        }
    }
    // 3. Pause.
    if cluster.is_paused() && candidate.is_none() {
        return text(
            400,
            &format!(
                "{} is possible only to a specific candidate in a paused state",
                action.title()
            ),
        );
    }
    // 4. Feasibility, now (a scheduled request is checked by the leader when it is due).
    if schedule.is_none() {
        if let Err(reason) = is_failover_possible(ctx, &cluster, leader, candidate, action).await {
            return text(412, &reason);
        }
    }
    // 5. The request.
    let request = Failover {
        leader: leader.map(str::to_string),
        member: candidate.map(str::to_string),
        scheduled_at: schedule.as_ref().map(python_isoformat),
    };
    match ctx.dcs.set_failover(&request, None).await {
        Ok(true) => {}
        Ok(false) | Err(_) => {
            return text(
                503,
                &format!("failed to write {} key into DCS", action.name()),
            )
        }
    }
    wake(ctx);
    // 6. The outcome.
    if schedule.is_some() {
        return text(202, &format!("{} scheduled", action.title()));
    }
    let loop_wait = cluster
        .config
        .as_ref()
        .and_then(|c| c.value.get("loop_wait"))
        .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
        .map(Duration::from_secs_f64)
        .unwrap_or_else(|| ctx.snapshot.borrow().loop_wait);
    let timeout = 2 * loop_wait.max(Duration::from_secs(10));
    let (status, message) =
        poll_result(ctx, cluster.leader_name(), candidate, action, timeout).await;
    text(status, &message)
}

/// Patroni's `is_failover_possible`: `Err(reason)` for a 412.
async fn is_failover_possible(
    ctx: &ApiContext,
    cluster: &Cluster,
    leader: Option<&str>,
    candidate: Option<&str>,
    action: SwitchoverAction,
) -> Result<(), String> {
    if let Some(leader) = leader {
        if cluster.leader_name() != Some(leader) {
            return Err("leader name does not match".into());
        }
    }
    let synchronous = cluster
        .config
        .as_ref()
        .and_then(|c| c.value.get("synchronous_mode"))
        .is_some_and(crate::pyvalue::parse_bool);
    let sync_members = cluster
        .sync_state()
        .map(|s| s.standbys())
        .unwrap_or_default();
    if candidate.is_some() && candidate == cluster.leader_name() {
        // Patroni would write the request and answer 503 after its leader cleared it.
        return Err("candidate is already the leader".into());
    }
    let members: Vec<&Member> = if let Some(candidate) = candidate {
        if action == SwitchoverAction::Switchover
            && synchronous
            && !sync_members.iter().any(|m| m == candidate)
        {
            return Err("candidate name does not match with sync_standby".into());
        }
        let found: Vec<&Member> = cluster.members.get(candidate).into_iter().collect();
        if found.is_empty() {
            return Err("candidate does not exists".into());
        }
        found
    } else if synchronous {
        let found: Vec<&Member> = cluster
            .members
            .values()
            .filter(|m| sync_members.contains(&m.name))
            .collect();
        if found.is_empty() {
            return Err(format!(
                "{} is not possible: can not find sync_standby",
                action.name()
            ));
        }
        found
    } else {
        let found: Vec<&Member> = cluster
            .members
            .values()
            .filter(|m| {
                Some(m.name.as_str()) != cluster.leader_name() && !m.data.api_url.is_empty()
            })
            .collect();
        if found.is_empty() {
            return Err(format!(
                "{} is not possible: cluster does not have members except leader",
                action.name()
            ));
        }
        found
    };
    // Concurrently: each probe is bounded by the peer client's timeout (2 s).
    let probes = futures::future::join_all(members.iter().map(|m| probe(ctx, m))).await;
    if probes.into_iter().any(|ok| ok) {
        Ok(())
    } else {
        Err(format!(
            "{} is not possible: no good candidates have been found",
            action.name()
        ))
    }
}

/// `GET <api_url>`: reachable, not tagged `nofailover`, watchdog not failed (Patroni's
/// `failover_limitation() is None`).
async fn probe(ctx: &ApiContext, member: &Member) -> bool {
    if member.data.api_url.is_empty() {
        return false;
    }
    let body = match &ctx.peers {
        Some(peers) => peers.status(&member.data.api_url).await,
        None => http_status(ctx, member).await,
    };
    let Some(body) = body else {
        return false;
    };
    let nofailover = body
        .get("tags")
        .and_then(|t| t.get("nofailover"))
        .is_some_and(truthy);
    let watchdog_failed = body.get("watchdog_failed").is_some_and(truthy);
    !nofailover && !watchdog_failed
}

async fn http_status(ctx: &ApiContext, member: &Member) -> Option<Value> {
    let peer_client = ctx.settings().peer_client.clone();
    match peer_client.get(&member.data.api_url).send().await {
        Ok(r) => r.json().await.ok(),
        Err(e) => {
            tracing::debug!(member = %member.name, "candidate probe failed: {e}");
            None
        }
    }
}

/// Patroni's `poll_failover_result`: wait for the leader key to move away from `old_leader`.
async fn poll_result(
    ctx: &ApiContext,
    old_leader: Option<&str>,
    candidate: Option<&str>,
    action: SwitchoverAction,
    timeout: Duration,
) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(POLL_EVERY).await;
        let cluster = match ctx.dcs.get_cluster().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("polling the {} result: {e}", action.name());
                continue;
            }
        };
        if let Some(new) = cluster.leader_name().filter(|l| Some(*l) != old_leader) {
            return match candidate {
                Some(c) if c != new => (
                    200,
                    format!(
                        "{} over to \"{new}\" instead of \"{c}\"",
                        capitalize(action.past())
                    ),
                ),
                _ => (
                    200,
                    format!("Successfully {} over to \"{new}\"", action.past()),
                ),
            };
        }
        if cluster.failover_request().is_none() {
            return (503, format!("{} failed", action.title()));
        }
    }
    // A request still standing with the old leader still in place never fires later by
    // surprise (e.g. on resume): it is withdrawn, and the answer is a plain failure
    // (docs/compat.md#rest-differences). One whose leader already let go is under way.
    if let Ok(cluster) = ctx.dcs.get_cluster().await {
        let standing = cluster
            .failover
            .as_ref()
            .filter(|f| f.value.is_present() && f.value.scheduled_at.is_none());
        if let Some(f) = standing.filter(|_| cluster.leader_name() == old_leader) {
            if let Ok(true) = ctx.dcs.set_failover(&Failover::none(), Some(f.index)).await {
                tracing::warn!(
                    "{}: no new leader within {timeout:?}: request withdrawn",
                    action.name()
                );
                return (503, format!("{} failed", action.title()));
            }
        }
    }
    (503, format!("{} status unknown", action.title()))
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Cancels a scheduled switchover (compare-and-swap `{}` on the key's index).
pub(super) async fn delete(ctx: &ApiContext) -> Response {
    let cluster = match ctx.dcs.get_cluster().await {
        Ok(c) => c,
        Err(e) => return text(503, &format!("cannot read the DCS: {e}")),
    };
    match cluster
        .failover
        .as_ref()
        .filter(|f| f.value.scheduled_at.is_some())
    {
        Some(f) => match ctx.dcs.set_failover(&Failover::none(), Some(f.index)).await {
            Ok(true) => {
                wake(ctx);
                text(200, "scheduled switchover deleted")
            }
            Ok(false) => error_page(409, "the switchover request changed meanwhile; try again"),
            Err(e) => text(503, &format!("cannot write the failover key: {e}")),
        },
        None => text(404, "no switchover is scheduled"),
    }
}
