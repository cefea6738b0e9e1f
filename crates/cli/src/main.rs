//! pgherd: PostgreSQL high availability in one binary (agent, control commands, demo).

#![forbid(unsafe_code)]

mod ctl_cmd;
mod demo;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// "commit <sha>, built <date>": what this binary was built from (crates/cli/build.rs).
macro_rules! build_info {
    () => {
        concat!(
            "commit ",
            env!("PGHERD_GIT_COMMIT"),
            ", built ",
            env!("PGHERD_BUILD_DATE")
        )
    };
}
pub(crate) const BUILD_INFO: &str = build_info!();

#[derive(Parser)]
#[command(
    name = "pgherd",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", build_info!(), ")"),
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
    CheckConfig {
        /// Check it as `pgherd proxy`'s file (scope, DCS and `proxy:`) instead of an agent's.
        #[arg(long)]
        proxy: bool,
        config: PathBuf,
    },
    /// Operator commands (patronictl's): list, switchover, restart, edit-config, ...
    #[command(flatten)]
    Ctl(ctl_cmd::CtlCommand),
    /// Start etcd, a 3-node cluster and the proxy on 127.0.0.1 in a temporary directory.
    Demo {
        /// Number of PostgreSQL nodes.
        #[arg(long, default_value_t = 3)]
        members: usize,
        /// Stop as soon as the cluster is healthy (for scripted checks).
        #[arg(long)]
        once: bool,
        /// The proxy's writes, reads and stats ports (default: free ports), e.g. 5000,5001,7000.
        #[arg(long, value_parser = demo::parse_ports, value_name = "WRITES,READS,STATS")]
        ports: Option<[u16; 3]>,
        /// The DCS the demo cluster uses: etcd or zookeeper (seed 004's layout).
        #[arg(long, value_parser = demo::parse_dcs, default_value = "etcd")]
        dcs: pgherd_localcluster::cluster::DcsKind,
        /// Internal: the worker process of a demo, in this directory.
        #[arg(long, hide = true)]
        worker_dir: Option<PathBuf>,
    },
    /// Run the read-write split proxy (replaces HAProxy + confd).
    Proxy {
        /// YAML file with scope, namespace, the DCS section and a proxy: section.
        config: PathBuf,
    },
}

/// How a command logs.
#[derive(Clone, Copy)]
enum Logging {
    /// The long-running processes (agent, proxy, demo): `RUST_LOG` (default `info`), with
    /// timestamps, on stdout.
    Service,
    /// The control commands, whose stdout is their result: warnings (unreachable members,
    /// ...) per `PGHERD_LOG` (default `warn`), without timestamps, on stderr.
    Command,
}

/// Installs the process's log subscriber (once; a second call changes nothing).
fn init_logging(logging: Logging) {
    use tracing_subscriber::EnvFilter;
    let (variable, default) = match logging {
        Logging::Service => ("RUST_LOG", "info"),
        Logging::Command => ("PGHERD_LOG", "warn"),
    };
    let filter = EnvFilter::try_from_env(variable).unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match logging {
        Logging::Service => fmt.try_init(),
        Logging::Command => fmt.with_writer(std::io::stderr).without_time().try_init(),
    };
}

fn main() {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // The proxy's worker count is part of its configuration: read it before the runtime.
    let cli = match cli.command {
        Command::Proxy { config } => match pgherd_proxy::prepare(&config) {
            Ok(prepared) => {
                // One thread: the current-thread scheduler, whose wake-ups stay on that
                // thread (no shared run queue, no handing the I/O driver between threads).
                if prepared.config.threads == 1 {
                    builder = tokio::runtime::Builder::new_current_thread();
                } else {
                    builder.worker_threads(prepared.config.threads);
                }
                Run::Proxy(Box::new(prepared))
            }
            Err(e) => {
                eprintln!("pgherd: {e}");
                std::process::exit(1);
            }
        },
        command => Run::Command(command),
    };
    let runtime = match builder.enable_all().build() {
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

/// What `main` runs once the runtime exists.
enum Run {
    Command(Command),
    Proxy(Box<pgherd_proxy::Prepared>),
}

async fn run(cli: Run) -> Result<i32> {
    let command = match cli {
        Run::Proxy(prepared) => {
            init_logging(Logging::Service);
            pgherd_proxy::run(*prepared).await?;
            return Ok(0);
        }
        Run::Command(command) => command,
    };
    match command {
        Command::Agent { config } => {
            init_logging(Logging::Service);
            pgherd_agent::run(config.as_deref()).await?;
            Ok(0)
        }
        Command::CheckConfig { proxy, config } => Ok(check_config(&config, proxy)),
        Command::Ctl(command) => ctl_cmd::run(command).await,
        Command::Demo {
            members,
            once,
            ports,
            dcs,
            worker_dir,
        } => {
            init_logging(Logging::Service);
            let args = demo::DemoArgs {
                members: members.max(1),
                once,
                ports,
                dcs,
                worker_dir,
            };
            demo::run(args).await.context("pgherd demo")
        }
        // `main` prepares the proxy before the runtime exists and never passes it here.
        Command::Proxy { .. } => anyhow::bail!("the proxy must be prepared before the runtime"),
    }
}

fn check_config(path: &std::path::Path, proxy: bool) -> i32 {
    if proxy {
        return match pgherd_proxy::prepare(path) {
            Ok(_) => {
                println!("{}: proxy configuration is valid", path.display());
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        };
    }
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
