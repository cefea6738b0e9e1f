//! One HA cycle: observation in, decision out (docs/compat.md#ha-cycle and the sections it
//! links to).

use crate::action::{Action, Decision, DemoteMode, Replication};
use crate::election::{self, Candidate, RaceRules};
use crate::manual::{self, Race};
use crate::observation::{DataDir, LocalPg, Millis, Observation, Settings};
use crate::schedule::{scheduled, Scheduled};
use pgherd_dcs::Cluster;

/// The engine's memory between cycles. Only facts the observation cannot give back
/// (when a primary restart began, the last pause flag seen) live here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Engine {
    /// When we began trying to bring our crashed primary back while holding the lock.
    primary_restart_since: Option<Millis>,
    /// Pause flag of the last cluster view (kept for cycles without a DCS view).
    paused: bool,
    /// When we saw maintenance mode end. A primary may have lost its key while paused
    /// (nothing is fenced then): for one ttl after the resume only a running primary races
    /// for a free key, so that such a primary takes its key back (or learns of another
    /// leader and demotes) before anyone promotes.
    resumed_at: Option<Millis>,
    /// Synchronous standby names PostgreSQL waits for, and our WAL position when first seen.
    sync_since: Option<(std::collections::BTreeSet<String>, u64)>,
    /// When this node first saw the leader key free (reset while there is a leader); bounds
    /// how long the election waits for members whose PostgreSQL is still starting.
    leaderless_since: Option<Millis>,
    /// A live leader was seen since the agent started (we held the lock, streamed from the
    /// leader, or saw the leader rewrite its member key): the cluster is not starting up as a
    /// whole. A leader key alone does not count: after a whole-cluster crash it outlives its
    /// holder by up to one ttl.
    seen_leader: bool,
    /// The leader's member key revision at the last cycle, to see it being rewritten.
    leader_member_index: Option<(String, i64)>,
    /// Since when we, the former leader named in a switchover request, wait for another
    /// member to take the free lock (bounded by one ttl).
    handover_since: Option<Millis>,
    /// The switchover request (key index) whose candidate we, the leader, wait to see
    /// streaming from us, and since when (bounded by one ttl).
    switchover_wait: Option<(i64, Millis)>,
    /// A defect put back for the simulator to find (see [`Engine::plant_former_leader_races`]).
    planted_former_leader_races: bool,
    /// We stopped PostgreSQL for a switchover while paused: start it again as a standby once
    /// another member leads (Patroni's demotion starts it itself; pause starts nothing).
    paused_switchover_demoted: bool,
}

impl Engine {
    pub fn new() -> Engine {
        Engine::default()
    }

    /// Puts back the defect of the first switchover design, for the simulator's planted-bug
    /// test: the former leader named in a request without a candidate races for the lock like
    /// any member (it re-promoted itself and lost acknowledged writes). Never used otherwise.
    #[doc(hidden)]
    pub fn plant_former_leader_races(&mut self) {
        self.planted_former_leader_races = true;
    }

    pub fn step(&mut self, obs: &Observation<'_>) -> Decision {
        let decision = self.decide(obs);
        if self.paused && !decision.reason.starts_with("PAUSE: ") {
            return Decision {
                reason: format!("PAUSE: {}", decision.reason),
                ..decision
            };
        }
        decision
    }

    fn decide(&mut self, obs: &Observation<'_>) -> Decision {
        let s = obs.settings;
        let pg = obs.pg;

        // Self-fencing comes first: a primary whose lease may be about to expire stops being
        // writable, whatever else is going on.
        if let Some(confirmed) = obs.lock_confirmed_at {
            let deadline = confirmed + s.ttl.saturating_sub(s.fencing_margin);
            if obs.now >= deadline && pg.running && !pg.in_recovery && !self.paused {
                return Decision::act(
                    vec![Action::Demote(DemoteMode::ImmediateNoLock)],
                    format!(
                        "demoting self: leader lease last confirmed {} ms ago, beyond ttl - safety margin ({} ms)",
                        obs.now - confirmed,
                        s.ttl.saturating_sub(s.fencing_margin)
                    ),
                );
            }
        }

        let Some(cluster) = obs.cluster else {
            if pg.is_primary() && obs.failsafe_confirmed && !self.paused {
                return Decision::act(
                    Vec::new(),
                    "continue to run as a leader because failsafe mode is enabled and all members are accessible",
                );
            }
            if pg.is_primary() && !self.paused {
                return Decision::act(
                    vec![Action::Demote(DemoteMode::Offline)],
                    "demoting self because DCS is not accessible and I was a leader",
                );
            }
            return Decision::idle("DCS is not accessible");
        };
        if self.paused && !cluster.is_paused() {
            self.resumed_at = Some(obs.now);
        }
        self.paused = cluster.is_paused();
        let i_am_leader = cluster.leader_name() == Some(s.name.as_str());
        if cluster.leader.is_some() || !manual::names_former_leader(cluster, &s.name) {
            self.handover_since = None;
        }
        if cluster.leader.is_some() {
            self.leaderless_since = None;
            let member = cluster.leader_member().map(|m| (m.name.clone(), m.index));
            let rewritten = matches!(
                (&self.leader_member_index, &member),
                (Some((before, at)), Some((now, index))) if before == now && index > at
            );
            self.seen_leader |= i_am_leader || pg.streaming || rewritten;
            self.leader_member_index = member;
        } else {
            self.leaderless_since.get_or_insert(obs.now);
        }

        if let Some(action) = obs.in_progress {
            if i_am_leader {
                return Decision::act(
                    vec![Action::RenewLock],
                    format!("updated leader lock during {}", action.describe()),
                );
            }
            return Decision::idle(format!("{} in progress", action.describe()));
        }

        let mut prelude = Vec::new();
        match &pg.data_dir {
            DataDir::Invalid(why) => {
                let mut actions = Vec::new();
                if i_am_leader {
                    actions.push(Action::ReleaseLock);
                }
                return Decision::act(actions, format!("data directory is not usable: {why}"));
            }
            DataDir::Empty => return self.empty_data_dir(obs, cluster, i_am_leader),
            DataDir::Initialized { sysid } => {
                if let Some(cluster_sysid) = cluster.sysid() {
                    if cluster_sysid != sysid {
                        let message = format!(
                            "system identifier of the data directory ({sysid}) differs from the cluster's ({cluster_sysid}): this data belongs to another cluster; refusing to run (nothing was deleted)"
                        );
                        if self.paused {
                            return Decision::idle(message);
                        }
                        return Decision::act(
                            vec![Action::Fatal {
                                message: message.clone(),
                            }],
                            message,
                        );
                    }
                }
                let replica_not_ours = pg.running && pg.in_recovery;
                if cluster.initialize.is_none()
                    && cluster.leader.is_none()
                    && !self.paused
                    && !replica_not_ours
                {
                    prelude.push(Action::WriteInitialize {
                        sysid: sysid.clone(),
                    });
                }
            }
        }

        let mut decision = if !pg.running {
            self.postgres_not_running(obs, cluster, i_am_leader)
        } else {
            self.primary_restart_since = None;
            match cluster.leader_name() {
                Some(_) if i_am_leader => self.leader_cycle(obs, cluster),
                Some(leader) => self.follower_cycle(obs, cluster, leader),
                None => self.no_leader_cycle(obs, cluster),
            }
        };
        if !prelude.is_empty() {
            prelude.append(&mut decision.actions);
            decision.actions = prelude;
        }
        decision
    }

    fn empty_data_dir(
        &self,
        obs: &Observation<'_>,
        cluster: &Cluster,
        i_am_leader: bool,
    ) -> Decision {
        let s = obs.settings;
        let mut actions = Vec::new();
        if i_am_leader {
            actions.push(Action::ReleaseLock);
        }
        if self.paused {
            return Decision::act(
                actions,
                "data directory is empty; not creating it while paused",
            );
        }
        match cluster.leader_name().filter(|l| *l != s.name) {
            Some(leader) => {
                let source = clone_source(cluster, &s.name, leader);
                let reason = if source == leader {
                    format!("bootstrapping from leader ({leader})")
                } else {
                    format!("bootstrapping from member {source} (tagged clonefrom), following leader ({leader})")
                };
                actions.push(Action::Clone {
                    source,
                    upstream: leader.to_string(),
                });
                Decision::act(actions, reason)
            }
            None => match cluster.initialize.as_deref() {
                None if s.can_bootstrap && !s.nofailover => {
                    actions.push(Action::Bootstrap);
                    Decision::act(actions, "trying to bootstrap a new cluster")
                }
                None if s.nofailover => Decision::act(
                    actions,
                    "waiting for leader to bootstrap (tagged nofailover: never bootstraps)",
                ),
                None => Decision::act(
                    actions,
                    "waiting for leader to bootstrap (no bootstrap section in the configuration)",
                ),
                Some(_) => Decision::act(actions, "waiting for leader to bootstrap"),
            },
        }
    }

    fn postgres_not_running(
        &mut self,
        obs: &Observation<'_>,
        cluster: &Cluster,
        i_am_leader: bool,
    ) -> Decision {
        let s = obs.settings;
        let pg = obs.pg;
        if self.paused {
            if i_am_leader {
                return Decision::act(
                    vec![Action::ReleaseLock],
                    "removed leader lock because postgres is not running",
                );
            }
            if self.paused_switchover_demoted {
                if let Some(leader) = cluster.leader_name() {
                    self.paused_switchover_demoted = false;
                    let upstream = upstream_for(obs.settings, cluster, leader);
                    return Decision::act(
                        vec![Action::StartPostgres(Replication::From(upstream))],
                        format!("starting as a standby of the new leader ({leader}) after the switchover"),
                    );
                }
                return Decision::idle(
                    "switchover from me in progress: postgres stays stopped until another member leads",
                );
            }
            return Decision::idle("postgres is not running");
        }
        if i_am_leader {
            let since = *self.primary_restart_since.get_or_insert(obs.now);
            let failover_target = failover_target(obs, cluster);
            if let Some(target) = &failover_target {
                if s.primary_start_timeout == 0 {
                    self.primary_restart_since = None;
                    return Decision::act(
                        vec![
                            Action::ReleaseLock,
                            Action::StartPostgres(Replication::Detached),
                        ],
                        format!(
                            "postgres crashed and primary_start_timeout is 0: releasing the leader lock for a failover ({target} is a healthy candidate)"
                        ),
                    );
                }
                if obs.now.saturating_sub(since) >= s.primary_start_timeout {
                    self.primary_restart_since = None;
                    return Decision::act(
                        vec![
                            Action::ReleaseLock,
                            Action::StartPostgres(Replication::Detached),
                        ],
                        format!(
                            "postgres did not come back within primary_start_timeout ({} ms): releasing the leader lock for a failover ({target} is a healthy candidate)",
                            s.primary_start_timeout
                        ),
                    );
                }
            }
            // As a standby without upstream, promoted next cycle
            // (docs/compat.md#crash-and-start-timeout): the data directory may be a standby's
            // (PostgreSQL died during pg_ctl promote), and starting it as a primary would write
            // new WAL under the old timeline id.
            return Decision::act(
                vec![
                    Action::RenewLock,
                    Action::StartPostgres(Replication::Detached),
                ],
                "starting as readonly because I had the session lock",
            );
        }
        match cluster.leader_name() {
            Some(leader) => {
                let upstream = upstream_for(obs.settings, cluster, leader);
                match pg.diverged {
                    Some(true) if s.use_pg_rewind => Decision::act(
                        vec![Action::Rewind { source: leader.to_string() }],
                        format!("my timeline diverged from leader ({leader}): running pg_rewind"),
                    ),
                    Some(true) if s.remove_data_directory_on_diverged_timelines => Decision::act(
                        vec![Action::Reinitialize { source: clone_source(cluster, &s.name, leader) }],
                        format!(
                            "my timeline diverged from leader ({leader}) and pg_rewind is off: reinitializing (remove_data_directory_on_diverged_timelines)"
                        ),
                    ),
                    Some(true) => Decision::idle(format!(
                        "my timeline diverged from leader ({leader}); use_pg_rewind and remove_data_directory_on_diverged_timelines are off: staying stopped, intervention needed"
                    )),
                    _ => Decision::act(
                        vec![Action::StartPostgres(Replication::From(upstream.clone()))],
                        format!("starting as a secondary following {upstream}"),
                    ),
                }
            }
            None if manual::names_former_leader(cluster, &s.name)
                && !self.planted_former_leader_races =>
            {
                self.handover(obs, cluster)
            }
            // No shortcut for a former primary: `status` and `history` may predate a promotion
            // whose node died before publishing, and the member and sync keys may say
            // otherwise. Start read-only and let the election (probes, lag, sync key) decide,
            // as Patroni does.
            None => Decision::act(
                vec![Action::StartPostgres(Replication::Detached)],
                "no leader: starting as a secondary to join the election",
            ),
        }
    }

    /// We stopped for a switchover (the request names us as the leader) and nobody holds the
    /// lock yet. PostgreSQL stays down until another member took over (then we follow it), so
    /// we never accept a write on a timeline of our own. If no other member can take over, or
    /// none did within one ttl, the switchover is abandoned: we take the lock back and, after a
    /// clean shutdown as primary, start as the primary again on the same timeline. Clearing the
    /// request by compare-and-set before starting proves that nobody promoted meanwhile (every
    /// promotion clears it first).
    fn handover(&mut self, obs: &Observation<'_>, cluster: &Cluster) -> Decision {
        let s = obs.settings;
        let pg = obs.pg;
        let Some((_, index)) = manual::request(cluster) else {
            return Decision::idle("no switchover request");
        };
        let since = *self.handover_since.get_or_insert(obs.now);
        let why = match manual::race(obs, cluster) {
            Race::Wait(why) if obs.now.saturating_sub(since) < s.ttl => {
                return Decision::idle(format!("{why}; postgres stays stopped meanwhile"));
            }
            Race::Wait(_) => format!("nobody took over within ttl ({} ms)", s.ttl),
            Race::FormerLeaderResumes(why) => why,
            // The request names us as the leader, so `race` answers one of the two above
            // unless we are also its candidate: a no-op request, dropped like Patroni does.
            _ => "the request names me as the candidate too".to_string(),
        };
        if pg.stopped_cleanly_as_primary {
            Decision::act(
                vec![
                    Action::AcquireLock,
                    Action::ClearFailover { index },
                    Action::StartPostgres(Replication::Primary),
                ],
                format!(
                    "switchover abandoned: {why}; resuming as the leader on timeline {} without a promotion",
                    pg.timeline
                ),
            )
        } else {
            Decision::act(
                vec![
                    Action::AcquireLock,
                    Action::ClearFailover { index },
                    Action::StartPostgres(Replication::Detached),
                ],
                format!(
                    "switchover abandoned: {why}; taking the leader lock back (postgres was not shut down cleanly as a primary: it starts read-only and is promoted)"
                ),
            )
        }
    }

    fn leader_cycle(&mut self, obs: &Observation<'_>, cluster: &Cluster) -> Decision {
        let s = obs.settings;
        let pg = obs.pg;
        if self.paused && !pg.is_primary() && pg.queryable {
            return Decision::act(
                vec![Action::ReleaseLock],
                "released the leader lock: postgres is not running as a primary",
            );
        }
        if !pg.queryable {
            return Decision::act(
                vec![Action::RenewLock],
                "updated leader lock; postgres is not accepting connections yet",
            );
        }
        if pg.in_recovery {
            let mut actions = vec![Action::RenewLock];
            actions.extend(promote_actions(obs, cluster, self.paused));
            return Decision::act(
                actions,
                "promoted self to leader because I had the session lock",
            );
        }
        if !obs.watchdog_allows_leadership && !self.paused {
            return Decision::act(
                vec![Action::Demote(DemoteMode::Immediate)],
                "demoting self because the watchdog could not be activated (watchdog.mode: required)",
            );
        }
        let mut actions = vec![Action::RenewLock, Action::PublishLeaderState];
        // Also while paused: Patroni manages `sync` and synchronous_standby_names in pause.
        let (sync_actions, sync_note) = crate::sync::plan(obs, cluster, &mut self.sync_since);
        actions.extend(sync_actions);
        if self
            .switchover_wait
            .is_some_and(|(index, _)| manual::request(cluster).is_none_or(|(_, i)| i != index))
        {
            self.switchover_wait = None;
        }
        if let Some(request) = cluster.failover.as_ref().filter(|f| f.value.is_present()) {
            let f = &request.value;
            let from_me = f.leader.as_deref().is_none_or(|l| l == s.name);
            let to_other = f.member.as_deref() != Some(s.name.as_str());
            let schedule = f
                .scheduled_at
                .as_deref()
                .map(|at| (at, switchover_schedule(at, obs)));
            match schedule {
                None | Some((_, Scheduled::Due)) => {}
                Some((at, Scheduled::Waiting)) => {
                    return Decision::act(
                        actions,
                        format!(
                            "I am ({}), the leader with the lock: switchover scheduled at {at}",
                            s.name
                        ),
                    );
                }
                Some((at, Scheduled::Missed)) => {
                    actions.push(Action::ClearFailover {
                        index: request.index,
                    });
                    return Decision::act(
                        actions,
                        format!("scheduled switchover at {at} was missed by more than 1.5 loop_wait: request cleared"),
                    );
                }
            }
            if from_me && to_other && self.paused && f.member.is_none() {
                // The API refuses this; a request written to the DCS directly gets the
                // same answer (Patroni's).
                actions.push(Action::ClearFailover {
                    index: request.index,
                });
                return Decision::act(
                    actions,
                    "Switchover is possible only to a specific candidate in a paused state: request cleared",
                );
            }
            if from_me && to_other {
                match switchover_target(obs, cluster, f.member.as_deref()) {
                    Handover::To(target) => {
                        self.paused_switchover_demoted = self.paused;
                        actions.push(Action::Demote(DemoteMode::Graceful));
                        return Decision::act(
                            actions,
                            format!("manual failover: demoting myself, {target} will take over"),
                        );
                    }
                    Handover::NotYet(name) => {
                        // A candidate that just (re)connected shows as `catchup` for a moment,
                        // one that restarts not at all: give it up to one ttl.
                        let (index, since) =
                            *self.switchover_wait.get_or_insert((request.index, obs.now));
                        if index == request.index && obs.now.saturating_sub(since) < s.ttl {
                            return Decision::act(
                                actions,
                                format!("manual failover: waiting for {name} to stream from me before handing over"),
                            );
                        }
                    }
                    Handover::Nobody => {}
                }
                actions.push(Action::ClearFailover {
                    index: request.index,
                });
                return Decision::act(
                    actions,
                    "manual failover: no healthy candidate found; request cleared",
                );
            } else if !from_me || !to_other {
                actions.push(Action::ClearFailover {
                    index: request.index,
                });
            }
        }
        let reason = match sync_note {
            Some(note) => format!("I am ({}), the leader with the lock: {note}", s.name),
            None => format!("no action. I am ({}), the leader with the lock", s.name),
        };
        Decision::act(actions, reason)
    }

    fn follower_cycle(&self, obs: &Observation<'_>, cluster: &Cluster, leader: &str) -> Decision {
        let s = obs.settings;
        let pg = obs.pg;
        if pg.is_primary() && !self.paused {
            return Decision::act(
                vec![Action::Demote(DemoteMode::ImmediateNoLock)],
                format!("demoting self because I do not have the lock and I was a leader ({leader} holds it)"),
            );
        }
        if pg.in_recovery && pg.diverged == Some(true) && !self.paused {
            return Decision::act(
                vec![Action::Demote(DemoteMode::StandbyForRewind)],
                format!("my WAL went past where leader ({leader}) forked its timeline: stopping to rewind"),
            );
        }
        let upstream = upstream_for(obs.settings, cluster, leader);
        let configured = pg.following.as_ref().and_then(Replication::upstream);
        // Also while paused: Patroni re-points a standby to the leader in pause too.
        if configured == Some(upstream.as_str()) || !pg.in_recovery {
            return Decision::idle(format!(
                "no action. I am ({}), a secondary, and following a leader ({leader})",
                s.name
            ));
        }
        Decision::act(
            vec![Action::Follow {
                upstream: upstream.clone(),
            }],
            format!("changing primary_conninfo to follow {upstream} (leader {leader})"),
        )
    }

    fn no_leader_cycle(&mut self, obs: &Observation<'_>, cluster: &Cluster) -> Decision {
        let s = obs.settings;
        let pg = obs.pg;
        if !pg.queryable {
            return Decision::idle("no leader; postgres is not accepting connections yet");
        }
        let manual_candidate = cluster.failover_request().and_then(|f| f.member.clone());
        if self.paused {
            if pg.is_primary() {
                return Decision::act(
                    vec![Action::AcquireLock, Action::PublishLeaderState],
                    "acquired session lock as a leader (postgres is running as primary)",
                );
            }
            if manual_candidate.as_deref() == Some(s.name.as_str()) {
                // A member with more WAL than me would lose it (acknowledged writes too) if I
                // promoted; paused, nobody else takes over: the operator decides.
                if let Race::Among { .. } = manual::race(obs, cluster) {
                    return Decision::idle(
                        "manual failover while paused: another member has more WAL than me; not promoting",
                    );
                }
                let mut actions = vec![Action::AcquireLock];
                actions.extend(promote_actions(obs, cluster, self.paused));
                return Decision::act(
                    actions,
                    "promoted self to leader by acquiring session lock (manual failover while paused)",
                );
            }
            return Decision::idle("no leader; no automatic failover while paused");
        }
        if pg.is_primary() && !s.nofailover {
            if !obs.watchdog_allows_leadership {
                return Decision::act(
                    vec![Action::Demote(DemoteMode::ImmediateNoLock)],
                    "demoting self: no leader, and the watchdog device is not usable (watchdog.mode: required)",
                );
            }
            return Decision::act(
                vec![Action::AcquireLock, Action::PublishLeaderState],
                "acquired session lock as a leader (postgres is running as primary)",
            );
        }
        let mut rules = RaceRules::default();
        let race =
            if self.planted_former_leader_races && manual::names_former_leader(cluster, &s.name) {
                Race::Open
            } else {
                manual::race(obs, cluster)
            };
        match race {
            Race::Open => {}
            Race::MeCandidate if !s.nofailover => {
                let mut actions = vec![Action::AcquireLock];
                actions.extend(promote_actions(obs, cluster, false));
                return Decision::act(
                    actions,
                    "promoted self to leader by acquiring session lock (manual failover candidate)",
                );
            }
            Race::MeCandidate => {
                return Decision::idle("no leader, not racing: tagged nofailover");
            }
            Race::Wait(why) => {
                if !manual::names_former_leader(cluster, &s.name) {
                    return Decision::idle(why);
                }
                let since = *self.handover_since.get_or_insert(obs.now);
                if obs.now.saturating_sub(since) < s.ttl {
                    return Decision::idle(why);
                }
            }
            Race::Among { excluded } => {
                rules.excluded = excluded;
                rules.ignore_lag = true;
            }
            Race::FormerLeaderResumes(_) => {}
        }
        if let Some(resumed) = self.resumed_at {
            let ago = obs.now.saturating_sub(resumed);
            if ago < s.ttl {
                return Decision::idle(format!(
                    "no leader, not racing: maintenance mode ended {ago} ms ago; a primary that lost its key while paused has one ttl to take it back"
                ));
            }
        }
        // Cluster start-up (no leader seen since we started): a member still starting
        // PostgreSQL, perhaps the former primary, may hold more WAL than us. Wait for its
        // position, no longer than one ttl. After a leader's loss the race is not held back:
        // a starting member then is the failed primary itself (primary_start_timeout) or a
        // restarting replica.
        if !obs.watchdog_allows_leadership {
            return Decision::idle(
                "no leader, not racing: the watchdog device is not usable (watchdog.mode: required)",
            );
        }
        if s.failsafe_mode
            && cluster
                .failsafe
                .as_ref()
                .is_some_and(|t| !t.is_empty() && !t.contains(&s.name))
        {
            return Decision::idle(
                "no leader, not racing: failsafe mode is on and I am not in the failsafe topology",
            );
        }
        let since = self.leaderless_since.unwrap_or(obs.now);
        rules.wait_for_starting = !self.seen_leader && obs.now.saturating_sub(since) < s.ttl;
        match election::evaluate(obs, &rules) {
            Candidate::Best { rivals } => {
                let mut actions = vec![Action::AcquireLock];
                if pg.is_primary() {
                    actions.push(Action::PublishLeaderState);
                } else {
                    actions.extend(promote_actions(obs, cluster, self.paused));
                }
                Decision::act(
                    actions,
                    format!(
                        "promoted self to leader by acquiring session lock: I am the healthiest of {} candidates (WAL position {})",
                        rivals + 1,
                        pg.wal_position
                    ),
                )
            }
            Candidate::Behind(why) | Candidate::Ineligible(why) => {
                Decision::idle(format!("no leader, not racing: {why}"))
            }
        }
    }
}

/// Whether the engine needs the other members' live status (`GET /patroni`) this cycle: only
/// while the leader key is free, as a runner in the race or as the former leader of a
/// switchover deciding whether anybody can take over.
pub fn wants_peer_probes(cluster: &Cluster, settings: &Settings, pg: &LocalPg) -> bool {
    cluster.leader.is_none()
        && !settings.nofailover
        && (pg.running || manual::names_former_leader(cluster, &settings.name))
}

/// A switchover's `scheduled_at`; an unparsable time is due at once.
fn switchover_schedule(at: &str, obs: &Observation<'_>) -> Scheduled {
    match chrono::DateTime::parse_from_rfc3339(at) {
        Ok(when) => scheduled(
            when.timestamp_millis(),
            obs.wall_clock_ms,
            obs.settings.loop_wait,
        ),
        Err(_) => Scheduled::Due,
    }
}

/// Promotion. A standing switchover/failover request is cleared first (compare-and-set), so
/// a former leader waiting on it knows from its own compare-and-set that nobody promoted (see
/// `Engine::handover`); in pause the request stays, as in Patroni. In synchronous mode we
/// first claim `sync` for ourselves with no standby and make commits wait for any standby
/// (`*`), so nothing is acknowledged before a real synchronous standby is chosen by the
/// leader cycle.
fn promote_actions(obs: &Observation<'_>, cluster: &Cluster, paused: bool) -> Vec<Action> {
    let mut actions = Vec::new();
    if let Some((_, index)) = manual::request(cluster).filter(|_| !paused) {
        actions.push(Action::ClearFailover { index });
    }
    if obs.settings.synchronous_mode {
        actions.push(Action::WriteSync {
            standbys: Vec::new(),
            index: cluster.sync.as_ref().map(|k| k.index),
        });
        actions.push(Action::SetSynchronousStandbys {
            names: Vec::new(),
            strict: true,
        });
    }
    // A background action: the leader cycle that follows it publishes `status`, `history`
    // and the members' slots.
    actions.push(Action::Promote);
    actions
}

/// A running member tagged `clonefrom` (not us, not the leader) is preferred as basebackup
/// source; otherwise the leader. Deterministic: the first by name.
fn clone_source(cluster: &Cluster, me: &str, leader: &str) -> String {
    cluster
        .members
        .values()
        .find(|m| m.name != me && m.name != leader && m.data.clonefrom() && m.data.is_running())
        .map(|m| m.name.clone())
        .unwrap_or_else(|| leader.to_string())
}

/// The member we stream from: the `replicatefrom` member when it exists and runs, else the leader.
/// The member a standby of `leader` streams from: its `replicatefrom` member while that one
/// runs, else the leader.
pub fn upstream_for(settings: &Settings, cluster: &Cluster, leader: &str) -> String {
    settings
        .replicatefrom
        .as_deref()
        .filter(|r| *r != settings.name)
        .filter(|r| cluster.members.get(*r).is_some_and(|m| m.data.is_running()))
        .unwrap_or(leader)
        .to_string()
}

/// A member that could take over from us (for crash-with-lock and primary_start_timeout).
fn failover_target(obs: &Observation<'_>, cluster: &Cluster) -> Option<String> {
    failover_target_for(obs, cluster, None).next()
}

/// A member to hand over to in a switchover, judged on what our PostgreSQL sees now rather
/// than on member keys, which can be a loop_wait old: it streams from us
/// (`pg_stat_replication`) within `maximum_lag_on_failover`, so that our clean shutdown
/// reaches it before we stop (a fast shutdown waits until connected standbys have flushed
/// everything, the shutdown checkpoint included, and only then is the lock released). Its
/// member key must exist without `nofailover`, and in synchronous mode it must be listed in
/// `sync`. (Patroni accepts any member within `maximum_lag_on_failover` by its member key; one
/// that is not connected would lose the tail of our WAL.)
fn switchover_target(obs: &Observation<'_>, cluster: &Cluster, wanted: Option<&str>) -> Handover {
    let s = obs.settings;
    let sync = cluster.sync_state().filter(|_| s.synchronous_mode);
    let candidates: Vec<&str> = cluster
        .members
        .values()
        .filter(|m| m.name != s.name && wanted.is_none_or(|w| w == m.name))
        .filter(|m| !m.data.nofailover())
        .filter(|m| sync.is_none_or(|st| st.is_sync_standby(&m.name)))
        .map(|m| m.name.as_str())
        .collect();
    let ready = candidates.iter().find(|name| {
        obs.pg.replication.iter().any(|link| {
            link.name == **name
                && link.streaming
                && obs.pg.wal_position.saturating_sub(link.lsn) <= s.maximum_lag_on_failover
        })
    });
    match (ready, candidates.first()) {
        (Some(name), _) => Handover::To(name.to_string()),
        (None, Some(name)) => Handover::NotYet(name.to_string()),
        (None, None) => Handover::Nobody,
    }
}

enum Handover {
    To(String),
    /// A candidate exists but does not stream from us yet (it may be reconnecting).
    NotYet(String),
    Nobody,
}

/// Eligible targets from the DCS member view: running, not us, not nofailover, within
/// `maximum_lag_on_failover`, and in `sync` when synchronous mode is on.
fn failover_target_for<'a>(
    obs: &'a Observation<'_>,
    cluster: &'a Cluster,
    wanted: Option<&'a str>,
) -> impl Iterator<Item = String> + 'a {
    let s = obs.settings;
    let optime = cluster.optime().unwrap_or(0).max(if obs.pg.is_primary() {
        obs.pg.wal_position
    } else {
        0
    });
    let sync = cluster.sync_state().filter(|_| s.synchronous_mode);
    cluster
        .members
        .values()
        .filter(move |m| m.name != s.name)
        .filter(move |m| wanted.is_none_or(|w| w == m.name))
        .filter(|m| m.data.is_running() && !m.data.nofailover())
        .filter(move |m| {
            m.data
                .xlog_location
                .is_some_and(|x| optime.saturating_sub(x) <= s.maximum_lag_on_failover)
        })
        .filter(move |m| sync.is_none_or(|st| st.is_sync_standby(&m.name)))
        .map(|m| m.name.clone())
}
