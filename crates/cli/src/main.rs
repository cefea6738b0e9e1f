//! pgherd: PostgreSQL high availability in one binary (agent, control commands, demo).

mod ctl_cmd;
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
    /// Operator commands (patronictl's): list, switchover, restart, edit-config, ...
    #[command(flatten)]
    Ctl(ctl_cmd::CtlCommand),
    /// Start etcd and a 3-node cluster on 127.0.0.1 in a temporary directory.
    Demo {
        /// Number of PostgreSQL nodes.
        #[arg(long, default_value_t = 3)]
        members: usize,
        /// Stop as soon as the cluster is healthy (for scripted checks).
        #[arg(long)]
        once: bool,
    },
    /// Run the read-write split proxy (replaces HAProxy + confd).
    Proxy {
        /// YAML file with scope, namespace, the DCS section and a proxy: section.
        config: PathBuf,
    },
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
        Command::Ctl(command) => ctl_cmd::run(command).await,
        Command::Demo { members, once } => {
            init_logging();
            demo::run(members.max(1), once)
                .await
                .context("pgherd demo")?;
            Ok(0)
        }
        Command::Proxy { config } => {
            init_logging();
            pgherd_proxy::run(&config).await?;
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
