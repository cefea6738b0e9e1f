//! The seam between a pooled session and the routing: [`pick`] chooses the server a
//! transaction (or a session) runs on, from the [`Target`] the caller wants, holding while
//! none is routable.

use crate::backend::Backend;
use crate::error::Refusal;
use crate::gate::Dec;
use crate::routing::Readiness;
use crate::session::ListenerCtx;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::{timeout_at, Instant};

/// The rotation a server is wanted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The rotation of the routing table's listener entry `index` (a listener's own role).
    Listener(usize),
}

/// The server chosen for one transaction or session.
#[derive(Debug, Clone)]
pub struct Picked {
    pub member: String,
    /// `host:port`.
    pub addr: String,
    /// Its counters and kill switch on this listener.
    pub backend: Arc<Backend>,
}

/// Chooses a server of `target`'s rotation, waiting (the hold) until `deadline` while none
/// is routable.
pub async fn pick(ctx: &ListenerCtx, target: Target, deadline: Instant) -> Result<Picked, Refusal> {
    let Target::Listener(index) = target;
    let mut rx = ctx.table.clone();
    let mut holding: Option<Dec<'_>> = None;
    loop {
        let table = rx.borrow_and_update().clone();
        let Some(lt) = table.listeners.get(index) else {
            return Err(Refusal::HoldTimeout);
        };
        if let Some(e) = lt.pick() {
            if let Some(addr) = e.addr.clone() {
                return Ok(Picked {
                    member: e.member.clone(),
                    addr,
                    backend: e.backend.clone(),
                });
            }
        }
        if lt.readiness == Readiness::FailFast || Instant::now() >= deadline {
            return Err(Refusal::HoldTimeout);
        }
        if holding.is_none() {
            ctx.gate.holding.fetch_add(1, Ordering::SeqCst);
            holding = Some(Dec(&ctx.gate.holding));
        }
        match timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => return Err(Refusal::HoldTimeout),
        }
    }
}

/// Whether `member` still takes new work in `target`'s rotation (checked after a server
/// connection was obtained: a kill issued before it was registered does not reach it).
pub fn still_routed(ctx: &ListenerCtx, target: Target, member: &str) -> bool {
    let Target::Listener(index) = target;
    ctx.table
        .borrow()
        .listeners
        .get(index)
        .is_some_and(|l| l.routes(member))
}
