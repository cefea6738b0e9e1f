//! Events in simulated time and the queue that orders them (by time, then by creation).

use crate::dcs::{DcsOp, DcsReply};
use crate::faults::FaultEvent;
use crate::world::Truth;
use crate::Time;
use pgherd_ha::PeerReply;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Who processes an event. Events of a paused node wait until it resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    Global,
    Node(usize),
}

/// What PostgreSQL finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PgStep {
    Started,
    Stopped,
    Promoted,
}

/// `ae` is the agent epoch (a new agent process gets a new one), so events meant for a dead
/// process are dropped.
#[derive(Debug)]
pub(crate) enum Ev {
    Cycle {
        ae: u64,
    },
    Watch {
        ae: u64,
    },
    CallReply {
        ae: u64,
        call: u64,
        attempt: u32,
        reply: DcsReply,
    },
    CallTimeout {
        ae: u64,
        call: u64,
        attempt: u32,
    },
    CallRetry {
        ae: u64,
        call: u64,
    },
    /// A `GET /patroni` reaching this node's REST API.
    ProbeArrive {
        from: usize,
        from_ae: u64,
        round: u64,
        deadline: Time,
    },
    ProbeReply {
        ae: u64,
        round: u64,
        peer: usize,
        reply: Option<PeerReply>,
        truth: Option<Truth>,
    },
    ProbeDeadline {
        ae: u64,
        round: u64,
    },
    /// Continue the HA cycle after a PostgreSQL operation it waits for.
    Cont {
        ae: u64,
        token: u64,
    },
    TaskStep {
        ae: u64,
        task: u64,
    },
    Fence {
        ae: u64,
        arm: u64,
    },
    Pg {
        epoch: u64,
        step: PgStep,
    },
    Stream,
    DcsArrive {
        node: usize,
        ae: u64,
        call: u64,
        attempt: u32,
        op: Box<DcsOp>,
        timeout_at: Time,
    },
    LeaseCheck {
        lease: i64,
    },
    Client,
    Fault(FaultEvent),
    Converge,
}

pub(crate) struct Queued {
    pub at: Time,
    pub seq: u64,
    pub host: Host,
    pub ev: Ev,
}

/// The event queue: a heap of small `(at, seq, slot)` keys over a slab of events, so that
/// heap reordering moves 24 bytes rather than whole events (this matters in debug builds).
#[derive(Default)]
pub(crate) struct EventQueue {
    heap: BinaryHeap<Reverse<(Time, u64, usize)>>,
    slots: Vec<Option<(Host, Ev)>>,
    free: Vec<usize>,
}

impl EventQueue {
    pub(crate) fn push(&mut self, q: Queued) {
        let item = Some((q.host, q.ev));
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i] = item;
                i
            }
            None => {
                self.slots.push(item);
                self.slots.len() - 1
            }
        };
        self.heap.push(Reverse((q.at, q.seq, slot)));
    }

    pub(crate) fn pop(&mut self) -> Option<Queued> {
        let Reverse((at, seq, slot)) = self.heap.pop()?;
        let (host, ev) = self.slots.get_mut(slot)?.take()?;
        self.free.push(slot);
        Some(Queued { at, seq, host, ev })
    }
}
