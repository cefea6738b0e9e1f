//! `pgherd list`: the cluster as patronictl shows it (docs/compat.md#list-output), from one DCS
//! read.

use crate::table::{Align, Table};
use pgherd_dcs::Cluster;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Pretty,
    Json,
    Yaml,
    Tsv,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pretty" | "table" => Ok(OutputFormat::Pretty),
            "json" => Ok(OutputFormat::Json),
            "yaml" => Ok(OutputFormat::Yaml),
            "tsv" => Ok(OutputFormat::Tsv),
            other => Err(format!(
                "unknown format {other:?}: expected pretty, json, yaml or tsv"
            )),
        }
    }
}

/// One row, with the cells patronictl would print (None = empty cell).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRow {
    pub member: String,
    pub host: String,
    pub role: &'static str,
    pub state: String,
    pub timeline: Option<u64>,
    /// `Some(Ok(mb))`, `Some(Err("unknown"))`, or None for the leader.
    pub lag_mb: Option<Result<u64, &'static str>>,
    pub pending_restart: bool,
    pub scheduled_restart: Option<String>,
    pub tags: Map<String, Value>,
}

pub fn member_rows(cluster: &Cluster) -> Vec<MemberRow> {
    let leader = cluster.leader_name();
    let standby_cluster = cluster.config.as_ref().is_some_and(|c| {
        c.value
            .get("standby_cluster")
            .is_some_and(|v| v.is_object())
    });
    let sync = cluster.sync_state();
    let optime = cluster.optime().unwrap_or(0);
    let hosts: Vec<(String, u16)> = cluster
        .members
        .values()
        .filter_map(|m| m.data.conn_host_port())
        .collect();
    let show_ports = hosts.iter().any(|(_, p)| *p != 5432)
        || hosts
            .iter()
            .enumerate()
            .any(|(i, (h, _))| hosts[..i].iter().any(|(h2, _)| h2 == h));
    cluster
        .members
        .values()
        .map(|m| {
            let is_leader = Some(m.name.as_str()) == leader;
            let role = if is_leader {
                if standby_cluster {
                    "Standby Leader"
                } else {
                    "Leader"
                }
            } else if sync.is_some_and(|s| s.is_sync_standby(&m.name)) {
                "Sync Standby"
            } else {
                "Replica"
            };
            let host = match m.data.conn_host_port() {
                Some((h, p)) if show_ports => format!("{h}:{p}"),
                Some((h, _)) => h,
                None => String::new(),
            };
            let lag_mb = if is_leader {
                None
            } else {
                Some(match m.data.xlog_location {
                    Some(x) => Ok(((optime.saturating_sub(x)) as f64 / 1_048_576.0).round() as u64),
                    None => Err("unknown"),
                })
            };
            let scheduled_restart = m.data.scheduled_restart.as_ref().and_then(|s| {
                let at = s.get("schedule")?.as_str()?.to_string();
                Some(match s.get("postgres_version").and_then(Value::as_str) {
                    Some(v) => format!("{at} if version < {v}"),
                    None => at,
                })
            });
            MemberRow {
                member: m.name.clone(),
                host,
                role,
                // A running replica shows whether it streams, as later patronictl does.
                state: match m.data.replication_state.as_deref() {
                    Some(replication) if !is_leader && m.data.is_running() => {
                        replication.to_string()
                    }
                    _ => m.data.state.clone(),
                },
                timeline: m.data.timeline,
                lag_mb,
                pending_restart: m.data.pending_restart,
                scheduled_restart,
                tags: m.data.tags.clone(),
            }
        })
        .collect()
}

/// Renders `list` in the requested format. `extended` forces the optional columns.
pub fn render(scope: &str, cluster: &Cluster, format: OutputFormat, extended: bool) -> String {
    render_rows(scope, cluster, member_rows(cluster), format, extended)
}

/// `topology`: the list ordered as a tree by replication source (the leader first, then each
/// member under the one it replicates from, `replicatefrom` tag), names indented with `+ `.
pub fn render_topology(scope: &str, cluster: &Cluster) -> String {
    let rows = member_rows(cluster);
    let leader = rows
        .iter()
        .find(|r| r.role.ends_with("Leader"))
        .map(|r| r.member.clone());
    let replicas: Vec<String> = rows
        .iter()
        .filter(|r| !r.role.ends_with("Leader"))
        .map(|r| r.member.clone())
        .collect();
    let parent_of = |r: &MemberRow| -> Option<String> {
        match r.tags.get("replicatefrom").and_then(Value::as_str) {
            Some(p) if p != r.member && replicas.iter().any(|n| n == p) => Some(p.to_string()),
            _ => leader.clone(),
        }
    };
    let mut ordered = Vec::new();
    fn walk(
        level: usize,
        name: Option<&str>,
        rows: &[MemberRow],
        parent_of: &dyn Fn(&MemberRow) -> Option<String>,
        out: &mut Vec<MemberRow>,
    ) {
        if let Some(row) = name.and_then(|n| rows.iter().find(|r| r.member == n)) {
            let mut row = row.clone();
            if level > 0 {
                row.member = format!("{}+ {}", " ".repeat((level - 1) * 2), row.member);
            }
            out.push(row);
        }
        for child in rows
            .iter()
            .filter(|r| !r.role.ends_with("Leader") && parent_of(r).as_deref() == name)
        {
            // Guard against replicatefrom cycles: a member appears once.
            if out
                .iter()
                .any(|o| o.member.trim_start_matches([' ', '+']) == child.member)
            {
                continue;
            }
            walk(level + 1, Some(&child.member), rows, parent_of, out);
        }
    }
    walk(0, leader.as_deref(), &rows, &parent_of, &mut ordered);
    // Members in a replicatefrom cycle are not reachable from the leader: list them last.
    for r in &rows {
        if !ordered
            .iter()
            .any(|o| o.member.trim_start_matches([' ', '+']) == r.member)
        {
            ordered.push(r.clone());
        }
    }
    render_rows(scope, cluster, ordered, OutputFormat::Pretty, false)
}

fn render_rows(
    scope: &str,
    cluster: &Cluster,
    rows: Vec<MemberRow>,
    format: OutputFormat,
    extended: bool,
) -> String {
    let with_pending = extended || rows.iter().any(|r| r.pending_restart);
    let with_scheduled = extended || rows.iter().any(|r| r.scheduled_restart.is_some());
    let with_tags = extended || rows.iter().any(|r| !r.tags.is_empty());

    let mut headers = vec!["Member", "Host", "Role", "State", "TL", "Lag in MB"];
    if with_pending {
        headers.push("Pending restart");
    }
    if with_scheduled {
        headers.push("Scheduled restart");
    }
    if with_tags {
        headers.push("Tags");
    }

    match format {
        OutputFormat::Json | OutputFormat::Yaml => {
            let list: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let mut o = Map::new();
                    o.insert("Cluster".into(), scope.into());
                    o.insert("Member".into(), r.member.clone().into());
                    o.insert("Host".into(), r.host.clone().into());
                    o.insert("Role".into(), r.role.into());
                    o.insert("State".into(), r.state.clone().into());
                    if let Some(tl) = r.timeline {
                        o.insert("TL".into(), tl.into());
                    }
                    match &r.lag_mb {
                        Some(Ok(mb)) => {
                            o.insert("Lag in MB".into(), (*mb).into());
                        }
                        Some(Err(u)) => {
                            o.insert("Lag in MB".into(), (*u).into());
                        }
                        None => {}
                    }
                    if r.pending_restart {
                        o.insert("Pending restart".into(), "*".into());
                    }
                    if let Some(s) = &r.scheduled_restart {
                        o.insert("Scheduled restart".into(), s.clone().into());
                    }
                    if !r.tags.is_empty() {
                        o.insert("Tags".into(), Value::Object(r.tags.clone()));
                    }
                    Value::Object(o)
                })
                .collect();
            if format == OutputFormat::Json {
                serde_json::to_string(&list).unwrap_or_default() + "\n"
            } else {
                serde_yaml::to_string(&list).unwrap_or_default()
            }
        }
        OutputFormat::Pretty | OutputFormat::Tsv => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let mut c = vec![
                        r.member.clone(),
                        r.host.clone(),
                        r.role.to_string(),
                        r.state.clone(),
                        r.timeline.map(|t| t.to_string()).unwrap_or_default(),
                        match &r.lag_mb {
                            Some(Ok(mb)) => mb.to_string(),
                            Some(Err(u)) => u.to_string(),
                            None => String::new(),
                        },
                    ];
                    if with_pending {
                        c.push(if r.pending_restart {
                            "*".into()
                        } else {
                            String::new()
                        });
                    }
                    if with_scheduled {
                        c.push(r.scheduled_restart.clone().unwrap_or_default());
                    }
                    if with_tags {
                        c.push(tags_yaml(&r.tags));
                    }
                    c
                })
                .collect();
            if format == OutputFormat::Tsv {
                let mut out = String::new();
                out.push_str(
                    &std::iter::once("Cluster")
                        .chain(headers.iter().copied())
                        .collect::<Vec<_>>()
                        .join("\t"),
                );
                out.push('\n');
                for row in cells {
                    out.push_str(scope);
                    for cell in row {
                        out.push('\t');
                        out.push_str(&cell.replace('\n', " "));
                    }
                    out.push('\n');
                }
                return out;
            }
            let mut align = vec![Align::Left; headers.len()];
            align[4] = Align::Right;
            align[5] = Align::Right;
            let table = Table {
                headers: headers.iter().map(|h| h.to_string()).collect(),
                align,
                rows: cells,
            };
            let title = match cluster.initialize.as_deref() {
                Some(sysid) if cluster.sysid().is_some() => format!("Cluster: {scope} ({sysid})"),
                Some(_) => format!("Cluster: {scope} (initializing)"),
                None => format!("Cluster: {scope} (uninitialized)"),
            };
            let mut out = table.render(Some(&title));
            out.push_str(&footer(cluster));
            out
        }
    }
}

fn tags_yaml(tags: &Map<String, Value>) -> String {
    if tags.is_empty() {
        return String::new();
    }
    serde_yaml::to_string(tags)
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

fn footer(cluster: &Cluster) -> String {
    let mut out = String::new();
    if cluster.is_paused() {
        out.push_str(" Maintenance mode: on\n");
    }
    if let Some(f) = cluster.failover.as_ref().map(|f| &f.value) {
        if let Some(at) = &f.scheduled_at {
            out.push_str(&format!(" Switchover scheduled at: {at}\n"));
            if let Some(l) = &f.leader {
                out.push_str(&format!("                    from: {l}\n"));
            }
            if let Some(m) = &f.member {
                out.push_str(&format!("                      to: {m}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        let m = |port: u16, role: &str, x: Option<u64>| {
            let xl = x
                .map(|x| format!(r#","xlog_location":{x}"#))
                .unwrap_or_default();
            format!(
                r#"{{"conn_url":"postgres://127.0.0.1:{port}/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"{role}","version":"3.0.2","timeline":2{xl}}}"#
            )
        };
        let rows = [
            ("initialize".to_string(), "7711336143377005909".to_string()),
            ("leader".into(), "node1".into()),
            ("status".into(), r#"{"optime":4194304}"#.into()),
            (
                "sync".into(),
                r#"{"leader":"node1","sync_standby":"node2"}"#.into(),
            ),
            ("config".into(), r#"{"pause":true}"#.into()),
            ("members/node0".into(), m(5432, "replica", Some(0))),
            ("members/node1".into(), m(5433, "master", Some(4194304))),
            ("members/node2".into(), m(5434, "replica", None)),
        ];
        Cluster::from_rows(rows.iter().map(|(k, v)| (k.as_str(), v.as_str(), 1, 0)), 1)
    }

    #[test]
    fn pretty_list_matches_patronictl_layout() {
        let out = render("batman", &cluster(), OutputFormat::Pretty, false);
        let expected = "\
+ Cluster: batman (7711336143377005909) -+---------+----+-----------+
| Member | Host           | Role         | State   | TL | Lag in MB |
+--------+----------------+--------------+---------+----+-----------+
| node0  | 127.0.0.1:5432 | Replica      | running |  2 |         4 |
| node1  | 127.0.0.1:5433 | Leader       | running |  2 |           |
| node2  | 127.0.0.1:5434 | Sync Standby | running |  2 |   unknown |
+--------+----------------+--------------+---------+----+-----------+
 Maintenance mode: on
";
        assert_eq!(out, expected);
    }

    #[test]
    fn json_list_omits_empty_cells() {
        let out = render("batman", &cluster(), OutputFormat::Json, false);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[1]["Role"], "Leader");
        assert!(v[1].get("Lag in MB").is_none());
        assert_eq!(v[0]["Lag in MB"], 4);
        assert_eq!(v[2]["Lag in MB"], "unknown");
        assert_eq!(v[0]["Cluster"], "batman");
    }

    #[test]
    fn topology_follows_replicatefrom() {
        let mut c = cluster();
        let mut node0 = c.members["node0"].clone();
        node0
            .data
            .tags
            .insert("replicatefrom".into(), "node2".into());
        c.members.insert("node0".into(), node0);
        let out = render_topology("batman", &c);
        let names: Vec<&str> = out
            .lines()
            .skip(3)
            .filter(|l| l.starts_with("| "))
            .map(|l| l.split('|').nth(1).unwrap().trim_end())
            .collect();
        assert_eq!(names, vec![" node1", " + node2", "   + node0"]);
    }

    #[test]
    fn a_replica_that_does_not_stream_says_so() {
        let mut c = cluster();
        for (name, state) in [("node0", "in archive recovery"), ("node2", "streaming")] {
            let mut m = c.members[name].clone();
            m.data.replication_state = Some(state.into());
            c.members.insert(name.into(), m);
        }
        let out = render("batman", &c, OutputFormat::Json, false);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["State"], "in archive recovery");
        assert_eq!(v[1]["State"], "running");
        assert_eq!(v[2]["State"], "streaming");
    }

    #[test]
    fn yaml_list_parses() {
        let out = render("batman", &cluster(), OutputFormat::Yaml, true);
        let v: Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
    }
}
