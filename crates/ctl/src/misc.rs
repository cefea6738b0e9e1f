//! `history`, `dsn`, `remove`, `version`.

use crate::console::prompt;
use crate::list::OutputFormat;
use crate::members::{members_with_role, RoleFilter};
use crate::table::{Align, Table};
use crate::Ctl;
use anyhow::{bail, Result};
use pgherd_dcs::HistoryEntry;
use serde_json::{Map, Value};

const HISTORY_COLUMNS: [&str; 5] = ["TL", "LSN", "Reason", "Timestamp", "New Leader"];

pub async fn history(ctl: &Ctl, format: OutputFormat) -> Result<String> {
    let cluster = ctl.cluster().await?;
    let entries = cluster.history.map(|h| h.value).unwrap_or_default();
    Ok(render_history(&entries, format))
}

pub fn render_history(entries: &[HistoryEntry], format: OutputFormat) -> String {
    let cells = |e: &HistoryEntry| -> Vec<Value> {
        vec![
            e.timeline.into(),
            e.switch_lsn.into(),
            e.reason.clone().into(),
            e.timestamp.clone().unwrap_or_default().into(),
            e.new_leader.clone().unwrap_or_default().into(),
        ]
    };
    match format {
        OutputFormat::Json | OutputFormat::Yaml => {
            let rows: Vec<Value> = entries
                .iter()
                .map(|e| {
                    let o: Map<String, Value> = HISTORY_COLUMNS
                        .iter()
                        .map(|c| c.to_string())
                        .zip(cells(e))
                        .collect();
                    Value::Object(o)
                })
                .collect();
            if format == OutputFormat::Json {
                Value::Array(rows).to_string() + "\n"
            } else {
                serde_yaml::to_string(&rows).unwrap_or_default()
            }
        }
        OutputFormat::Tsv => {
            let mut out = HISTORY_COLUMNS.join("\t") + "\n";
            for e in entries {
                let row: Vec<String> = cells(e).iter().map(plain).collect();
                out.push_str(&row.join("\t"));
                out.push('\n');
            }
            out
        }
        OutputFormat::Pretty => Table {
            headers: HISTORY_COLUMNS.iter().map(|c| c.to_string()).collect(),
            align: vec![
                Align::Right,
                Align::Right,
                Align::Left,
                Align::Left,
                Align::Left,
            ],
            rows: entries
                .iter()
                .map(|e| cells(e).iter().map(plain).collect())
                .collect(),
        }
        .render(None),
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `dsn`: `host=H port=P` of the leader, of `member`, or of any member with `role`.
pub async fn dsn(ctl: &Ctl, member: Option<&str>, role: Option<RoleFilter>) -> Result<String> {
    if member.is_some() && role.is_some() {
        bail!("--role and --member are mutually exclusive options");
    }
    let role = match (member, role) {
        (Some(_), _) => RoleFilter::Any,
        (None, Some(r)) => r,
        (None, None) => RoleFilter::Leader,
    };
    let cluster = ctl.cluster().await?;
    let found = members_with_role(&cluster, role)
        .into_iter()
        .find(|m| member.is_none_or(|name| m.name == name));
    let Some((host, port)) = found.and_then(|m| m.data.conn_host_port()) else {
        bail!("Can not find a suitable member");
    };
    Ok(format!("host={host} port={port}"))
}

/// `remove SCOPE`: wipes the cluster's keys after patronictl's three typed confirmations.
pub async fn remove(ctl: &Ctl, format: OutputFormat) -> Result<()> {
    let cluster = ctl.cluster().await?;
    print!(
        "{}",
        crate::list::render(&ctl.scope, &cluster, format, false)
    );
    let name = prompt("Please confirm the cluster name to remove", None)?;
    if name != ctl.scope {
        bail!("Cluster names specified do not match");
    }
    let phrase = "Yes I am aware";
    let typed = prompt(
        &format!(
            "You are about to remove all information in DCS for {}, please type: \"{phrase}\"",
            ctl.scope
        ),
        None,
    )?;
    if typed != phrase {
        bail!("You did not exactly type \"{phrase}\"");
    }
    if let Some(leader) = cluster.leader_name() {
        let typed = prompt(
            "This cluster currently is healthy. Please specify the leader name to continue",
            None,
        )?;
        if typed != leader {
            bail!("You did not specify the current leader of the cluster");
        }
    }
    ctl.dcs.delete_cluster().await?;
    Ok(())
}

/// `version`: ours, then each member's (`GET /patroni`) when a cluster is configured.
pub async fn version(ctl: Option<&Ctl>, names: &[String], build: &str) -> Result<String> {
    let mut out = format!(
        "pgherd {} (Patroni {} compatible)\n{build}\n",
        env!("CARGO_PKG_VERSION"),
        pgherd_api::PATRONI_COMPAT_VERSION
    );
    let Some(ctl) = ctl else {
        return Ok(out);
    };
    out.push('\n');
    let cluster = ctl.cluster().await?;
    for m in cluster.members.values() {
        if m.data.api_url.is_empty() || (!names.is_empty() && !names.contains(&m.name)) {
            continue;
        }
        let status = match ctl.rest() {
            Ok(rest) => rest.get_json(m, "patroni").await,
            Err(e) => Err(e),
        };
        match status {
            Ok(s) => {
                let patroni = s
                    .pointer("/patroni/version")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                let software = match s.pointer("/pgherd/version").and_then(Value::as_str) {
                    Some(v) => format!("pgherd {v} (Patroni {patroni})"),
                    None => format!("Patroni {patroni}"),
                };
                let pg = s
                    .get("server_version")
                    .and_then(Value::as_u64)
                    .map(|v| format!(" PostgreSQL {}", pg_version(v)))
                    .unwrap_or_default();
                out.push_str(&format!("{}: {software}{pg}\n", m.name));
            }
            Err(e) => out.push_str(&format!("{}: failed to get version: {e:#}\n", m.name)),
        }
    }
    Ok(out)
}

/// patronictl's `format_pg_version`: 150018 -> 15.18, 90624 -> 9.6.24.
pub fn pg_version(v: u64) -> String {
    if v < 100_000 {
        format!("{}.{}.{}", v / 10_000, v / 100 % 100, v % 100)
    } else {
        format!("{}.{}", v / 10_000, v % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_table() {
        let entries = pgherd_dcs::history_from_json(
            r#"[[1,67109256,"no recovery target specified","2026-11-23T12:03:43+00:00","node1"]]"#,
        );
        let out = render_history(&entries, OutputFormat::Pretty);
        assert!(
            out.contains("|  1 | 67109256 | no recovery target specified |"),
            "{out}"
        );
        let json: Value =
            serde_json::from_str(&render_history(&entries, OutputFormat::Json)).unwrap();
        assert_eq!(json[0]["New Leader"], "node1");
        assert_eq!(pg_version(150018), "15.18");
        assert_eq!(pg_version(90624), "9.6.24");
    }
}
