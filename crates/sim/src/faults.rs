//! Applying the fault schedule: crashes, restarts, pauses, DCS outages, slow networks, slow
//! PostgreSQL stops, and an operator's REST commands (switchover, restart, reinitialize).

use crate::config::{FaultKind, Who};
use crate::world::{lock, Phase, Shared, Truth, World};
use crate::{node, Invariant, Time};
use std::time::Duration;

/// The cluster converged after bootstrap: runs every fault relative to now.
pub(crate) fn begin(world: &Shared) {
    let mut w = lock(world);
    let t0 = w.now();
    let mut end = t0;
    for i in 0..w.schedule.faults.len() {
        let f = w.schedule.faults[i].clone();
        end = end.max(t0 + f.at + f.kind.span());
        let world = world.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(f.at)).await;
            start(&world, i).await;
        });
    }
    w.phase = Phase::Faults { end };
}

fn resolve(w: &World, who: Who) -> usize {
    let leader = w
        .leader_name()
        .and_then(|l| w.index_of(&l))
        .or_else(|| (0..w.nodes.len()).find(|&i| w.nodes[i].pg.writable()))
        .unwrap_or(0);
    match who {
        Who::Leader => leader,
        Who::Node(i) => i % w.nodes.len(),
        Who::Replica(k) => {
            let others: Vec<usize> = (0..w.nodes.len()).filter(|&i| i != leader).collect();
            others.get(k % others.len().max(1)).copied().unwrap_or(0)
        }
    }
}

/// Ends fault `i` (on node `node`) after `after` ms.
fn end_at(world: &Shared, fault: usize, node: Option<usize>, after: Time) {
    let world = world.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(after)).await;
        end(&world, fault, node);
    });
}

async fn start(world: &Shared, i: usize) {
    let kind = {
        let mut w = lock(world);
        w.stats.faults_applied += 1;
        w.schedule.faults[i].kind.clone()
    };
    match kind {
        FaultKind::PgCrash(who) => {
            let mut w = lock(world);
            let n = resolve(&w, who);
            if !w.frozen(n) && w.nodes[n].pg.running {
                w.say(n, || "FAULT: postgres killed (kill -9)".into());
                w.nodes[n].pg.crash();
                w.release(n);
                w.changed();
            }
        }
        FaultKind::NodeCrash { who, down_for } => {
            let mut w = lock(world);
            let n = resolve(&w, who);
            if w.nodes[n].down_by.is_none() {
                w.say(n, || {
                    format!("FAULT: node crashed (down for {down_for} ms)")
                });
                node::kill(&mut w, n);
                w.nodes[n].pg.crash();
                // Power loss: the interface and its addresses are gone with the machine.
                w.nodes[n].holds_vip = false;
                w.release(n);
                thaw(&mut w, n);
                w.nodes[n].down_by = Some(i);
                w.changed();
                end_at(world, i, Some(n), down_for);
            }
        }
        FaultKind::NodeRestart { who, down_for } => {
            let n = {
                let mut w = lock(world);
                let n = resolve(&w, who);
                let node = &w.nodes[n];
                if node.down_by.is_some() || node.agent.is_none() || node.frozen_by.is_some() {
                    return;
                }
                w.say(n, || {
                    format!("FAULT: agent stopped with SIGTERM (restart in {down_for} ms)")
                });
                w.nodes[n].down_by = Some(i);
                n
            };
            node::sigterm(world, n);
            end_at(world, i, Some(n), down_for);
        }
        FaultKind::Pause { who, dur } => {
            let mut w = lock(world);
            let n = resolve(&w, who);
            let node = &w.nodes[n];
            if node.frozen_by.is_none() && node.down_by.is_none() {
                w.say(n, || format!("FAULT: node paused (SIGSTOP) for {dur} ms"));
                w.nodes[n].frozen_by = Some(i);
                w.changed();
                end_at(world, i, Some(n), dur);
            }
        }
        FaultKind::DcsOutage {
            dur,
            leases_survive,
        } => {
            let mut w = lock(world);
            w.say_world(|| {
                format!("FAULT: DCS unreachable for everyone for {dur} ms (leases survive: {leases_survive})")
            });
            w.dcs_outages += 1;
            if leases_survive {
                w.leases_frozen = true;
            }
            end_at(world, i, None, dur);
        }
        FaultKind::DcsCut { who, dur } => {
            let mut w = lock(world);
            let n = resolve(&w, who);
            w.say(n, || {
                format!("FAULT: DCS unreachable from this node for {dur} ms")
            });
            w.nodes[n].dcs_cut += 1;
            end_at(world, i, Some(n), dur);
        }
        FaultKind::SlowNet {
            who,
            dur,
            max_delay,
            loss_permille,
        } => {
            let mut w = lock(world);
            let n = resolve(&w, who);
            w.say(n, || {
                format!("FAULT: slow network for {dur} ms (delays up to {max_delay} ms, {loss_permille}‰ lost)")
            });
            w.nodes[n].slow = Some((max_delay, loss_permille));
            end_at(world, i, Some(n), dur);
        }
        FaultKind::ReplicaLag { who, dur } => {
            let mut w = lock(world);
            let n = resolve(&w, who);
            w.say(n, || format!("FAULT: WAL streaming slowed for {dur} ms"));
            w.nodes[n].lagging += 1;
            end_at(world, i, Some(n), dur);
        }
        FaultKind::SlowStop { who, extra, dur } => {
            let mut w = lock(world);
            let n = resolve(&w, who);
            w.say(n, || {
                format!("FAULT: PostgreSQL stops take {extra} ms longer for {dur} ms")
            });
            w.nodes[n].slow_stop = extra;
            end_at(world, i, Some(n), dur);
        }
        FaultKind::AgentCrash { who, down_for } => {
            let mut w = lock(world);
            let n = resolve(&w, who);
            let node = &w.nodes[n];
            if node.down_by.is_none() && node.agent.is_some() && node.frozen_by.is_none() {
                w.say(n, || "FAULT: agent killed, postgres keeps running".into());
                node::kill(&mut w, n);
                w.nodes[n].down_by = Some(i);
                w.changed();
                end_at(world, i, Some(n), down_for);
            }
        }
        FaultKind::Switchover { candidate } => {
            let (leader, body) = {
                let w = lock(world);
                let Some(l) = w.leader_name() else { return };
                let c = candidate
                    .map(|who| resolve(&w, who))
                    .map(|c| w.nodes[c].name.clone())
                    .filter(|c| *c != l);
                let body = match &c {
                    Some(c) => format!(r#"{{"leader":"{l}","candidate":"{c}"}}"#),
                    None => format!(r#"{{"leader":"{l}"}}"#),
                };
                (w.index_of(&l), body)
            };
            let Some(leader) = leader else { return };
            let answer = command(world, leader, "POST", "/switchover", body).await;
            keep_word_switchover(world, leader, answer);
        }
        FaultKind::SlowStart { who, extra, dur } => {
            let mut w = lock(world);
            let n = resolve(&w, who);
            w.say(n, || {
                format!("FAULT: PostgreSQL starts take {extra} ms longer for {dur} ms")
            });
            w.nodes[n].slow_start = extra;
            end_at(world, i, Some(n), dur);
        }
        FaultKind::PrePromote {
            who,
            delay,
            refuse,
            dur,
        } => {
            let mut w = lock(world);
            let n = resolve(&w, who);
            w.say(n, || {
                format!("FAULT: pre_promote takes {delay} ms (refuses: {refuse}) for {dur} ms")
            });
            w.nodes[n].pre_promote = Some((delay, refuse));
            end_at(world, i, Some(n), dur);
        }
        FaultKind::Failover { candidate } => {
            let (leader, candidate, body) = {
                let w = lock(world);
                let Some(l) = w.leader_name().and_then(|l| w.index_of(&l)) else {
                    return;
                };
                let c = resolve(&w, candidate);
                let name = w.nodes[c].name.clone();
                (l, name.clone(), format!(r#"{{"candidate":"{name}"}}"#))
            };
            // Patroni's promise: 200 once another member leads, "Successfully failed over
            // to" the candidate, or "Failed over to X instead of" it.
            let answer = command(world, leader, "POST", "/failover", body).await;
            keep_word_switchover(world, leader, answer.clone());
            if let Some((200, body, _)) = answer {
                let mut w = lock(world);
                let named = w.leader_name();
                if body.starts_with("Successfully") && named.as_deref() != Some(candidate.as_str())
                {
                    w.violate(
                        Invariant::CommandBrokeItsWord,
                        format!("a failover to {candidate} answered 200 ({body}) but the leader key names {named:?}"),
                    );
                }
            }
        }
        FaultKind::EditTiming {
            ttl,
            loop_wait,
            retry_timeout,
        } => {
            let n = resolve(&lock(world), Who::Leader);
            let body = format!(
                r#"{{"ttl":"{ttl}ms","loop_wait":"{loop_wait}ms","retry_timeout":"{retry_timeout}ms"}}"#
            );
            if let Some((200, ..)) = command(world, n, "PATCH", "/config", body).await {
                // The checker judges by the longer ttl until every agent has the new one.
                let mut w = lock(world);
                for node in w.nodes.iter_mut() {
                    node.settings.ttl = node.settings.ttl.max(ttl);
                    node.settings.loop_wait = loop_wait;
                    node.settings.retry_timeout = retry_timeout;
                }
            }
        }
        FaultKind::EditMaxLag(lag) => {
            let n = resolve(&lock(world), Who::Leader);
            let body = format!(r#"{{"maximum_lag_on_failover":{lag}}}"#);
            if let Some((200, ..)) = command(world, n, "PATCH", "/config", body).await {
                let mut w = lock(world);
                for node in w.nodes.iter_mut() {
                    let old = node.settings.maximum_lag_on_failover;
                    node.settings.maximum_lag_on_failover = old.max(lag);
                }
            }
        }
        FaultKind::Reload(who) => {
            let n = resolve(&lock(world), who);
            command(world, n, "POST", "/reload", String::new()).await;
        }
        FaultKind::Proxy { lag, dur } => run_proxy(world, lag, dur).await,
        FaultKind::Restart(who) => {
            let n = resolve(&lock(world), who);
            let answer = command(world, n, "POST", "/restart", "{}".into()).await;
            keep_word_restart(world, n, answer);
        }
        FaultKind::Maintenance { dur, switchover_at } => {
            let n = {
                let mut w = lock(world);
                w.maintenance = Some((w.now(), Time::MAX));
                resolve(&w, Who::Leader)
            };
            command(world, n, "PATCH", "/config", r#"{"pause":true}"#.into()).await;
            if let Some(at) = switchover_at {
                tokio::time::sleep(Duration::from_millis(at)).await;
                let paused_switchover = {
                    let w = lock(world);
                    w.leader_name().and_then(|l| {
                        let leader = w.index_of(&l)?;
                        let candidate = resolve(&w, Who::Replica(0));
                        (candidate != leader).then(|| {
                            let c = w.nodes[candidate].name.clone();
                            (leader, format!(r#"{{"leader":"{l}","candidate":"{c}"}}"#))
                        })
                    })
                };
                if let Some((leader, body)) = paused_switchover {
                    let patience = Duration::from_secs(5);
                    let answer =
                        command_within(world, leader, "POST", "/switchover", body, patience).await;
                    keep_word_switchover(world, leader, answer);
                }
            }
            let rest = dur.saturating_sub(switchover_at.unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(rest)).await;
            // Resume through any member that answers within 5 s (the leader may be down by
            // now, the DCS unreachable for a while), as an operator would: bounded retries.
            let members = lock(world).nodes.len();
            'resume: for _ in 0..60 {
                for k in 0..members {
                    let body = r#"{"pause":null}"#.to_string();
                    let patience = Duration::from_secs(5);
                    let answer = command_within(world, k, "PATCH", "/config", body, patience);
                    if let Some((200, ..)) = answer.await {
                        let mut w = lock(world);
                        let until = w.now() + w.nodes[k].settings.ttl;
                        w.maintenance = w.maintenance.map(|(from, _)| (from, until));
                        break 'resume;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        FaultKind::Reinit(who) => {
            let n = resolve(&lock(world), who);
            command(
                world,
                n,
                "POST",
                "/reinitialize",
                r#"{"force":true}"#.into(),
            )
            .await;
        }
    }
}

/// An operator's REST call to node `n` (from outside every fault); the answer as
/// `(status, body)` with the truth about the node when it answered, `None` when the node did
/// not answer.
async fn command(
    world: &Shared,
    n: usize,
    method: &str,
    path: &str,
    body: String,
) -> Option<(u16, String, Truth)> {
    command_within(world, n, method, path, body, Duration::from_secs(60)).await
}

/// [`command`] with the operator's patience: no answer within `patience` is `None`.
async fn command_within(
    world: &Shared,
    n: usize,
    method: &str,
    path: &str,
    body: String,
    patience: Duration,
) -> Option<(u16, String, Truth)> {
    {
        let mut w = lock(world);
        w.stats.commands_run += 1;
        let what = format!("{method} {path} {body}");
        w.say(n, || format!("OPERATOR: {what}"));
    }
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(axum::body::Body::from(body))
        .ok()?;
    let answer = crate::sim_peers::request(world, None, n, request, patience).await;
    let answer = answer.map(|a| {
        (
            a.status,
            String::from_utf8_lossy(&a.body).into_owned(),
            a.truth,
        )
    });
    let mut w = lock(world);
    let now = w.now();
    let text = format!("{:?}", answer.as_ref().map(|(code, body, _)| (code, body)));
    w.stats
        .command_answers
        .push((now, format!("{method} {path}"), text.clone()));
    w.say(n, || format!("OPERATOR: {method} {path} answered {text}"));
    answer
}

/// Invariant 7 for a switchover: success means another member led when the answer was given.
fn keep_word_switchover(world: &Shared, old: usize, answer: Option<(u16, String, Truth)>) {
    let Some((200, body, truth)) = answer else {
        return;
    };
    if truth.leader {
        let mut w = lock(world);
        let old_name = w.nodes[old].name.clone();
        w.violate(
            Invariant::CommandBrokeItsWord,
            format!("a switchover away from {old_name} answered 200 ({body}) but {old_name} still held the leader key"),
        );
    }
}

/// Invariant 7 for a restart: success means PostgreSQL ran when the answer was given (and, on
/// the leader, that the leader kept its lease: the agent reports failure otherwise).
fn keep_word_restart(world: &Shared, n: usize, answer: Option<(u16, String, Truth)>) {
    let Some((200, body, truth)) = answer else {
        return;
    };
    if !truth.running {
        let mut w = lock(world);
        let name = w.nodes[n].name.clone();
        w.violate(
            Invariant::CommandBrokeItsWord,
            format!("a restart of {name} answered 200 ({body}) but PostgreSQL was not running"),
        );
    }
}

fn end(world: &Shared, i: usize, node: Option<usize>) {
    let kind = lock(world).schedule.faults[i].kind.clone();
    match (kind, node) {
        (FaultKind::NodeCrash { .. } | FaultKind::AgentCrash { .. }, Some(n)) => {
            let mut w = lock(world);
            if w.nodes[n].down_by == Some(i) {
                w.nodes[n].down_by = None;
                w.say(n, || "node back: agent starts".into());
                let delay = w.rng.range(100, 500);
                drop(w);
                node::start_agent(world, n, delay);
            }
        }
        (FaultKind::NodeRestart { .. }, Some(n)) => {
            let mut w = lock(world);
            if w.nodes[n].down_by != Some(i) {
                return;
            }
            if w.nodes[n].agent.is_some() {
                // Still shutting down.
                drop(w);
                end_at(world, i, Some(n), 500);
            } else {
                w.nodes[n].down_by = None;
                drop(w);
                node::start_agent(world, n, 0);
            }
        }
        (FaultKind::Pause { .. }, Some(n)) => {
            let mut w = lock(world);
            if w.nodes[n].frozen_by == Some(i) {
                w.say(n, || "node resumed (SIGCONT)".into());
                thaw(&mut w, n);
                w.changed();
            }
        }
        (FaultKind::DcsOutage { leases_survive, .. }, _) => {
            let mut w = lock(world);
            w.dcs_outages = w.dcs_outages.saturating_sub(1);
            if leases_survive {
                w.leases_frozen = false;
                w.store.refresh_leases(tokio::time::Instant::now());
            }
            w.say_world(|| "DCS reachable again".into());
        }
        (FaultKind::DcsCut { .. }, Some(n)) => {
            let mut w = lock(world);
            w.nodes[n].dcs_cut = w.nodes[n].dcs_cut.saturating_sub(1);
        }
        (FaultKind::SlowNet { .. }, Some(n)) => {
            let mut w = lock(world);
            w.nodes[n].slow = None;
        }
        (FaultKind::ReplicaLag { .. }, Some(n)) => {
            let mut w = lock(world);
            w.nodes[n].lagging = w.nodes[n].lagging.saturating_sub(1);
        }
        (FaultKind::SlowStop { .. }, Some(n)) => {
            lock(world).nodes[n].slow_stop = 0;
        }
        (FaultKind::SlowStart { .. }, Some(n)) => {
            lock(world).nodes[n].slow_start = 0;
        }
        (FaultKind::PrePromote { .. }, Some(n)) => {
            lock(world).nodes[n].pre_promote = None;
        }
        _ => {}
    }
}

/// SIGCONT: everything of the node that waited goes on (its overdue fence first: see
/// `Options::resume_fence_latency`).
fn thaw(w: &mut World, n: usize) {
    if w.nodes[n].frozen_by.take().is_some() {
        let now = w.now();
        w.nodes[n].resumed_at = Some(now);
        for waiter in std::mem::take(&mut w.nodes[n].thaw_waiters) {
            let _ = waiter.send(());
        }
    }
}

/// The name the simulated `pgherd proxy` registers under.
pub(crate) const SIM_PROXY: &str = "sim-proxy";

/// A `pgherd proxy` as the agents see it: its registration (`proxies/sim-proxy` on a lease of
/// its own, rewritten every second and on every change) names the member it routes writes
/// to, which follows the leader key `lag` ms late. After `dur` it exits: the lease is revoked.
async fn run_proxy(world: &Shared, lag: Time, dur: Time) {
    let dcs = {
        let mut w = lock(world);
        w.say_world(|| format!("FAULT: a proxy follows the leader {lag} ms late for {dur} ms"));
        pgherd_dcs::memory::MemoryDcs::new(
            w.store.clone(),
            w.layout.clone(),
            None,
            Duration::from_secs(3),
        )
    };
    let key = pgherd_dcs::proxy_key(SIM_PROXY);
    let start = lock(world).now();
    let mut routing: Option<String> = None;
    let mut target: Option<(Option<String>, Time)> = None;
    let mut written_at: Option<Time> = None;
    loop {
        let (now, leader) = {
            let w = lock(world);
            (w.now(), w.leader_name())
        };
        if now >= start + dur {
            break;
        }
        if target.as_ref().map(|(l, _)| l) != Some(&leader) {
            target = Some((leader.clone(), now));
        }
        let mut changed = false;
        if let Some((l, since)) = &target {
            if *l != routing && now >= since + lag {
                routing = l.clone();
                changed = true;
            }
        }
        if changed || written_at.is_none_or(|at| now >= at + 1_000) {
            let value = pgherd_dcs::ProxyRegistration {
                name: SIM_PROXY.to_string(),
                routing_leader: routing.clone(),
                updated_at: now,
                api: None,
            };
            if pgherd_dcs::Dcs::put_ephemeral(&dcs, &key, &value.to_json())
                .await
                .is_ok()
            {
                written_at = Some(now);
                if changed {
                    let mut w = lock(world);
                    let r = routing.clone();
                    w.say_world(|| format!("proxy: routes writes to {r:?}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = pgherd_dcs::Dcs::release_lease(&dcs).await;
    lock(world).say_world(|| "proxy: exited".into());
}
