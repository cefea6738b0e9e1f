//! The modelled fixes of known defects (see `Workarounds`): each rewrites what the engine
//! (or the agent) would see or decide exactly as the proposed patch would, and only then.

use crate::config::Workarounds;
use pgherd_dcs::Cluster;
use pgherd_ha::{Action, Decision, PeerProbe, Settings, StartRole};

/// The peers the patched election compares (`sync_gate_without_standbys`): in synchronous
/// mode with a `sync` key naming a leader, only its leader and standbys, plus any peer that
/// still claims to be primary.
pub(crate) fn peers(
    w: &Workarounds,
    s: &Settings,
    cluster: Option<&Cluster>,
    peers: &[PeerProbe],
) -> Vec<PeerProbe> {
    let sync = cluster
        .and_then(|c| c.sync_state())
        .filter(|st| w.sync_gate_without_standbys && s.synchronous_mode && st.leader.is_some());
    let Some(sync) = sync else {
        return peers.to_vec();
    };
    peers
        .iter()
        .filter(|p| {
            sync.leader.as_deref() == Some(p.name.as_str())
                || sync.is_sync_standby(&p.name)
                || p.reply.as_ref().is_some_and(|r| r.is_primary)
        })
        .cloned()
        .collect()
}

/// The decision as the patched engine would have made it.
pub(crate) fn decision(
    w: &Workarounds,
    s: &Settings,
    cluster: Option<&Cluster>,
    mut d: Decision,
) -> Decision {
    if w.sync_gate_without_standbys {
        if let Some(vetoed) = patched_sync_gate(s, cluster, &d) {
            d = vetoed;
        }
    }
    if w.leader_restarts_as_standby
        && d.reason == "starting primary after failure: I hold the leader lock"
    {
        for action in &mut d.actions {
            if *action == Action::StartPostgres(StartRole::Primary) {
                *action = Action::StartPostgres(StartRole::Replica { upstream: None });
            }
        }
        d.reason =
            "starting as readonly because I had the session lock (sim: patched restart as standby)"
                .into();
    }
    if w.former_primary_races {
        if let Some(patched) = patched_former_primary(&d) {
            d = patched;
        }
    }
    d
}

/// The proposed election fix (see `Workarounds::sync_gate_without_standbys`): a race for the
/// lock in synchronous mode is only for the standbys listed in `sync`, or for its leader.
fn patched_sync_gate(s: &Settings, cluster: Option<&Cluster>, d: &Decision) -> Option<Decision> {
    if !s.synchronous_mode
        || !d
            .reason
            .starts_with("promoted self to leader by acquiring session lock: I am the healthiest")
    {
        return None;
    }
    let sync = cluster?.sync_state()?;
    let leader = sync.leader.as_deref()?;
    if leader == s.name || sync.is_sync_standby(&s.name) {
        return None;
    }
    Some(Decision::idle(format!(
        "no leader, not racing: synchronous mode: only {leader} may take over (sim: patched sync gate)"
    )))
}

/// The proposed fix of `Workarounds::former_primary_races`.
fn patched_former_primary(d: &Decision) -> Option<Decision> {
    if !d
        .reason
        .starts_with("no leader: I was the primary at shutdown")
    {
        return None;
    }
    Some(Decision::act(
        vec![Action::StartPostgres(StartRole::Replica { upstream: None })],
        "no leader: starting as a secondary to join the election (sim: patched former-primary shortcut)",
    ))
}
