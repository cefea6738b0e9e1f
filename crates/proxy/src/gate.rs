//! The admission gate of one listener: `maxconn` concurrent server sessions, a bounded wait
//! queue (`maxqueue`, `queue_timeout`), and the listener's client-side counters.

use crate::error::Refusal;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How the gate admits sessions.
#[derive(Debug)]
pub enum Gate {
    /// No `maxconn`: every session goes straight through.
    Open,
    /// At most `max` sessions at once; others queue.
    Limited { slots: Arc<Semaphore>, max: usize },
}

/// A listener's gate and counters.
#[derive(Debug)]
pub struct ListenerGate {
    gate: Gate,
    maxqueue: usize,
    queue_timeout: Duration,
    queued: AtomicUsize,
    queued_max: AtomicUsize,
    /// Sessions waiting for a routable server (the hold).
    pub holding: AtomicUsize,
    clients: AtomicUsize,
    clients_max: AtomicUsize,
    clients_total: AtomicU64,
    refused: [AtomicU64; 5],
}

/// Counters of one listener, for the stats page.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GateCounters {
    pub clients: usize,
    pub clients_max: usize,
    pub clients_total: u64,
    pub queued: usize,
    pub queued_max: usize,
    pub holding: usize,
    pub maxconn: Option<usize>,
    pub refused_hold_timeout: u64,
    pub refused_queue_full: u64,
    pub refused_queue_timeout: u64,
    pub refused_connect_failed: u64,
    pub refused_proxy_header: u64,
}

/// A client connection counted on its listener for as long as it lives.
pub struct ClientGuard(Arc<ListenerGate>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

fn refusal_index(r: Refusal) -> usize {
    match r {
        Refusal::HoldTimeout => 0,
        Refusal::QueueFull => 1,
        Refusal::QueueTimeout => 2,
        Refusal::ConnectFailed => 3,
        Refusal::ProxyHeader => 4,
    }
}

impl ListenerGate {
    pub fn new(
        maxconn: Option<usize>,
        maxqueue: usize,
        queue_timeout: Duration,
    ) -> Arc<ListenerGate> {
        let gate = match maxconn {
            None => Gate::Open,
            Some(max) => Gate::Limited {
                slots: Arc::new(Semaphore::new(max)),
                max,
            },
        };
        Arc::new(ListenerGate {
            gate,
            maxqueue,
            queue_timeout,
            queued: AtomicUsize::new(0),
            queued_max: AtomicUsize::new(0),
            holding: AtomicUsize::new(0),
            clients: AtomicUsize::new(0),
            clients_max: AtomicUsize::new(0),
            clients_total: AtomicU64::new(0),
            refused: Default::default(),
        })
    }

    pub fn client(self: &Arc<Self>) -> ClientGuard {
        let now = self.clients.fetch_add(1, Ordering::Relaxed) + 1;
        self.clients_max.fetch_max(now, Ordering::Relaxed);
        self.clients_total.fetch_add(1, Ordering::Relaxed);
        ClientGuard(self.clone())
    }

    pub fn refused(&self, why: Refusal) {
        self.refused[refusal_index(why)].fetch_add(1, Ordering::Relaxed);
    }

    /// Waits for a session slot. `Ok(None)`: the gate is open (no limit).
    pub async fn enter(&self) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
        let Gate::Limited { slots, .. } = &self.gate else {
            return Ok(None);
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(Some(permit));
        }
        // Queue, bounded.
        let position = self.queued.fetch_add(1, Ordering::SeqCst);
        let _leave = Dec(&self.queued);
        if position >= self.maxqueue {
            self.refused(Refusal::QueueFull);
            return Err(Refusal::QueueFull);
        }
        self.queued_max.fetch_max(position + 1, Ordering::Relaxed);
        match tokio::time::timeout(self.queue_timeout, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            // The semaphore is never closed; treat it like a timeout anyway.
            Ok(Err(_)) | Err(_) => {
                self.refused(Refusal::QueueTimeout);
                Err(Refusal::QueueTimeout)
            }
        }
    }

    pub fn counters(&self) -> GateCounters {
        let r = |i: usize| self.refused[i].load(Ordering::Relaxed);
        GateCounters {
            clients: self.clients.load(Ordering::Relaxed),
            clients_max: self.clients_max.load(Ordering::Relaxed),
            clients_total: self.clients_total.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            queued_max: self.queued_max.load(Ordering::Relaxed),
            holding: self.holding.load(Ordering::Relaxed),
            maxconn: match &self.gate {
                Gate::Open => None,
                Gate::Limited { max, .. } => Some(*max),
            },
            refused_hold_timeout: r(0),
            refused_queue_full: r(1),
            refused_queue_timeout: r(2),
            refused_connect_failed: r(3),
            refused_proxy_header: r(4),
        }
    }
}

/// Decrements on drop (queue and hold gauges).
pub struct Dec<'a>(pub &'a AtomicUsize);

impl Drop for Dec<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn maxconn_queue_and_timeout() {
        let g = ListenerGate::new(Some(1), 1, Duration::from_secs(5));
        let first = g.enter().await.unwrap();
        assert!(first.is_some());
        // Second waits in the queue; third finds the queue full.
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.enter().await.map(|p| p.is_some()) });
        tokio::task::yield_now().await;
        assert_eq!(g.counters().queued, 1);
        assert_eq!(g.enter().await.unwrap_err(), Refusal::QueueFull);
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(true));
        // With the slot taken and nobody leaving, a waiter times out after queue_timeout.
        let held = g.enter().await.unwrap();
        assert_eq!(g.enter().await.unwrap_err(), Refusal::QueueTimeout);
        drop(held);
        let c = g.counters();
        assert_eq!(
            (
                c.refused_queue_full,
                c.refused_queue_timeout,
                c.queued,
                c.queued_max
            ),
            (1, 1, 0, 1)
        );
    }

    #[tokio::test]
    async fn open_gate_admits_all() {
        let g = ListenerGate::new(None, 0, Duration::from_secs(1));
        for _ in 0..100 {
            assert!(g.enter().await.unwrap().is_none());
        }
        let c1 = g.client();
        let c2 = g.client();
        drop(c1);
        let c = g.counters();
        assert_eq!((c.clients, c.clients_max, c.clients_total), (1, 2, 2));
        drop(c2);
    }
}
