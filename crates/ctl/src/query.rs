//! `query`: run SQL on the leader, a replica or a named member (patronictl `query`).
//!
//! The member comes from the DCS (`conn_url`); its role is checked on the connection
//! (`pg_is_in_recovery()`), so a member that changed role since the DCS was read is not
//! queried by mistake. Credentials: `-U`/`--password`, else the configuration's
//! `postgresql.authentication.superuser`, else `PGUSER`/`PGPASSWORD`.

use crate::list::OutputFormat;
use crate::members::{members_with_role, RoleFilter};
use crate::table::{Align, Table};
use crate::Ctl;
use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use std::time::Duration;
use tokio_postgres::{NoTls, SimpleQueryMessage};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What to run and where.
pub struct QueryRequest {
    pub member: Option<String>,
    pub role: Option<RoleFilter>,
    pub sql: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    pub format: OutputFormat,
    /// Column separator for `tsv` (default a tab).
    pub delimiter: Option<String>,
}

/// The rows of the last statement that returned any, with its column names.
#[derive(Debug, Default, PartialEq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// Runs the request; `Err` names the member and the SQLSTATE on failure.
pub async fn query(ctl: &Ctl, req: &QueryRequest) -> Result<String> {
    if req.member.is_some() && req.role.is_some() {
        bail!("--role and --member are mutually exclusive options");
    }
    let role = match (&req.member, req.role) {
        (Some(_), _) => RoleFilter::Any,
        (None, Some(r)) => r,
        (None, None) => RoleFilter::Leader,
    };
    let cluster = ctl.cluster().await?;
    let found = members_with_role(&cluster, role)
        .into_iter()
        .find(|m| req.member.as_deref().is_none_or(|name| m.name == name));
    let Some(member) = found else {
        bail!(match &req.member {
            Some(name) => format!("No connection to member {name} is available"),
            None => format!("No connection to role={} is available", role.name()),
        });
    };
    let Some((host, port)) = member.data.conn_host_port() else {
        bail!("member {} publishes no usable conn_url", member.name);
    };
    let superuser = ctl.config.postgresql.authentication.superuser.as_ref();
    let user = req
        .username
        .clone()
        .or_else(|| superuser.and_then(|s| s.username.clone()))
        .or_else(|| std::env::var("PGUSER").ok())
        .unwrap_or_else(|| "postgres".into());
    let password = req
        .password
        .clone()
        .or_else(|| {
            superuser
                .filter(|s| s.username.as_deref() == Some(user.as_str()))
                .and_then(|s| s.password.clone())
        })
        .or_else(|| std::env::var("PGPASSWORD").ok());
    let mut config = tokio_postgres::Config::new();
    config
        .host(&host)
        .port(port)
        .user(&user)
        .dbname(req.dbname.as_deref().unwrap_or("postgres"))
        .application_name("pgherd ctl")
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(p) = &password {
        config.password(p);
    }
    let (client, connection) = config
        .connect(NoTls)
        .await
        .with_context(|| format!("connecting to {} ({host}:{port})", member.name))?;
    let driver = tokio::spawn(connection);
    let result = async {
        let in_recovery = client
            .simple_query("select pg_catalog.pg_is_in_recovery()")
            .await
            .map_err(|e| sql_error(&member.name, &e))?;
        let in_recovery = collect(in_recovery).rows.first().and_then(|r| r[0].clone());
        let expected = match role {
            RoleFilter::Leader | RoleFilter::Primary => Some("f"),
            RoleFilter::Replica => Some("t"),
            RoleFilter::StandbyLeader | RoleFilter::Any => None,
        };
        if let Some(want) = expected {
            if in_recovery.as_deref() != Some(want) {
                bail!(
                    "member {} is no longer a {} (it changed role since the DCS was read)",
                    member.name,
                    role.name()
                );
            }
        }
        let messages = client
            .simple_query(&req.sql)
            .await
            .map_err(|e| sql_error(&member.name, &e))?;
        Ok(collect(messages))
    }
    .await;
    drop(client);
    let _ = driver.await;
    Ok(render(&result?, req.format, req.delimiter.as_deref()))
}

fn sql_error(member: &str, e: &tokio_postgres::Error) -> anyhow::Error {
    match e.as_db_error() {
        Some(db) => anyhow::anyhow!(
            "ERROR, SQLSTATE: {} on {member}: {}",
            db.code().code(),
            db.message()
        ),
        None => anyhow::anyhow!("query on {member} failed: {e}"),
    }
}

/// The last statement's result set (patronictl prints the last `fetchall`).
fn collect(messages: Vec<SimpleQueryMessage>) -> Rows {
    let mut current = Rows::default();
    let mut last = Rows::default();
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(columns) => {
                current = Rows {
                    columns: columns.iter().map(|c| c.name().to_string()).collect(),
                    rows: Vec::new(),
                };
            }
            SimpleQueryMessage::Row(row) => {
                if current.columns.is_empty() {
                    current.columns = row.columns().iter().map(|c| c.name().to_string()).collect();
                }
                current.rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                );
            }
            SimpleQueryMessage::CommandComplete(_) if !current.columns.is_empty() => {
                last = std::mem::take(&mut current);
            }
            _ => {}
        }
    }
    last
}

/// `tsv` (header line, then rows; NULL empty), `pretty` (table), `json`/`yaml` (objects).
pub fn render(rows: &Rows, format: OutputFormat, delimiter: Option<&str>) -> String {
    let cell = |v: &Option<String>| v.clone().unwrap_or_default();
    match format {
        OutputFormat::Tsv => {
            let sep = delimiter.unwrap_or("\t");
            let mut out = String::new();
            if !rows.columns.is_empty() {
                out.push_str(&rows.columns.join(sep));
                out.push('\n');
            }
            for r in &rows.rows {
                out.push_str(&r.iter().map(cell).collect::<Vec<_>>().join(sep));
                out.push('\n');
            }
            out
        }
        OutputFormat::Pretty => {
            if rows.columns.is_empty() {
                return String::new();
            }
            let mut table = Table {
                headers: rows.columns.clone(),
                align: vec![Align::Left; rows.columns.len()],
                rows: rows
                    .rows
                    .iter()
                    .map(|r| r.iter().map(cell).collect())
                    .collect(),
            }
            .render(None);
            table.push('\n');
            table
        }
        OutputFormat::Json | OutputFormat::Yaml => {
            let objects: Vec<Value> = rows
                .rows
                .iter()
                .map(|r| {
                    let mut o = Map::new();
                    for (name, v) in rows.columns.iter().zip(r) {
                        o.insert(name.clone(), v.clone().map_or(Value::Null, Value::String));
                    }
                    Value::Object(o)
                })
                .collect();
            if format == OutputFormat::Json {
                format!("{}\n", Value::Array(objects))
            } else {
                serde_yaml::to_string(&objects).unwrap_or_default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Rows {
        Rows {
            columns: vec!["id".into(), "note".into()],
            rows: vec![
                vec![Some("1".into()), Some("a".into())],
                vec![Some("2".into()), None],
            ],
        }
    }

    #[test]
    fn renders_every_format() {
        assert_eq!(
            render(&sample(), OutputFormat::Tsv, None),
            "id\tnote\n1\ta\n2\t\n"
        );
        assert_eq!(
            render(&sample(), OutputFormat::Tsv, Some(",")),
            "id,note\n1,a\n2,\n"
        );
        assert_eq!(
            render(&sample(), OutputFormat::Json, None),
            "[{\"id\":\"1\",\"note\":\"a\"},{\"id\":\"2\",\"note\":null}]\n"
        );
        let pretty = render(&sample(), OutputFormat::Pretty, None);
        assert!(pretty.contains("| id | note |"), "{pretty}");
        assert!(render(&sample(), OutputFormat::Yaml, None).contains("note: null"));
        assert_eq!(render(&Rows::default(), OutputFormat::Tsv, None), "");
    }
}
