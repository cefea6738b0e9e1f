//! The proxy against its peers on the same cluster (real etcd + three PostgreSQL 15 + pgherd
//! agents), all in one run: PostgreSQL directly, `pgherd proxy`'s plain TCP listener, Debian's
//! HAProxy configured like the reference stack (`option httpchk OPTIONS /master`, `inter 3s
//! fall 3 rise 2 on-marked-down shutdown-sessions`), Debian's pgbouncer (transaction pooling
//! in front of the leader), Debian's Pgpool-II (streaming-replication mode with load
//! balancing over the three servers) and, when the pgherd binary has a connection pool
//! (`pool_mode` on a listener), pgherd's transaction pool and its single-port split (`role:
//! auto`: pgbench `-S`'s reads on the replicas, compared with Pgpool-II's load balancing).
//!
//! Measured per round, every peer in turn: pgbench `-S` (16 clients) and `-S -C` (a new
//! connection per transaction) TPS, latency and the peer's CPU time per transaction (`-S -C`
//! also through a second pgbouncer and a second pool listener with md5 logins: what a new
//! connection costs when the pooler's client authentication is cheap); then the RSS of
//! pgbouncer and pgherd's pool with no client and with 10,000 idle clients that logged in
//! (startup, md5 — or SCRAM with `--idle-auth scram` — against the user list, then
//! `ReadyForQuery`: what an idle pooled client is; bench/src/login.rs), and of pgherd's plain
//! listener and pgbouncer with 10,000 clients that connected and said nothing (a plain
//! proxy cannot log clients in without a server connection each), with the anonymous and
//! file-backed parts of each; then the time from a leader kill to the first successful
//! write directly, through pgherd and through HAProxy. Prints `name=value unit` lines:
//! per-round paired ratios as each round ends, then medians.
//!
//! `cargo build --release && cargo run --release -p pgherd-bench --bin proxy -- [SECONDS]
//! [ROUNDS] [--only pgbench,rss,failover] [--idle-auth md5|scram]` (SECONDS per pgbench run,
//! default 5; ROUNDS, default 4: about nine minutes with the pool; `--only rss`: about two;
//! `--help`).
//!
//! On two shared cores a single pgbench run varies by ±10 %, so besides the medians of each
//! peer the bench prints the median of the per-round ratios: within a round the peers run
//! back to back, which cancels most of the drift between rounds, and the order reverses
//! every round (A/B/A/B, then B/A/B/A) so each peer runs early as often as late.
//!
//! pgbouncer and Pgpool-II refuse to run as root: when the bench runs as root they run as the
//! `postgres` OS user, like PostgreSQL (crates/localcluster/src/cluster.rs).

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use pgherd_bench::login::{idle_clients, Credentials};
use pgherd_bench::peers::{self, as_postgres, give_to_postgres, spawn_logged, Guard};
use pgherd_bench::{pgherd_bin, report, summary};
use pgherd_testkit::cluster::{ClusterOptions, TestCluster, SUPERUSER_PASSWORD};
use pgherd_testkit::ports::free_ports;
use pgherd_testkit::procs::descendants_of;
use pgherd_testkit::wait::poll;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";
const PGBOUNCER: &str = "/usr/sbin/pgbouncer";
const PGPOOL: &str = "/usr/sbin/pgpool";
const CLIENTS: &str = "16";
/// Server connections of each pool (pgbouncer's `default_pool_size`, pgherd's `pool_size`):
/// one per pgbench client.
const POOL_SIZE: usize = 16;
const IDLE_CLIENTS: usize = 10_000;
const SECONDS: u64 = 5;
const ROUNDS: usize = 4;
/// Pause before each pgbench run (exiting backends and TIME_WAIT sockets of the last run).
const SETTLE: Duration = Duration::from_secs(2);
/// Every pool keeps its server connections open between runs: room for all of them at once.
const MAX_CONNECTIONS: u32 = 150;
/// Pgpool-II's processes, each serving one client at a time (its default).
const PGPOOL_CHILDREN: usize = 32;

/// Whose CPU time a peer costs: one process, or a process and every process it forks
/// (Pgpool-II: one process per client, exited ones counted in the parent's `cutime`).
#[derive(Clone, Copy)]
enum Cpu {
    None,
    Process(i32),
    Tree(i32),
}

impl Cpu {
    /// CPU seconds so far.
    fn seconds(self) -> Option<f64> {
        let ticks = match self {
            Cpu::None => return None,
            Cpu::Process(pid) => proc_ticks(pid)?.0,
            Cpu::Tree(pid) => {
                let own = proc_ticks(pid)?;
                let below: u64 = descendants_of(pid)
                    .into_iter()
                    .filter(|&p| p != pid)
                    .filter_map(proc_ticks)
                    .map(|t| t.0 + t.1)
                    .sum();
                own.0 + own.1 + below
            }
        };
        Some(ticks as f64 / clock_ticks())
    }
}

/// (utime + stime, cutime + cstime) of `pid`, in clock ticks.
fn proc_ticks(pid: i32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    (f.len() == 4).then(|| (f[0] + f[1], f[2] + f[3]))
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

/// One peer pgbench runs against.
struct Peer {
    name: &'static str,
    port: u16,
    cpu: Cpu,
    /// Only in the `-C` mode (md5 logins: what a new connection costs when the pooler's
    /// client authentication is cheap).
    connect_only: bool,
}

/// One pgbench run.
struct Sample {
    round: usize,
    mode: &'static str,
    peer: &'static str,
    tps: f64,
    latency: f64,
    /// The peer's CPU microseconds per transaction.
    cpu_us_per_txn: Option<f64>,
}

const MODES: [(&str, &[&str]); 2] = [("select", &[]), ("select_connect", &["-C"])];

const USAGE: &str = "\
usage: proxy [SECONDS] [ROUNDS] [--only PARTS] [--idle-auth md5|scram]

  SECONDS      per pgbench run (default 5)
  ROUNDS       pgbench rounds, the peers' order reversed every round (default 4)
  --only       comma-separated parts to run (default all): pgbench (-S and -S -C through
               every peer), rss (RSS with 10,000 idle clients), failover (leader kill)
  --idle-auth  how the 10,000 idle pooled clients log in (default md5: cheap logins, so
               the part takes seconds; scram takes minutes through pgbouncer)
";

/// The command line.
struct Options {
    seconds: u64,
    rounds: usize,
    pgbench: bool,
    rss: bool,
    failover: bool,
    idle_scram: bool,
}

impl Options {
    /// `None`: `--help`.
    fn parse(args: impl Iterator<Item = String>) -> Result<Option<Options>> {
        let mut o = Options {
            seconds: SECONDS,
            rounds: ROUNDS,
            pgbench: true,
            rss: true,
            failover: true,
            idle_scram: false,
        };
        let mut args = args;
        let mut positional = 0;
        while let Some(a) = args.next() {
            match a.as_str() {
                "-h" | "--help" => return Ok(None),
                "--only" => {
                    let parts = args.next().context("--only needs PARTS")?;
                    (o.pgbench, o.rss, o.failover) = (false, false, false);
                    for part in parts.split(',') {
                        match part {
                            "pgbench" => o.pgbench = true,
                            "rss" => o.rss = true,
                            "failover" => o.failover = true,
                            other => {
                                bail!("--only: unknown part {other:?} (pgbench, rss, failover)")
                            }
                        }
                    }
                }
                "--idle-auth" => {
                    o.idle_scram = match args.next().as_deref() {
                        Some("md5") => false,
                        Some("scram") => true,
                        other => bail!("--idle-auth: {other:?}, expected md5 or scram"),
                    }
                }
                number if positional < 2 => {
                    let bad = || format!("{number:?} is not a number\n{USAGE}");
                    if positional == 0 {
                        o.seconds = number.parse().with_context(bad)?;
                    } else {
                        o.rounds = number.parse().with_context(bad)?;
                    }
                    positional += 1;
                }
                other => bail!("unexpected argument {other:?}\n{USAGE}"),
            }
        }
        Ok(Some(o))
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "a synchronous benchmark driver: pauses its own threads, no async runtime"
)]
fn main() -> Result<()> {
    let Some(opts) = Options::parse(std::env::args().skip(1))? else {
        print!("{USAGE}");
        return Ok(());
    };
    let (seconds, rounds) = (opts.seconds, opts.rounds);
    raise_fd_limit(IDLE_CLIENTS as u64 + 1_000)?;
    let pgherd = pgherd_bin()?;
    eprintln!("pgherd binary: {}", pgherd.display());
    let options = ClusterOptions {
        scope: "benchpx".into(),
        max_connections: MAX_CONNECTIONS,
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::new(&pgherd, options)?;
    c.start_all()?;
    let leader = c.wait_healthy(2, Duration::from_secs(120))?;
    eprintln!("cluster healthy, leader {}", c.members[leader].name);
    let direct = c.members[leader].pg_port;
    let peers_dir = c.root.join("peers");
    std::fs::create_dir_all(&peers_dir)?;
    // pgbouncer and Pgpool-II (as postgres when we are root) write their pid and status here.
    std::fs::set_permissions(&peers_dir, std::fs::Permissions::from_mode(0o777))?;

    let ports = free_ports(11)?;
    let (px_primary, px_replicas, px_stats, ha_primary) = (ports[0], ports[1], ports[2], ports[3]);
    let (bouncer_port, pgpool_port, pcp_port, pool_port) = (ports[4], ports[5], ports[6], ports[7]);
    let (bouncer_md5_port, pool_md5_port) = (ports[8], ports[9]);
    let auto_port = ports[10];
    let etcd = c.etcd().client_url();
    let etcd_hosts = etcd.trim_start_matches("http://").to_string();

    // pgherd proxy: the plain TCP listeners.
    let px_cfg = c.root.join("proxy.yml");
    std::fs::write(
        &px_cfg,
        format!(
            "scope: benchpx\nnamespace: /service/\netcd3:\n  hosts: {etcd_hosts}\nproxy:\n  name: bench\n  listeners:\n    - name: primary\n      bind: 127.0.0.1:{px_primary}\n      role: primary\n    - name: replicas\n      bind: 127.0.0.1:{px_replicas}\n      role: replica\n  stats:\n    bind: 127.0.0.1:{px_stats}\n"
        ),
    )?;
    let px_log = c.root.join("proxy.log");
    let px = Guard::new(
        spawn_logged(
            Command::new(&pgherd)
                .arg("proxy")
                .arg(&px_cfg)
                .env("RUST_LOG", "warn"),
            &px_log,
        )
        .context("starting pgherd proxy")?,
        Signal::SIGTERM,
    );

    // HAProxy.
    let ha_cfg = c.root.join("haproxy.cfg");
    let mut ha = String::from(
        "global\n  maxconn 9000\ndefaults\n  mode tcp\n  timeout connect 3s\n  timeout client 30m\n  timeout server 30m\n  timeout check 2s\n",
    );
    ha.push_str(&format!(
        "listen primary\n  bind 127.0.0.1:{ha_primary}\n  maxconn 9000\n  option httpchk OPTIONS /master\n  http-check expect status 200\n  default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions\n"
    ));
    for m in &c.members {
        ha.push_str(&format!(
            "  server {} 127.0.0.1:{} maxconn 1000 check port {}\n",
            m.name, m.pg_port, m.api_port
        ));
    }
    std::fs::write(&ha_cfg, ha)?;
    let haproxy = peers::haproxy(&ha_cfg, &c.root.join("haproxy.log"))?;

    // pgbouncer: transaction pooling in front of the leader, SCRAM with clients (as
    // PostgreSQL itself asks), the password in its user list to log in to the server.
    let userlist = peers_dir.join("userlist.txt");
    std::fs::write(
        &userlist,
        format!("\"postgres\" \"{SUPERUSER_PASSWORD}\"\n"),
    )?;
    let bouncer_ini = |port: u16, auth_type: &str| {
        format!(
            "[databases]\n* = host=127.0.0.1 port={direct}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nlisten_backlog = 4096\nunix_socket_dir =\nauth_type = {auth_type}\nauth_file = {}\npool_mode = transaction\ndefault_pool_size = {POOL_SIZE}\nmax_client_conn = {}\nclient_login_timeout = 0\nignore_startup_parameters = extra_float_digits\nlog_connections = 0\nlog_disconnections = 0\n",
            userlist.display(),
            IDLE_CLIENTS + 100
        )
    };
    let bouncer_cfg = peers_dir.join("pgbouncer.ini");
    std::fs::write(&bouncer_cfg, bouncer_ini(bouncer_port, "scram-sha-256"))?;
    let bouncer_log = peers_dir.join("pgbouncer.log");
    let mut bouncer = Guard::new(
        spawn_logged(
            as_postgres(Command::new(PGBOUNCER).arg(&bouncer_cfg))?,
            &bouncer_log,
        )
        .context("starting pgbouncer")?,
        Signal::SIGINT,
    );
    // The same with md5 logins (pgbouncer's auth_type is process-wide: a second one).
    let bouncer_md5_cfg = peers_dir.join("pgbouncer-md5.ini");
    std::fs::write(&bouncer_md5_cfg, bouncer_ini(bouncer_md5_port, "md5"))?;
    let bouncer_md5_log = peers_dir.join("pgbouncer-md5.log");
    let mut bouncer_md5 = Guard::new(
        spawn_logged(
            as_postgres(Command::new(PGBOUNCER).arg(&bouncer_md5_cfg))?,
            &bouncer_md5_log,
        )
        .context("starting pgbouncer (md5)")?,
        Signal::SIGINT,
    );

    // Pgpool-II: streaming-replication mode, reads balanced over the three servers.
    let pgpool_log = peers_dir.join("pgpool.log");
    let pgpool_cfg = peers_dir.join("pgpool.conf");
    let pool_passwd = peers_dir.join("pool_passwd");
    std::fs::write(&pool_passwd, format!("postgres:TEXT{SUPERUSER_PASSWORD}\n"))?;
    let pcp_conf = peers_dir.join("pcp.conf");
    std::fs::write(&pcp_conf, "")?;
    let hba_conf = peers_dir.join("pool_hba.conf");
    std::fs::write(&hba_conf, "")?;
    let d = peers_dir.display();
    let mut pp = format!(
        "backend_clustering_mode = 'streaming_replication'\nlisten_addresses = '127.0.0.1'\nport = {pgpool_port}\nunix_socket_directories = '{d}'\npcp_listen_addresses = '127.0.0.1'\npcp_port = {pcp_port}\npcp_socket_dir = '{d}'\nwd_ipc_socket_dir = '{d}'\npid_file_name = '{d}/pgpool.pid'\nlogdir = '{d}'\nlog_min_messages = warning\nenable_pool_hba = off\npool_passwd = '{}'\nnum_init_children = {PGPOOL_CHILDREN}\nmax_pool = 1\nload_balance_mode = on\nsr_check_period = 10\nsr_check_user = 'postgres'\nsr_check_password = '{SUPERUSER_PASSWORD}'\nhealth_check_period = 0\nfailover_on_backend_error = off\n",
        pool_passwd.display()
    );
    for (i, m) in c.members.iter().enumerate() {
        pp.push_str(&format!(
            "backend_hostname{i} = '127.0.0.1'\nbackend_port{i} = {}\nbackend_weight{i} = 1\nbackend_flag{i} = 'ALLOW_TO_FAILOVER'\n",
            m.pg_port
        ));
    }
    std::fs::write(&pgpool_cfg, pp)?;
    for f in [
        &userlist,
        &bouncer_cfg,
        &bouncer_md5_cfg,
        &pool_passwd,
        &pcp_conf,
        &hba_conf,
        &pgpool_cfg,
    ] {
        give_to_postgres(f)?;
    }
    let mut pgpool = Guard::new(
        spawn_logged(
            as_postgres(
                Command::new(PGPOOL)
                    .arg("-n")
                    .arg("-D")
                    .arg("-f")
                    .arg(&pgpool_cfg)
                    .arg("-F")
                    .arg(&pcp_conf)
                    .arg("-a")
                    .arg(&hba_conf),
            )?,
            &pgpool_log,
        )
        .context("starting pgpool")?,
        Signal::SIGINT,
    );

    // pgherd's transaction pool, when this pgherd has one.
    let pool_cfg = c.root.join("pool.yml");
    std::fs::write(
        &pool_cfg,
        format!(
            "scope: benchpx\nnamespace: /service/\netcd3:\n  hosts: {etcd_hosts}\nproxy:\n  name: benchpool\n  listeners:\n    - name: pool\n      bind: 127.0.0.1:{pool_port}\n      role: primary\n      pool_mode: transaction\n      pool_size: {POOL_SIZE}\n      max_client_conn: {max_clients}\n      auth_type: scram-sha-256\n      auth_file: {users}\n    - name: pool_md5\n      bind: 127.0.0.1:{pool_md5_port}\n      role: primary\n      pool_mode: transaction\n      pool_size: {POOL_SIZE}\n      max_client_conn: {max_clients}\n      auth_type: md5\n      auth_file: {users}\n    - name: auto\n      bind: 127.0.0.1:{auto_port}\n      role: auto\n      pool_mode: transaction\n      pool_size: {POOL_SIZE}\n      max_client_conn: {max_clients}\n      auth_type: scram-sha-256\n      auth_file: {users}\n",
            max_clients = IDLE_CLIENTS + 100,
            users = userlist.display()
        ),
    )?;
    let check = Command::new(&pgherd)
        .args(["check-config", "--proxy"])
        .arg(&pool_cfg)
        .output()?;
    let pool = if check.status.success() {
        let log = c.root.join("pool.log");
        Some(Guard::new(
            spawn_logged(
                Command::new(&pgherd)
                    .arg("proxy")
                    .arg(&pool_cfg)
                    .env("RUST_LOG", "warn"),
                &log,
            )
            .context("starting pgherd proxy (pool)")?,
            Signal::SIGTERM,
        ))
    } else {
        eprintln!(
            "pgherd_pool skipped: {} rejects a pooled listener (pool_mode: transaction): {}{}",
            pgherd.display(),
            String::from_utf8_lossy(&check.stdout).trim(),
            String::from_utf8_lossy(&check.stderr).trim()
        );
        None
    };

    if opts.pgbench {
        // Data for pgbench -S, on every server (Pgpool-II reads from the replicas too).
        run(Command::new(PGBENCH)
            .args([
                "-i",
                "-q",
                "-s",
                "10",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
            ])
            .arg(direct.to_string())
            .arg("postgres"))?;
        for m in &c.members {
            poll(
                "pgbench data on every server",
                Duration::from_secs(60),
                Duration::from_millis(100),
                || {
                    (psql(m.pg_port, "select count(*) from pgbench_branches", 5).ok()? == "10")
                        .then_some(())
                },
            )?;
        }
    }
    bouncer.check_running("pgbouncer", &bouncer_log)?;
    bouncer_md5.check_running("pgbouncer (md5)", &bouncer_md5_log)?;
    pgpool.check_running("pgpool", &pgpool_log)?;
    // Compared peers run next to each other: pgherd and HAProxy, pgbouncer and pgherd's pool.
    let mut peers = vec![
        Peer {
            name: "direct",
            port: direct,
            cpu: Cpu::None,
            connect_only: false,
        },
        Peer {
            name: "pgpool",
            port: pgpool_port,
            cpu: Cpu::Tree(pgpool.pid()),
            connect_only: false,
        },
        Peer {
            name: "pgherd",
            port: px_primary,
            cpu: Cpu::Process(px.pid()),
            connect_only: false,
        },
        Peer {
            name: "haproxy",
            port: ha_primary,
            cpu: Cpu::Process(haproxy.pid()),
            connect_only: false,
        },
        Peer {
            name: "pgbouncer",
            port: bouncer_port,
            cpu: Cpu::Process(bouncer.pid()),
            connect_only: false,
        },
    ];
    if let Some(p) = &pool {
        peers.push(Peer {
            name: "pgherd_pool",
            port: pool_port,
            cpu: Cpu::Process(p.pid()),
            connect_only: false,
        });
    }
    if let Some(p) = &pool {
        // The single-port split: pgbench -S's reads on the replicas, as Pgpool-II balances
        // them over the servers.
        peers.push(Peer {
            name: "pgherd_auto",
            port: auto_port,
            cpu: Cpu::Process(p.pid()),
            connect_only: false,
        });
    }
    peers.push(Peer {
        name: "pgbouncer_md5",
        port: bouncer_md5_port,
        cpu: Cpu::Process(bouncer_md5.pid()),
        connect_only: true,
    });
    if let Some(p) = &pool {
        peers.push(Peer {
            name: "pgherd_pool_md5",
            port: pool_md5_port,
            cpu: Cpu::Process(p.pid()),
            connect_only: true,
        });
    }
    for p in &peers {
        poll(
            p.name,
            Duration::from_secs(60),
            Duration::from_millis(100),
            || (psql(p.port, "select 1", 5).ok()? == "1").then_some(()),
        )
        .with_context(|| format!("{} does not answer on port {}", p.name, p.port))?;
    }

    if opts.pgbench {
        pgbench_rounds(&peers, pool.is_some(), seconds, rounds);
    }
    if opts.rss {
        // The plain proxy cannot log a client in without a server connection per client:
        // its clients are connected only. The pools' clients log in (md5 or SCRAM).
        let (bouncer_idle, pool_idle) = if opts.idle_scram {
            (
                (bouncer_port, bouncer.pid()),
                (pool_port, pool.as_ref().map(Guard::pid)),
            )
        } else {
            (
                (bouncer_md5_port, bouncer_md5.pid()),
                (pool_md5_port, pool.as_ref().map(Guard::pid)),
            )
        };
        let mut idle_peers = vec![
            IdlePeer {
                name: "pgherd_connected",
                port: px_primary,
                pid: px.pid(),
                log_in: false,
            },
            IdlePeer {
                name: "pgbouncer_connected",
                port: bouncer_port,
                pid: bouncer.pid(),
                log_in: false,
            },
            IdlePeer {
                name: "pgbouncer_logged_in",
                port: bouncer_idle.0,
                pid: bouncer_idle.1,
                log_in: true,
            },
        ];
        if let (port, Some(pid)) = pool_idle {
            idle_peers.push(IdlePeer {
                name: "pgherd_pool_logged_in",
                port,
                pid,
                log_in: true,
            });
        }
        idle_rss(&idle_peers)?;
        report("proxy_peak_rss", peak_kb(px.pid()) as f64 / 1024.0, "MiB");
    }
    // pgbouncer and Pgpool-II follow no failover: stop them before the leader is killed.
    drop(pool);
    drop(bouncer);
    drop(bouncer_md5);
    drop(pgpool);

    if opts.failover {
        // Leader kill: first successful write directly, through pgherd, through HAProxy.
        psql(
            direct,
            "create table if not exists probe(at timestamptz)",
            5,
        )?;
        let others: Vec<u16> = (0..3)
            .filter(|&i| i != leader)
            .map(|i| c.members[i].pg_port)
            .collect();
        // Replication is asynchronous: a replica promoted without the table would refuse every
        // probe write.
        for &p in &others {
            poll(
                "the probe table on every replica",
                Duration::from_secs(30),
                Duration::from_millis(50),
                || {
                    (psql(p, "select to_regclass('probe') is not null", 5).ok()? == "t")
                        .then_some(())
                },
            )?;
        }
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        c.signal_node(leader, Signal::SIGKILL)?;
        let deadline = Duration::from_secs(90);
        for (label, ports, timeout) in [
            ("direct", others.clone(), 1u64),
            ("pgherd", vec![px_primary], 60),
            ("haproxy", vec![ha_primary], 1),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                while start.elapsed() < deadline {
                    for &p in &ports {
                        if psql(p, "insert into probe values (now())", timeout).is_ok() {
                            let _ = tx.send((label, start.elapsed().as_secs_f64()));
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        drop(tx);
        let mut failover = Vec::new();
        for (label, secs) in rx.iter() {
            report(&format!("failover_first_write_{label}"), secs, "s");
            failover.push((label, secs));
        }
        let f = |l: &str| failover.iter().find(|r| r.0 == l).map_or(f64::NAN, |r| r.1);
        report(
            "failover_pgherd_minus_direct",
            f("pgherd") - f("direct"),
            "s",
        );
        report(
            "failover_haproxy_minus_pgherd",
            f("haproxy") - f("pgherd"),
            "s",
        );
    }
    drop(haproxy);
    drop(px);
    Ok(())
}

/// The pgbench rounds: every peer in both modes, the order reversed every round; prints
/// per-round paired ratios as each round ends, then medians.
#[allow(
    clippy::disallowed_methods,
    reason = "a synchronous benchmark driver: pauses its own threads, no async runtime"
)]
fn pgbench_rounds(peers: &[Peer], has_pool: bool, seconds: u64, rounds: usize) {
    // What each row is compared with.
    let mut pairs = vec![
        ("pgherd", "haproxy"),
        ("pgherd", "pgbouncer"),
        ("pgherd", "pgpool"),
        ("pgherd", "direct"),
    ];
    if has_pool {
        pairs.extend([
            ("pgherd_pool", "pgbouncer"),
            ("pgherd_pool", "haproxy"),
            ("pgherd_pool", "pgpool"),
            ("pgherd_pool", "direct"),
            ("pgherd_auto", "pgpool"),
            ("pgherd_auto", "pgbouncer"),
            ("pgherd_pool_md5", "pgbouncer_md5"),
            ("pgherd_pool_md5", "haproxy"),
            ("pgherd_pool_md5", "direct"),
        ]);
    }

    let mut samples: Vec<Sample> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for round in 0..rounds {
        for (mode, extra) in MODES {
            for k in 0..peers.len() {
                let k = if round % 2 == 0 {
                    k
                } else {
                    peers.len() - 1 - k
                };
                let p = &peers[k];
                if p.connect_only && extra.is_empty() {
                    continue;
                }
                std::thread::sleep(SETTLE);
                let cpu0 = p.cpu.seconds();
                // A failed run (e.g. a health check missed under load closed sessions) is
                // reported and left out; the other runs go on.
                let r = match pgbench(p.port, seconds, extra) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("round {round} {mode} {}: pgbench failed: {e:#}", p.name);
                        failed.push(format!("{mode}_{}", p.name));
                        continue;
                    }
                };
                let cpu = cpu0
                    .zip(p.cpu.seconds())
                    .map(|(a, b)| (b - a) * 1e6 / r.transactions.max(1) as f64);
                eprintln!(
                    "round {round} {mode} {}: {:.0} tps, {:.3} ms{}",
                    p.name,
                    r.tps,
                    r.latency,
                    cpu.map(|us| format!(", {us:.1} us CPU per transaction"))
                        .unwrap_or_default()
                );
                samples.push(Sample {
                    round,
                    mode,
                    peer: p.name,
                    tps: r.tps,
                    latency: r.latency,
                    cpu_us_per_txn: cpu,
                });
            }
            for (a, b) in &pairs {
                let at = |peer: &str| {
                    samples
                        .iter()
                        .find(|s| s.round == round && s.mode == mode && s.peer == peer)
                };
                if let (Some(x), Some(y)) = (at(a), at(b)) {
                    report(
                        &format!("round{}_{mode}_{a}_over_{b}", round + 1),
                        x.tps / y.tps,
                        "x",
                    );
                }
            }
        }
    }

    println!("--- medians of {rounds} rounds of {seconds} s runs ---");
    let values = |mode: &str, peer: &str, f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<f64> {
        samples
            .iter()
            .filter(|s| s.mode == mode && s.peer == peer)
            .filter_map(f)
            .collect()
    };
    for (mode, _) in MODES {
        for p in peers {
            let n = p.name;
            if p.connect_only && mode == "select" {
                continue;
            }
            report(
                &format!("pgbench_{mode}_{n}_tps"),
                summary(&values(mode, n, &|s| Some(s.tps))).1,
                "tps",
            );
            report(
                &format!("pgbench_{mode}_{n}_latency_avg"),
                summary(&values(mode, n, &|s| Some(s.latency))).1,
                "ms",
            );
            let cpu = values(mode, n, &|s| s.cpu_us_per_txn);
            if !cpu.is_empty() {
                report(&format!("cpu_per_txn_{mode}_{n}"), summary(&cpu).1, "us");
            }
        }
    }
    failed.sort();
    for f in failed.iter().collect::<std::collections::BTreeSet<_>>() {
        let n = failed.iter().filter(|x| *x == f).count();
        report(&format!("pgbench_failed_runs_{f}"), n as f64, "runs");
    }
    println!("--- per-round paired ratios (median, min, max) ---");
    let paired = |mode: &str, a: &str, b: &str, f: &dyn Fn(&Sample) -> Option<f64>| {
        let ratios: Vec<f64> = (0..rounds)
            .filter_map(|round| {
                let at = |peer: &str| {
                    samples
                        .iter()
                        .find(|s| s.round == round && s.mode == mode && s.peer == peer)
                        .and_then(f)
                };
                Some(at(a)? / at(b)?)
            })
            .collect();
        summary(&ratios)
    };
    for (mode, _) in MODES {
        for (a, b) in &pairs {
            let (lo, mid, hi) = paired(mode, a, b, &|s| Some(s.tps));
            if mid.is_nan() {
                // A peer that runs in the other mode only.
                continue;
            }
            report(
                &format!("ratio_{mode}_{a}_over_{b}_paired_median"),
                mid,
                "x",
            );
            report(&format!("ratio_{mode}_{a}_over_{b}_paired_min"), lo, "x");
            report(&format!("ratio_{mode}_{a}_over_{b}_paired_max"), hi, "x");
            let (_, cpu, _) = paired(mode, a, b, &|s| s.cpu_us_per_txn);
            if cpu.is_finite() {
                report(
                    &format!("ratio_{mode}_cpu_per_txn_{a}_over_{b}_paired_median"),
                    cpu,
                    "x",
                );
            }
        }
    }
}

/// A process whose RSS is measured with 10,000 idle clients on one of its ports.
struct IdlePeer {
    name: &'static str,
    port: u16,
    pid: i32,
    /// The clients log in (startup, md5 or SCRAM, `ReadyForQuery`); otherwise they connect
    /// and say nothing.
    log_in: bool,
}

/// Threads logging the idle clients in at once.
const LOGIN_THREADS: usize = 4;

/// RSS of each peer with no client, then with 10,000 idle ones (one peer after the other),
/// and the ratios of pgherd's rows to pgbouncer's.
fn idle_rss(peers: &[IdlePeer]) -> Result<()> {
    let creds = Credentials {
        user: "postgres".into(),
        password: SUPERUSER_PASSWORD.into(),
        database: "postgres".into(),
    };
    let mut with_clients = Vec::new();
    for p in peers {
        let before = Memory::of(p.pid);
        let started = Instant::now();
        let idle = if p.log_in {
            idle_clients(p.port, &creds, IDLE_CLIENTS, LOGIN_THREADS)
                .with_context(|| format!("logging 10,000 clients in to {}", p.name))?
        } else {
            let mut idle = Vec::with_capacity(IDLE_CLIENTS);
            for _ in 0..IDLE_CLIENTS {
                idle.push(TcpStream::connect(("127.0.0.1", p.port))?);
            }
            idle
        };
        poll(
            &format!("{} to accept 10,000 clients", p.name),
            Duration::from_secs(60),
            Duration::from_millis(100),
            // A few descriptors of its own may close meanwhile (pgbouncer's): 10,000 at
            // least means every client but a handful is in.
            || (open_fds(p.pid) >= IDLE_CLIENTS).then_some(()),
        )?;
        let opened = started.elapsed().as_secs_f64();
        let with = Memory::of(p.pid);
        // Still serving with them connected.
        psql(p.port, "select 1", 5)
            .with_context(|| format!("{} with 10,000 idle clients", p.name))?;
        drop(idle);
        let n = p.name;
        report(&format!("rss_{n}_0_clients"), mib(before.rss), "MiB");
        report(&format!("rss_{n}_10k_idle_clients"), mib(with.rss), "MiB");
        report(
            &format!("rss_anon_{n}_10k_idle_clients"),
            mib(with.anon),
            "MiB",
        );
        report(
            &format!("rss_file_{n}_10k_idle_clients"),
            mib(with.file),
            "MiB",
        );
        report(
            &format!("rss_{n}_per_idle_client"),
            with.rss.saturating_sub(before.rss) as f64 * 1024.0 / IDLE_CLIENTS as f64,
            "bytes",
        );
        report(&format!("open_10k_idle_clients_{n}"), opened, "s");
        with_clients.push((n, with.rss));
    }
    let rss_of = |n: &str| {
        with_clients
            .iter()
            .find(|r| r.0 == n)
            .map_or(f64::NAN, |r| r.1 as f64)
    };
    for (a, b) in [
        ("pgherd_pool_logged_in", "pgbouncer_logged_in"),
        ("pgherd_connected", "pgbouncer_connected"),
    ] {
        if with_clients.iter().any(|r| r.0 == a) {
            report(
                &format!("ratio_rss_10k_idle_{a}_over_{b}"),
                rss_of(a) / rss_of(b),
                "x",
            );
        }
    }
    Ok(())
}

/// Resident memory of a process, in kB (`/proc/<pid>/status`): all of it, its anonymous
/// part (heap, stacks) and its file-backed part (the program's and libraries' pages).
struct Memory {
    rss: u64,
    anon: u64,
    file: u64,
}

impl Memory {
    fn of(pid: i32) -> Memory {
        Memory {
            rss: status_kb(pid, "VmRSS:"),
            anon: status_kb(pid, "RssAnon:"),
            file: status_kb(pid, "RssFile:"),
        }
    }
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Raises the soft open-files limit to at least `wanted` (up to the hard limit): 10,000 idle
/// client sockets here, and as many in the proxy or pgbouncer, which inherit the limit.
fn raise_fd_limit(wanted: u64) -> Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < wanted {
        if hard < wanted {
            bail!("the open-files hard limit ({hard}) is below {wanted}: raise it (ulimit -Hn)");
        }
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.env("PGPASSWORD", SUPERUSER_PASSWORD).output()?;
    if !out.status.success() {
        bail!("{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct PgbenchRun {
    tps: f64,
    latency: f64,
    transactions: u64,
}

fn pgbench(port: u16, seconds: u64, extra: &[&str]) -> Result<PgbenchRun> {
    let out = run(Command::new(PGBENCH)
        .args([
            "-n",
            "-S",
            "-c",
            CLIENTS,
            "-j",
            "2",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-T",
        ])
        .arg(seconds.to_string())
        .args(extra)
        .arg("-p")
        .arg(port.to_string())
        .arg("postgres"))?;
    let find = |prefix: &str, sep: char| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split(sep).nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Ok(PgbenchRun {
        tps: find("tps", '=').context("pgbench printed no tps")?,
        latency: find("latency average", '=').context("pgbench printed no latency")?,
        transactions: find("number of transactions actually processed", ':')
            .context("pgbench printed no transaction count")? as u64,
    })
}

fn psql(port: u16, sql: &str, connect_timeout: u64) -> Result<String> {
    pgherd_testkit::cluster::psql_with_timeout(port, sql, connect_timeout)
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn status_kb(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn peak_kb(pid: i32) -> u64 {
    status_kb(pid, "VmHWM:")
}
