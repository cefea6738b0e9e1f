//! Commands on chosen members: `restart`, `reload`, `reinit` (patronictl's `get_members`
//! selection, prompts and messages).

use crate::console::{confirm, prompt};
use crate::switchover::{next_hour_example, parse_scheduled};
use crate::Ctl;
use anyhow::{bail, Result};
use pgherd_api::schedule::python_isoformat;
use pgherd_dcs::{Cluster, Member};
use rand::seq::SliceRandom;
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// patronictl's `--role` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleFilter {
    Leader,
    Primary,
    StandbyLeader,
    Replica,
    Any,
}

impl std::str::FromStr for RoleFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "leader" => RoleFilter::Leader,
            "primary" | "master" => RoleFilter::Primary,
            "standby-leader" => RoleFilter::StandbyLeader,
            "replica" | "standby" => RoleFilter::Replica,
            "any" => RoleFilter::Any,
            other => {
                return Err(format!(
                    "invalid role {other:?}: expected leader, primary, standby-leader, replica, standby, any or master"
                ))
            }
        })
    }
}

impl RoleFilter {
    pub fn name(self) -> &'static str {
        match self {
            RoleFilter::Leader => "leader",
            RoleFilter::Primary => "primary",
            RoleFilter::StandbyLeader => "standby-leader",
            RoleFilter::Replica => "replica",
            RoleFilter::Any => "any",
        }
    }
}

/// Members with `role` (patronictl's `get_all_members`), sorted by name.
pub fn members_with_role(cluster: &Cluster, role: RoleFilter) -> Vec<&Member> {
    let leader = cluster.leader_name();
    match role {
        RoleFilter::Leader | RoleFilter::Primary | RoleFilter::StandbyLeader => {
            let Some(member) = cluster.leader_member() else {
                return Vec::new();
            };
            let published = member.data.role.map(|r| r.as_str());
            let ok = match role {
                RoleFilter::Leader => true,
                RoleFilter::Primary => published != Some("standby_leader"),
                _ => published != Some("master"),
            };
            if ok {
                vec![member]
            } else {
                Vec::new()
            }
        }
        RoleFilter::Replica => cluster
            .members
            .values()
            .filter(|m| Some(m.name.as_str()) != leader)
            .collect(),
        RoleFilter::Any => cluster.members.values().collect(),
    }
}

/// patronictl's `get_members`: shows the cluster, narrows `names` to members with `role`,
/// asks which member when none was named (unless forced), confirms.
pub fn choose<'c>(
    ctl: &Ctl,
    cluster: &'c Cluster,
    names: &[String],
    role: RoleFilter,
    force: bool,
    action: &str,
    ask_confirmation: bool,
) -> Result<Vec<&'c Member>> {
    let candidates = members_with_role(cluster, role);
    let candidate_names: Vec<&str> = candidates.iter().map(|m| m.name.as_str()).collect();
    if names.is_empty() && candidates.is_empty() {
        bail!("{} cluster doesn't have any members", ctl.scope);
    }
    print!("{}", ctl.members_table(cluster));
    let mut chosen: Vec<String> = if !names.is_empty() {
        let mut picked: Vec<String> = names
            .iter()
            .filter(|n| candidate_names.contains(&n.as_str()))
            .cloned()
            .collect();
        picked.sort();
        picked.dedup();
        if picked.is_empty() {
            bail!("No {} among provided members", role.name());
        }
        picked
    } else if action != "reinitialize" {
        candidate_names.iter().map(|n| n.to_string()).collect()
    } else {
        Vec::new()
    };
    if chosen.is_empty() && !force {
        let answer = prompt(
            &format!(
                "Which member do you want to {action} [{}]?",
                candidate_names.join(", ")
            ),
            Some(""),
        )?;
        chosen = vec![answer];
    }
    if chosen.is_empty() {
        bail!("no member to {action}: name one");
    }
    for name in &chosen {
        if !candidate_names.contains(&name.as_str()) {
            bail!("{name} is not a member of cluster");
        }
    }
    let members: Vec<&Member> = candidates
        .into_iter()
        .filter(|m| chosen.contains(&m.name))
        .collect();
    if ask_confirmation {
        confirm_action(&members, force, action, None)?;
    }
    Ok(members)
}

fn confirm_action(members: &[&Member], force: bool, action: &str, at: Option<&str>) -> Result<()> {
    if force {
        return Ok(());
    }
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let names = names.join(", ");
    match at {
        Some(at) => {
            if !confirm(&format!(
                "Are you sure you want to schedule {action} of members {names} at {at}?"
            ))? {
                bail!("Aborted scheduled {action}");
            }
        }
        None => {
            if !confirm(&format!(
                "Are you sure you want to {action} members {names}?"
            ))? {
                bail!("Aborted {action}");
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub struct RestartArgs {
    pub members: Vec<String>,
    pub role: Option<RoleFilter>,
    /// Restart one random member of the selection.
    pub any: bool,
    pub scheduled: Option<String>,
    pub pg_version: Option<String>,
    pub pending: bool,
    pub timeout: Option<String>,
    pub force: bool,
}

pub async fn restart(ctl: &Ctl, args: RestartArgs) -> Result<()> {
    let cluster = ctl.cluster().await?;
    let role = args.role.unwrap_or(RoleFilter::Any);
    let mut members = choose(
        ctl,
        &cluster,
        &args.members,
        role,
        args.force,
        "restart",
        false,
    )?;
    let scheduled = match args.scheduled.clone() {
        None if !args.force => Some(prompt(
            &format!(
                "When should the restart take place (e.g. {}) ",
                next_hour_example()
            ),
            Some("now"),
        )?),
        other => other,
    };
    let scheduled_at = parse_scheduled(scheduled.as_deref())?;
    let at_text = scheduled_at.as_ref().map(python_isoformat);
    confirm_action(&members, args.force, "restart", at_text.as_deref())?;
    if args.any {
        members.shuffle(&mut rand::thread_rng());
        members.truncate(1);
    }
    let version = match args.pg_version.clone() {
        None if !args.force => Some(prompt(
            "Restart if the PostgreSQL version is less than provided (e.g. 9.5.2) ",
            Some(""),
        )?),
        other => other,
    }
    .filter(|v| !v.is_empty());

    let mut content = Map::new();
    if args.pending {
        content.insert("restart_pending".into(), true.into());
    }
    if let Some(v) = &version {
        if pgherd_api::postgres_version_num(v).is_none() {
            bail!("Invalid PostgreSQL version: {v}: X.Y or X.Y.Z is accepted");
        }
        content.insert("postgres_version".into(), v.clone().into());
    }
    if let Some(at) = &at_text {
        if cluster.is_paused() {
            bail!("Can't schedule restart in the paused state");
        }
        content.insert("schedule".into(), at.clone().into());
    }
    if let Some(t) = &args.timeout {
        content.insert("timeout".into(), t.clone().into());
    }
    let filtered = args.pending || version.is_some();
    let body = Value::Object(content);
    let mut failed = 0;
    for member in members {
        if at_text.is_some() && args.force && member.data.scheduled_restart.is_some() {
            let r = ctl
                .rest()?
                .call(member, Method::DELETE, "restart", None)
                .await?;
            if !r.ok() {
                println!(
                    "Failed: flush scheduled restart for member {}, status code={}, ({})",
                    member.name,
                    r.status,
                    r.message()
                );
            }
        }
        let r = ctl
            .rest()?
            .call(member, Method::POST, "restart", Some(&body))
            .await?;
        match r.status {
            200 => println!("Success: restart on member {}", member.name),
            202 => println!("Success: restart scheduled on member {}", member.name),
            409 => {
                failed += 1;
                println!(
                    "Failed: another restart is already scheduled on member {}",
                    member.name
                );
            }
            status => {
                let message = r.message();
                println!(
                    "Failed: restart for member {}, status code={status}, ({message})",
                    member.name
                );
                // With --pending / --pg-version, "not needed" is the expected outcome.
                if !(filtered && message == "restart conditions are not satisfied") {
                    failed += 1;
                }
            }
        }
    }
    if failed > 0 {
        bail!("restart failed on {failed} member(s)");
    }
    Ok(())
}

pub async fn reload(
    ctl: &Ctl,
    names: &[String],
    role: Option<RoleFilter>,
    force: bool,
) -> Result<()> {
    let cluster = ctl.cluster().await?;
    let members = choose(
        ctl,
        &cluster,
        names,
        role.unwrap_or(RoleFilter::Any),
        force,
        "reload",
        true,
    )?;
    let loop_wait = cluster
        .config
        .as_ref()
        .and_then(|c| c.value.get("loop_wait"))
        .map(|v| v.to_string())
        .unwrap_or_else(|| "10".into());
    let mut failed = 0;
    for member in members {
        let r = ctl
            .rest()?
            .call(member, Method::POST, "reload", None)
            .await?;
        match r.status {
            200 => println!("No changes to apply on member {}", member.name),
            202 => println!(
                "Reload request received for member {} and will be processed within {loop_wait} seconds",
                member.name
            ),
            status => {
                failed += 1;
                println!(
                    "Failed: reload for member {}, status code={status}, ({})",
                    member.name,
                    r.message()
                );
            }
        }
    }
    if failed > 0 {
        bail!("reload failed on {failed} member(s)");
    }
    Ok(())
}

/// How long `reinit --wait` waits for a member to come back.
const REINIT_WAIT: Duration = Duration::from_secs(600);

pub async fn reinit(ctl: &Ctl, names: &[String], force: bool, wait: bool) -> Result<()> {
    let cluster = ctl.cluster().await?;
    let members = choose(
        ctl,
        &cluster,
        names,
        RoleFilter::Replica,
        force,
        "reinitialize",
        true,
    )?;
    let mut waiting = Vec::new();
    let mut failed = 0;
    for member in members {
        let before = start_time(ctl, member).await;
        let mut force_it = force;
        loop {
            let r = ctl
                .rest()?
                .call(
                    member,
                    Method::POST,
                    "reinitialize",
                    Some(&json!({"force": force_it})),
                )
                .await?;
            if r.ok() {
                println!("Success: reinitialize for member {}", member.name);
                if wait {
                    waiting.push((member, before.clone()));
                }
                break;
            }
            let message = r.message();
            println!(
                "Failed: reinitialize for member {}, status code={}, ({message})",
                member.name, r.status
            );
            if message.ends_with(" already in progress")
                && !force_it
                && confirm("Do you want to cancel it and reinitialize anyway?")?
            {
                force_it = true;
                continue;
            }
            failed += 1;
            break;
        }
    }
    if !waiting.is_empty() {
        let names: Vec<&str> = waiting.iter().map(|(m, _)| m.name.as_str()).collect();
        println!(
            "Waiting for reinitialize to complete on: {}",
            names.join(", ")
        );
        let deadline = tokio::time::Instant::now() + REINIT_WAIT;
        while !waiting.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                bail!("reinitialize did not complete within {REINIT_WAIT:?}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut still = Vec::new();
            for (member, before) in waiting {
                if reinit_done(ctl, member, before.as_deref()).await {
                    println!("Reinitialize is completed on: {}", member.name);
                } else {
                    still.push((member, before));
                }
            }
            waiting = still;
        }
    }
    if failed > 0 {
        bail!("reinitialize failed on {failed} member(s)");
    }
    Ok(())
}

async fn start_time(ctl: &Ctl, member: &Member) -> Option<String> {
    let status = ctl.rest().ok()?.get_json(member, "patroni").await.ok()?;
    status
        .get("postmaster_start_time")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Done when the member runs again with a new postmaster (Patroni's check, "state is no
/// longer `creating replica`", is true before the clone has even started).
async fn reinit_done(ctl: &Ctl, member: &Member, before: Option<&str>) -> bool {
    let Ok(rest) = ctl.rest() else { return false };
    let Ok(status) = rest.get_json(member, "patroni").await else {
        return false;
    };
    let running = status.get("state").and_then(Value::as_str) == Some("running");
    let started = status.get("postmaster_start_time").and_then(Value::as_str);
    running && started.is_some() && started != before
}

/// `flush restart`: cancel scheduled restarts (`DELETE /restart`) on the chosen members.
pub async fn flush_restart(
    ctl: &Ctl,
    names: &[String],
    role: Option<RoleFilter>,
    force: bool,
) -> Result<()> {
    let cluster = ctl.cluster().await?;
    let members = choose(
        ctl,
        &cluster,
        names,
        role.unwrap_or(RoleFilter::Any),
        force,
        "flush",
        true,
    )?;
    let mut failed = 0;
    for member in members {
        if member.data.scheduled_restart.is_none() {
            println!("No scheduled restart for member {}", member.name);
            continue;
        }
        let r = ctl
            .rest()?
            .call(member, Method::DELETE, "restart", None)
            .await?;
        if r.ok() {
            println!(
                "Success: flush scheduled restart for member {}",
                member.name
            );
        } else {
            failed += 1;
            println!(
                "Failed: flush scheduled restart for member {}, status code={}, ({})",
                member.name,
                r.status,
                r.message()
            );
        }
    }
    if failed > 0 {
        bail!("flush failed on {failed} member(s)");
    }
    Ok(())
}

/// `flush switchover`: cancel a scheduled switchover (`DELETE /switchover`, leader first;
/// if no member answers, clear the key in the DCS).
pub async fn flush_switchover(ctl: &Ctl) -> Result<()> {
    let cluster = ctl.cluster().await?;
    let Some(request) = cluster
        .failover
        .as_ref()
        .filter(|f| f.value.scheduled_at.is_some())
    else {
        println!("No pending scheduled switchover");
        return Ok(());
    };
    for member in crate::config_cmd::leader_first(&cluster) {
        match ctl
            .rest()?
            .call(member, Method::DELETE, "switchover", None)
            .await
        {
            Ok(r) if r.status == 200 => {
                println!("Success: {}", r.message());
                return Ok(());
            }
            Ok(r) if r.status == 404 => bail!("Failed: {}", r.message()),
            Ok(r) => println!(
                "Failed: member={}, status_code={}, ({})",
                member.name,
                r.status,
                r.message()
            ),
            Err(e) => {
                tracing::warn!("{e:#}");
                eprintln!("Member {} is not accessible", member.name);
            }
        }
    }
    println!(
        "{} Could not find any accessible member of cluster {}",
        crate::console::timestamp(),
        ctl.scope
    );
    if !ctl
        .dcs
        .set_failover(&pgherd_dcs::Failover::none(), Some(request.index))
        .await?
    {
        bail!("the switchover request changed meanwhile; nothing was flushed");
    }
    Ok(())
}
