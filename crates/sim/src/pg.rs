//! Simulated PostgreSQL of one node: the data directory, the postmaster, its role and WAL.
//! Transitions that take time (start, stop, promote) are begun here and finished by events the
//! world schedules; `epoch` changes whenever a postmaster dies or a new one starts, so a
//! completion meant for an earlier postmaster is ignored.

use crate::wal::Wal;
use crate::Time;
use pgherd_ha::{DataDir, Replication};
use std::collections::BTreeSet;

/// `pg_controldata`'s "Database cluster state" as of the last time the postmaster stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// "shut down": clean shutdown as a primary.
    ShutDown,
    /// "in production": a primary that crashed or was stopped in immediate mode.
    InProduction,
    /// "shut down in recovery" / "in archive recovery": a standby.
    InRecovery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    Fast,
    Immediate,
}

#[derive(Debug, Clone)]
pub struct Pg {
    pub data: DataDir,
    pub wal: Wal,
    pub control: Control,
    /// The postmaster is alive.
    pub running: bool,
    /// It accepts connections (false while starting up and once a stop began).
    pub accepting: bool,
    pub in_recovery: bool,
    /// What postgresql.conf and `standby.signal` say (read at start and reload).
    pub conf: Replication,
    /// `primary_slot_name` as written.
    pub conf_slot: Option<String>,
    /// The member a running standby streams from (`None`: a primary, or no upstream).
    pub upstream: Option<String>,
    /// The slot a running standby asks its upstream for.
    pub slot: Option<String>,
    /// Physical replication slots in this data directory (not copied by pg_basebackup).
    pub slots: BTreeSet<String>,
    /// postmaster start time, as `pg_postmaster_start_time()` shows it.
    pub started_at: Time,
    /// When the last promotion finished (the new timeline's history file).
    pub promoted_at: Time,
    pub epoch: u64,
    /// A stop in progress: its mode and when the postmaster exits.
    pub stopping: Option<(StopMode, Time)>,
    pub promoting: bool,
    /// `synchronous_standby_names` as written in postgresql.conf, and as the running server
    /// uses it (read at start and at each reload).
    pub sync_conf: String,
    pub sync_active: String,
    /// `sync_rule(sync_active)`, parsed once per change (walsenders are listed on every
    /// commit and every streamed batch).
    pub sync_waits: (usize, Vec<String>),
    /// The walsender on `(upstream, its epoch)` reached "streaming" (caught up once since this
    /// connection began); before that it is in "catchup" and cannot be a synchronous standby.
    pub streaming_from: Option<(String, u64)>,
}

impl Pg {
    pub fn empty() -> Pg {
        Pg {
            data: DataDir::Empty,
            wal: Wal::default(),
            control: Control::InRecovery,
            running: false,
            accepting: false,
            in_recovery: false,
            conf: Replication::Primary,
            conf_slot: None,
            upstream: None,
            slot: None,
            slots: BTreeSet::new(),
            started_at: 0,
            promoted_at: 0,
            epoch: 0,
            stopping: None,
            promoting: false,
            sync_conf: String::new(),
            sync_active: String::new(),
            sync_waits: (0, Vec::new()),
            streaming_from: None,
        }
    }

    /// A running primary that a client can commit on.
    pub fn writable(&self) -> bool {
        self.running && self.accepting && !self.in_recovery
    }

    pub fn initialized(&self) -> bool {
        matches!(self.data, DataDir::Initialized { .. })
    }

    /// kill -9 of the postmaster (or of the whole node).
    pub fn crash(&mut self) {
        if !self.running {
            return;
        }
        self.control = if self.in_recovery {
            Control::InRecovery
        } else {
            Control::InProduction
        };
        self.down();
    }

    fn down(&mut self) {
        self.streaming_from = None;
        self.running = false;
        self.accepting = false;
        self.stopping = None;
        self.promoting = false;
        self.epoch += 1;
    }

    /// Begins a stop; returns when the postmaster will have exited, `None` if not running.
    /// New connections and commits end at once (backends are signalled first).
    pub fn begin_stop(&mut self, mode: StopMode, exit_at: Time) -> Option<Time> {
        if !self.running {
            return None;
        }
        self.accepting = false;
        match self.stopping {
            Some((_, at)) if at <= exit_at => Some(at),
            _ => {
                self.stopping = Some((mode, exit_at));
                Some(exit_at)
            }
        }
    }

    /// The server (re)reads `synchronous_standby_names` (start, reload).
    pub fn reload_sync(&mut self) {
        if self.sync_active != self.sync_conf {
            self.sync_active = self.sync_conf.clone();
            self.sync_waits = sync_rule(&self.sync_active);
        }
    }

    /// `pg_ctl reload`: a standby picks up a changed `primary_conninfo` (its WAL receiver
    /// restarts) and slot; every server its `synchronous_standby_names`.
    pub fn reload(&mut self) {
        self.reload_sync();
        if self.running && self.in_recovery {
            let upstream = self.conf.upstream().map(str::to_string);
            if upstream != self.upstream || self.conf_slot != self.slot {
                self.upstream = upstream;
                self.slot = self.conf_slot.clone();
                self.streaming_from = None;
            }
        }
    }

    pub fn finish_stop(&mut self) {
        let Some((mode, _)) = self.stopping else {
            return;
        };
        self.control = if self.in_recovery {
            Control::InRecovery
        } else if mode == StopMode::Immediate {
            Control::InProduction
        } else {
            Control::ShutDown
        };
        self.down();
    }

    /// `pg_ctl start` with the configuration as written.
    pub fn begin_start(&mut self, now: Time) {
        self.running = true;
        self.accepting = false;
        self.in_recovery = self.conf.is_standby();
        self.upstream = self.conf.upstream().map(str::to_string);
        self.slot = self.conf_slot.clone();
        self.started_at = now;
        self.streaming_from = None;
        self.reload_sync();
        self.stopping = None;
        self.promoting = false;
        self.epoch += 1;
    }

    /// Startup finished. A server started as a primary begins a new writer session on the
    /// timeline it already had: without archive recovery there is no timeline switch, which
    /// is why starting a standby's data directory as a primary is dangerous.
    pub fn finish_start(&mut self, content: u32) {
        if self.stopping.is_some() {
            // Killed while starting up: it never accepts connections.
            return;
        }
        self.accepting = true;
        if !self.in_recovery {
            let timeline = self.wal.timeline();
            self.wal.start_writer(content, timeline);
        }
    }

    pub fn begin_promote(&mut self) -> bool {
        if !(self.running && self.accepting && self.in_recovery) || self.stopping.is_some() {
            return false;
        }
        self.promoting = true;
        true
    }

    /// End of recovery: a new timeline (`timeline`: normally the highest this node knows + 1)
    /// with an end-of-recovery record.
    pub fn finish_promote(&mut self, content: u32, timeline: u64, now: Time) {
        if !(self.running && self.in_recovery && self.promoting) || self.stopping.is_some() {
            return;
        }
        self.promoting = false;
        self.in_recovery = false;
        self.promoted_at = now;
        // `pg_ctl promote` removes standby.signal.
        self.conf = Replication::Primary;
        self.upstream = None;
        self.slot = None;
        self.wal.start_writer(content, timeline);
        self.wal.end += 40;
    }
}

/// How many standbys a `synchronous_standby_names` value waits for, and which ones
/// (`["*"]`: any). As written by the agent: `*`, `"a"`, `N ("a","b")`; empty: none.
pub fn sync_rule(value: &str) -> (usize, Vec<String>) {
    let names = pgherd_ha::parse_standby_names(value);
    let count = value
        .split_whitespace()
        .next()
        .and_then(|w| w.parse::<usize>().ok())
        .unwrap_or(1);
    (if names.is_empty() { 0 } else { count }, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_rules() {
        assert_eq!(sync_rule(""), (0, vec![]));
        assert_eq!(sync_rule("*"), (1, vec!["*".to_string()]));
        assert_eq!(sync_rule("\"n2\""), (1, vec!["n2".to_string()]));
        assert_eq!(
            sync_rule("2 (\"n2\",\"n3\")"),
            (2, vec!["n2".to_string(), "n3".to_string()])
        );
    }
}
