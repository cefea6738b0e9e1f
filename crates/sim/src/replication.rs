//! WAL shipping and commits: standbys streaming from their upstream (only along a WAL
//! history they can continue), synchronous replication as PostgreSQL's FIRST N with its
//! catchup/streaming states, and the client whose commits are acknowledged accordingly.

use crate::wal::Ack;
use crate::world::{Ev, Host, Phase, World};

impl World {
    /// A standby fetches WAL from its upstream when the histories allow it (a standby whose
    /// WAL diverged from the upstream's history cannot stream until it is rewound).
    pub(crate) fn stream(&mut self, n: usize) {
        let every = if self.nodes[n].lagging > 0 {
            self.rng.range(1_000, 4_000)
        } else if self.nodes[n].slow.is_some() {
            self.rng.range(200, 2_000)
        } else {
            self.rng.range(100, 600)
        };
        self.after(every, Host::Node(n), Ev::Stream);
        let pg = &self.nodes[n].pg;
        if !pg.running || !pg.in_recovery {
            return;
        }
        let Some(up) = pg.upstream.as_deref().and_then(|u| self.index_of(u)) else {
            return;
        };
        if up == n || self.frozen(up) {
            return;
        }
        let source = &self.nodes[up].pg;
        if !source.running || !source.accepting {
            return;
        }
        // Continuable: our history is a prefix of the upstream's, or the upstream (a standby
        // behind us) is a prefix of ours and we wait for it.
        let waiting = source.wal.end <= pg.wal.end && source.wal.is_prefix_of(&pg.wal);
        if !(pg.wal.is_prefix_of(&source.wal) || waiting) {
            // Diverged: PostgreSQL keeps retrying and logging, and never catches up.
            self.nodes[n].pg.streaming_from = None;
            return;
        }
        let link = (self.nodes[up].name.clone(), source.epoch);
        if source.wal.end > pg.wal.end {
            let wal = source.wal.clone();
            let switched = wal.timeline() != pg.wal.timeline();
            self.nodes[n].pg.wal = wal;
            if switched {
                let tl = self.nodes[n].pg.wal.timeline();
                self.say(n, || format!("postgres: now streaming timeline {tl}"));
            }
        }
        if self.nodes[n].pg.wal.end >= self.nodes[up].pg.wal.end {
            self.nodes[n].pg.streaming_from = Some(link);
        }
        self.release(up);
    }

    /// A client commits on a writable primary (any of them: in a split brain, both take
    /// writes). The commit is acknowledged once the synchronous standbys have it.
    pub(crate) fn client(&mut self) {
        let next = self.rng.range(80, 400);
        self.after(next, Host::Global, Ev::Client);
        if matches!(self.phase, Phase::Bootstrap { .. }) {
            // Commits start once the new cluster (and synchronous replication) is set up.
            return;
        }
        let writable: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.frozen(i) && self.nodes[i].pg.writable())
            .collect();
        if writable.is_empty() {
            return;
        }
        let Some(&n) = writable.get(self.rng.index(writable.len())) else {
            return;
        };
        if self.pending.iter().filter(|(_, a)| a.node == n).count() >= 64 {
            // Every client session is blocked waiting for a synchronous standby.
            return;
        }
        let size = self.rng.range(100, 3_000);
        let pg = &mut self.nodes[n].pg;
        pg.wal.end += size;
        let ack = Ack {
            at: self.now,
            node: n,
            content: pg.wal.content().unwrap_or(0),
            timeline: pg.wal.timeline(),
            lsn: pg.wal.end,
        };
        let epoch = pg.epoch;
        self.pending.push((epoch, ack));
        self.wal_dirty.push(n);
        self.release(n);
    }

    /// The standbys connected to primary `p`: `(node, flushed lsn, streaming, synchronous)`.
    /// Only standbys past "catchup" can be synchronous. As
    /// PostgreSQL's FIRST N: the N connected standbys listed first in
    /// `synchronous_standby_names` (for `*`, by name in place of connection order) are the
    /// synchronous ones. A paused standby stays connected (wal_sender_timeout is long).
    pub(crate) fn walsenders(&self, p: usize) -> Vec<(usize, u64, bool, bool)> {
        let primary = &self.nodes[p];
        let links: Vec<(usize, u64, bool)> = (0..self.nodes.len())
            .filter(|&m| m != p)
            .filter(|&m| {
                let pg = &self.nodes[m].pg;
                pg.running
                    && pg.in_recovery
                    && pg.upstream.as_deref() == Some(primary.name.as_str())
                    && pg.wal.is_prefix_of(&primary.pg.wal)
            })
            .map(|m| {
                let pg = &self.nodes[m].pg;
                let streaming = pg
                    .streaming_from
                    .as_ref()
                    .is_some_and(|(u, e)| *u == primary.name && *e == primary.pg.epoch);
                (m, pg.wal.end, streaming)
            })
            .collect();
        let (count, names) = &primary.pg.sync_waits;
        let count = *count;
        let any = names.iter().any(|x| x == "*");
        let mut ranked: Vec<(usize, &str, usize)> = links
            .iter()
            .filter(|l| l.2)
            .filter_map(|&(m, _, _)| {
                let name = self.nodes[m].name.as_str();
                let prio = if any {
                    Some(0)
                } else {
                    names.iter().position(|x| x == name)
                };
                prio.map(|p| (p, name, m))
            })
            .collect();
        ranked.sort();
        let sync: Vec<usize> = ranked.iter().take(count).map(|r| r.2).collect();
        links
            .into_iter()
            .map(|(m, lsn, streaming)| (m, lsn, streaming, sync.contains(&m)))
            .collect()
    }

    /// Acknowledges the commits of primary `p` its synchronous standbys have flushed.
    pub(crate) fn release(&mut self, p: usize) {
        if !self.pending.iter().any(|(_, a)| a.node == p) {
            return;
        }
        let count = self.nodes[p].pg.sync_waits.0;
        let epoch = self.nodes[p].pg.epoch;
        let alive = self.nodes[p].pg.running;
        let upto = if count == 0 {
            u64::MAX
        } else {
            let sync: Vec<u64> = self
                .walsenders(p)
                .into_iter()
                .filter(|l| l.3)
                .map(|l| l.1)
                .collect();
            if sync.len() < count {
                0
            } else {
                sync.into_iter().min().unwrap_or(0)
            }
        };
        let mut kept = Vec::with_capacity(self.pending.len());
        for (e, ack) in std::mem::take(&mut self.pending) {
            if ack.node != p {
                kept.push((e, ack));
            } else if e != epoch || !alive {
                // The server went away: the client never learns whether it committed.
                self.stats.indeterminate_commits += 1;
            } else if ack.lsn <= upto {
                self.acks.push(ack);
                self.stats.acked_commits += 1;
            } else {
                kept.push((e, ack));
            }
        }
        self.pending = kept;
    }
}
