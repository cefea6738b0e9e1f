//! A leader killed under pooled write load: what the clients see through pgherd's transaction
//! pool, next to pgbouncer behind HAProxy (the usual Patroni deployment: a pgbouncer next to
//! each PostgreSQL, HAProxy in front sending clients to the pgbouncer whose member answers
//! `OPTIONS /master` with 200, with the reference stack's `inter 3s fall 3 rise 2
//! on-marked-down shutdown-sessions`).
//!
//! One cluster (real etcd, three PostgreSQL 15 with pgherd agents, `synchronous_mode: true` so
//! that no acknowledged write may be lost). Each round, for each path in turn (the order
//! alternates every round): 16 writer clients insert numbered rows one after another, each
//! retrying 50 ms after a failure on a new connection, as an application would; after 3 s the
//! leader's node crashes (SIGKILL of its agent, PostgreSQL and pgbouncer); the round ends when
//! every client has written again. Then the crashed member rejoins before the next kill.
//!
//! Prints, per path, medians over the rounds:
//! - `failed_attempts`: statements and connection attempts that failed after the kill;
//! - `clients_with_errors`: clients (of 16) that saw at least one error;
//! - `write_gap_median` / `write_gap_max`: from the kill to each client's next committed row
//!   among the statements it sent once the old primary's processes were gone;
//! - `lost_acknowledged`: rows a client saw committed that the new primary does not have.
//!
//! `cargo build --release && cargo run --release -p pgherd-bench --bin pool_failover [ROUNDS]`
//! (default 2 rounds: four leader kills, about four minutes).

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgherd_bench::peers::{self, as_postgres, give_to_postgres, spawn_logged, Guard};
use pgherd_bench::{pgherd_bin, report, summary};
use pgherd_testkit::cluster::{ClusterOptions, TestCluster, SUPERUSER_PASSWORD};
use pgherd_testkit::ports::free_ports;
use pgherd_testkit::procs;
use pgherd_testkit::wait::poll;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PGBOUNCER: &str = "/usr/sbin/pgbouncer";
const WRITERS: usize = 16;
/// Server connections per pool: fewer than writers, as in a real pooled deployment.
const POOL_SIZE: usize = 8;
const ROUNDS: usize = 2;
const WARM_UP: Duration = Duration::from_secs(3);
/// How long a statement may take before the client gives up on it (a common application
/// setting): a statement the pool holds during the failover for less than this succeeds.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
const RETRY_AFTER: Duration = Duration::from_millis(50);
/// Every writer must have written again within this after the kill.
const RECOVERY_LIMIT: Duration = Duration::from_secs(90);

/// How the writers reach the primary.
#[derive(Clone, Copy, PartialEq)]
enum Route {
    PgherdPool,
    PgbouncerBehindHaproxy,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::PgherdPool => "pgherd_pool",
            Route::PgbouncerBehindHaproxy => "pgbouncer_behind_haproxy",
        }
    }
}

/// What one writer saw.
#[derive(Default)]
struct WriterLog {
    /// Sequence numbers the server acknowledged.
    acked: Vec<i32>,
    /// Failed statements or connection attempts after the kill.
    failed_after_kill: usize,
    /// The first commit of a statement sent once the old primary's processes were gone
    /// (a statement sent between the signal and their death may still commit there).
    first_after_kill: Option<Instant>,
    /// What the failures after the kill said.
    errors: Vec<String>,
}

struct Outcome {
    /// Each distinct error text and how often writers saw it.
    errors: std::collections::BTreeMap<String, usize>,
    failed_attempts: usize,
    clients_with_errors: usize,
    gaps: Vec<f64>,
    lost: usize,
    acked: usize,
}

fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(ROUNDS);
    let pgherd = pgherd_bin()?;
    eprintln!("pgherd binary: {}", pgherd.display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let options = ClusterOptions {
        scope: "benchpf".into(),
        // Pools of both paths stay open next to each other.
        max_connections: 100,
        extra_dcs: "    synchronous_mode: true\n".into(),
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::new(&pgherd, options)?;
    c.start_all()?;
    let leader = c.wait_healthy(2, Duration::from_secs(120))?;
    eprintln!("cluster healthy, leader {}", c.members[leader].name);

    let peers_dir = c.root.join("peers");
    std::fs::create_dir_all(&peers_dir)?;
    std::fs::set_permissions(&peers_dir, std::fs::Permissions::from_mode(0o777))?;
    let userlist = peers_dir.join("userlist.txt");
    std::fs::write(
        &userlist,
        format!("\"postgres\" \"{SUPERUSER_PASSWORD}\"\n"),
    )?;
    give_to_postgres(&userlist)?;

    let ports = free_ports(2 + c.members.len())?;
    let (pool_port, ha_port) = (ports[0], ports[1]);
    let bouncer_ports: Vec<u16> = ports[2..].to_vec();

    // pgherd's transaction pool, following the leader key in etcd.
    let etcd_hosts = c
        .etcd()
        .client_url()
        .trim_start_matches("http://")
        .to_string();
    let pool_cfg = c.root.join("pool.yml");
    std::fs::write(
        &pool_cfg,
        format!(
            "scope: benchpf\nnamespace: /service/\netcd3:\n  hosts: {etcd_hosts}\nproxy:\n  name: benchpf\n  listeners:\n    - name: pool\n      bind: 127.0.0.1:{pool_port}\n      role: primary\n      pool_mode: transaction\n      pool_size: {POOL_SIZE}\n      auth_type: md5\n      auth_file: {}\n",
            userlist.display()
        ),
    )?;
    let pool = Guard::new(
        spawn_logged(
            Command::new(&pgherd)
                .arg("proxy")
                .arg(&pool_cfg)
                .env("RUST_LOG", "warn"),
            &c.root.join("pool.log"),
        )
        .context("starting pgherd proxy")?,
        Signal::SIGTERM,
    );

    // A pgbouncer per member, in front of that member's PostgreSQL.
    let bouncer_cfgs: Vec<PathBuf> = c
        .members
        .iter()
        .zip(&bouncer_ports)
        .map(|(m, port)| {
            let ini = peers_dir.join(format!("pgbouncer-{}.ini", m.name));
            std::fs::write(
                &ini,
                format!(
                    "[databases]\n* = host=127.0.0.1 port={}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nauth_type = md5\nauth_file = {}\npool_mode = transaction\ndefault_pool_size = {POOL_SIZE}\nlog_connections = 0\nlog_disconnections = 0\n",
                    m.pg_port,
                    userlist.display()
                ),
            )?;
            give_to_postgres(&ini)?;
            Ok(ini)
        })
        .collect::<Result<_>>()?;
    let start_bouncer = |i: usize| -> Result<Guard> {
        let log = peers_dir.join(format!("pgbouncer-{i}.log"));
        Ok(Guard::new(
            spawn_logged(
                as_postgres(Command::new(PGBOUNCER).arg(&bouncer_cfgs[i]))?,
                &log,
            )
            .context("starting pgbouncer")?,
            Signal::SIGINT,
        ))
    };
    let mut bouncers: Vec<Option<Guard>> = (0..c.members.len())
        .map(|i| start_bouncer(i).map(Some))
        .collect::<Result<_>>()?;

    // HAProxy in front of the pgbouncers, checking each member's REST API.
    let ha_cfg = c.root.join("haproxy.cfg");
    let mut ha = format!(
        "global\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 3s\n  timeout client 30m\n  timeout server 30m\n  timeout check 2s\nlisten primary\n  bind 127.0.0.1:{ha_port}\n  option httpchk OPTIONS /master\n  http-check expect status 200\n  default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions\n"
    );
    for (m, port) in c.members.iter().zip(&bouncer_ports) {
        ha.push_str(&format!(
            "  server {} 127.0.0.1:{port} check port {}\n",
            m.name, m.api_port
        ));
    }
    std::fs::write(&ha_cfg, ha)?;
    let haproxy = peers::haproxy(&ha_cfg, &c.root.join("haproxy.log"))?;

    c.sql(
        leader,
        "create table ledger(round int, client int, seq int, primary key (round, client, seq))",
    )?;
    for port in [pool_port, ha_port] {
        poll(
            "the path to the primary answers",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                pgherd_testkit::cluster::psql_with_timeout(port, "select count(*) from ledger", 2)
                    .ok()
            },
        )
        .with_context(|| format!("nothing answers on port {port}"))?;
    }

    let mut outcomes: Vec<(Route, Outcome)> = Vec::new();
    let mut round_id = 0;
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Route::PgherdPool, Route::PgbouncerBehindHaproxy]
        } else {
            [Route::PgbouncerBehindHaproxy, Route::PgherdPool]
        };
        for path in order {
            round_id += 1;
            let leader = c.wait_healthy(2, Duration::from_secs(180))?;
            let port = match path {
                Route::PgherdPool => pool_port,
                Route::PgbouncerBehindHaproxy => ha_port,
            };
            // HAProxy must see the current leader before the load starts.
            poll(
                "the path writes",
                Duration::from_secs(60),
                Duration::from_millis(200),
                || {
                    pgherd_testkit::cluster::psql_with_timeout(
                        port,
                        "select pg_is_in_recovery()",
                        2,
                    )
                    .ok()
                    .filter(|r| r == "f")
                },
            )?;
            eprintln!(
                "kill {round_id}: {} under load through {}",
                c.members[leader].name,
                path.label()
            );
            let outcome = runtime.block_on(kill_under_load(
                &mut c,
                &mut bouncers,
                leader,
                port,
                round_id,
            ))?;
            report(
                &format!("kill{round_id}_{}_failed_attempts", path.label()),
                outcome.failed_attempts as f64,
                "attempts",
            );
            report(
                &format!("kill{round_id}_{}_clients_with_errors", path.label()),
                outcome.clients_with_errors as f64,
                "clients",
            );
            let (_, gap_median, gap_max) = summary(&outcome.gaps);
            report(
                &format!("kill{round_id}_{}_write_gap_median", path.label()),
                gap_median,
                "s",
            );
            report(
                &format!("kill{round_id}_{}_write_gap_max", path.label()),
                gap_max,
                "s",
            );
            report(
                &format!("kill{round_id}_{}_lost_acknowledged", path.label()),
                outcome.lost as f64,
                "rows",
            );
            eprintln!("  {} rows acknowledged", outcome.acked);
            for (text, n) in &outcome.errors {
                eprintln!("  {n} x {text}");
            }
            outcomes.push((path, outcome));
            // The crashed member rejoins (its pgbouncer too) before the next kill.
            c.start(leader)?;
            bouncers[leader] = Some(start_bouncer(leader)?);
        }
    }

    println!("--- medians over {rounds} kills per path ---");
    let median = |path: Route, f: &dyn Fn(&Outcome) -> f64| {
        let v: Vec<f64> = outcomes
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, o)| f(o))
            .collect();
        summary(&v).1
    };
    for path in [Route::PgherdPool, Route::PgbouncerBehindHaproxy] {
        let l = path.label();
        report(
            &format!("{l}_failed_attempts"),
            median(path, &|o| o.failed_attempts as f64),
            "attempts",
        );
        report(
            &format!("{l}_clients_with_errors"),
            median(path, &|o| o.clients_with_errors as f64),
            "clients",
        );
        report(
            &format!("{l}_write_gap_median"),
            median(path, &|o| summary(&o.gaps).1),
            "s",
        );
        report(
            &format!("{l}_write_gap_max"),
            median(path, &|o| summary(&o.gaps).2),
            "s",
        );
        report(
            &format!("{l}_lost_acknowledged_total"),
            outcomes
                .iter()
                .filter(|(p, _)| *p == path)
                .map(|(_, o)| o.lost as f64)
                .sum(),
            "rows",
        );
    }
    let ratio = |f: &dyn Fn(&Outcome) -> f64| {
        median(Route::PgherdPool, f) / median(Route::PgbouncerBehindHaproxy, f)
    };
    report(
        "ratio_failed_attempts_pgherd_pool_over_pgbouncer_behind_haproxy",
        ratio(&|o| o.failed_attempts as f64),
        "x",
    );
    report(
        "ratio_clients_with_errors_pgherd_pool_over_pgbouncer_behind_haproxy",
        ratio(&|o| o.clients_with_errors as f64),
        "x",
    );
    report(
        "ratio_write_gap_max_pgherd_pool_over_pgbouncer_behind_haproxy",
        ratio(&|o| summary(&o.gaps).2),
        "x",
    );
    drop(haproxy);
    drop(bouncers);
    drop(pool);
    Ok(())
}

/// Runs the writers through `port`, crashes member `leader` after the warm-up, and waits
/// until every writer has committed again.
async fn kill_under_load(
    c: &mut TestCluster,
    bouncers: &mut [Option<Guard>],
    leader: usize,
    port: u16,
    round: i32,
) -> Result<Outcome> {
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let dead_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let logs: Vec<Arc<Mutex<WriterLog>>> = (0..WRITERS)
        .map(|_| Arc::new(Mutex::new(WriterLog::default())))
        .collect();
    let tasks: Vec<_> = logs
        .iter()
        .enumerate()
        .map(|(i, log)| {
            tokio::spawn(writer(
                port,
                round,
                i as i32,
                log.clone(),
                killed_at.clone(),
                dead_at.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(WARM_UP).await;
    let warm: usize = logs.iter().map(|l| lock(l).acked.len()).sum();
    if warm == 0 {
        stop.store(true, Ordering::SeqCst);
        bail!("no write went through port {port} before the kill");
    }
    let doomed = c.postgres_pids(leader);
    let at = Instant::now();
    *killed_at.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(at);
    c.signal_node(leader, Signal::SIGKILL)?;
    if let Some(b) = bouncers[leader].take() {
        let _ = kill(Pid::from_raw(b.pid()), Signal::SIGKILL);
        drop(b);
    }
    // Commits count as the new primary's only once the old one cannot take any.
    let gone = poll(
        "the old primary's processes to die",
        Duration::from_secs(10),
        Duration::from_millis(5),
        || doomed.iter().all(|&p| !procs::alive(p)).then_some(()),
    );
    *dead_at.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(Instant::now());
    if let Err(e) = gone {
        stop.store(true, Ordering::SeqCst);
        return Err(e);
    }
    let recovered = loop {
        if logs.iter().all(|l| lock(l).first_after_kill.is_some()) {
            break true;
        }
        if at.elapsed() > RECOVERY_LIMIT {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    if !recovered {
        bail!(
            "writers had not all written again {} s after the kill",
            RECOVERY_LIMIT.as_secs()
        );
    }
    let new_leader = poll(
        "a new leader",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || c.leader_index().filter(|&l| l != leader),
    )?;
    let rows = c.sql(
        new_leader,
        &format!(
            "select coalesce(string_agg(client || ':' || seq, ','), '') from ledger where round = {round}"
        ),
    )?;
    let present: BTreeSet<&str> = rows.split(',').filter(|s| !s.is_empty()).collect();
    let mut outcome = Outcome {
        errors: Default::default(),
        failed_attempts: 0,
        clients_with_errors: 0,
        gaps: Vec::new(),
        lost: 0,
        acked: 0,
    };
    for (i, l) in logs.iter().enumerate() {
        let l = lock(l);
        outcome.failed_attempts += l.failed_after_kill;
        for e in &l.errors {
            *outcome.errors.entry(e.clone()).or_default() += 1;
        }
        outcome.clients_with_errors += usize::from(l.failed_after_kill > 0);
        if let Some(first) = l.first_after_kill {
            outcome
                .gaps
                .push(first.saturating_duration_since(at).as_secs_f64());
        }
        outcome.acked += l.acked.len();
        outcome.lost += l
            .acked
            .iter()
            .filter(|seq| !present.contains(format!("{i}:{seq}").as_str()))
            .count();
    }
    Ok(outcome)
}

fn lock(l: &Mutex<WriterLog>) -> std::sync::MutexGuard<'_, WriterLog> {
    l.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One application client: numbered inserts one after another; after a failure, a new
/// connection after [`RETRY_AFTER`].
async fn writer(
    port: u16,
    round: i32,
    client: i32,
    log: Arc<Mutex<WriterLog>>,
    killed_at: Arc<Mutex<Option<Instant>>>,
    dead_at: Arc<Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
) {
    let conf = format!(
        "host=127.0.0.1 port={port} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres connect_timeout=5"
    );
    let mut session: Option<tokio_postgres::Client> = None;
    let mut seq = 0i32;
    while !stop.load(Ordering::SeqCst) {
        if session.is_none() {
            match tokio::time::timeout(
                Duration::from_secs(5),
                tokio_postgres::connect(&conf, tokio_postgres::NoTls),
            )
            .await
            {
                Ok(Ok((cl, conn))) => {
                    tokio::spawn(conn);
                    session = Some(cl);
                }
                Ok(Err(e)) => {
                    failed(&log, &killed_at, format!("connect: {}", describe(&e)));
                    tokio::time::sleep(RETRY_AFTER).await;
                    continue;
                }
                Err(_) => {
                    failed(&log, &killed_at, "connect: timed out".into());
                    tokio::time::sleep(RETRY_AFTER).await;
                    continue;
                }
            }
        }
        let Some(cl) = session.as_ref() else {
            continue;
        };
        seq += 1;
        let sent = Instant::now();
        // The simple protocol: pgbouncer 1.18 (Debian's) keeps no named statements in
        // transaction mode.
        let insert = format!("insert into ledger values ({round}, {client}, {seq})");
        let outcome = tokio::time::timeout(STATEMENT_TIMEOUT, cl.simple_query(&insert)).await;
        if let Ok(Ok(_)) = outcome {
            let mut l = lock(&log);
            l.acked.push(seq);
            // Sent once the old primary was dead: committed by the new one.
            let after_kill = dead_at
                .lock()
                .ok()
                .and_then(|k| *k)
                .is_some_and(|k| sent >= k);
            if after_kill && l.first_after_kill.is_none() {
                l.first_after_kill = Some(Instant::now());
            }
        } else {
            let why = match outcome {
                Ok(Err(e)) => format!("insert: {}", describe(&e)),
                _ => "insert: timed out".into(),
            };
            failed(&log, &killed_at, why);
            session = None;
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
}

/// An error as a client sees it: the server's severity, SQLSTATE and message, or the I/O error.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn failed(log: &Mutex<WriterLog>, killed_at: &Mutex<Option<Instant>>, why: String) {
    if killed_at.lock().ok().and_then(|k| *k).is_some() {
        let mut l = lock(log);
        l.failed_after_kill += 1;
        l.errors.push(why);
    }
}
