//! `switchover` and `failover`, with patronictl's checks, prompts and messages: the request
//! goes to the leader's `POST /switchover` (or `/failover`), which waits for the outcome.

use crate::console::{confirm, prompt, timestamp};
use crate::Ctl;
use anyhow::{bail, Result};
use chrono::{DateTime, FixedOffset, Local, TimeZone};
use pgherd_api::schedule::{parse_timestamp, python_isoformat, Timestamp};
use pgherd_api::SwitchoverAction;
use pgherd_dcs::{Cluster, Failover, Member};
use serde_json::json;

#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--leader`/`--primary`/`--master`.
    pub leader: Option<String>,
    pub candidate: Option<String>,
    /// `--scheduled` (switchover only): a timestamp or `now`.
    pub scheduled: Option<String>,
    pub force: bool,
}

/// patronictl's `parse_scheduled`: `now` (or nothing) is immediate; a timestamp without an
/// offset is local time.
pub fn parse_scheduled(text: Option<&str>) -> Result<Option<DateTime<FixedOffset>>> {
    let text = match text.map(str::trim) {
        None | Some("") | Some("now") => return Ok(None),
        Some(t) => t,
    };
    let parsed = match parse_timestamp(text) {
        Some(Timestamp::Aware(at)) => Some(at),
        Some(Timestamp::Naive(naive)) => Local
            .from_local_datetime(&naive)
            .single()
            .map(|at| at.fixed_offset()),
        None => None,
    };
    match parsed {
        Some(at) => Ok(Some(at)),
        None => bail!(
            "Unable to parse scheduled timestamp ({text}). It should be in an unambiguous format (e.g. ISO 8601)"
        ),
    }
}

/// An example for the "when" prompt: the next hour, as patronictl shows it.
pub fn next_hour_example() -> String {
    (Local::now() + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string()
}

pub async fn run(ctl: &Ctl, action: SwitchoverAction, req: Request) -> Result<()> {
    let cluster = ctl.cluster().await?;
    println!("Current cluster topology");
    print!("{}", ctl.members_table(&cluster));
    let current = cluster.leader_name().map(str::to_string);
    if action == SwitchoverAction::Switchover && current.is_none() {
        bail!("This cluster has no leader");
    }

    let leader = match req.leader.clone() {
        Some(l) => Some(l),
        None if req.force || action == SwitchoverAction::Failover => current.clone(),
        None => {
            let what = if is_standby_cluster(&cluster) {
                "Standby Leader"
            } else {
                "Primary"
            };
            Some(prompt(what, current.as_deref())?)
        }
    };
    if let (Some(l), Some(c)) = (&leader, &current) {
        if l != c {
            bail!("Member {l} is not the leader of cluster {}", ctl.scope);
        }
    }

    let mut candidates: Vec<String> = cluster
        .members
        .values()
        .filter(|m| Some(&m.name) != leader.as_ref() && !m.data.nofailover())
        .map(|m| m.name.clone())
        .collect();
    candidates.sort();
    if candidates.is_empty() {
        bail!("No candidates found to {} to", action.name());
    }
    let candidate = match req.candidate.clone() {
        Some(c) => Some(c),
        None if req.force => None,
        None => {
            let listed: Vec<String> = candidates.iter().map(|c| format!("'{c}'")).collect();
            let answer = prompt(&format!("Candidate [{}]", listed.join(", ")), Some(""))?;
            Some(answer).filter(|a| !a.is_empty())
        }
    };
    if action == SwitchoverAction::Failover && candidate.is_none() {
        bail!("Failover could be performed only to a specific candidate");
    }
    if candidate.is_some() && candidate == leader {
        bail!("{} target and source are the same.", action.title());
    }
    if let Some(c) = &candidate {
        if !candidates.contains(c) {
            bail!("Member {c} does not exist in cluster {}", ctl.scope);
        }
    }

    let mut scheduled_at = None;
    if action == SwitchoverAction::Switchover {
        let when = match req.scheduled.clone() {
            Some(w) => Some(w),
            None if req.force => None,
            None => Some(prompt(
                &format!(
                    "When should the switchover take place (e.g. {} ) ",
                    next_hour_example()
                ),
                Some("now"),
            )?),
        };
        scheduled_at = parse_scheduled(when.as_deref())?;
        if scheduled_at.is_some() && cluster.is_paused() {
            bail!("Can't schedule switchover in the paused state");
        }
    }
    let scheduled_str = scheduled_at.as_ref().map(python_isoformat);

    if !req.force {
        let demote = leader
            .as_deref()
            .map(|l| format!(", demoting current leader {l}"))
            .unwrap_or_default();
        let question = match &scheduled_str {
            Some(at) => format!(
                "Are you sure you want to schedule {} of cluster {} at {at}{demote}?",
                action.name(),
                ctl.scope
            ),
            None => format!(
                "Are you sure you want to {} cluster {}{demote}?",
                action.name(),
                ctl.scope
            ),
        };
        if !confirm(&question)? {
            match scheduled_str {
                Some(_) => bail!("Aborting scheduled {}", action.name()),
                None => bail!("Aborting {}", action.name()),
            }
        }
    }

    let body = json!({
        "leader": leader,
        "candidate": candidate,
        "scheduled_at": scheduled_str,
    });
    // The leader first (it is the one that acts); if its API cannot be reached, the
    // candidate's API writes the same request.
    let targets: Vec<&Member> = [current.as_deref(), candidate.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|name| cluster.members.get(name))
        .collect();
    let mut answered = None;
    for member in targets {
        match ctl
            .rest()?
            .call(member, reqwest::Method::POST, action.name(), Some(&body))
            .await
        {
            Ok(answer) => {
                answered = Some(answer);
                break;
            }
            Err(e) => tracing::warn!("{e:#}"),
        }
    }
    match answered {
        Some(answer) if answer.status == 200 || answer.status == 202 => {
            println!("{} {}", timestamp(), answer.message());
        }
        Some(answer) => bail!(
            "{} failed, details: {}, {}",
            action.title(),
            answer.status,
            answer.message()
        ),
        None => {
            println!(
                "{} Could not {} using Patroni api, falling back to DCS",
                timestamp(),
                action.name()
            );
            let request = Failover {
                leader: leader.clone(),
                member: candidate.clone(),
                scheduled_at: scheduled_str,
            };
            if !ctl.dcs.set_failover(&request, None).await? {
                bail!("could not write the failover key");
            }
        }
    }
    let after = ctl.cluster().await?;
    print!("{}", ctl.members_table(&after));
    Ok(())
}

fn is_standby_cluster(cluster: &Cluster) -> bool {
    cluster
        .config
        .as_ref()
        .and_then(|c| c.value.get("standby_cluster"))
        .is_some_and(|v| v.as_object().is_some_and(|o| !o.is_empty()))
}
