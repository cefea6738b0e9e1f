//! `POST /failsafe` (docs/compat.md#failsafe-mode): the leader, cut off from the DCS, asks every
//! member of the failsafe topology to acknowledge it. A member that is not itself a running
//! primary records who pinged it and answers `Accepted`; for one ttl its agent then treats
//! that member as the leader when the DCS shows none, so it neither races for the lock nor
//! stops following. Answered here, not by the HA loop: the loop may be stuck on the same DCS
//! outage for longer than the leader's 2 s timeout.

use crate::manage::text;
use crate::server::ApiContext;
use axum::response::Response;
use pgherd_dcs::Role;
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::time::{Duration, Instant};

/// The leader that pinged us, as its `POST /failsafe` body described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailsafeLeader {
    pub name: String,
    pub conn_url: String,
    pub api_url: String,
}

/// The last `POST /failsafe` this member accepted, shared with its agent.
#[derive(Debug, Clone, Default)]
pub struct FailsafePings(Arc<Mutex<Option<(FailsafeLeader, Instant)>>>);

impl FailsafePings {
    pub fn record(&self, leader: FailsafeLeader) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((leader, Instant::now()));
    }

    /// The leader that pinged us within `ttl`, if any.
    pub fn leader_within(&self, ttl: Duration) -> Option<FailsafeLeader> {
        let guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        guard
            .as_ref()
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(leader, _)| leader.clone())
    }
}

/// Failsafe mode is on (the DCS `config` as last read).
pub(crate) fn enabled(ctx: &ApiContext) -> bool {
    ctx.snapshot.borrow().failsafe_mode
}

pub(crate) async fn post(ctx: &ApiContext, body: Map<String, Value>) -> Response {
    let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(name), Some(conn_url), Some(api_url)) =
        (field("name"), field("conn_url"), field("api_url"))
    else {
        return text(400, "Bad request");
    };
    let running_primary = {
        let snap = ctx.snapshot.borrow();
        snap.state == "running" && snap.role == Role::Primary
    };
    if running_primary {
        return text(500, "Running as a leader");
    }
    if let Some(pings) = &ctx.failsafe {
        pings.record(FailsafeLeader {
            name,
            conn_url,
            api_url,
        });
    }
    text(200, "Accepted")
}
