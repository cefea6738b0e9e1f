//! Failover time: from the fault to the first successful write on the new primary.
//!
//! Faults: (a) leader node crash (SIGKILL of the agent and every PostgreSQL process),
//! (b) leader postmaster crash (SIGKILL of the postmaster only; the agent restarts it in
//! place or fails over, per primary_start_timeout). Systems, same etcd and PostgreSQL 15:
//! pgherd with its defaults, pgherd with Patroni's timings, and Debian's Patroni with the
//! same timings. Prints `name=value unit` lines, then the ratios.
//!
//! `cargo build --release && cargo run --release -p pgherd-bench --bin failover [ROUNDS]`

use anyhow::{bail, Result};
use nix::sys::signal::Signal;
use pgherd_bench::{pgherd_bin, report, summary};
use pgherd_testkit::cluster::{
    AgentKind, ClusterOptions, DcsKind, TestCluster, SUPERUSER_PASSWORD,
};
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
enum Fault {
    NodeCrash,
    PostmasterCrash,
}

struct System {
    label: &'static str,
    agent: AgentKind,
    dcs: DcsKind,
    /// `None`: leave the key out of bootstrap.dcs (the agent's own default).
    ttl: Option<u64>,
    loop_wait: Option<u64>,
    retry_timeout: Option<u64>,
}

fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let systems = [
        System {
            label: "pgherd_defaults",
            agent: AgentKind::Pgherd,
            dcs: DcsKind::Etcd,
            ttl: None,
            loop_wait: None,
            retry_timeout: None,
        },
        System {
            label: "pgherd_patroni_settings",
            agent: AgentKind::Pgherd,
            dcs: DcsKind::Etcd,
            ttl: Some(30),
            loop_wait: Some(10),
            retry_timeout: Some(10),
        },
        System {
            label: "patroni",
            agent: AgentKind::Patroni,
            dcs: DcsKind::Etcd,
            ttl: Some(30),
            loop_wait: Some(10),
            retry_timeout: Some(10),
        },
        // Seed 004's store: the same agent on ZooKeeper.
        System {
            label: "pgherd_defaults_zookeeper",
            agent: AgentKind::Pgherd,
            dcs: DcsKind::ZooKeeper,
            ttl: None,
            loop_wait: None,
            retry_timeout: None,
        },
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut medians = std::collections::BTreeMap::new();
    // Optional second argument: run only the systems with these labels (comma-separated).
    let only = std::env::args().nth(2);
    for system in systems.iter().filter(|s| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|l| l == s.label))
    }) {
        for (fault, fname) in [
            (Fault::NodeCrash, "node_crash"),
            (Fault::PostmasterCrash, "postmaster_crash"),
        ] {
            let times = run_rounds(&runtime, system, fault, rounds)?;
            let (min, med, max) = summary(&times);
            let name = format!("failover_{fname}_{}", system.label);
            report(&format!("{name}_min"), min, "s");
            report(&format!("{name}_median"), med, "s");
            report(&format!("{name}_max"), max, "s");
            medians.insert((system.label, fname), med);
        }
    }
    for fname in ["node_crash", "postmaster_crash"] {
        if let (Some(z), Some(e)) = (
            medians.get(&("pgherd_defaults_zookeeper", fname)),
            medians.get(&("pgherd_defaults", fname)),
        ) {
            report(
                &format!("failover_{fname}_ratio_zookeeper_over_etcd"),
                z / e,
                "ratio",
            );
        }
        if let (Some(p), Some(q)) = (
            medians.get(&("pgherd_patroni_settings", fname)),
            medians.get(&("patroni", fname)),
        ) {
            report(
                &format!("failover_{fname}_ratio_pgherd_over_patroni_equal_settings"),
                p / q,
                "ratio",
            );
        }
        if let (Some(p), Some(q)) = (
            medians.get(&("pgherd_defaults", fname)),
            medians.get(&("patroni", fname)),
        ) {
            report(
                &format!("failover_{fname}_ratio_pgherd_defaults_over_patroni"),
                p / q,
                "ratio",
            );
        }
    }
    Ok(())
}

fn run_rounds(
    rt: &tokio::runtime::Runtime,
    system: &System,
    fault: Fault,
    rounds: usize,
) -> Result<Vec<f64>> {
    let options = ClusterOptions {
        agent: system.agent,
        dcs: system.dcs,
        scope: format!("bench-{}", system.label.replace('_', "-")),
        ttl: system.ttl,
        loop_wait: system.loop_wait,
        retry_timeout: system.retry_timeout,
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::new(&pgherd_bin()?, options)?;
    c.start_all()?;
    let mut leader = c.wait_healthy(2, Duration::from_secs(180))?;
    psql(
        &c,
        leader,
        "create table if not exists bench(id serial primary key, at timestamptz default now())",
    )?;
    let mut times = Vec::new();
    for round in 0..rounds {
        let started = Instant::now();
        match fault {
            Fault::NodeCrash => c.signal_node(leader, Signal::SIGKILL)?,
            Fault::PostmasterCrash => {
                c.kill_postmaster(leader)?;
            }
        }
        let ports: Vec<u16> = c.members.iter().map(|m| m.pg_port).collect();
        let (who, elapsed) = rt.block_on(first_write(&ports, started, Duration::from_secs(180)))?;
        eprintln!(
            "{} round {round}: write on {} after {:.2}s",
            system.label, c.members[who].name, elapsed
        );
        times.push(elapsed);
        // Bring the crashed node back and wait for a healthy cluster before the next round.
        if let Fault::NodeCrash = fault {
            for pid in c.postgres_pids(leader) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
            c.start(leader)?;
        }
        leader = c.wait_healthy(2, Duration::from_secs(300))?;
    }
    Ok(times)
}

fn psql(c: &TestCluster, i: usize, sql: &str) -> Result<()> {
    c.sql(i, sql).map(|_| ())
}

/// Polls every node with an INSERT until one commits; returns it and the seconds since `t0`.
async fn first_write(ports: &[u16], t0: Instant, limit: Duration) -> Result<(usize, f64)> {
    while t0.elapsed() < limit {
        for (i, port) in ports.iter().enumerate() {
            if try_write(*port).await {
                return Ok((i, t0.elapsed().as_secs_f64()));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("no write succeeded within {limit:?}")
}

async fn try_write(port: u16) -> bool {
    let conf = format!(
        "host=127.0.0.1 port={port} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres connect_timeout=1"
    );
    let attempt = async {
        let (client, conn) = tokio_postgres::connect(&conf, tokio_postgres::NoTls)
            .await
            .ok()?;
        let task = tokio::spawn(conn);
        let ok = client
            .execute("insert into bench default values", &[])
            .await
            .is_ok();
        drop(client);
        let _ = task.await;
        Some(ok)
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Some(true))
    )
}
