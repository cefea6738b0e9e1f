//! The operator commands (patronictl's, with its flags): `pgherd <command> -c CONFIG ...`.
//! Each prints what patronictl prints and exits 0 when done, 1 with a one-line reason
//! otherwise.

use anyhow::Result;
use clap::Subcommand;
use pgherd_api::SwitchoverAction;
use pgherd_ctl::list::OutputFormat;
use pgherd_ctl::members::{RestartArgs, RoleFilter};
use pgherd_ctl::switchover::Request;
use pgherd_ctl::Ctl;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the cluster.
#[derive(clap::Args, Clone)]
pub struct Conn {
    /// Agent configuration, or a file with just scope/namespace/DCS (and ctl) sections.
    #[arg(short = 'c', long = "config-file", env = "PGHERD_CONFIG")]
    config: PathBuf,
    /// Do not verify the REST API's TLS certificates.
    #[arg(short = 'k', long)]
    insecure: bool,
}

impl Conn {
    fn open(&self) -> Result<Ctl> {
        Ctl::connect(&self.config, self.insecure)
    }

    /// Connects to `cluster` when named (patronictl's optional CLUSTER_NAME), else to the
    /// configured scope.
    fn open_scope(&self, cluster: Option<&str>) -> Result<Ctl> {
        let ctl = self.open()?;
        match cluster {
            Some(scope) => ctl.for_scope(scope),
            None => Ok(ctl),
        }
    }
}

#[derive(Subcommand)]
pub enum CtlCommand {
    /// Show the cluster's members, roles, state and lag (like `patronictl list`).
    List {
        #[command(flatten)]
        conn: Conn,
        /// Cluster names (default: the configured scope).
        cluster_names: Vec<String>,
        /// Output format: pretty, tsv, json or yaml.
        #[arg(short = 'f', long = "format", default_value = "pretty")]
        format: OutputFormat,
        /// Show all optional columns (pending restart, scheduled restart, tags).
        #[arg(short = 'e', long)]
        extended: bool,
        /// Print a timestamp before the list.
        #[arg(short = 't', long = "timestamp")]
        timestamp: bool,
        /// Refresh every 2 seconds until interrupted.
        #[arg(short = 'W')]
        watch_default: bool,
        /// Refresh every SECONDS until interrupted.
        #[arg(short = 'w', long = "watch", value_name = "SECONDS")]
        watch: Option<f64>,
    },
    /// Show the members as a tree by replication source.
    Topology {
        #[command(flatten)]
        conn: Conn,
        cluster_names: Vec<String>,
        #[arg(short = 'W')]
        watch_default: bool,
        #[arg(short = 'w', long = "watch", value_name = "SECONDS")]
        watch: Option<f64>,
    },
    /// Planned switchover: the leader hands over to a replica without data loss.
    Switchover {
        #[command(flatten)]
        conn: Conn,
        cluster_name: Option<String>,
        /// The current leader (checked against the DCS).
        #[arg(long, visible_alias = "primary", alias = "master")]
        leader: Option<String>,
        /// The member to take over (default: the healthiest).
        #[arg(long)]
        candidate: Option<String>,
        /// When (ISO 8601, e.g. 2030-01-01T10:00+00:00), or `now`.
        #[arg(long)]
        scheduled: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
    /// Failover to a replica; also works when the leader is gone.
    Failover {
        #[command(flatten)]
        conn: Conn,
        cluster_name: Option<String>,
        /// With a leader this is a switchover.
        #[arg(long, visible_alias = "primary", alias = "master")]
        leader: Option<String>,
        #[arg(long)]
        candidate: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Restart PostgreSQL on members (all members when none is named).
    Restart {
        #[command(flatten)]
        conn: Conn,
        /// Member names (a leading cluster name, as patronictl takes it, is accepted).
        members: Vec<String>,
        /// Only members with this role: leader, primary, standby-leader, replica, any.
        #[arg(short = 'r', long)]
        role: Option<RoleFilter>,
        /// Restart one member of the selection, chosen at random.
        #[arg(long)]
        any: bool,
        /// When (ISO 8601), or `now`.
        #[arg(long)]
        scheduled: Option<String>,
        /// Only if the running PostgreSQL is older than this version (e.g. 15.8).
        #[arg(long = "pg-version")]
        pg_version: Option<String>,
        /// Only members with a parameter change pending a restart.
        #[arg(long)]
        pending: bool,
        /// Give up waiting for the start after this long (e.g. 60, 2m).
        #[arg(long)]
        timeout: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Reload the configuration of members.
    Reload {
        #[command(flatten)]
        conn: Conn,
        members: Vec<String>,
        #[arg(short = 'r', long)]
        role: Option<RoleFilter>,
        #[arg(long)]
        force: bool,
    },
    /// Rebuild a replica from the leader.
    Reinit {
        #[command(flatten)]
        conn: Conn,
        members: Vec<String>,
        #[arg(long)]
        force: bool,
        /// Wait until the member runs again.
        #[arg(long)]
        wait: bool,
    },
    /// Maintenance mode: no automatic failover until `resume`.
    Pause {
        #[command(flatten)]
        conn: Conn,
        cluster_name: Option<String>,
        /// Wait until every member applied it.
        #[arg(long)]
        wait: bool,
    },
    /// Leave maintenance mode.
    Resume {
        #[command(flatten)]
        conn: Conn,
        cluster_name: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// Print the cluster's dynamic configuration (secrets masked).
    ShowConfig {
        #[command(flatten)]
        conn: Conn,
        cluster_name: Option<String>,
        /// Print secrets as they are stored.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Change the dynamic configuration ($EDITOR when no change is given on the command line).
    EditConfig {
        #[command(flatten)]
        conn: Conn,
        cluster_name: Option<String>,
        /// Do not show the changes.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// key.path=value (YAML value; null removes). Repeatable.
        #[arg(short = 's', long = "set")]
        set: Vec<String>,
        /// PostgreSQL parameter name=value. Repeatable.
        #[arg(short = 'p', long = "pg")]
        pg: Vec<String>,
        /// Merge this YAML file (- for standard input).
        #[arg(long)]
        apply: Option<String>,
        /// Replace the configuration with this YAML file (- for standard input).
        #[arg(long)]
        replace: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
    /// Discard scheduled events: `flush restart [MEMBER...]` or `flush switchover`.
    Flush {
        #[command(flatten)]
        conn: Conn,
        /// `restart` or `switchover`, optionally preceded by the cluster name and (restart)
        /// followed by member names.
        args: Vec<String>,
        #[arg(short = 'r', long)]
        role: Option<RoleFilter>,
        #[arg(long)]
        force: bool,
    },
    /// Timeline history: past switchovers and failovers.
    History {
        #[command(flatten)]
        conn: Conn,
        cluster_name: Option<String>,
        #[arg(short = 'f', long = "format", default_value = "pretty")]
        format: OutputFormat,
    },
    /// Run SQL on the leader (default), a member with a role, or a named member
    /// (patronictl `query`; `-c` is the configuration file here, so the SQL goes in
    /// `--command`).
    Query {
        #[command(flatten)]
        conn: Conn,
        cluster_name: Option<String>,
        #[arg(short = 'r', long)]
        role: Option<RoleFilter>,
        #[arg(short = 'm', long)]
        member: Option<String>,
        /// The SQL to run.
        #[arg(long = "command", conflicts_with = "file")]
        command: Option<String>,
        /// Read the SQL from this file.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        #[arg(short = 'U', long)]
        username: Option<String>,
        /// Ask for the password on standard input.
        #[arg(long)]
        password: bool,
        #[arg(short = 'd', long)]
        dbname: Option<String>,
        /// tsv (default), pretty, json or yaml.
        #[arg(long = "format", default_value = "tsv")]
        format: OutputFormat,
        /// Column separator for tsv.
        #[arg(long)]
        delimiter: Option<String>,
    },
    /// A libpq connection string for the leader, a member, or a role.
    Dsn {
        #[command(flatten)]
        conn: Conn,
        /// Member name.
        member_arg: Option<String>,
        #[arg(short = 'm', long = "member")]
        member: Option<String>,
        #[arg(short = 'r', long)]
        role: Option<RoleFilter>,
    },
    /// Remove every DCS key of a cluster (after typed confirmations).
    Remove {
        #[command(flatten)]
        conn: Conn,
        cluster_name: String,
        #[arg(short = 'f', long = "format", default_value = "pretty")]
        format: OutputFormat,
    },
    /// Print pgherd's version, git commit and build date and, with -c, every member's.
    Version {
        #[arg(short = 'c', long = "config-file", env = "PGHERD_CONFIG")]
        config: Option<PathBuf>,
        #[arg(short = 'k', long)]
        insecure: bool,
        /// Cluster name and/or member names.
        names: Vec<String>,
    },
}

/// Drops a leading cluster name from member arguments (patronictl takes
/// `restart CLUSTER [MEMBER...]`).
fn members_of(ctl: &Ctl, args: Vec<String>) -> Vec<String> {
    match args.split_first() {
        Some((first, rest)) if *first == ctl.scope => rest.to_vec(),
        _ => args,
    }
}

fn watch_interval(flag: bool, seconds: Option<f64>) -> Option<Duration> {
    match (flag, seconds) {
        (_, Some(s)) => Some(Duration::from_secs_f64(s.max(0.1))),
        (true, None) => Some(Duration::from_secs(2)),
        _ => None,
    }
}

async fn list_loop(
    conn: &Conn,
    clusters: Vec<String>,
    every: Option<Duration>,
    render: impl Fn(&Ctl, &pgherd_dcs::Cluster) -> String,
    timestamp: bool,
) -> Result<i32> {
    let base = conn.open()?;
    let scopes = if clusters.is_empty() {
        vec![base.scope.clone()]
    } else {
        clusters
    };
    let mut ctls = Vec::new();
    for scope in scopes {
        ctls.push(conn.open_scope(Some(&scope))?);
    }
    loop {
        let mut out = String::new();
        if timestamp {
            out.push_str(&pgherd_ctl::console::timestamp());
            out.push('\n');
        }
        for ctl in &ctls {
            out.push_str(&render(ctl, &ctl.cluster().await?));
        }
        if every.is_some() {
            print!("\x1b[2J\x1b[H");
        }
        print!("{out}");
        match every {
            Some(every) => tokio::time::sleep(every).await,
            None => return Ok(0),
        }
    }
}

pub async fn run(command: CtlCommand) -> Result<i32> {
    crate::init_logging(crate::Logging::Command);
    match command {
        CtlCommand::List {
            conn,
            cluster_names,
            format,
            extended,
            timestamp,
            watch_default,
            watch,
        } => {
            list_loop(
                &conn,
                cluster_names,
                watch_interval(watch_default, watch),
                |ctl, c| pgherd_ctl::list::render(&ctl.scope, c, format, extended),
                timestamp,
            )
            .await
        }
        CtlCommand::Topology {
            conn,
            cluster_names,
            watch_default,
            watch,
        } => {
            list_loop(
                &conn,
                cluster_names,
                watch_interval(watch_default, watch),
                |ctl, c| pgherd_ctl::list::render_topology(&ctl.scope, c),
                false,
            )
            .await
        }
        CtlCommand::Switchover {
            conn,
            cluster_name,
            leader,
            candidate,
            scheduled,
            force,
        } => {
            let ctl = conn.open_scope(cluster_name.as_deref())?;
            let request = Request {
                leader,
                candidate,
                scheduled,
                force,
            };
            pgherd_ctl::switchover::run(&ctl, SwitchoverAction::Switchover, request).await?;
            Ok(0)
        }
        CtlCommand::Failover {
            conn,
            cluster_name,
            leader,
            candidate,
            force,
        } => {
            let ctl = conn.open_scope(cluster_name.as_deref())?;
            let action = if leader.is_some() {
                SwitchoverAction::Switchover
            } else {
                SwitchoverAction::Failover
            };
            let request = Request {
                leader,
                candidate,
                scheduled: None,
                force,
            };
            pgherd_ctl::switchover::run(&ctl, action, request).await?;
            Ok(0)
        }
        CtlCommand::Restart {
            conn,
            members,
            role,
            any,
            scheduled,
            pg_version,
            pending,
            timeout,
            force,
        } => {
            let ctl = conn.open()?;
            let members = members_of(&ctl, members);
            let args = RestartArgs {
                members,
                role,
                any,
                scheduled,
                pg_version,
                pending,
                timeout,
                force,
            };
            pgherd_ctl::members::restart(&ctl, args).await?;
            Ok(0)
        }
        CtlCommand::Reload {
            conn,
            members,
            role,
            force,
        } => {
            let ctl = conn.open()?;
            let members = members_of(&ctl, members);
            pgherd_ctl::members::reload(&ctl, &members, role, force).await?;
            Ok(0)
        }
        CtlCommand::Reinit {
            conn,
            members,
            force,
            wait,
        } => {
            let ctl = conn.open()?;
            let members = members_of(&ctl, members);
            pgherd_ctl::members::reinit(&ctl, &members, force, wait).await?;
            Ok(0)
        }
        CtlCommand::Pause {
            conn,
            cluster_name,
            wait,
        } => {
            let ctl = conn.open_scope(cluster_name.as_deref())?;
            pgherd_ctl::config_cmd::toggle_pause(&ctl, true, wait).await?;
            Ok(0)
        }
        CtlCommand::Resume {
            conn,
            cluster_name,
            wait,
        } => {
            let ctl = conn.open_scope(cluster_name.as_deref())?;
            pgherd_ctl::config_cmd::toggle_pause(&ctl, false, wait).await?;
            Ok(0)
        }
        CtlCommand::ShowConfig {
            conn,
            cluster_name,
            show_secrets,
        } => {
            let ctl = conn.open_scope(cluster_name.as_deref())?;
            pgherd_ctl::config_cmd::show(&ctl, show_secrets).await?;
            Ok(0)
        }
        CtlCommand::EditConfig {
            conn,
            cluster_name,
            quiet,
            set,
            pg,
            apply,
            replace,
            force,
        } => {
            let ctl = conn.open_scope(cluster_name.as_deref())?;
            let args = pgherd_ctl::config_cmd::EditArgs {
                quiet,
                set,
                pg,
                apply,
                replace,
                force,
            };
            pgherd_ctl::config_cmd::edit(&ctl, args).await?;
            Ok(0)
        }
        CtlCommand::Flush {
            conn,
            args,
            role,
            force,
        } => {
            let ctl = conn.open()?;
            let args = members_of(&ctl, args);
            match args.split_first() {
                Some((target, members)) if target == "restart" => {
                    pgherd_ctl::members::flush_restart(&ctl, members, role, force).await?
                }
                Some((target, _)) if target == "switchover" => {
                    pgherd_ctl::members::flush_switchover(&ctl).await?
                }
                _ => anyhow::bail!("flush what? expected `restart [MEMBER...]` or `switchover`"),
            }
            Ok(0)
        }
        CtlCommand::History {
            conn,
            cluster_name,
            format,
        } => {
            let ctl = conn.open_scope(cluster_name.as_deref())?;
            print!("{}", pgherd_ctl::misc::history(&ctl, format).await?);
            Ok(0)
        }
        CtlCommand::Query {
            conn,
            cluster_name,
            role,
            member,
            command,
            file,
            username,
            password,
            dbname,
            format,
            delimiter,
        } => {
            let sql = match (command, file) {
                (Some(sql), _) => sql,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?,
                (None, None) => anyhow::bail!("You need to specify either --command or --file"),
            };
            let password = if password {
                Some(pgherd_ctl::console::prompt("Password", None)?)
            } else {
                None
            };
            let ctl = conn.open_scope(cluster_name.as_deref())?;
            let request = pgherd_ctl::query::QueryRequest {
                member,
                role,
                sql,
                username,
                password,
                dbname,
                format,
                delimiter,
            };
            print!("{}", pgherd_ctl::query::query(&ctl, &request).await?);
            Ok(0)
        }
        CtlCommand::Dsn {
            conn,
            member_arg,
            member,
            role,
        } => {
            let ctl = conn.open()?;
            let member = member.or(member_arg.filter(|m| *m != ctl.scope));
            println!(
                "{}",
                pgherd_ctl::misc::dsn(&ctl, member.as_deref(), role).await?
            );
            Ok(0)
        }
        CtlCommand::Remove {
            conn,
            cluster_name,
            format,
        } => {
            let ctl = conn.open_scope(Some(&cluster_name))?;
            pgherd_ctl::misc::remove(&ctl, format).await?;
            Ok(0)
        }
        CtlCommand::Version {
            config,
            insecure,
            names,
        } => {
            let ctl = match &config {
                Some(path) if !names.is_empty() => Some(Ctl::connect(path, insecure)?),
                _ => None,
            };
            let members = match &ctl {
                Some(ctl) => members_of(ctl, names),
                None => Vec::new(),
            };
            print!(
                "{}",
                pgherd_ctl::misc::version(ctl.as_ref(), &members, crate::BUILD_INFO).await?
            );
            Ok(0)
        }
    }
}
