//! Routing decisions (pure): for each listener and member, whether new sessions may go there
//! and why, from the DCS view, the health verdicts and the operator's admin state. A server is
//! routed only when both sources agree: the DCS leader key and the node's own answer.

use crate::backend::Backend;
use crate::config::{Balance, ListenerConfig, ListenerRole};
use crate::health::{MemberHealth, Verdict};
use crate::topology::{MemberView, Topology};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// A member's routing state on one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteState {
    /// Takes new sessions.
    Up,
    /// The DCS names it for this role but its own health check has not confirmed yet;
    /// new sessions wait for it.
    Hold,
    /// A healthy replica over the listener's `max_lag`: out of rotation, sessions kept.
    Lag,
    /// Failing its checks or in the wrong role: out of rotation, sessions closed.
    Down,
    /// Operator drain: no new sessions, existing ones finish.
    Drain,
    /// Operator maintenance: no new sessions, existing ones closed.
    Maint,
    /// Not a candidate for this listener's role (e.g. a replica on the primary listener).
    Standby,
}

impl RouteState {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteState::Up => "up",
            RouteState::Hold => "hold",
            RouteState::Lag => "lag",
            RouteState::Down => "down",
            RouteState::Drain => "drain",
            RouteState::Maint => "maint",
            RouteState::Standby => "standby",
        }
    }

    /// Whether sessions already open on a server in this state must be closed.
    pub fn closes_sessions(self, role: ListenerRole) -> bool {
        match role {
            // Writes must stop the moment a server is not the confirmed primary.
            ListenerRole::Primary => !matches!(self, RouteState::Up | RouteState::Drain),
            _ => matches!(self, RouteState::Down | RouteState::Maint),
        }
    }
}

/// The operator's per-server override, set through the stats API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    #[default]
    Ready,
    Drain,
    Maint,
}

impl AdminState {
    pub fn parse(s: &str) -> Option<AdminState> {
        Some(match s {
            "ready" => AdminState::Ready,
            "drain" => AdminState::Drain,
            "maint" => AdminState::Maint,
            _ => return None,
        })
    }
}

/// Whether a listener can place a new session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Readiness {
    /// At least one server is up.
    Open,
    /// No server is up: new sessions wait up to `hold_timeout` for one.
    Holding,
    /// No server is up and `hold_timeout` is 0: new sessions are closed at once.
    FailFast,
}

/// One member's routing decision on one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub member: String,
    pub state: RouteState,
    pub reason: String,
}

/// Decides every member's state on listener `l`.
pub fn decide(
    l: &ListenerConfig,
    topo: &Topology,
    health: &BTreeMap<String, MemberHealth>,
    admin: &BTreeMap<String, AdminState>,
) -> Vec<Decision> {
    let none = MemberHealth::default();
    let mut out: Vec<Decision> = topo
        .members
        .values()
        .map(|m| {
            let h = health.get(&m.name).unwrap_or(&none);
            let (state, reason) = match l.role {
                ListenerRole::Primary => primary_state(m, topo, h),
                _ => replica_state(m, l, topo, h),
            };
            Decision {
                member: m.name.clone(),
                state,
                reason,
            }
        })
        .collect();
    let fallback = l.role == ListenerRole::ReadOnly || l.fallback_primary;
    if fallback && l.role != ListenerRole::Primary && !out.iter().any(|d| d.state == RouteState::Up)
    {
        for d in out.iter_mut() {
            let m = &topo.members[&d.member];
            let h = health.get(&m.name).unwrap_or(&none);
            if topo.leader.as_deref() == Some(m.name.as_str()) {
                let (state, reason) = primary_state(m, topo, h);
                d.state = state;
                d.reason = format!("fallback to the primary, no replica qualifies: {reason}");
            }
        }
    }
    for d in out.iter_mut() {
        match admin.get(&d.member).copied().unwrap_or_default() {
            AdminState::Ready => {}
            AdminState::Maint => {
                d.state = RouteState::Maint;
                d.reason = "set to maint by an operator".into();
            }
            AdminState::Drain => {
                if matches!(d.state, RouteState::Up | RouteState::Hold | RouteState::Lag) {
                    d.state = RouteState::Drain;
                    d.reason = "set to drain by an operator".into();
                }
            }
        }
    }
    out
}

fn primary_state(m: &MemberView, topo: &Topology, h: &MemberHealth) -> (RouteState, String) {
    let is_leader = topo.leader.as_deref() == Some(m.name.as_str());
    if is_leader {
        if m.pg_addr.is_none() {
            return (
                RouteState::Down,
                "DCS leader, but its conn_url has no usable host:port".into(),
            );
        }
        return match h.primary {
            Verdict::Up { .. } => (RouteState::Up, "DCS leader and GET /primary = 200".into()),
            _ => (
                RouteState::Hold,
                format!(
                    "DCS leader, waiting for GET /primary to confirm ({})",
                    last(h)
                ),
            ),
        };
    }
    if h.primary.is_up() {
        let leader = topo.leader.as_deref().unwrap_or("nobody");
        return (
            RouteState::Down,
            format!("answers GET /primary = 200 but the DCS leader is {leader}"),
        );
    }
    match topo.leader.as_deref() {
        Some(leader) => (RouteState::Standby, format!("not the leader ({leader} is)")),
        None => (RouteState::Standby, "no leader in the DCS".into()),
    }
}

fn replica_state(
    m: &MemberView,
    l: &ListenerConfig,
    topo: &Topology,
    h: &MemberHealth,
) -> (RouteState, String) {
    if topo.leader.as_deref() == Some(m.name.as_str()) {
        return (RouteState::Standby, "the primary".into());
    }
    if m.pg_addr.is_none() {
        return (RouteState::Down, "conn_url has no usable host:port".into());
    }
    let role = m.role.as_deref().unwrap_or("unknown");
    if role != "replica" {
        return (RouteState::Down, format!("DCS role is {role}, not replica"));
    }
    if m.state != "running" {
        return (RouteState::Down, format!("DCS state is {:?}", m.state));
    }
    if m.noloadbalance {
        return (RouteState::Standby, "tagged noloadbalance".into());
    }
    if m.weight == 0 {
        return (RouteState::Standby, "tagged weight 0".into());
    }
    match l.role {
        ListenerRole::Sync if !m.sync_standby => {
            return (RouteState::Standby, "not a synchronous standby".into());
        }
        ListenerRole::Async if m.sync_standby => {
            return (RouteState::Standby, "a synchronous standby".into());
        }
        _ => {}
    }
    if !h.replica.is_up() {
        return (
            RouteState::Down,
            format!("GET /replica failing ({})", last(h)),
        );
    }
    if let Some(max) = l.max_lag {
        if !h.replica_within(Some(max)).is_up() {
            let lag = m.lag.map_or("unknown".to_string(), |b| format!("{b} B"));
            return (
                RouteState::Lag,
                format!("GET /replica?lag={max} failing: over max_lag (DCS lag {lag})"),
            );
        }
    }
    (RouteState::Up, "replica, GET /replica = 200".into())
}

fn last(h: &MemberHealth) -> String {
    if h.last_result.is_empty() {
        "not checked yet".into()
    } else {
        format!("last: {}", h.last_result)
    }
}

/// Picks among `(weight, active sessions)` candidates; `counter` is the listener's
/// round-robin position (incremented by the caller per pick).
pub fn pick(balance: Balance, candidates: &[(u32, usize)], counter: u64) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    match balance {
        Balance::First => Some(0),
        Balance::LeastConn => (0..candidates.len()).min_by(|&a, &b| {
            let (wa, na) = candidates[a];
            let (wb, nb) = candidates[b];
            // na/wa < nb/wb without division; ties keep name order.
            (na as u64 * wb.max(1) as u64).cmp(&(nb as u64 * wa.max(1) as u64))
        }),
        Balance::RoundRobin => {
            let total: u64 = candidates.iter().map(|(w, _)| (*w).max(1) as u64).sum();
            let mut slot = counter % total;
            for (i, (w, _)) in candidates.iter().enumerate() {
                let w = (*w).max(1) as u64;
                if slot < w {
                    return Some(i);
                }
                slot -= w;
            }
            Some(candidates.len() - 1)
        }
    }
}

/// One member's row on one listener in the published table.
#[derive(Debug, Clone)]
pub struct Entry {
    pub member: String,
    /// `host:port` to connect to.
    pub addr: Option<String>,
    pub weight: u32,
    pub state: RouteState,
    pub reason: String,
    /// When `state` last changed.
    pub since: Instant,
    pub backend: Arc<Backend>,
}

#[derive(Debug, Clone)]
pub struct ListenerTable {
    pub readiness: Readiness,
    /// Every known member, in name order.
    pub entries: Vec<Entry>,
    pub balance: Balance,
    pub role: ListenerRole,
    /// Round-robin position, shared across table versions.
    pub counter: Arc<AtomicU64>,
}

impl ListenerTable {
    /// Chooses a server for a new session.
    pub fn pick(&self) -> Option<&Entry> {
        let up: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.state == RouteState::Up && e.addr.is_some())
            .collect();
        let candidates: Vec<(u32, usize)> =
            up.iter().map(|e| (e.weight, e.backend.active())).collect();
        let n = match self.balance {
            Balance::RoundRobin => self.counter.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        pick(self.balance, &candidates, n).map(|i| up[i])
    }

    /// Whether `member` still takes new sessions here.
    pub fn routes(&self, member: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.member == member && e.state == RouteState::Up)
    }
}

pub fn readiness(decisions: &[Decision], hold: std::time::Duration) -> Readiness {
    if decisions.iter().any(|d| d.state == RouteState::Up) {
        Readiness::Open
    } else if hold.is_zero() {
        Readiness::FailFast
    } else {
        Readiness::Holding
    }
}

/// Everything the data path and the stats page need, published as one immutable snapshot.
#[derive(Debug, Clone)]
pub struct Table {
    pub generation: u64,
    pub topology: Arc<Topology>,
    pub health: BTreeMap<String, MemberHealth>,
    pub admin: BTreeMap<String, AdminState>,
    pub listeners: Vec<ListenerTable>,
    /// Whether the DCS has been read at least once.
    pub discovered: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenerConfig;
    use std::time::Duration;

    fn listener(role: ListenerRole) -> ListenerConfig {
        ListenerConfig {
            name: "l".into(),
            bind: "127.0.0.1:1".parse().unwrap(),
            role,
            balance: Balance::RoundRobin,
            max_lag: None,
            fallback_primary: false,
            maxconn: None,
            maxqueue: 10,
            queue_timeout: Duration::from_secs(1),
            hold_timeout: Duration::from_secs(30),
            accept_proxy: false,
            pool: None,
        }
    }

    fn member(name: &str, role: &str) -> MemberView {
        MemberView {
            name: name.into(),
            pg_addr: Some("127.0.0.1:5432".into()),
            api_base: Some("http://127.0.0.1:8008".into()),
            role: Some(role.into()),
            state: "running".into(),
            noloadbalance: false,
            weight: 1,
            lag: Some(0),
            sync_standby: false,
        }
    }

    fn topo(leader: Option<&str>) -> Topology {
        let mut t = Topology {
            leader: leader.map(str::to_string),
            ..Topology::default()
        };
        for (n, r) in [
            ("node1", "master"),
            ("node2", "replica"),
            ("node3", "replica"),
        ] {
            t.members.insert(n.into(), member(n, r));
        }
        t
    }

    fn up() -> Verdict {
        Verdict::Up { fails: 0 }
    }
    fn down() -> Verdict {
        Verdict::Down { oks: 0 }
    }

    fn healthy() -> BTreeMap<String, MemberHealth> {
        let mut h = BTreeMap::new();
        h.insert(
            "node1".into(),
            MemberHealth {
                primary: up(),
                replica: down(),
                ..Default::default()
            },
        );
        for n in ["node2", "node3"] {
            let mut mh = MemberHealth {
                primary: down(),
                replica: up(),
                ..Default::default()
            };
            mh.replica_lag.insert(1024, up());
            h.insert(n.into(), mh);
        }
        h
    }

    fn states(d: &[Decision]) -> Vec<(&str, RouteState)> {
        d.iter().map(|d| (d.member.as_str(), d.state)).collect()
    }

    use RouteState::*;

    #[test]
    fn primary_needs_dcs_and_health_to_agree() {
        let l = listener(ListenerRole::Primary);
        let none = BTreeMap::new();
        let d = decide(&l, &topo(Some("node1")), &healthy(), &none);
        assert_eq!(
            states(&d),
            [("node1", Up), ("node2", Standby), ("node3", Standby)]
        );
        // Leader key moved to node2, which has not confirmed: hold; node1 still says primary:
        // down (the DCS does not agree).
        let d = decide(&l, &topo(Some("node2")), &healthy(), &none);
        assert_eq!(
            states(&d),
            [("node1", Down), ("node2", Hold), ("node3", Standby)]
        );
        assert_eq!(readiness(&d, Duration::from_secs(30)), Readiness::Holding);
        assert_eq!(readiness(&d, Duration::ZERO), Readiness::FailFast);
        // No leader at all.
        let mut h = healthy();
        h.get_mut("node1").unwrap().primary = down();
        let d = decide(&l, &topo(None), &h, &none);
        assert!(d.iter().all(|d| d.state == Standby));
        assert!(Hold.closes_sessions(ListenerRole::Primary));
        assert!(Down.closes_sessions(ListenerRole::Primary));
        assert!(!Drain.closes_sessions(ListenerRole::Primary));
        assert!(!Lag.closes_sessions(ListenerRole::Replica));
    }

    #[test]
    fn replicas_lag_fallback_and_admin() {
        let mut l = listener(ListenerRole::Replica);
        l.max_lag = Some(1024);
        let mut admin = BTreeMap::new();
        let t = topo(Some("node1"));
        let mut h = healthy();
        assert_eq!(
            states(&decide(&l, &t, &h, &admin)),
            [("node1", Standby), ("node2", Up), ("node3", Up)]
        );
        h.get_mut("node2").unwrap().replica_lag.insert(1024, down());
        h.get_mut("node3").unwrap().replica = down();
        assert_eq!(
            states(&decide(&l, &t, &h, &admin)),
            [("node1", Standby), ("node2", Lag), ("node3", Down)]
        );
        l.fallback_primary = true;
        let d = decide(&l, &t, &h, &admin);
        assert_eq!(states(&d), [("node1", Up), ("node2", Lag), ("node3", Down)]);
        assert!(d[0].reason.starts_with("fallback"));
        admin.insert("node1".to_string(), AdminState::Drain);
        admin.insert("node3".to_string(), AdminState::Maint);
        assert_eq!(
            states(&decide(&l, &t, &h, &admin)),
            [("node1", Drain), ("node2", Lag), ("node3", Maint)]
        );
    }

    #[test]
    fn tags_and_sync_roles() {
        let mut t = topo(Some("node1"));
        t.members.get_mut("node2").unwrap().noloadbalance = true;
        t.members.get_mut("node3").unwrap().sync_standby = true;
        let h = healthy();
        let none = BTreeMap::new();
        let d = decide(&listener(ListenerRole::Replica), &t, &h, &none);
        assert_eq!(
            states(&d),
            [("node1", Standby), ("node2", Standby), ("node3", Up)]
        );
        t.members.get_mut("node2").unwrap().noloadbalance = false;
        let d = decide(&listener(ListenerRole::Sync), &t, &h, &none);
        assert_eq!(
            states(&d),
            [("node1", Standby), ("node2", Standby), ("node3", Up)]
        );
        let d = decide(&listener(ListenerRole::Async), &t, &h, &none);
        assert_eq!(
            states(&d),
            [("node1", Standby), ("node2", Up), ("node3", Standby)]
        );
        let mut h2 = h.clone();
        for n in ["node2", "node3"] {
            h2.get_mut(n).unwrap().replica = down();
        }
        let d = decide(&listener(ListenerRole::ReadOnly), &t, &h2, &none);
        assert_eq!(d[0].state, Up, "read-only falls back to the primary");
    }

    #[test]
    fn balancing() {
        // Weighted round robin: weights 1 and 3 -> 1 of 4 picks on the first.
        let picks: Vec<usize> = (0..8)
            .map(|n| pick(Balance::RoundRobin, &[(1, 0), (3, 0)], n).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 1, 1, 0, 1, 1, 1]);
        assert_eq!(
            pick(Balance::LeastConn, &[(1, 5), (1, 2), (1, 2)], 0),
            Some(1)
        );
        assert_eq!(pick(Balance::LeastConn, &[(1, 2), (4, 4)], 0), Some(1));
        assert_eq!(pick(Balance::First, &[(1, 9), (1, 0)], 7), Some(0));
        assert_eq!(pick(Balance::RoundRobin, &[], 0), None);
    }
}
