//! A manual switchover or failover request (the `failover` key) while the leader key is free:
//! who may race for the lock, who waits, and when the former leader takes its place back.
//!
//! The rules are Patroni's (`manual_failover_process_no_leader`), with two additions: the
//! former leader named in the request never races while another member can take over, and
//! when none can (or none did within one ttl) it resumes as the leader on its own timeline,
//! without a promotion (see `Engine::postgres_not_running`); and a requested candidate that
//! received less WAL than another member that can take over (the former leader died before
//! its clean shutdown sent everything) leaves the lock to the most advanced member. Every member that promotes while
//! a request stands first clears it (compare-and-set on its index, see `promote_actions`), so
//! the former leader's own compare-and-set tells it that nobody promoted meanwhile.

use crate::observation::{Observation, PeerProbe, PeerReply};
use pgherd_dcs::{Cluster, Failover};

/// What a standing request means for this member while the leader key is free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Race {
    /// No request: the ordinary election.
    Open,
    /// I am the requested candidate: take the lock.
    MeCandidate,
    /// Another member is expected to take over: do not race.
    Wait(String),
    /// An election among the members except these (the former leader, an unhealthy
    /// candidate), without the replication-lag limit: the operator asked for a change.
    Among { excluded: Vec<String> },
    /// I was the leader and no other member can take over.
    FormerLeaderResumes(String),
}

/// The standing request (not paused), with its key index.
pub(crate) fn request(cluster: &Cluster) -> Option<(&Failover, i64)> {
    let key = cluster.failover.as_ref()?;
    key.value.is_present().then_some((&key.value, key.index))
}

/// The request names `me` as the leader it moves away from.
pub(crate) fn names_former_leader(cluster: &Cluster, me: &str) -> bool {
    request(cluster).is_some_and(|(f, _)| f.leader.as_deref() == Some(me))
}

/// The race under a standing request (not paused; the caller handles pause).
pub(crate) fn race(obs: &Observation<'_>, cluster: &Cluster) -> Race {
    let me = obs.settings.name.as_str();
    let Some((f, _)) = request(cluster) else {
        return Race::Open;
    };
    let mut excluded: Vec<String> = f.leader.iter().cloned().collect();
    if let Some(candidate) = f.member.as_deref() {
        if candidate == me {
            // In synchronous mode only the members the `sync` key allows may promote, also
            // on request: anything else may lack acknowledged commits (Patroni checks this for
            // a switchover only; a failover would promote me and lose them).
            if sync_forbids(obs, cluster, me) {
                return Race::Wait(
                    "manual failover to me: synchronous mode and the sync key does not list me; not promoting (acknowledged commits could be lost)".into(),
                );
            }
            // A member that received more WAL than me (the former leader died before its
            // clean shutdown sent everything) takes over instead: promoting me would lose
            // what it has, acknowledged writes included.
            let ahead = fit_members(obs, cluster, &excluded)
                .into_iter()
                .any(|other| wal_of(obs, &other).is_some_and(|w| w > obs.pg.wal_position));
            return if ahead {
                Race::Among { excluded }
            } else {
                Race::MeCandidate
            };
        }
        let probe = obs.peers.iter().find(|p| p.name == candidate);
        if probe.is_some_and(|p| unfit(obs, cluster, p).is_none()) {
            let behind_me = obs.pg.running
                && obs.pg.in_recovery
                && f.leader.as_deref() != Some(me)
                && wal_of(obs, candidate).is_some_and(|w| w < obs.pg.wal_position);
            if behind_me {
                // The candidate defers to the most advanced member (see above).
                return Race::Among { excluded };
            }
            return Race::Wait(format!(
                "manual failover in progress: waiting for {candidate} to take over"
            ));
        }
        // An unfit candidate: any other member may take over instead (Patroni).
        excluded.push(candidate.to_string());
    }
    if f.leader.as_deref() == Some(me) {
        return match fit_members(obs, cluster, &excluded).first() {
            Some(other) => Race::Wait(format!(
                "switchover from me in progress: waiting for {other} to take over"
            )),
            None => Race::FormerLeaderResumes(format!(
                "no other member can take over ({})",
                describe_unfit(obs, cluster)
            )),
        };
    }
    Race::Among { excluded }
}

/// The WAL position a member reported in its live reply.
fn wal_of(obs: &Observation<'_>, name: &str) -> Option<u64> {
    obs.peers
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.reply.as_ref())
        .and_then(|r| r.wal_position)
}

/// Members (not me, not `excluded`) whose live reply says they can take over.
pub(crate) fn fit_members(
    obs: &Observation<'_>,
    cluster: &Cluster,
    excluded: &[String],
) -> Vec<String> {
    obs.peers
        .iter()
        .filter(|p| p.name != obs.settings.name && !excluded.contains(&p.name))
        .filter(|p| unfit(obs, cluster, p).is_none())
        .map(|p| p.name.clone())
        .collect()
}

fn describe_unfit(obs: &Observation<'_>, cluster: &Cluster) -> String {
    let reasons: Vec<String> = obs
        .peers
        .iter()
        .filter(|p| p.name != obs.settings.name)
        .filter_map(|p| unfit(obs, cluster, p).map(|why| format!("{}: {why}", p.name)))
        .collect();
    if reasons.is_empty() {
        "no other member answered".to_string()
    } else {
        reasons.join("; ")
    }
}

/// Why this member cannot take over now (Patroni's `is_failover_possible`), or `None`.
pub(crate) fn unfit(obs: &Observation<'_>, cluster: &Cluster, probe: &PeerProbe) -> Option<String> {
    let s = obs.settings;
    let Some(reply) = &probe.reply else {
        return Some("not reachable".into());
    };
    let PeerReply {
        running,
        nofailover,
        wal_position,
        timeline,
        ..
    } = reply;
    if *nofailover {
        return Some("not allowed to promote".into());
    }
    if !running {
        return Some("not running".into());
    }
    let Some(wal) = wal_position else {
        return Some("does not report a WAL position".into());
    };
    let lag = cluster.optime().unwrap_or(0).saturating_sub(*wal);
    if lag > s.maximum_lag_on_failover {
        return Some(format!("lagging {lag} B"));
    }
    if s.check_timeline && timeline.is_none_or(|t| t < cluster.timeline()) {
        return Some("behind the cluster timeline".into());
    }
    if sync_forbids(obs, cluster, &probe.name) {
        return Some("not a synchronous standby".into());
    }
    None
}

/// Synchronous mode, and the `sync` key (with a leader) lists `name` neither as the leader nor
/// as a synchronous standby.
fn sync_forbids(obs: &Observation<'_>, cluster: &Cluster, name: &str) -> bool {
    obs.settings.synchronous_mode
        && cluster
            .sync_state()
            .filter(|st| st.leader.is_some())
            .is_some_and(|sync| !sync.is_sync_standby(name) && sync.leader.as_deref() != Some(name))
}
