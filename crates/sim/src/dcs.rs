//! Simulated DCS with etcd's semantics, in simulated time: a revision counter, one lease of
//! `ttl` per agent process holding its member key and (when leader) the leader key, atomic
//! create-if-absent, compare on value / mod revision, and expiry of unrenewed leases.
//!
//! Requests are applied atomically when they arrive; the world delays or loses messages and
//! decides reachability. A lease keepalive and the operation that follows it (etcd: two round
//! trips sharing one retry budget) are applied together.

use crate::Time;
use pgherd_dcs::{
    Cluster, Failover, HistoryEntry, Leader, Member, MemberData, Status, SyncState, Versioned,
};
use std::collections::BTreeMap;
use std::rc::Rc;

#[derive(Debug, Clone)]
pub enum DcsOp {
    GetCluster,
    TouchMember(Box<MemberData>),
    AcquireLeader,
    UpdateLeader,
    DeleteLeader,
    /// The bootstrap race: create `initialize` = "" if absent.
    InitializeCreate,
    InitializePut(String),
    WriteStatus(u64),
    SetHistory(Vec<HistoryEntry>),
    SetFailover {
        value: Failover,
        index: Option<i64>,
    },
    /// `sync`, compare-and-swap on its mod revision when `index` is given.
    SetSync {
        value: SyncState,
        index: Option<i64>,
    },
    DeleteSync {
        index: i64,
    },
    /// End of a bootstrap task: `initialize`=sysid, `config`, then the leader key.
    BootstrapTail {
        sysid: String,
    },
}

#[derive(Debug, Clone)]
pub enum DcsReply {
    Cluster(Rc<Cluster>),
    Bool(bool),
    Done,
}

/// What a DCS change means for agents' watches (compat §1.4 wake-ups).
pub type Fingerprint = (
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

/// Same as the agent's `wake_fingerprint`.
pub fn fingerprint(c: &Cluster) -> Fingerprint {
    (
        c.leader_name().map(str::to_string),
        c.failover.as_ref().map(|f| f.index),
        c.config.as_ref().map(|f| f.index),
        c.sync.as_ref().map(|f| f.index),
        c.initialize.clone(),
    )
}

#[derive(Debug, Clone)]
pub struct Lease {
    pub expires_at: Time,
    /// An expiry check is already queued (one at a time keeps the event count low).
    pub check_pending: bool,
}

#[derive(Debug, Clone)]
pub struct LeaderKey {
    pub name: String,
    pub index: i64,
    pub lease: i64,
}

#[derive(Debug, Default)]
pub struct Store {
    pub revision: i64,
    pub initialize: Option<String>,
    pub config: Option<Versioned<serde_json::Value>>,
    pub leader: Option<LeaderKey>,
    pub members: BTreeMap<String, (MemberData, i64, i64)>,
    pub status: Option<Status>,
    pub history: Option<Versioned<Vec<HistoryEntry>>>,
    pub failover: Option<Versioned<Failover>>,
    pub sync: Option<Versioned<SyncState>>,
    pub leases: BTreeMap<i64, Lease>,
    next_lease: i64,
    cache: Option<Rc<Cluster>>,
    /// etcd itself is down (not just unreachable): no lease expires meanwhile, and every
    /// lease is extended when it comes back.
    pub leases_frozen: bool,
}

/// Result of applying one request.
pub struct Applied {
    pub reply: DcsReply,
    /// The lease the caller now holds (granted or kept alive), for its client state.
    pub lease: Option<i64>,
    /// Leases granted or extended (the world schedules their expiry checks).
    pub touched_lease: Option<(i64, Time)>,
}

impl Store {
    fn bump(&mut self) -> i64 {
        self.revision += 1;
        self.cache = None;
        self.revision
    }

    pub fn cluster(&mut self) -> Rc<Cluster> {
        if let Some(c) = &self.cache {
            return c.clone();
        }
        let c = Rc::new(Cluster {
            initialize: self.initialize.clone(),
            config: self.config.clone(),
            leader: self.leader.as_ref().map(|l| Leader {
                name: l.name.clone(),
                index: l.index,
                session: l.lease,
            }),
            members: self
                .members
                .iter()
                .map(|(name, (data, index, lease))| {
                    (
                        name.clone(),
                        Member {
                            name: name.clone(),
                            data: data.clone(),
                            index: *index,
                            session: *lease,
                        },
                    )
                })
                .collect(),
            status: self.status.clone(),
            history: self.history.clone(),
            failover: self.failover.clone(),
            sync: self.sync.clone(),
            other: BTreeMap::new(),
            revision: self.revision,
        });
        self.cache = Some(c.clone());
        c
    }

    /// Keepalive on the caller's lease, or a new lease when it has none or it expired.
    fn ensure_lease(&mut self, lease: Option<i64>, now: Time, ttl: Time) -> i64 {
        if let Some(id) = lease {
            if let Some(l) = self.leases.get_mut(&id) {
                if l.expires_at > now {
                    l.expires_at = now + ttl;
                    return id;
                }
            }
            self.revoke(id);
        }
        self.next_lease += 1;
        let id = self.next_lease;
        self.leases.insert(
            id,
            Lease {
                expires_at: now + ttl,
                check_pending: false,
            },
        );
        id
    }

    /// A new lease expiring at `now + ttl`.
    pub fn grant(&mut self, now: Time, ttl: Time) -> i64 {
        self.ensure_lease(None, now, ttl)
    }

    /// The keys a finished bootstrap leaves (see `World::prebuild`).
    pub fn prebuild(&mut self, sysid: &str, leader: &str, lease: i64, optime: u64, ttl: Time) {
        self.initialize = Some(sysid.to_string());
        let index = self.bump();
        self.config = Some(Versioned {
            value: serde_json::json!({ "ttl": ttl / 1000 }),
            index,
        });
        self.put_leader(leader, lease);
        self.status = Some(Status {
            optime,
            ..Status::default()
        });
        self.bump();
    }

    pub fn prebuild_member(&mut self, name: &str, data: MemberData, lease: i64) {
        let index = self.bump();
        self.members.insert(name.to_string(), (data, index, lease));
    }

    /// Removes a lease and every key attached to it. Returns whether a key vanished.
    pub fn revoke(&mut self, lease: i64) -> bool {
        self.leases.remove(&lease);
        let mut changed = false;
        if self.leader.as_ref().is_some_and(|l| l.lease == lease) {
            self.leader = None;
            changed = true;
        }
        let before = self.members.len();
        self.members.retain(|_, (_, _, l)| *l != lease);
        changed |= self.members.len() != before;
        if changed {
            self.bump();
        }
        changed
    }

    /// An expiry check for `lease` is due: expires it if its time has come (returning whether
    /// keys vanished), or says when to look again.
    pub fn expire(&mut self, lease: i64, now: Time) -> (bool, Option<Time>) {
        let frozen = self.leases_frozen;
        let Some(l) = self.leases.get_mut(&lease) else {
            return (false, None);
        };
        if frozen {
            // etcd is down and counts nothing; it extends every lease when it returns.
            return (false, Some(now + 1_000));
        }
        if l.expires_at > now {
            // Kept alive meanwhile: look again when it would expire now.
            return (false, Some(l.expires_at));
        }
        l.check_pending = false;
        (self.revoke(lease), None)
    }

    /// Whether the caller must queue an expiry check for `lease` (none is pending).
    pub fn needs_check(&mut self, lease: i64) -> bool {
        match self.leases.get_mut(&lease) {
            Some(l) if !l.check_pending => {
                l.check_pending = true;
                true
            }
            _ => false,
        }
    }

    pub fn fingerprint(&self) -> Fingerprint {
        (
            self.leader.as_ref().map(|l| l.name.clone()),
            self.failover.as_ref().map(|f| f.index),
            self.config.as_ref().map(|c| c.index),
            self.sync.as_ref().map(|c| c.index),
            self.initialize.clone(),
        )
    }

    /// etcd came back: a new etcd leader extends every lease by its TTL.
    pub fn refresh_leases(&mut self, now: Time, ttl: Time) {
        for l in self.leases.values_mut() {
            l.expires_at = l.expires_at.max(now + ttl);
        }
    }

    pub fn apply(
        &mut self,
        op: &DcsOp,
        me: &str,
        lease: Option<i64>,
        now: Time,
        ttl: Time,
    ) -> Applied {
        let mut leased = None;
        let reply = match op {
            DcsOp::GetCluster => DcsReply::Cluster(self.cluster()),
            DcsOp::TouchMember(data) => {
                let id = self.ensure_lease(lease, now, ttl);
                leased = Some(id);
                let same = self
                    .members
                    .get(me)
                    .is_some_and(|(d, _, l)| *l == id && d == data.as_ref());
                if !same {
                    let index = self.bump();
                    self.members
                        .insert(me.to_string(), ((**data).clone(), index, id));
                }
                DcsReply::Done
            }
            DcsOp::AcquireLeader => {
                let id = self.ensure_lease(lease, now, ttl);
                leased = Some(id);
                let won = match &self.leader {
                    None => {
                        self.put_leader(me, id);
                        true
                    }
                    // A retried create that had landed: the key holds our name on our lease.
                    Some(l) => l.name == me && l.lease == id,
                };
                DcsReply::Bool(won)
            }
            DcsOp::UpdateLeader => {
                // Compare on the value (our name), then re-put on our current lease.
                let id = self.ensure_lease(lease, now, ttl);
                leased = Some(id);
                let ours = self.leader.as_ref().is_some_and(|l| l.name == me);
                if ours {
                    self.put_leader(me, id);
                }
                DcsReply::Bool(ours)
            }
            DcsOp::DeleteLeader => {
                if self.leader.as_ref().is_some_and(|l| l.name == me) {
                    self.leader = None;
                    self.bump();
                }
                DcsReply::Done
            }
            DcsOp::InitializeCreate => {
                let created = self.initialize.is_none();
                if created {
                    self.initialize = Some(String::new());
                    self.bump();
                }
                DcsReply::Bool(created)
            }
            DcsOp::InitializePut(sysid) => {
                self.initialize = Some(sysid.clone());
                self.bump();
                DcsReply::Done
            }
            DcsOp::WriteStatus(optime) => {
                self.status = Some(Status {
                    optime: *optime,
                    ..Status::default()
                });
                self.bump();
                DcsReply::Done
            }
            DcsOp::SetHistory(entries) => {
                let index = self.bump();
                self.history = Some(Versioned {
                    value: entries.clone(),
                    index,
                });
                DcsReply::Done
            }
            DcsOp::SetFailover { value, index } => {
                let current = self.failover.as_ref().map_or(0, |f| f.index);
                let ok = index.is_none_or(|i| i == current);
                if ok {
                    let index = self.bump();
                    self.failover = Some(Versioned {
                        value: value.clone(),
                        index,
                    });
                }
                DcsReply::Bool(ok)
            }
            DcsOp::SetSync { value, index } => {
                // etcd compares mod_revision; an absent key has revision 0.
                let current = self.sync.as_ref().map_or(0, |k| k.index);
                let ok = index.is_none_or(|i| i == current);
                if ok {
                    let index = self.bump();
                    self.sync = Some(Versioned {
                        value: value.clone(),
                        index,
                    });
                }
                DcsReply::Bool(ok)
            }
            DcsOp::DeleteSync { index } => {
                let ok = self.sync.as_ref().is_some_and(|k| k.index == *index);
                if ok {
                    self.sync = None;
                    self.bump();
                }
                DcsReply::Bool(ok)
            }
            DcsOp::BootstrapTail { sysid } => {
                self.initialize = Some(sysid.clone());
                let index = self.bump();
                self.config = Some(Versioned {
                    value: serde_json::json!({ "ttl": ttl / 1000 }),
                    index,
                });
                let id = self.ensure_lease(lease, now, ttl);
                leased = Some(id);
                if self.leader.is_none() {
                    self.put_leader(me, id);
                }
                DcsReply::Done
            }
        };
        Applied {
            reply,
            lease: leased.or(lease),
            touched_lease: leased.map(|id| (id, now + ttl)),
        }
    }

    fn put_leader(&mut self, me: &str, lease: i64) {
        let index = self.bump();
        self.leader = Some(LeaderKey {
            name: me.to_string(),
            index,
            lease,
        });
    }
}
