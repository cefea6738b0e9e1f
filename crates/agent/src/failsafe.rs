//! Failsafe mode (docs/compat.md#failsafe-mode), the agent's part.
//!
//! - The leader writes the failsafe topology (every member it sees, with its REST URL, and
//!   itself) after each successful lock update when it changed.
//! - A leader that cannot read the DCS asks every other member of that topology to
//!   acknowledge it (`POST /failsafe`, 2 s each, in parallel). If all say `Accepted`, the
//!   lease counts as confirmed at the time the pings were sent: the fence moves on, the
//!   watchdog is kept alive, PostgreSQL stays primary. One member that does not answer, and
//!   the leader demotes as without failsafe mode.
//! - The DCS read is not allowed to run into the fence: while we lead with failsafe mode on,
//!   it is given up at half the fence's window after the last confirmation, so that the pings
//!   still land in time.
//! - A member that was pinged treats the pinging member as leader for one ttl when the DCS
//!   shows none, so it neither races for the lock nor stops following.

use crate::agent::Agent;
use crate::world::Peers;
use pgherd_api::{FailsafeLeader, FailsafePings};
use pgherd_dcs::{Cluster, FailsafeTopology, Leader, Member, MemberData, Role};
use pgherd_ha::Millis;
use serde_json::json;
use std::time::Duration;
use tracing::{info, warn};

/// Patroni's timeout for one `POST /failsafe`.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Failsafe {
    /// Who pinged us last (recorded by the REST API).
    pub pings: FailsafePings,
    /// When (lease clock) every member last acknowledged us as the leader.
    active_at: Option<Millis>,
    /// The topology we wrote last, so it is rewritten only on change.
    written: Option<FailsafeTopology>,
}

impl Failsafe {
    pub fn new(pings: FailsafePings) -> Failsafe {
        Failsafe {
            pings,
            active_at: None,
            written: None,
        }
    }

    /// Leader: acknowledged within ttl. Other members: pinged within ttl (Patroni's
    /// `failsafe_mode_is_active`; members may disagree for up to one ttl).
    pub fn is_active(&self, now: Millis, ttl: Millis) -> bool {
        self.active_at.is_some_and(|at| now < at + ttl)
            || self
                .pings
                .leader_within(Duration::from_millis(ttl))
                .is_some()
    }

    /// The DCS answered: failsafe is not what keeps us leader.
    pub fn dcs_answered(&mut self) {
        self.active_at = None;
    }
}

/// The topology the leader publishes: every member with a REST URL, and itself.
pub fn topology(a: &Agent, cluster: &Cluster) -> FailsafeTopology {
    let mut members: std::collections::BTreeMap<String, String> = cluster
        .members
        .values()
        .filter(|m| !m.data.api_url.is_empty())
        .map(|m| (m.name.clone(), m.data.api_url.clone()))
        .collect();
    members
        .entry(a.me.name.clone())
        .or_insert_with(|| a.me.api_url.clone());
    FailsafeTopology(members)
}

/// After a successful lock update: write the topology if failsafe mode is on and it changed.
pub async fn publish_topology(a: &mut Agent, cluster: Option<&Cluster>) {
    if !a.dynamic.config.failsafe_mode {
        a.failsafe.written = None;
        return;
    }
    let Some(cluster) = cluster else { return };
    let wanted = topology(a, cluster);
    let current = a.failsafe.written.as_ref().or(cluster.failsafe.as_ref());
    if current == Some(&wanted) {
        return;
    }
    match a.world.dcs.write_failsafe(&wanted).await {
        Ok(()) => a.failsafe.written = Some(wanted),
        Err(e) => warn!("could not write the failsafe topology: {e}"),
    }
}

/// While we lead with failsafe mode on and are in the topology: the latest moment to give up
/// on the DCS read and ping the members instead: half the fence's window after the last
/// confirmation, or, past that already (a slow cycle, a paused process), half of what is
/// left, so that the pings end before the fence fires. `None` once the fence is due: the
/// lease is lost either way, and the read takes as long as it takes.
pub fn read_deadline(a: &Agent) -> Option<tokio::time::Instant> {
    if !a.dynamic.config.failsafe_mode {
        return None;
    }
    let confirmed = a.lease.confirmed_at()?;
    let in_topology = a
        .view
        .cluster
        .as_ref()
        .and_then(|c| c.failsafe.as_ref())
        .is_some_and(|t| t.contains(&a.me.name));
    let paused = a.view.cluster.as_ref().is_some_and(|c| c.is_paused());
    if !in_topology || paused {
        return None;
    }
    let s = &a.dynamic.settings;
    let fence_at = confirmed + s.ttl.saturating_sub(s.fencing_margin);
    let now = a.lease.now();
    if now >= fence_at {
        return None;
    }
    let half_window = confirmed + (fence_at - confirmed) / 2;
    Some(a.lease.instant(half_window.max(now + (fence_at - now) / 2)))
}

/// The DCS could not be read and we lead a running primary: asks every other member of the
/// last topology seen to acknowledge us. `true` (lease confirmed) if all did.
pub async fn confirm_by_members(a: &mut Agent) -> bool {
    let Some(topology) = a.view.cluster.as_ref().and_then(|c| c.failsafe.clone()) else {
        return false;
    };
    if !topology.contains(&a.me.name) {
        warn!("failsafe: I am not in the failsafe topology");
        return false;
    }
    let body = json!({
        "name": a.me.name,
        "conn_url": a.me.conn_url,
        "api_url": a.me.api_url,
    });
    let sent = a.lease.now();
    let others: Vec<(&String, &String)> = topology
        .0
        .iter()
        .filter(|(name, _)| **name != a.me.name)
        .collect();
    let peers: &dyn Peers = a.world.peers.as_ref();
    let answers = futures::future::join_all(
        others
            .iter()
            .map(|(_, url)| peers.failsafe_ping(url, &body, PING_TIMEOUT)),
    )
    .await;
    let refused: Vec<&str> = others
        .iter()
        .zip(&answers)
        .filter(|(_, ok)| !**ok)
        .map(|((name, _), _)| name.as_str())
        .collect();
    if !refused.is_empty() {
        warn!(
            "failsafe: DCS unreachable and not acknowledged by {}",
            refused.join(", ")
        );
        a.failsafe.active_at = None;
        return false;
    }
    if a.failsafe.active_at.is_none() {
        info!(
            "failsafe: DCS unreachable, all {} other members acknowledged me as the leader",
            others.len()
        );
    }
    a.lease.confirm(sent, &a.dynamic.settings);
    a.failsafe.active_at = Some(sent);
    true
}

/// A member other than the leader: when the DCS shows no leader but one pinged us within
/// ttl, that member is the leader (with its member entry, if its key expired meanwhile).
pub fn with_pinging_leader(a: &Agent, mut cluster: Cluster) -> Cluster {
    if !a.dynamic.config.failsafe_mode || cluster.leader.is_some() {
        return cluster;
    }
    let ttl = Duration::from_millis(a.dynamic.settings.ttl);
    let Some(FailsafeLeader {
        name,
        conn_url,
        api_url,
    }) = a.failsafe.pings.leader_within(ttl)
    else {
        return cluster;
    };
    if name == a.me.name {
        return cluster;
    }
    cluster.leader = Some(Leader {
        name: name.clone(),
        index: 0,
        session: 0,
    });
    cluster
        .members
        .entry(name.clone())
        .or_insert_with(|| Member {
            name,
            data: MemberData {
                conn_url,
                api_url,
                state: "running".into(),
                role: Some(Role::Primary),
                ..MemberData::default()
            },
            index: 0,
            session: 0,
        });
    cluster
}
