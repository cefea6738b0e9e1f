//! The campaign's client: one writer through the proxy (in the client namespace) and one
//! straight to each node (in that node's namespace), each a new connection every 100 ms with
//! a 1 s deadline (pgherd_testkit's `Writer`), recording
//! acknowledged, refused and indeterminate writes with their times; afterwards the
//! acknowledged ids are looked up on the leader.

use crate::cluster::{Cluster, NODES, PG_PORT, PROXY_WRITE_PORT};
use crate::net::Net;
use anyhow::{Context, Result};
use pgherd_testkit::writer::{Target, Writer, WriterReport};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use std::time::{SystemTime, UNIX_EPOCH};

pub const TABLE: &str = "fault_writes";
const EVERY: Duration = Duration::from_millis(100);
/// Ids of one fault's writers: `base + writer * WRITER_SPAN + n`.
const WRITER_SPAN: i64 = 10_000_000;

pub struct Workload {
    proxy: Writer,
    direct: Vec<LocalWriter>,
}

/// A writer running inside a node's own namespace (`faults writer ...`), writing to that
/// node's address over loopback: a client next to the server, which still reaches it when the
/// node is cut off from everything else (what makes split-brain writes and self-fencing
/// visible). Stopped by closing its stdin, after which it prints its report; killed by pid on
/// drop.
struct LocalWriter {
    child: Option<Child>,
}

impl LocalWriter {
    fn start(net: &Net, host: &str, target: &Target) -> Result<LocalWriter> {
        let exe = std::env::current_exe().context("locating this program")?;
        let child = net
            .command(host, &exe.to_string_lossy())
            .args(["writer", &target.host])
            .arg(target.port.to_string())
            .arg(target.first_id.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the local writer in {host}"))?;
        Ok(LocalWriter { child: Some(child) })
    }

    fn stop(mut self) -> Result<WriterReport> {
        let mut child = self.child.take().context("writer already stopped")?;
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !text.lines().any(|l| l == "end") {
            anyhow::bail!("a local writer failed ({}): no report", out.status);
        }
        Ok(parse_report(&text))
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `faults writer HOST PORT FIRST_ID`: writes until stdin closes, then prints `ack <id> <unix
/// µs>`, `refused_at <unix µs>`, `indeterminate <id>`, `refused <n>` and `end` lines.
pub fn writer_main(args: &[String]) -> Result<()> {
    let [host, port, first_id] = args else {
        anyhow::bail!("writer HOST PORT FIRST_ID");
    };
    let target = Target {
        host: host.clone(),
        port: port.parse()?,
        first_id: first_id.parse()?,
    };
    let w = Writer::start_at(target, TABLE, EVERY)?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let r = w.stop();
    let (now_i, now_w) = (Instant::now(), SystemTime::now());
    let mut out = String::new();
    for (t, id) in &r.ack_times {
        let wall = now_w - now_i.duration_since(*t);
        let us = wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        out.push_str(&format!("ack {id} {us}\n"));
    }
    for t in &r.refused_times {
        let wall = now_w - now_i.duration_since(*t);
        let us = wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        out.push_str(&format!("refused_at {us}\n"));
    }
    for id in &r.indeterminate {
        out.push_str(&format!("indeterminate {id}\n"));
    }
    out.push_str(&format!("refused {}\nend\n", r.refused));
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(())
}

/// The lines of [`writer_main`], with the wall-clock times turned back into this process's
/// `Instant`s.
fn parse_report(text: &str) -> WriterReport {
    let (now_i, now_w) = (Instant::now(), SystemTime::now());
    let mut r = WriterReport::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["ack", id, us] => {
                let (Ok(id), Ok(us)) = (id.parse::<i64>(), us.parse::<u64>()) else {
                    continue;
                };
                let wall = UNIX_EPOCH + Duration::from_micros(us);
                let ago = now_w.duration_since(wall).unwrap_or_default();
                r.acked.insert(id);
                r.ack_times.push((now_i - ago, id));
            }
            ["refused_at", us] => {
                let Ok(us) = us.parse::<u64>() else {
                    continue;
                };
                let wall = UNIX_EPOCH + Duration::from_micros(us);
                r.refused_times
                    .push(now_i - now_w.duration_since(wall).unwrap_or_default());
            }
            ["indeterminate", id] => {
                if let Ok(id) = id.parse() {
                    r.indeterminate.insert(id);
                }
            }
            ["refused", n] => r.refused = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    r
}

/// What the writers saw during one fault.
pub struct Seen {
    pub proxy: WriterReport,
    /// One per node, in `NODES` order.
    pub direct: Vec<WriterReport>,
}

impl Workload {
    /// Starts the writers for fault number `n` (its own range of ids).
    pub fn start(c: &Cluster, n: i64) -> Result<Workload> {
        let base = base_of(n);
        let target = |host: &str, port: u16, w: i64| Target {
            host: host.to_string(),
            port,
            first_id: base + w * WRITER_SPAN,
        };
        let proxy = Writer::start_at(target(c.client_ip(), PROXY_WRITE_PORT, 0), TABLE, EVERY)?;
        let direct = (0..NODES.len())
            .map(|i| {
                LocalWriter::start(
                    c.net,
                    NODES[i],
                    &target(c.node_ip(i), PG_PORT, i as i64 + 1),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Workload { proxy, direct })
    }

    pub fn stop(self) -> Result<Seen> {
        Ok(Seen {
            proxy: self.proxy.stop(),
            direct: self
                .direct
                .into_iter()
                .map(LocalWriter::stop)
                .collect::<Result<Vec<_>>>()?,
        })
    }
}

/// The first id of fault number `n`'s writers.
pub fn base_of(n: i64) -> i64 {
    (n + 1) * 10 * WRITER_SPAN
}

pub fn create_table(c: &Cluster, leader: usize) -> Result<()> {
    c.sql(
        c.node_ip(leader),
        PG_PORT,
        &format!("create table if not exists {TABLE}(id bigint primary key)"),
    )?;
    Ok(())
}

/// The ids of this workload's range present on node `i`.
pub fn ids_on(c: &Cluster, i: usize, base: i64) -> Result<BTreeSet<i64>> {
    let out = c.sql(
        c.node_ip(i),
        PG_PORT,
        &format!(
            "select id from {TABLE} where id >= {base} and id < {}",
            base + 10 * WRITER_SPAN
        ),
    )?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

impl Seen {
    pub fn acked(&self) -> BTreeSet<i64> {
        let mut all = self.proxy.acked.clone();
        for d in &self.direct {
            all.extend(d.acked.iter().copied());
        }
        all
    }

    pub fn indeterminate(&self) -> usize {
        self.proxy.indeterminate.len()
            + self
                .direct
                .iter()
                .map(|d| d.indeterminate.len())
                .sum::<usize>()
    }

    pub fn refused(&self) -> u64 {
        self.proxy.refused + self.direct.iter().map(|d| d.refused).sum::<u64>()
    }

    /// Writes acknowledged straight by two nodes at once: for every pair of nodes whose
    /// spans of acknowledged writes (first to last) overlap, the acknowledgements of both
    /// from the moment both had acknowledged one until the last of them did. A clean
    /// handover (the old primary's last write before the new one's first) counts 0.
    pub fn split_brain_writes(&self) -> usize {
        let spans: Vec<Option<(Instant, Instant)>> = self
            .direct
            .iter()
            .map(|d| Some((d.ack_times.first()?.0, d.ack_times.last()?.0)))
            .collect();
        let mut count = 0;
        for a in 0..spans.len() {
            for b in a + 1..spans.len() {
                let (Some((fa, la)), Some((fb, lb))) = (spans[a], spans[b]) else {
                    continue;
                };
                if fa.max(fb) > la.min(lb) {
                    continue;
                }
                let (from, to) = (fa.max(fb), la.max(lb));
                for i in [a, b] {
                    count += self.direct[i]
                        .ack_times
                        .iter()
                        .filter(|(t, _)| *t >= from && *t <= to)
                        .count();
                }
            }
        }
        count
    }

    /// The longest time without an acknowledged write between `from` and `to`, over the
    /// direct writers together (any node) or the proxy's writer.
    pub fn max_gap(&self, via_proxy: bool, from: Instant, to: Instant) -> Duration {
        let mut times: Vec<Instant> = if via_proxy {
            self.proxy.ack_times.iter().map(|(t, _)| *t).collect()
        } else {
            self.direct
                .iter()
                .flat_map(|d| d.ack_times.iter().map(|(t, _)| *t))
                .collect()
        };
        times.retain(|t| *t > from && *t < to);
        times.sort();
        let mut last = from;
        let mut gap = Duration::ZERO;
        for t in times.into_iter().chain([to]) {
            gap = gap.max(t.saturating_duration_since(last));
            last = t;
        }
        gap
    }

    /// The last acknowledgement node `i` gave after `t0`.
    pub fn last_ack_after(&self, i: usize, t0: Instant) -> Option<Instant> {
        self.direct[i]
            .ack_times
            .iter()
            .rev()
            .map(|(t, _)| *t)
            .find(|t| *t >= t0)
    }

    /// When node `i` first refused a write (read-only, not accepting connections) after
    /// `t0`: it no longer acts as a primary.
    pub fn first_refusal_after(&self, i: usize, t0: Instant) -> Option<Instant> {
        self.direct[i]
            .refused_times
            .iter()
            .copied()
            .find(|t| *t >= t0)
    }

    /// The first acknowledgement another node than `i` gave after `t0`.
    pub fn first_ack_elsewhere(&self, i: usize, t0: Instant) -> Option<Instant> {
        self.direct
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, d)| d.ack_times.iter().map(|(t, _)| *t).find(|t| *t >= t0))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks(base: Instant, ms: &[u64]) -> WriterReport {
        let mut r = WriterReport::default();
        for (i, m) in ms.iter().enumerate() {
            r.acked.insert(i as i64);
            r.ack_times
                .push((base + Duration::from_millis(*m), i as i64));
        }
        r
    }

    #[test]
    fn a_clean_handover_has_no_split_brain_writes_and_an_overlap_has_some() {
        let t = Instant::now();
        let clean = Seen {
            proxy: WriterReport::default(),
            direct: vec![acks(t, &[0, 100, 200]), acks(t, &[500, 600]), acks(t, &[])],
        };
        assert_eq!(clean.split_brain_writes(), 0);
        let t = Instant::now();
        let overlap = Seen {
            proxy: WriterReport::default(),
            direct: vec![
                acks(t, &[0, 100, 200, 700]),
                acks(t, &[500, 600]),
                acks(t, &[]),
            ],
        };
        // From 500 ms (both have acknowledged) to 700 ms (the last of them): node 1's two
        // and node 0's write at 700 ms.
        assert_eq!(overlap.split_brain_writes(), 3);
    }

    #[test]
    fn the_max_gap_spans_the_window_edges() {
        let t = Instant::now();
        let seen = Seen {
            proxy: acks(t, &[100, 200, 1200]),
            direct: vec![acks(t, &[100, 150]), acks(t, &[900])],
        };
        let end = t + Duration::from_millis(1500);
        assert_eq!(seen.max_gap(true, t, end), Duration::from_millis(1000));
        assert_eq!(seen.max_gap(false, t, end), Duration::from_millis(750));
    }
}
