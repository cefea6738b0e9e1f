//! The other members' REST API across the simulated network: a probe travels, the member's
//! real REST router answers it in-process (`GET /patroni`, PostgreSQL looked at live), the
//! answer travels back. A paused member answers after it resumes (or never, within the probe
//! timeout); a member without an agent refuses the connection. The truth about the member at
//! the moment it answered is recorded for the checker (invariant 2).

use crate::config::PlantedBug;
use crate::world::{lock, thawed, Shared};
use async_trait::async_trait;
use pgherd_agent::Peers;
use pgherd_api::PeerStatus;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;
use tower::ServiceExt;

/// The agent's peer probe timeout (crates/agent/src/real.rs).
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

pub(crate) struct SimPeers {
    pub world: Shared,
    pub me: usize,
}

/// `http://n2:8008/patroni` -> `n2`.
fn host_of(url: &str) -> Option<&str> {
    url.split_once("://")?.1.split([':', '/']).next()
}

/// The answer of a member's REST API, and the truth about the member when it answered.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub truth: crate::world::Truth,
}

/// A request to `target`'s REST API from node `me`: the answer, or `None` (refused, lost, or
/// no answer within `limit`).
pub(crate) async fn request(
    world: &Shared,
    me: Option<usize>,
    target: usize,
    request: axum::http::Request<axum::body::Body>,
    limit: Duration,
) -> Option<Answer> {
    let deadline = Instant::now() + limit;
    let (there, back, router) = {
        let mut w = lock(world);
        let delay = |w: &mut crate::world::World| match me {
            Some(n) => w.net_delay(n),
            None => Some(w.rng.range(1, 5)),
        };
        let there = delay(&mut w).and_then(|d| w.net_delay(target).map(|e| d.max(e)));
        let back = delay(&mut w);
        let router = w.nodes[target].agent.as_ref().map(|a| a.router.clone());
        (there, back, router)
    };
    let Some(there) = there else {
        tokio::time::sleep_until(deadline).await;
        return None;
    };
    tokio::time::sleep(Duration::from_millis(there)).await;
    // Connection refused: no process listens.
    let router = router?;
    let answer = async {
        thawed(world, target).await;
        let before = lock(world).truth(target);
        let response = router.oneshot(request).await.ok()?;
        // The answer reflects the member somewhere between the two looks: it counts as a
        // running replica with a given WAL only if it was one throughout.
        let after = lock(world).truth(target);
        let truth = crate::world::Truth {
            running_replica: before.running_replica && after.running_replica,
            wal: before.wal.min(after.wal),
            ..after
        };
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .ok()?;
        Some(Answer {
            status,
            body: body.to_vec(),
            truth,
        })
    };
    let answer = tokio::time::timeout_at(deadline, answer).await.ok()??;
    let Some(back) = back else {
        tokio::time::sleep_until(deadline).await;
        return None;
    };
    tokio::time::sleep(Duration::from_millis(back)).await;
    Some(answer)
}

/// `GET /patroni` of the member `api_url` names, from member `me`.
async fn get_patroni(
    world: &Shared,
    me: usize,
    api_url: &str,
    timeout: Duration,
) -> Option<(usize, Value, Answer)> {
    thawed(world, me).await;
    let target = {
        let w = lock(world);
        host_of(api_url).and_then(|h| w.index_of(h))?
    };
    let get = axum::http::Request::get("/patroni")
        .body(axum::body::Body::empty())
        .ok()?;
    let answer = request(world, Some(me), target, get, timeout).await?;
    thawed(world, me).await;
    if answer.status != 200 {
        return None;
    }
    let body: Value = serde_json::from_slice(&answer.body).ok()?;
    Some((target, body, answer))
}

#[async_trait]
impl Peers for SimPeers {
    async fn status(&self, api_url: &str) -> Option<Value> {
        let (target, mut body, answer) =
            get_patroni(&self.world, self.me, api_url, PROBE_TIMEOUT).await?;
        let mut w = lock(&self.world);
        w.nodes[self.me].probe_truth[target] = Some(answer.truth);
        if w.opts.planted == Some(PlantedBug::ProbesHideWal) {
            for key in ["location", "received_location", "replayed_location"] {
                if body["xlog"].get(key).is_some() {
                    body["xlog"][key] = 0.into();
                }
            }
        }
        Some(body)
    }

    async fn failsafe_ping(&self, api_url: &str, body: &Value, timeout: Duration) -> bool {
        thawed(&self.world, self.me).await;
        let Some(target) = ({
            let w = lock(&self.world);
            host_of(api_url).and_then(|h| w.index_of(h))
        }) else {
            return false;
        };
        let body = body.to_string();
        let Ok(post) = axum::http::Request::post("/failsafe")
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(axum::body::Body::from(body))
        else {
            return false;
        };
        let answer = request(&self.world, Some(self.me), target, post, timeout).await;
        thawed(&self.world, self.me).await;
        answer.is_some_and(|a| a.status == 200 && a.body == b"Accepted")
    }

    fn reconfigure(&self, _cfg: &pgherd_config::Config) {}
}

/// The REST API's candidate probes (switchover, failover) from member `me`.
pub(crate) struct ApiPeers {
    pub world: Shared,
    pub me: usize,
}

/// The REST API's candidate probe timeout (crates/api/src/settings.rs).
const API_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl PeerStatus for ApiPeers {
    fn status<'a>(
        &'a self,
        api_url: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<Value>> + Send + 'a>> {
        Box::pin(async move {
            get_patroni(&self.world, self.me, api_url, API_PROBE_TIMEOUT)
                .await
                .map(|(_, body, _)| body)
        })
    }
}
