//! `pgherd demo`: etcd, three agents and the proxy on loopback in a temporary directory, until
//! Ctrl-C.
//!
//! Two processes, so that stopping is bounded and nothing outlives the demo:
//!
//! * the **supervisor** (the `pgherd demo` the user started) creates the directory, starts the
//!   worker in a process group of its own and waits. On Ctrl-C/SIGTERM it asks the worker to
//!   stop, and after [`STOP_LIMIT`] sweeps whatever is left (the worker's process group, every
//!   postmaster under the directory) and removes the directory. A second Ctrl-C sweeps at once.
//! * the **worker** (`pgherd demo --worker`) runs the cluster. Its stdin is a pipe from the
//!   supervisor: when the supervisor dies, even by SIGKILL, the pipe closes and the worker
//!   stops everything itself within [`ORPHAN_STOP_LIMIT`].
//!
//! Everything the worker starts is in its process group except the postmasters (pg_ctl puts
//! each in a session of its own), which are found through their `postmaster.pid` files.
//! Ctrl-C in a terminal reaches only the supervisor's group, so agents and etcd never receive
//! it directly and stop in order (agents first, while etcd still answers).

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgherd_localcluster::cluster::{ClusterOptions, DcsKind, LocalCluster, SUPERUSER_PASSWORD};
use pgherd_localcluster::procs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Ctrl-C to exit: the worker's orderly stop, then the sweep.
const STOP_LIMIT: Duration = Duration::from_secs(8);
/// The worker's own bound for stopping the cluster (agents, proxy, etcd).
const WORKER_STOP_LIMIT: Duration = Duration::from_secs(6);
/// Stopping when the supervisor died (SIGKILL): nothing may remain after 5 s.
const ORPHAN_STOP_LIMIT: Duration = Duration::from_secs(3);

/// What `pgherd demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoArgs {
    pub members: usize,
    pub once: bool,
    /// Fixed proxy ports: writes, reads, stats (HAProxy's 5000, 5001, 7000).
    pub ports: Option<[u16; 3]>,
    /// The store: etcd (default) or ZooKeeper (seed 004's layout).
    pub dcs: DcsKind,
    /// Internal: run as the worker in this directory.
    pub worker_dir: Option<PathBuf>,
}

/// Parses `--ports 5000,5001,7000`.
pub fn parse_ports(text: &str) -> Result<[u16; 3], String> {
    let ports: Vec<u16> = text
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port"))
        })
        .collect::<Result<_, _>>()?;
    match ports[..] {
        [w, r, s] if w != r && r != s && w != s && w > 0 && r > 0 && s > 0 => Ok([w, r, s]),
        _ => Err("expected three distinct ports: writes,reads,stats (e.g. 5000,5001,7000)".into()),
    }
}

pub async fn run(args: DemoArgs) -> Result<i32> {
    match args.worker_dir.clone() {
        Some(dir) => worker(args, dir).await,
        None => supervise(args).await,
    }
}

/// Checks the external programs the demo needs and names the Debian package of each.
/// Parses `--dcs etcd|zookeeper`.
pub fn parse_dcs(text: &str) -> Result<DcsKind, String> {
    match text.to_ascii_lowercase().as_str() {
        "etcd" | "etcd3" => Ok(DcsKind::Etcd),
        "zookeeper" | "zk" => Ok(DcsKind::ZooKeeper),
        _ => Err("expected etcd or zookeeper".into()),
    }
}

fn dcs_arg(dcs: DcsKind) -> &'static str {
    match dcs {
        DcsKind::Etcd => "etcd",
        DcsKind::ZooKeeper => "zookeeper",
    }
}

fn check_prerequisites(dcs: DcsKind) -> Result<()> {
    let mut missing = Vec::new();
    match dcs {
        DcsKind::Etcd if !Path::new("/usr/bin/etcd").exists() => {
            missing.push("etcd (Debian package: etcd-server)");
        }
        DcsKind::ZooKeeper if !Path::new("/usr/share/java/zookeeper.jar").exists() => {
            missing.push("ZooKeeper (Debian packages: zookeeper, default-jre-headless)");
        }
        DcsKind::ZooKeeper if which("java").is_none() => {
            missing.push("java (Debian package: default-jre-headless)");
        }
        _ => {}
    }
    if !pgherd_postgres::default_bin_dir().join("postgres").exists() {
        missing.push("PostgreSQL server binaries (Debian package: postgresql-15)");
    }
    if which("psql").is_none() {
        missing.push("psql (Debian package: postgresql-client-15)");
    }
    if !missing.is_empty() {
        bail!(
            "pgherd demo needs: {}; install them with apt-get",
            missing.join(", ")
        );
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.exists())
}

/// The first SIGINT or SIGTERM, then the second.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

async fn supervise(args: DemoArgs) -> Result<i32> {
    check_prerequisites(args.dcs)?;
    if let Some(ports) = args.ports {
        for port in ports {
            std::net::TcpListener::bind(("127.0.0.1", port))
                .with_context(|| format!("--ports: 127.0.0.1:{port} is not free"))?;
        }
    }
    let mut signals = Signals::install()?;
    let dir = tempfile::Builder::new()
        .prefix("pgherd-demo-")
        .tempdir_in("/tmp")
        .context("creating the demo directory")?
        .keep();
    // PostgreSQL runs as an unprivileged user when we are root: it must reach the tree.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let exe = std::env::current_exe().context("locating the pgherd executable")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("demo")
        .arg("--members")
        .arg(args.members.to_string())
        .arg("--worker-dir")
        .arg(&dir);
    if args.once {
        cmd.arg("--once");
    }
    if let Some([w, r, s]) = args.ports {
        cmd.arg("--ports").arg(format!("{w},{r},{s}"));
    }
    cmd.arg("--dcs").arg(dcs_arg(args.dcs));
    // stdin is the worker's lifeline (see the module documentation).
    cmd.stdin(Stdio::piped()).process_group(0);
    let mut worker = match cmd.spawn() {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e).context("starting the demo worker");
        }
    };
    let _lifeline = worker.stdin.take();
    let group = worker.id().map(|p| p as i32);
    let code = tokio::select! {
        status = worker.wait() => status.ok().and_then(|s| s.code()).unwrap_or(1),
        () = signals.next() => {
            println!("\nstopping the demo cluster (Ctrl-C again to stop at once)");
            if let Some(pid) = group {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            tokio::select! {
                _ = tokio::time::timeout(STOP_LIMIT, worker.wait()) => {}
                () = signals.next() => println!("second Ctrl-C: stopping everything now"),
            }
            130
        }
    };
    // Whatever is left (a worker that did not finish, or died): swept, then reaped.
    procs::sweep(&dir, group);
    let _ = worker.start_kill();
    let _ = worker.wait().await;
    Ok(code)
}

/// What stops the worker, and how fast it must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Running,
    Asked,
    SupervisorGone,
}

impl StopReason {
    fn limit(self) -> Duration {
        match self {
            StopReason::SupervisorGone => ORPHAN_STOP_LIMIT,
            _ => WORKER_STOP_LIMIT,
        }
    }
}

async fn worker(args: DemoArgs, dir: PathBuf) -> Result<i32> {
    let (stop_tx, mut stop) = watch::channel(StopReason::Running);
    let mut signals = Signals::install()?;
    let on_signal = stop_tx.clone();
    tokio::spawn(async move {
        signals.next().await;
        let _ = on_signal.send(StopReason::Asked);
    });
    tokio::spawn(async move {
        // EOF (or an error) on the lifeline: the supervisor is gone.
        let mut buf = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        let _ = stop_tx.send(StopReason::SupervisorGone);
    });

    let start_dir = dir.clone();
    let started = tokio::task::spawn_blocking(move || start_cluster(&args, start_dir));
    let wait_stop = async {
        let _ = stop.wait_for(|r| *r != StopReason::Running).await;
    };
    let (mut cluster, mut proxy, once) = tokio::select! {
        result = started => match result {
            Ok(Ok(running)) => running,
            Ok(Err(e)) => {
                procs::sweep(&dir, Some(std::process::id() as i32));
                return Err(e);
            }
            Err(e) => {
                procs::sweep(&dir, Some(std::process::id() as i32));
                return Err(e).context("the demo start-up thread failed");
            }
        },
        () = wait_stop => {
            // Stopped during start-up: the start-up thread is abandoned (the process exits
            // after the sweep), so nothing it holds can be stopped in order.
            procs::sweep(&dir, Some(std::process::id() as i32));
            return Ok(130);
        }
    };

    let reason = if once {
        println!("\n--once: stopping the demo cluster");
        StopReason::Asked
    } else {
        loop {
            tokio::select! {
                _ = stop.changed() => break *stop.borrow(),
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    for line in cluster.reap() {
                        println!("demo: {line}");
                    }
                }
            }
        }
    };
    let limit = reason.limit();
    tokio::task::spawn_blocking(move || {
        proxy.stop(limit / 3);
        cluster.shutdown_within(limit);
        drop(cluster);
    })
    .await
    .context("stopping the demo cluster")?;
    procs::sweep(&dir, Some(std::process::id() as i32));
    Ok(if reason == StopReason::Asked && once {
        0
    } else {
        130
    })
}

/// Starts etcd, the agents and the proxy, waits until healthy and prints the summary.
fn start_cluster(args: &DemoArgs, dir: PathBuf) -> Result<(LocalCluster, DemoProxy, bool)> {
    let exe = std::env::current_exe().context("locating the pgherd executable")?;
    let members = args.members.max(1);
    // The demo runs with pgherd's own timing defaults (fast failover).
    let options = ClusterOptions {
        ttl: None,
        loop_wait: None,
        retry_timeout: None,
        scope: "demo".into(),
        members,
        dcs: args.dcs,
        root: Some(dir),
        ..ClusterOptions::default()
    };
    let started = Instant::now();
    let mut cluster = LocalCluster::new(&exe, options)?;
    println!(
        "pgherd demo: {}, files in {}",
        cluster.dcs.describe(),
        cluster.root.display()
    );
    cluster.start_all()?;
    if let Err(e) = cluster.wait_healthy(members - 1, Duration::from_secs(120)) {
        for i in 0..members {
            eprintln!(
                "--- {} log tail ---\n{}",
                cluster.members[i].name,
                cluster.log_tail(i, 15)
            );
        }
        return Err(e.context("the demo cluster did not become healthy"));
    }
    println!(
        "cluster healthy after {:.1}s\n",
        started.elapsed().as_secs_f64()
    );
    // Member keys refresh every loop_wait: show the table once every member reports in.
    let all_in = pgherd_localcluster::wait::poll(
        "every member running",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let out = cluster.ctl(0, &["list", "-f", "json"]).ok()?;
            let running = out.matches("\"State\":\"running\"").count()
                + out.matches("\"State\":\"streaming\"").count();
            (running == members).then_some(())
        },
    );
    if let Err(e) = all_in {
        eprintln!("warning: {e}");
    }
    print!("{}", cluster.ctl(0, &["list"])?);
    let proxy = start_proxy(&cluster, &exe, args.ports)?;
    let routed = pgherd_localcluster::wait::poll(
        "the proxy routes writes",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            (pgherd_localcluster::cluster::psql(proxy.primary, "select pg_is_in_recovery()")
                .ok()?
                == "f")
                .then_some(())
        },
    );
    print_summary(&cluster, &proxy);
    match routed {
        Ok(()) => println!("proxy: the primary port reaches the leader"),
        Err(e) => eprintln!("warning: {e}"),
    }
    Ok((cluster, proxy, args.once))
}

/// One screen, as HAProxy users know it: the writes port, the reads port, the stats page,
/// each member, and how to try a failover.
fn print_summary(cluster: &LocalCluster, proxy: &DemoProxy) {
    let dsn = |port: u16| {
        format!("psql 'host=127.0.0.1 port={port} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres'")
    };
    println!();
    println!(
        "  writes  {}   (the primary, wherever it is)",
        dsn(proxy.primary)
    );
    println!(
        "  reads   {}   (replicas, round robin)",
        dsn(proxy.replicas)
    );
    println!("  stats   http://127.0.0.1:{}/", proxy.stats);
    for (i, m) in cluster.members.iter().enumerate() {
        println!(
            "  {}   agent pid {}   postgres 127.0.0.1:{}   REST http://127.0.0.1:{}/patroni",
            m.name,
            cluster
                .agent_pid(i)
                .map_or_else(|| "-".to_string(), |p| p.to_string()),
            m.pg_port,
            m.api_port,
        );
    }
    let config = cluster.members[0].config.display();
    println!();
    println!("  watch       pgherd list -c {config} -W 1");
    println!("  failover    kill -9 <the leader's agent pid> (or its postmaster)");
    println!("  switchover  pgherd switchover -c {config} --force");
    println!(
        "  stop        Ctrl-C (stops everything and removes {})",
        cluster.root.display()
    );
    println!();
}

/// The demo's `pgherd proxy`: a primary port, a replica port and the stats page.
struct DemoProxy {
    child: std::process::Child,
    primary: u16,
    replicas: u16,
    stats: u16,
}

impl DemoProxy {
    /// SIGTERM (the proxy drains for its short `drain_timeout`), SIGKILL after `limit`.
    fn stop(&mut self, limit: Duration) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let _ = pgherd_localcluster::wait::poll(
            "the proxy to exit",
            limit,
            Duration::from_millis(20),
            || self.child.try_wait().ok().flatten(),
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_proxy(cluster: &LocalCluster, exe: &Path, fixed: Option<[u16; 3]>) -> Result<DemoProxy> {
    let ports = match fixed {
        Some(p) => p.to_vec(),
        None => pgherd_localcluster::ports::free_ports(3)?,
    };
    let yaml = format!(
        "scope: {scope}\nnamespace: /service/\n{dcs}proxy:\n  name: demo-proxy\n  drain_timeout: 1s\n  listeners:\n    - name: primary\n      bind: 127.0.0.1:{p}\n      role: primary\n    - name: replicas\n      bind: 127.0.0.1:{r}\n      role: replica\n      balance: roundrobin\n      fallback: primary\n  stats:\n    bind: 127.0.0.1:{st}\n",
        scope = cluster.options.scope,
        dcs = cluster.dcs.yaml_section(),
        p = ports[0],
        r = ports[1],
        st = ports[2],
    );
    let file = cluster.root.join("proxy.yml");
    std::fs::write(&file, yaml)?;
    let log = std::fs::File::create(cluster.root.join("proxy.log"))?;
    let child = std::process::Command::new(exe)
        .arg("proxy")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting pgherd proxy")?;
    Ok(DemoProxy {
        child,
        primary: ports[0],
        replicas: ports[1],
        stats: ports[2],
    })
}
