//! WAL shipping and commits: standbys streaming from their upstream (only along a WAL
//! history they can continue), synchronous replication as PostgreSQL's FIRST N with its
//! catchup/streaming states, and the client whose commits are acknowledged accordingly.

use crate::wal::Ack;
use crate::world::{lock, Phase, Shared, World};
use crate::Time;
use std::time::Duration;

/// The WAL receiver of node `n`, for the whole run.
pub(crate) fn spawn_streaming(world: &Shared, n: usize) {
    let world = world.clone();
    tokio::spawn(async move {
        loop {
            let every = lock(&world).stream_interval(n);
            tokio::time::sleep(Duration::from_millis(every)).await;
            let mut w = lock(&world);
            if w.stream(n) {
                w.changed();
            }
        }
    });
}

/// The client, for the whole run.
pub(crate) fn spawn_client(world: &Shared) {
    let world = world.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        loop {
            let next = lock(&world).rng.range(80, 400);
            tokio::time::sleep(Duration::from_millis(next)).await;
            let mut w = lock(&world);
            if w.client() {
                w.changed();
            }
        }
    });
}

impl World {
    fn stream_interval(&mut self, n: usize) -> Time {
        if self.nodes[n].lagging > 0 {
            self.rng.range(1_000, 4_000)
        } else if self.nodes[n].slow.is_some() {
            self.rng.range(200, 2_000)
        } else {
            self.rng.range(100, 600)
        }
    }

    /// `pg_stat_wal_receiver.status = 'streaming'`: connected to the upstream's current
    /// postmaster (a paused upstream keeps the connection) and not refused as diverged.
    pub(crate) fn wal_receiver_streaming(&self, n: usize) -> bool {
        let pg = &self.nodes[n].pg;
        let Some((up, epoch)) = pg.streaming_from.as_ref() else {
            return false;
        };
        pg.running
            && pg.in_recovery
            && pg.upstream.as_ref() == Some(up)
            && self.index_of(up).is_some_and(|u| {
                let source = &self.nodes[u].pg;
                source.running && source.epoch == *epoch
            })
    }

    /// The slots of node `n` that a connected standby uses.
    pub(crate) fn slots_in_use(&self, n: usize) -> Vec<String> {
        let name = &self.nodes[n].name;
        self.nodes
            .iter()
            .filter(|m| m.pg.running && m.pg.in_recovery && m.pg.upstream.as_ref() == Some(name))
            .filter_map(|m| m.pg.slot.clone())
            .collect()
    }

    /// A standby fetches WAL from its upstream when the histories allow it (a standby whose
    /// WAL diverged from the upstream's history cannot stream until it is rewound), and
    /// when the upstream has the slot it asks for. Returns whether anything changed.
    pub(crate) fn stream(&mut self, n: usize) -> bool {
        if self.frozen(n) {
            return false;
        }
        let pg = &self.nodes[n].pg;
        if !pg.running || !pg.in_recovery {
            return false;
        }
        let Some(up) = pg.upstream.as_deref().and_then(|u| self.index_of(u)) else {
            return false;
        };
        if up == n || self.frozen(up) {
            return false;
        }
        let source = &self.nodes[up].pg;
        if !source.running || !source.accepting {
            return false;
        }
        if pg.slot.as_ref().is_some_and(|s| !source.slots.contains(s)) {
            // "replication slot ... does not exist": the WAL receiver retries.
            let was = self.nodes[n].pg.streaming_from.take().is_some();
            return was;
        }
        // Continuable: our history is a prefix of the upstream's, or the upstream (a standby
        // behind us) is a prefix of ours and we wait for it.
        let waiting = source.wal.end <= pg.wal.end && source.wal.is_prefix_of(&pg.wal);
        if !(pg.wal.is_prefix_of(&source.wal) || waiting) {
            // Diverged: PostgreSQL keeps retrying and logging, and never catches up.
            self.nodes[n].pg.streaming_from = None;
            return true;
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
        true
    }

    /// A clean (fast) shutdown of a primary: its WAL senders send everything to the standbys
    /// streaming from it before the postmaster exits, which is why a switchover candidate
    /// that streams never needs a rewind. An immediate stop sends nothing more.
    pub(crate) fn flush_to_standbys(&mut self, p: usize) {
        let primary = &self.nodes[p].pg;
        if primary.in_recovery || !matches!(primary.stopping, Some((crate::pg::StopMode::Fast, _)))
        {
            return;
        }
        let link = (self.nodes[p].name.clone(), primary.epoch);
        let wal = primary.wal.clone();
        for m in (0..self.nodes.len()).filter(|&m| m != p) {
            let standby = &self.nodes[m].pg;
            if !self.frozen(m)
                && standby.running
                && standby.in_recovery
                && standby.streaming_from.as_ref() == Some(&link)
                && standby.wal.is_prefix_of(&wal)
            {
                self.nodes[m].pg.wal = wal.clone();
            }
        }
    }

    /// A client commits on a writable primary (any of them: in a split brain, both take
    /// writes). The commit is acknowledged once the synchronous standbys have it. Returns
    /// whether it committed.
    pub(crate) fn client(&mut self) -> bool {
        if matches!(self.phase, Phase::Bootstrap { .. }) {
            // Commits start once the new cluster (and synchronous replication) is set up.
            return false;
        }
        let now = self.now();
        let writable: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.writable(i))
            .collect();
        if writable.is_empty() {
            return false;
        }
        let Some(&n) = writable.get(self.rng.index(writable.len())) else {
            return false;
        };
        if self.pending.iter().filter(|(_, a)| a.node == n).count() >= 64 {
            // Every client session is blocked waiting for a synchronous standby.
            return false;
        }
        let size = self.rng.range(100, 3_000);
        let pg = &mut self.nodes[n].pg;
        pg.wal.end += size;
        let ack = Ack {
            at: now,
            node: n,
            content: pg.wal.content().unwrap_or(0),
            timeline: pg.wal.timeline(),
            lsn: pg.wal.end,
        };
        let epoch = pg.epoch;
        self.pending.push((epoch, ack));
        self.wal_dirty.push(n);
        self.release(n);
        true
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
                    && pg
                        .slot
                        .as_ref()
                        .is_none_or(|s| primary.pg.slots.contains(s))
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
