//! WAL identity. A node's WAL is a list of segments, each written by one "writer session"
//! (a primary from the moment it starts writing until it stops) on one timeline. Sessions get
//! globally unique `content` ids, so two nodes hold the same bytes at a position exactly when
//! the segments covering it have the same content id. Timeline numbers are what PostgreSQL and
//! the agent see; content ids are what the checker uses to tell real divergence apart.

use crate::Time;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    pub content: u32,
    pub timeline: u64,
    pub start: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wal {
    pub segs: Vec<Seg>,
    /// End of WAL (exclusive): the position a primary reports, or what a replica received.
    pub end: u64,
}

/// Where the first WAL of a new cluster starts (0/1000000, as after initdb).
pub const INITIAL_LSN: u64 = 0x0100_0000;

impl Wal {
    pub fn new_cluster(content: u32) -> Wal {
        Wal {
            segs: vec![Seg {
                content,
                timeline: 1,
                start: 0,
            }],
            end: INITIAL_LSN,
        }
    }

    pub fn timeline(&self) -> u64 {
        self.segs.last().map_or(0, |s| s.timeline)
    }

    pub fn content(&self) -> Option<u32> {
        self.segs.last().map(|s| s.content)
    }

    /// A new writer session starts at the current end (promotion: on `timeline + 1`; a start
    /// as primary: on the same timeline). A session that wrote nothing is replaced.
    pub fn start_writer(&mut self, content: u32, timeline: u64) {
        if self.segs.last().is_some_and(|s| s.start == self.end) {
            self.segs.pop();
        }
        self.segs.push(Seg {
            content,
            timeline,
            start: self.end,
        });
    }

    /// The content id covering `pos` (which must be below `end`).
    pub fn content_at(&self, pos: u64) -> Option<u32> {
        if pos >= self.end {
            return None;
        }
        self.segs
            .iter()
            .rev()
            .find(|s| s.start <= pos)
            .map(|s| s.content)
    }

    /// Same bytes on `[0, upto)` (`upto` at most both ends).
    pub fn agrees(&self, other: &Wal, upto: u64) -> bool {
        let a = self.segs.iter().take_while(|s| s.start < upto);
        let b = other.segs.iter().take_while(|s| s.start < upto);
        a.eq(b)
    }

    /// A standby at `self` can continue from `up`: all we have, `up` has too.
    pub fn is_prefix_of(&self, up: &Wal) -> bool {
        self.end <= up.end && self.agrees(up, self.end)
    }

    /// Timeline switches as `(parent timeline, switch lsn)`, as in a `.history` file.
    pub fn switches(&self) -> Vec<(u64, u64)> {
        self.segs
            .windows(2)
            .filter(|w| w[0].timeline != w[1].timeline)
            .map(|w| (w[0].timeline, w[1].start))
            .collect()
    }

    /// A position where both hold WAL that claims the same timeline but different bytes:
    /// `(timeline, lsn)`. PostgreSQL trusts timeline ids to identify history, so this is
    /// corruption waiting to happen (streaming or pg_rewind would mix the two).
    pub fn same_timeline_conflict(&self, other: &Wal) -> Option<(u64, u64)> {
        for (i, a) in self.segs.iter().enumerate() {
            let a_end = self.segs.get(i + 1).map_or(self.end, |s| s.start);
            for (j, b) in other.segs.iter().enumerate() {
                if a.timeline != b.timeline || a.content == b.content {
                    continue;
                }
                let b_end = other.segs.get(j + 1).map_or(other.end, |s| s.start);
                let lo = a.start.max(b.start);
                if lo < a_end.min(b_end) {
                    return Some((a.timeline, lo));
                }
            }
        }
        None
    }
}

/// One acknowledged commit: where it ended, and in which writer session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub at: Time,
    pub node: usize,
    pub content: u32,
    pub timeline: u64,
    pub lsn: u64,
}

impl Ack {
    /// The commit's bytes are in `wal`.
    pub fn is_in(&self, wal: &Wal) -> bool {
        self.lsn <= wal.end && wal.content_at(self.lsn - 1) == Some(self.content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_divergence_and_conflicts() {
        let mut p = Wal::new_cluster(1);
        p.end = 100;
        let mut r = p.clone();
        r.end = 90;
        assert!(r.is_prefix_of(&p));
        // r is promoted at 90 onto timeline 2.
        r.start_writer(2, 2);
        r.end = 120;
        assert!(
            !p.is_prefix_of(&r),
            "p has 90..100 on timeline 1 that r never had"
        );
        let mut q = p.clone();
        q.end = 80;
        assert!(q.is_prefix_of(&r), "a replica behind the fork can follow");
        assert_eq!(r.switches(), vec![(1, 90)]);
        assert_eq!(p.same_timeline_conflict(&r), None);
        // A replica started as primary without promotion keeps timeline 1: conflict.
        let mut s = q.clone();
        s.start_writer(3, 1);
        s.end = 95;
        assert_eq!(p.same_timeline_conflict(&s), Some((1, 80)));
        let ack = Ack {
            at: 0,
            node: 0,
            content: 1,
            timeline: 1,
            lsn: 95,
        };
        assert!(ack.is_in(&p));
        assert!(!ack.is_in(&r));
    }
}
