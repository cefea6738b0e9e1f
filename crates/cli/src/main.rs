//! pgherd: PostgreSQL high availability in one binary (agent, control commands, demo).

mod demo;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "pgherd",
    version,
    about = "PostgreSQL high availability, Patroni-compatible",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HA agent for one PostgreSQL node (replaces `patroni CONFIG`).
    Agent {
        /// Patroni-style YAML file, or a directory of *.yml files merged in order.
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and exit 0 (valid) or 1 (invalid).
    CheckConfig { config: PathBuf },
    /// Show the cluster's members, roles, state and lag (like `patronictl list`).
    List {
        #[command(flatten)]
        conn: CtlConnection,
        /// Output format: pretty, json, yaml or tsv.
        #[arg(short = 'f', long = "format", default_value = "pretty")]
        format: pgherd_ctl::list::OutputFormat,
        /// Show all optional columns (pending restart, scheduled restart, tags).
        #[arg(short = 'e', long)]
        extended: bool,
        /// Refresh every N seconds until interrupted.
        #[arg(short = 'W', long = "watch", value_name = "SECONDS")]
        watch: Option<f64>,
    },
    /// Start etcd and a 3-node cluster on 127.0.0.1 in a temporary directory.
    Demo {
        /// Number of PostgreSQL nodes.
        #[arg(long, default_value_t = 3)]
        members: usize,
        /// Stop as soon as the cluster is healthy (for scripted checks).
        #[arg(long)]
        once: bool,
    },
    /// Print pgherd's version and the Patroni version it is compatible with.
    Version,
}

#[derive(clap::Args)]
struct CtlConnection {
    /// Agent configuration, or a file with just scope/namespace/DCS sections.
    #[arg(short = 'c', long = "config-file", env = "PGHERD_CONFIG")]
    config: PathBuf,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgherd: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        match run(cli).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("pgherd: {e:#}");
                1
            }
        }
    });
    std::process::exit(code);
}

async fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Agent { config } => {
            init_logging();
            pgherd_agent::run(config.as_deref()).await?;
            Ok(0)
        }
        Command::CheckConfig { config } => Ok(check_config(&config)),
        Command::List {
            conn,
            format,
            extended,
            watch,
        } => {
            let ctl = pgherd_ctl::Ctl::from_config_file(&conn.config)?;
            loop {
                let out = ctl.list(format, extended).await?;
                if watch.is_some() {
                    print!("\x1b[2J\x1b[H");
                }
                print!("{out}");
                match watch {
                    Some(secs) => {
                        tokio::time::sleep(std::time::Duration::from_secs_f64(secs.max(0.1))).await
                    }
                    None => return Ok(0),
                }
            }
        }
        Command::Demo { members, once } => {
            init_logging();
            demo::run(members.max(1), once)
                .await
                .context("pgherd demo")?;
            Ok(0)
        }
        Command::Version => {
            println!(
                "pgherd {} (Patroni {} compatible)",
                env!("CARGO_PKG_VERSION"),
                pgherd_api::PATRONI_COMPAT_VERSION
            );
            Ok(0)
        }
    }
}

fn check_config(path: &std::path::Path) -> i32 {
    match pgherd_config::load_from_process_env(Some(path)) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            let checks = loaded
                .config
                .validate_for_agent()
                .and_then(|_| loaded.config.dcs().map(|_| ()));
            match checks {
                Ok(()) => {
                    println!("{}: configuration is valid", path.display());
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
