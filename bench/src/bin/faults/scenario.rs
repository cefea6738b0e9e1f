//! The faults, how each is injected and healed, and the figures and invariants of one run.

use crate::cluster::{Cluster, ETCDS, NODES};
use crate::workload::{base_of, ids_on, Seen, Workload};
use anyhow::Result;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgherd_bench::report;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The control run: nothing happens, nothing may fail over.
    Control,
    /// The leader's node drops every packet.
    LeaderIsolated,
    /// The leader's node drops packets to and from the etcd members only.
    LeaderCutFromEtcd,
    /// A replica's node drops every packet.
    ReplicaIsolated,
    /// A replica's node drops packets to and from etcd and the other nodes; clients (the
    /// proxy) still reach it (issue 9, item 4).
    ReplicaCutOff,
    /// Every etcd member drops every packet.
    EtcdUnreachable,
    /// SIGKILL of the leader's agent and every PostgreSQL process; the agent is started again
    /// at the heal.
    LeaderKilled,
    /// SIGSTOP of the leader's agent and PostgreSQL past ttl, SIGCONT at the heal.
    LeaderFrozen,
    /// SIGKILL of the etcd leader (the other two elect a new one); restarted at the heal.
    EtcdLeaderChange,
}

pub const ALL: [Fault; 9] = [
    Fault::Control,
    Fault::LeaderIsolated,
    Fault::LeaderCutFromEtcd,
    Fault::ReplicaIsolated,
    Fault::ReplicaCutOff,
    Fault::EtcdUnreachable,
    Fault::LeaderKilled,
    Fault::LeaderFrozen,
    Fault::EtcdLeaderChange,
];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Control => "no_fault",
            Fault::LeaderIsolated => "leader_isolated",
            Fault::LeaderCutFromEtcd => "leader_cut_from_etcd",
            Fault::ReplicaIsolated => "replica_isolated",
            Fault::ReplicaCutOff => "replica_cut_off",
            Fault::EtcdUnreachable => "etcd_unreachable",
            Fault::LeaderKilled => "leader_kill9",
            Fault::LeaderFrozen => "leader_sigstop",
            Fault::EtcdLeaderChange => "etcd_leader_change",
        }
    }

    pub fn parse(name: &str) -> Option<Fault> {
        ALL.into_iter().find(|f| f.name() == name)
    }

    /// How long the fault lasts. `short`: the ./dev/test form (etcd outage 12 s, not 40 s).
    fn hold(self, ttl: u64, short: bool) -> Duration {
        let ttl = Duration::from_secs(ttl);
        match self {
            Fault::Control => Duration::from_secs(if short { 5 } else { 10 }),
            Fault::LeaderIsolated | Fault::LeaderCutFromEtcd => {
                (ttl * 3).max(Duration::from_secs(12))
            }
            Fault::ReplicaIsolated | Fault::ReplicaCutOff => Duration::from_secs(8),
            Fault::EtcdUnreachable => Duration::from_secs(if short { 12 } else { 40 }),
            Fault::LeaderKilled => ttl * 2 + Duration::from_secs(4),
            Fault::LeaderFrozen => ttl + Duration::from_secs(4),
            Fault::EtcdLeaderChange => Duration::from_secs(5),
        }
    }

    /// A fault after which another node may lead.
    fn may_fail_over(self) -> bool {
        matches!(
            self,
            Fault::LeaderIsolated
                | Fault::LeaderCutFromEtcd
                | Fault::LeaderKilled
                | Fault::LeaderFrozen
        )
    }
}

/// The outcome of one fault: figures printed, invariants broken.
pub struct Outcome {
    pub violations: Vec<String>,
}

/// What the fault touched, to heal it.
enum Injected {
    Nothing,
    Rules(String),
    EtcdRules,
    Killed(usize),
    Frozen(Vec<i32>),
    EtcdKilled(usize),
}

fn inject(c: &mut Cluster, fault: Fault, leader: usize, replica: usize) -> Result<Injected> {
    let leader_host = NODES[leader];
    Ok(match fault {
        Fault::Control => Injected::Nothing,
        Fault::LeaderIsolated => {
            c.net.cut(leader_host, None)?;
            Injected::Rules(leader_host.to_string())
        }
        Fault::LeaderCutFromEtcd => {
            c.net.cut(leader_host, Some(&ETCDS))?;
            Injected::Rules(leader_host.to_string())
        }
        Fault::ReplicaIsolated => {
            c.net.cut(NODES[replica], None)?;
            Injected::Rules(NODES[replica].to_string())
        }
        Fault::ReplicaCutOff => {
            let peers: Vec<&str> = ETCDS
                .iter()
                .chain(NODES.iter())
                .copied()
                .filter(|h| *h != NODES[replica])
                .collect();
            c.net.cut(NODES[replica], Some(&peers))?;
            Injected::Rules(NODES[replica].to_string())
        }
        Fault::EtcdUnreachable => {
            for e in ETCDS {
                c.net.cut(e, None)?;
            }
            Injected::EtcdRules
        }
        Fault::LeaderKilled => {
            let pg = c.postgres_pids(leader);
            if let Some(a) = c.agents[leader].as_mut() {
                a.kill9();
            }
            for pid in pg {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            Injected::Killed(leader)
        }
        Fault::LeaderFrozen => {
            let mut pids: Vec<i32> = c.agents[leader].iter().filter_map(|a| a.pid()).collect();
            pids.extend(c.postgres_pids(leader));
            for pid in &pids {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGSTOP);
            }
            Injected::Frozen(pids)
        }
        Fault::EtcdLeaderChange => {
            let l = c.etcd_leader().unwrap_or(0);
            if let Some(p) = c.etcd[l].as_mut() {
                p.kill9();
            }
            Injected::EtcdKilled(l)
        }
    })
}

fn heal(c: &mut Cluster, injected: Injected) -> Result<()> {
    match injected {
        Injected::Nothing => {}
        Injected::Rules(host) => c.net.heal(&host)?,
        Injected::EtcdRules => {
            for e in ETCDS {
                c.net.heal(e)?;
            }
        }
        Injected::Killed(i) => c.start_agent(i)?,
        Injected::Frozen(pids) => {
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            }
        }
        Injected::EtcdKilled(i) => c.start_etcd(i)?,
    }
    Ok(())
}

/// While a replica fault holds: when the replica stopped answering `/replica` 200, and when
/// the proxy took it out of the read rotation.
#[derive(Default)]
struct ReplicaWatch {
    not_replica: Option<Duration>,
    out_of_rotation: Option<Duration>,
}

#[allow(
    clippy::disallowed_methods,
    reason = "synchronous harness: the run's own thread waits"
)]
fn hold(c: &Cluster, fault: Fault, replica: usize, t0: Instant, hold: Duration) -> ReplicaWatch {
    let mut w = ReplicaWatch::default();
    let watch = matches!(fault, Fault::ReplicaIsolated | Fault::ReplicaCutOff);
    while t0.elapsed() < hold {
        if watch {
            if w.not_replica.is_none() && c.code(replica, "/replica") != Some(200) {
                w.not_replica = Some(t0.elapsed());
            }
            if w.out_of_rotation.is_none()
                && c.proxy_read_state(NODES[replica])
                    .is_some_and(|s| s != "up")
            {
                w.out_of_rotation = Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    w
}

/// Runs one fault against a healthy cluster and prints its figures as
/// `<label>_<fault>_<figure>=value unit`.
#[allow(
    clippy::disallowed_methods,
    reason = "synchronous harness: the run's own thread waits"
)]
pub fn run(
    c: &mut Cluster,
    label: &str,
    fault: Fault,
    n: i64,
    short: bool,
    heal_bound: Duration,
) -> Result<Outcome> {
    let mut violations = Vec::new();
    let (leader, _) = c.wait_healthy(heal_bound)?;
    let replica = (leader + 1) % NODES.len();
    let workload = Workload::start(c, n)?;
    // Let every writer land a few writes first.
    std::thread::sleep(Duration::from_secs(2));
    let name = format!("{label}_{}", fault.name());
    let t0 = Instant::now();
    let injected = inject(c, fault, leader, replica)?;
    let watch = hold(
        c,
        fault,
        replica,
        t0,
        fault.hold(c.setup.effective_ttl(), short),
    );
    let t1 = Instant::now();
    heal(c, injected)?;
    let healthy = c.wait_healthy(heal_bound);
    let heal_to_healthy = healthy.as_ref().ok().map(|(_, d)| *d);
    let back_in_rotation = if matches!(fault, Fault::ReplicaIsolated | Fault::ReplicaCutOff) {
        pgherd_testkit::wait::poll(
            "the replica back in the read rotation",
            heal_bound,
            Duration::from_millis(50),
            || (c.proxy_read_state(NODES[replica]).as_deref() == Some("up")).then_some(()),
        )
        .ok()
        .map(|_| t1.elapsed())
    } else {
        None
    };
    std::thread::sleep(Duration::from_secs(1));
    let end = Instant::now();
    let seen: Seen = workload.stop()?;

    let new_leader = match &healthy {
        Ok((l, _)) => Some(*l),
        Err(e) => {
            violations.push(format!(
                "{name}: not healthy within {heal_bound:?} of the heal: {e}"
            ));
            eprintln!("{}", c.log_tails(40));
            None
        }
    };
    let secs = |d: Duration| d.as_secs_f64();
    let takeover = seen.first_ack_elsewhere(leader, t0);
    if fault.may_fail_over() {
        if let Some(t) = takeover {
            // Self-fence: the old primary's own client (in its namespace) is refused a write.
            // A leader frozen or killed cannot fence itself: its figure is the wake-up or
            // the restart.
            if let Some(f) = seen.first_refusal_after(leader, t0) {
                report(
                    &format!("{name}_self_fence"),
                    secs(f.duration_since(t0)),
                    "s",
                );
            }
            let last = seen
                .last_ack_after(leader, t0)
                .map_or(Duration::ZERO, |l| l.duration_since(t0));
            report(&format!("{name}_last_ack_on_old_leader"), secs(last), "s");
            report(&format!("{name}_takeover"), secs(t.duration_since(t0)), "s");
        } else {
            println!("{name}_takeover=none");
        }
    } else if new_leader.is_some_and(|l| l != leader) || takeover.is_some() {
        let msg = format!("{name}: a failover without a leader fault");
        if fault == Fault::Control {
            violations.push(msg);
        } else {
            println!("# {msg}");
        }
    }
    if let Some(d) = watch.not_replica {
        report(&format!("{name}_replica_not_200"), secs(d), "s");
    }
    if let Some(d) = watch.out_of_rotation {
        report(&format!("{name}_out_of_read_rotation"), secs(d), "s");
    }
    if let Some(d) = back_in_rotation {
        report(&format!("{name}_heal_to_read_rotation"), secs(d), "s");
    }
    let from = t0 - Duration::from_secs(1);
    report(
        &format!("{name}_max_write_gap_direct"),
        secs(seen.max_gap(false, from, end)),
        "s",
    );
    report(
        &format!("{name}_max_write_gap_proxy"),
        secs(seen.max_gap(true, from, end)),
        "s",
    );
    if let Some(d) = heal_to_healthy {
        report(&format!("{name}_heal_to_healthy"), secs(d), "s");
    }
    let split = seen.split_brain_writes();
    report(
        &format!("{name}_split_brain_writes"),
        split as f64,
        "writes",
    );
    if split > 0 {
        violations.push(format!("{name}: {split} split-brain writes"));
    }
    if let Some(l) = new_leader {
        let present = ids_on(c, l, base_of(n))?;
        let acked = seen.acked();
        let lost: Vec<i64> = acked.difference(&present).copied().collect();
        report(
            &format!("{name}_acked_writes"),
            acked.len() as f64,
            "writes",
        );
        report(&format!("{name}_acked_lost"), lost.len() as f64, "writes");
        report(
            &format!("{name}_indeterminate"),
            seen.indeterminate() as f64,
            "writes",
        );
        report(&format!("{name}_failed"), seen.refused() as f64, "writes");
        if c.setup.synchronous && !lost.is_empty() {
            violations.push(format!(
                "{name}: {} acknowledged writes lost in synchronous mode (first: {:?})",
                lost.len(),
                &lost[..lost.len().min(5)]
            ));
        }
    }
    for v in &violations {
        println!("# VIOLATION {v}");
    }
    Ok(Outcome { violations })
}
