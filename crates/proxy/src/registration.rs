//! The proxy's registration in the DCS, and the proxy side of fencing.
//!
//! Key `<base>/proxies/<proxy name>` on the proxy's own lease (`registration.ttl`, rewritten
//! every third of it), value: a [`ProxyRegistration`] (its JSON is documented there).
//!
//! `routing_leader` is the member the primary listener(s) send writes to. It becomes `null`
//! only once the proxy has stopped routing to that member (leader key gone or moved, or its
//! `GET /primary` no longer 200) **and** every session it carried on a primary listener is
//! closed. While any such session is open the old member stays named, even if a new primary
//! is already routed. The key is rewritten at once on every change. Agents wait (bounded) until
//! no live proxy key names the old leader before promoting another member.

use crate::config::ListenerRole;
use crate::routing::{RouteState, Table};
use pgherd_dcs::{proxy_key, Dcs, ProxyRegistration};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{info, warn};

const RETRY: Duration = Duration::from_millis(250);

/// The member whose writes this proxy is responsible for right now (see module docs).
pub fn routing_leader(table: &Table) -> Option<String> {
    let mut routed = None;
    for lt in table
        .listeners
        .iter()
        // An auto listener's own rotation is the primary's (its `role` is `primary`).
        .filter(|l| l.role == ListenerRole::Primary)
    {
        for e in &lt.entries {
            if e.state != RouteState::Up && e.backend.active() > 0 {
                return Some(e.member.clone());
            }
            if e.state == RouteState::Up {
                routed = Some(e.member.clone());
            }
        }
    }
    routed
}

/// The registration as written now (`updated_at` from the system clock).
pub fn value(name: &str, leader: Option<&str>, api: Option<&str>) -> String {
    let updated_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    ProxyRegistration {
        name: name.to_string(),
        routing_leader: leader.map(str::to_string),
        updated_at,
        api: api.map(str::to_string),
    }
    .to_json()
}

/// Keeps the key written until `stop` turns true, then revokes the lease.
pub async fn run(
    dcs: Arc<dyn Dcs>,
    name: String,
    api: Option<String>,
    ttl: Duration,
    mut table: watch::Receiver<Arc<Table>>,
    closed: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let key = proxy_key(&name);
    let refresh = ttl / 3;
    let mut written: Option<Option<String>> = None;
    let mut next = Instant::now();
    loop {
        let notified = closed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let leader = routing_leader(&table.borrow_and_update());
        if written.as_ref() != Some(&leader) || Instant::now() >= next {
            match dcs
                .put_ephemeral(&key, &value(&name, leader.as_deref(), api.as_deref()))
                .await
            {
                Ok(()) => {
                    if written.as_ref() != Some(&leader) {
                        info!(proxy = %name, routing_leader = leader.as_deref().unwrap_or("null"), "registration updated");
                    }
                    written = Some(leader);
                    next = Instant::now() + refresh;
                }
                Err(e) => {
                    warn!(proxy = %name, "cannot write {key} to the DCS: {e}");
                    next = Instant::now() + RETRY;
                    written = None;
                }
            }
        }
        tokio::select! {
            _ = table.changed() => {}
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            if let Err(e) = dcs.release_lease().await {
                warn!(proxy = %name, "could not revoke the registration lease: {e}");
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::config::Balance;
    use crate::routing::{Entry, ListenerTable, Readiness};
    use std::sync::atomic::AtomicU64;

    fn table(entries: Vec<(&str, RouteState, &Arc<Backend>)>) -> Table {
        let entries = entries
            .into_iter()
            .map(|(m, state, b)| Entry {
                member: m.into(),
                addr: Some("127.0.0.1:1".into()),
                weight: 1,
                state,
                reason: String::new(),
                since: Instant::now(),
                backend: b.clone(),
            })
            .collect();
        Table {
            generation: 1,
            topology: Default::default(),
            health: Default::default(),
            admin: Default::default(),
            listeners: vec![ListenerTable {
                readiness: Readiness::Open,
                entries,
                balance: Balance::First,
                role: ListenerRole::Primary,
                counter: Arc::new(AtomicU64::new(0)),
                replicas: None,
            }],
            discovered: true,
        }
    }

    #[test]
    fn old_leader_stays_named_until_its_sessions_are_closed() {
        let closed = Arc::new(Notify::new());
        let (n1, n2) = (
            Backend::new("node1", 0, closed.clone()),
            Backend::new("node2", 0, closed),
        );
        let t = table(vec![
            ("node1", RouteState::Up, &n1),
            ("node2", RouteState::Standby, &n2),
        ]);
        assert_eq!(routing_leader(&t).as_deref(), Some("node1"));
        // node1 leaves the rotation but still carries a session: still named.
        let session = n1.enter();
        let t = table(vec![
            ("node1", RouteState::Down, &n1),
            ("node2", RouteState::Hold, &n2),
        ]);
        assert_eq!(routing_leader(&t).as_deref(), Some("node1"));
        let t2 = table(vec![
            ("node1", RouteState::Down, &n1),
            ("node2", RouteState::Up, &n2),
        ]);
        assert_eq!(
            routing_leader(&t2).as_deref(),
            Some("node1"),
            "even with node2 routed"
        );
        drop(session);
        assert_eq!(routing_leader(&t), None);
        assert_eq!(routing_leader(&t2).as_deref(), Some("node2"));
        let v: serde_json::Value =
            serde_json::from_str(&value("px", None, Some("http://x"))).unwrap();
        assert!(v["routing_leader"].is_null());
        assert_eq!(v["name"], "px");
        assert!(v["updated_at"].as_u64().unwrap() > 0);
    }
}
