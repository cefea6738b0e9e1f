//! One client session's routing state machine: given each query (already classified), the
//! server's `ReadyForQuery` status and commit LSNs, it decides where the next message goes and
//! what the proxy must do around it. No I/O and no clock reads: the caller passes `now`.
//!
//! The rules, in the order they apply:
//!
//! 1. **A transaction never splits.** Its target is fixed by the message that opens it and
//!    kept until the server reports `I` again. A plain `BEGIN` is answered by the proxy and
//!    *deferred* to the next message, so `BEGIN; SET TRANSACTION READ ONLY; ...` can still
//!    go to a replica; any other first statement sends the whole transaction to the primary,
//!    even a `SELECT` (it might write next). `BEGIN READ ONLY`, `START TRANSACTION READ ONLY`,
//!    and a plain `BEGIN` in a session whose default is read-only
//!    (`SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY`,
//!    `SET default_transaction_read_only = on`) go to a replica. The deferral applies to the
//!    simple query protocol; an extended-protocol `BEGIN` goes to the primary at once.
//! 2. **Pins.** After a statement that leaves something on its server connection (a temporary
//!    table, a session advisory lock, `LISTEN`, a cursor `WITH HOLD`, a SQL `PREPARE`,
//!    `set_config(.., false)`), every later message goes to the primary. `DISCARD ALL` lifts
//!    the pin. Such a statement inside a transaction that runs on a replica is refused
//!    (SQLSTATE 25006) instead of leaving its object on the replica.
//! 3. **Session settings are followed, not pinned.** `SET`/`RESET` of session variables
//!    (outside a transaction: on the primary; inside one: wherever it runs) are recorded once
//!    they commit, in order, one entry per variable ([`Router::settings`]), for what they
//!    mean to routing (the session's default access mode). Carrying them to every server
//!    connection the session uses is the pool's job, from the server's own account of them
//!    (`crates/proxy/src/pool/settings.rs`). `SET LOCAL` follows its transaction; `SET`
//!    inside a transaction obeys `ROLLBACK` and `ROLLBACK TO SAVEPOINT`. A multi-statement
//!    message that changed settings and failed pins the session
//!    ([`PinCause::ReplayFailed`]): which of its statements took effect is unknown here.
//! 4. **Read-your-writes** ([`ReadYourWrites`]): after a transaction that ran on the primary
//!    and may have written returns to idle, the caller learns its commit LSN
//!    ([`AfterReady::CaptureLsn`], then [`Router::on_commit_lsn`]); later replica decisions
//!    carry it ([`Route::lsn_wait`]) so that only a replica that replayed it serves them.
//! 5. Otherwise: a message whose statements are all read-only goes to a replica; anything else
//!    goes to the primary with the first statement's [`Reason`].

use super::classify::{Classification, Classifier, SessionSetting, StatementClass};
use super::reason::{PinCause, Reason, Target};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A WAL position (`pg_lsn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's text form, `16/B374D848`.
    pub fn parse(text: &str) -> Option<Lsn> {
        let (high, low) = text.trim().split_once('/')?;
        let high = u32::from_str_radix(high, 16).ok()?;
        let low = u32::from_str_radix(low, 16).ok()?;
        Some(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// What a session's reads wait for after its own writes (`read_your_writes.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadYourWrites {
    /// A replica serves the session's reads only once it has replayed the session's last
    /// commit (waiting at most `max_wait` for one to catch up); the primary serves them until
    /// then.
    Replayed,
    /// After the session's first write, all its reads go to the primary.
    Session,
    /// No guarantee across transactions (a transaction is never split either way).
    Off,
}

impl ReadYourWrites {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadYourWrites::Replayed => "replayed",
            ReadYourWrites::Session => "session",
            ReadYourWrites::Off => "off",
        }
    }
}

/// A router's settings (from the listener's configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    pub read_your_writes: ReadYourWrites,
    /// With [`ReadYourWrites::Replayed`]: how long a read may wait for a replica to replay
    /// the session's last commit before the primary serves it.
    pub max_wait: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            read_your_writes: ReadYourWrites::Replayed,
            max_wait: Duration::ZERO,
        }
    }
}

/// The transaction status of a `ReadyForQuery` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// `I`
    Idle,
    /// `T`
    InTransaction,
    /// `E`
    Failed,
}

impl TxStatus {
    pub fn from_byte(byte: u8) -> Option<TxStatus> {
        match byte {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

/// What to do with a client's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send it to a server.
    Route(Route),
    /// Answer it without a server: `CommandComplete(tag)` then `ReadyForQuery(status)`.
    Answer { tag: &'static str, status: TxStatus },
    /// Answer with an `ErrorResponse`, then `ReadyForQuery(status)`.
    Refuse {
        sqlstate: &'static str,
        message: String,
        status: TxStatus,
    },
}

/// Where a message goes and what runs before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub target: Target,
    pub reason: Reason,
    /// Statements to run first on the same server connection, their results not forwarded
    /// (a deferred `BEGIN` and `SET TRANSACTION`s). An error there is the client's error.
    pub prelude: Vec<String>,
    /// Text to send instead of the client's (`ROLLBACK` for a `COMMIT` of a transaction the
    /// proxy failed).
    pub rewrite: Option<String>,
    /// For a replica, at the start of a routing unit: only one that has replayed `lsn` may
    /// serve it; wait for one until `until`, then use the primary
    /// ([`Reason::ReadYourWrites`]).
    pub lsn_wait: Option<LsnWait>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LsnWait {
    pub lsn: Lsn,
    pub until: Instant,
}

/// The server's `ReadyForQuery` after a routed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub status: TxStatus,
    /// An `ErrorResponse` came before it.
    pub error: bool,
    /// The server that actually ran the message (the caller may have fallen back to the
    /// primary).
    pub served_by: Target,
}

/// What the caller must do after a `ReadyForQuery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterReady {
    Nothing,
    /// Read `pg_current_wal_insert_lsn()` on the same (primary) connection before releasing
    /// it, then call [`Router::on_commit_lsn`].
    CaptureLsn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Set(SessionSetting),
    ResetAll,
    DiscardAll,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tx {
    Idle,
    /// A plain `BEGIN` the proxy answered; `prelude` replays it (and any `SET TRANSACTION`).
    Deferred {
        prelude: Vec<String>,
        read_only: Option<bool>,
        serializable: Option<bool>,
    },
    Open {
        target: Target,
        reason: Reason,
        may_write: bool,
        /// The proxy refused a statement: the client sees a failed transaction.
        refused: bool,
    },
}

/// Effects of the message being served, applied at its `ReadyForQuery`.
#[derive(Debug, Clone)]
struct InFlight {
    target: Target,
    reason: Reason,
    /// Setting changes that take effect when the message succeeds (outside a transaction, or
    /// in a transaction the message commits).
    committed: Vec<Change>,
    pins: Vec<PinCause>,
    may_write: bool,
    statements: usize,
}

/// One client session's router. See the module documentation for the rules.
#[derive(Debug, Clone)]
pub struct Router {
    config: RouterConfig,
    classifier: Arc<Classifier>,
    /// The session's committed default access mode.
    default_read_only: bool,
    /// The session's committed default isolation is `SERIALIZABLE`: hot standbys refuse it
    /// ("cannot use serializable mode in a hot standby"), so its reads need the primary.
    default_serializable: bool,
    settings: Vec<SessionSetting>,
    pin: Option<PinCause>,
    tx: Tx,
    /// The server reported `E`: a `COMMIT` now rolls back.
    tx_failed: bool,
    /// Setting changes of the open transaction, and its savepoints (name, changes before it).
    tx_changes: Vec<Change>,
    savepoints: Vec<(String, usize)>,
    in_flight: Option<InFlight>,
    /// `read_your_writes: session`: the session has written.
    wrote: bool,
    /// `read_your_writes: replayed`: the session's last commit.
    last_commit: Option<Lsn>,
    /// Extended-protocol statements by name (the unnamed one under "").
    prepared: HashMap<String, Arc<Classification>>,
}

impl Router {
    pub fn new(config: RouterConfig, classifier: Arc<Classifier>) -> Self {
        Router {
            config,
            classifier,
            default_read_only: false,
            default_serializable: false,
            settings: Vec::new(),
            pin: None,
            tx: Tx::Idle,
            tx_failed: false,
            tx_changes: Vec::new(),
            savepoints: Vec::new(),
            in_flight: None,
            wrote: false,
            last_commit: None,
            prepared: HashMap::new(),
        }
    }

    /// A simple-protocol `Query` message.
    pub fn route_query(&mut self, sql: &str, now: Instant) -> Decision {
        let classification = self.classifier.classify(sql);
        self.route(&classification, now, true)
    }

    /// An extended-protocol `Parse`: remembers what the statement is.
    pub fn on_parse(&mut self, name: &str, sql: &str) {
        let classification = self.classifier.classify(sql);
        self.prepared.insert(name.to_string(), classification);
    }

    /// An extended-protocol `Close` of a statement.
    pub fn on_close(&mut self, name: &str) {
        self.prepared.remove(name);
    }

    /// The executions (by statement name) up to a `Sync`: one routing unit.
    pub fn route_prepared(&mut self, names: &[&str], now: Instant) -> Decision {
        let mut statements = Vec::new();
        for name in names {
            match self.prepared.get(*name) {
                Some(c) => statements.extend(c.statements.iter().cloned()),
                None => statements.push(StatementClass::Primary(
                    super::functions::NotReadOnly::new(Reason::OtherStatement),
                )),
            }
        }
        self.route(&Classification { statements }, now, false)
    }

    /// Why the session is pinned to the primary, if it is.
    pub fn pinned(&self) -> Option<PinCause> {
        self.pin
    }

    /// The session's settings as recorded, in replay order.
    pub fn settings(&self) -> &[SessionSetting] {
        &self.settings
    }

    /// The session's commit LSN that replicas must have replayed, if any.
    pub fn last_commit(&self) -> Option<Lsn> {
        self.last_commit
    }

    /// The LSN read after [`AfterReady::CaptureLsn`].
    pub fn on_commit_lsn(&mut self, lsn: Lsn) {
        self.last_commit = Some(self.last_commit.map_or(lsn, |l| l.max(lsn)));
    }

    /// Decides where a classified message goes. `deferrable`: a lone plain `BEGIN` may be
    /// answered by the proxy (simple protocol only).
    pub fn route(
        &mut self,
        classification: &Classification,
        now: Instant,
        deferrable: bool,
    ) -> Decision {
        let statements = &classification.statements;
        let mut prelude = Vec::new();
        // The message starts a new routing unit (no server connection is bound yet).
        let mut fresh = self.tx == Tx::Idle;
        if let Tx::Deferred {
            prelude: deferred,
            read_only,
            serializable,
        } = &mut self.tx
        {
            match statements.as_slice() {
                [StatementClass::SetTransaction {
                    read_only: mode,
                    serializable: level,
                    text,
                }] => {
                    deferred.push(text.clone());
                    *read_only = mode.or(*read_only);
                    *serializable = level.or(*serializable);
                    return Decision::Answer {
                        tag: "SET",
                        status: TxStatus::InTransaction,
                    };
                }
                [StatementClass::Commit { chain: false }] => {
                    self.tx = Tx::Idle;
                    return Decision::Answer {
                        tag: "COMMIT",
                        status: TxStatus::Idle,
                    };
                }
                [StatementClass::Rollback { chain: false }] => {
                    self.tx = Tx::Idle;
                    return Decision::Answer {
                        tag: "ROLLBACK",
                        status: TxStatus::Idle,
                    };
                }
                _ => {
                    fresh = true;
                    let read_only = read_only.unwrap_or(self.default_read_only);
                    let serializable = serializable.unwrap_or(self.default_serializable);
                    prelude = std::mem::take(deferred);
                    let (target, reason) = match (read_only, serializable) {
                        (true, false) => {
                            self.replica_unless_primary_needed(Reason::ReadOnlyTransaction)
                        }
                        (true, true) => (Target::Primary, Reason::Serializable),
                        (false, _) => (Target::Primary, Reason::WriteTransaction),
                    };
                    self.tx = Tx::Open {
                        target,
                        reason,
                        may_write: false,
                        refused: false,
                    };
                    self.tx_changes.clear();
                    self.savepoints.clear();
                }
            }
        }

        if self.tx == Tx::Idle && deferrable && self.pin.is_none() {
            if let [StatementClass::Begin {
                read_only: None,
                serializable,
                text,
            }] = statements.as_slice()
            {
                self.tx = Tx::Deferred {
                    prelude: vec![text.clone()],
                    read_only: None,
                    serializable: *serializable,
                };
                return Decision::Answer {
                    tag: "BEGIN",
                    status: TxStatus::InTransaction,
                };
            }
        }

        let (target, reason) = match &mut self.tx {
            Tx::Open {
                refused: true,
                target,
                ..
            } => {
                return match statements.as_slice() {
                    [StatementClass::Commit { chain: false }
                    | StatementClass::Rollback { chain: false }] => {
                        let target = *target;
                        self.in_flight = Some(InFlight {
                            target,
                            reason: Reason::TransactionControl,
                            committed: Vec::new(),
                            pins: Vec::new(),
                            may_write: false,
                            statements: 1,
                        });
                        self.tx_changes.clear();
                        self.savepoints.clear();
                        Decision::Route(Route {
                            target,
                            reason: Reason::TransactionControl,
                            prelude,
                            rewrite: Some("ROLLBACK".to_string()),
                            lsn_wait: None,
                        })
                    }
                    _ => Decision::Refuse {
                        sqlstate: "25P02",
                        message: "current transaction is aborted, commands ignored until end of \
                                  transaction block"
                            .to_string(),
                        status: TxStatus::Failed,
                    },
                };
            }
            Tx::Open {
                target: Target::Replica,
                refused,
                ..
            } => {
                if let Some(cause) = statements.iter().find_map(pin_of) {
                    *refused = true;
                    return Decision::Refuse {
                        sqlstate: "25006",
                        message: format!(
                            "pgherd proxy: {} inside a read-only transaction is not supported on \
                             an auto listener, because the transaction runs on a replica; run \
                             it outside the transaction or in a read-write one",
                            cause.describe()
                        ),
                        status: TxStatus::Failed,
                    };
                }
                (Target::Replica, Reason::ReadOnlyTransaction)
            }
            Tx::Open { target, reason, .. } => (*target, *reason),
            Tx::Idle | Tx::Deferred { .. } => self.idle_target(statements),
        };

        let lsn_wait = match (target, self.config.read_your_writes, self.last_commit) {
            (Target::Replica, ReadYourWrites::Replayed, Some(lsn)) if fresh => Some(LsnWait {
                lsn,
                until: now + self.config.max_wait,
            }),
            _ => None,
        };
        self.stage_effects(statements, target, reason);
        Decision::Route(Route {
            target,
            reason,
            prelude,
            rewrite: None,
            lsn_wait,
        })
    }

    /// The target of a message that starts outside any transaction.
    fn idle_target(&self, statements: &[StatementClass]) -> (Target, Reason) {
        if statements.is_empty() {
            return (Target::Primary, Reason::EmptyQuery);
        }
        // `Some(read_only)` while the message has opened a transaction.
        let mut in_tx: Option<bool> = None;
        let mut opens_read_only_tx = false;
        let mut primary: Option<Reason> = None;
        let mut need = |reason: Reason| {
            primary.get_or_insert(reason);
        };
        for statement in statements {
            match statement {
                StatementClass::ReadOnly => {
                    if in_tx == Some(false) {
                        need(Reason::WriteTransaction)
                    }
                    if in_tx.is_none() && self.default_serializable {
                        need(Reason::Serializable)
                    }
                }
                StatementClass::Primary(n) => need(n.reason),
                StatementClass::Begin {
                    read_only,
                    serializable,
                    ..
                } => {
                    if in_tx.is_none() {
                        let read_only = read_only.unwrap_or(self.default_read_only);
                        opens_read_only_tx |= read_only;
                        in_tx = Some(read_only);
                        if serializable.unwrap_or(self.default_serializable) {
                            need(Reason::Serializable)
                        }
                    }
                }
                StatementClass::SetTransaction {
                    read_only,
                    serializable,
                    ..
                } => {
                    if let (Some(mode), Some(current)) = (read_only, in_tx.as_mut()) {
                        *current = *mode;
                        opens_read_only_tx |= *mode;
                    }
                    if in_tx.is_some() && *serializable == Some(true) {
                        need(Reason::Serializable)
                    }
                }
                StatementClass::Commit { chain } | StatementClass::Rollback { chain } => {
                    if in_tx.is_none() {
                        need(Reason::TransactionControl)
                    } else if !chain {
                        in_tx = None
                    }
                }
                StatementClass::Savepoint { .. }
                | StatementClass::ReleaseSavepoint { .. }
                | StatementClass::RollbackToSavepoint { .. } => {
                    if in_tx.is_none() {
                        need(Reason::TransactionControl)
                    }
                }
                StatementClass::SetSession(_)
                | StatementClass::ResetAll
                | StatementClass::DiscardAll => {
                    if in_tx.is_none() {
                        need(Reason::SessionState)
                    }
                }
                StatementClass::SetLocal => {}
            }
        }
        if in_tx == Some(false) {
            need(Reason::WriteTransaction);
        }
        if let Some(reason) = primary {
            return (Target::Primary, reason);
        }
        let reason = if opens_read_only_tx {
            Reason::ReadOnlyTransaction
        } else {
            Reason::ReadOnly
        };
        self.replica_unless_primary_needed(reason)
    }

    /// A replica for reads, unless the session is pinned or must read its own writes from
    /// the primary.
    fn replica_unless_primary_needed(&self, reason: Reason) -> (Target, Reason) {
        if let Some(cause) = self.pin {
            return (Target::Primary, Reason::Pinned(cause));
        }
        if self.wrote && self.config.read_your_writes == ReadYourWrites::Session {
            return (Target::Primary, Reason::ReadYourWrites);
        }
        (Target::Replica, reason)
    }

    /// Records what the message will change once the server confirms it.
    fn stage_effects(&mut self, statements: &[StatementClass], target: Target, reason: Reason) {
        let mut in_tx = matches!(self.tx, Tx::Open { .. });
        let mut failed = self.tx_failed;
        let mut committed = Vec::new();
        let mut pins = Vec::new();
        let mut may_write = false;
        for statement in statements {
            let change = match statement {
                StatementClass::SetSession(setting) => Some(Change::Set(setting.clone())),
                StatementClass::ResetAll => Some(Change::ResetAll),
                StatementClass::DiscardAll => Some(Change::DiscardAll),
                _ => None,
            };
            if let Some(change) = change {
                if in_tx {
                    self.tx_changes.push(change);
                } else {
                    committed.push(change);
                }
                continue;
            }
            match statement {
                StatementClass::Primary(n) => {
                    may_write = true;
                    pins.extend(n.pin);
                }
                StatementClass::Begin { .. } if !in_tx => {
                    in_tx = true;
                    failed = false;
                    self.tx_changes.clear();
                    self.savepoints.clear();
                }
                StatementClass::Commit { chain } => {
                    if failed {
                        self.tx_changes.clear();
                    } else {
                        committed.append(&mut self.tx_changes);
                    }
                    self.savepoints.clear();
                    in_tx = *chain;
                    failed = false;
                }
                StatementClass::Rollback { chain } => {
                    self.tx_changes.clear();
                    self.savepoints.clear();
                    in_tx = *chain;
                    failed = false;
                }
                StatementClass::Savepoint { name } => {
                    self.savepoints.push((name.clone(), self.tx_changes.len()));
                }
                StatementClass::RollbackToSavepoint { name } => {
                    if let Some(i) = self.savepoints.iter().rposition(|(n, _)| n == name) {
                        self.tx_changes.truncate(self.savepoints[i].1);
                        self.savepoints.truncate(i + 1);
                    }
                }
                StatementClass::ReleaseSavepoint { name } => {
                    if let Some(i) = self.savepoints.iter().rposition(|(n, _)| n == name) {
                        self.savepoints.truncate(i);
                    }
                }
                _ => {}
            }
        }
        self.in_flight = Some(InFlight {
            target,
            reason,
            committed,
            pins,
            may_write,
            statements: statements.len(),
        });
    }

    /// The server's `ReadyForQuery` for the routed message.
    pub fn on_ready_for_query(&mut self, ready: Ready) -> AfterReady {
        // A `ReadyForQuery` of a message the router did not route (pipelined after one it
        // did): only the transaction status counts.
        let flight = self.in_flight.take().unwrap_or(InFlight {
            target: ready.served_by,
            reason: match self.tx {
                Tx::Open { reason, .. } => reason,
                _ => Reason::WriteTransaction,
            },
            committed: Vec::new(),
            pins: Vec::new(),
            may_write: false,
            statements: 0,
        });
        for cause in &flight.pins {
            self.pin.get_or_insert(*cause);
        }
        if !flight.committed.is_empty() {
            if !ready.error {
                for change in flight.committed {
                    self.apply(change);
                }
            } else if flight.statements > 1 {
                // Some statements before the error may have taken effect: only the server
                // that ran them knows the session's state now.
                self.pin.get_or_insert(PinCause::ReplayFailed);
            }
        }
        let tx_may_write = match self.tx {
            Tx::Open { may_write, .. } => may_write,
            _ => false,
        } || flight.may_write;
        match ready.status {
            TxStatus::Idle => {
                self.tx = Tx::Idle;
                self.tx_failed = false;
                self.tx_changes.clear();
                self.savepoints.clear();
                let wrote_on_primary = ready.served_by == Target::Primary && tx_may_write;
                if !wrote_on_primary || self.pin.is_some() {
                    return AfterReady::Nothing;
                }
                match self.config.read_your_writes {
                    ReadYourWrites::Replayed => return AfterReady::CaptureLsn,
                    ReadYourWrites::Session => self.wrote = true,
                    ReadYourWrites::Off => {}
                }
            }
            TxStatus::InTransaction | TxStatus::Failed => {
                let reason = if ready.served_by == flight.target {
                    flight.reason
                } else {
                    Reason::NoReplica
                };
                let refused = matches!(self.tx, Tx::Open { refused: true, .. });
                self.tx = Tx::Open {
                    target: ready.served_by,
                    reason,
                    may_write: tx_may_write,
                    refused,
                };
                self.tx_failed = ready.status == TxStatus::Failed;
            }
        }
        AfterReady::Nothing
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Set(setting) => {
                if let Some(read_only) = setting.default_read_only {
                    self.default_read_only = read_only;
                }
                if let Some(serializable) = setting.default_serializable {
                    self.default_serializable = serializable;
                }
                self.settings.retain(|s| s.name != setting.name);
                self.settings.push(setting);
            }
            Change::ResetAll => {
                self.settings.clear();
                self.default_read_only = false;
                self.default_serializable = false;
            }
            Change::DiscardAll => {
                self.settings.clear();
                self.default_read_only = false;
                self.default_serializable = false;
                self.pin = None;
            }
        }
    }
}

/// The pin a statement would cause, if any.
fn pin_of(statement: &StatementClass) -> Option<PinCause> {
    match statement {
        StatementClass::Primary(n) => n.pin,
        _ => None,
    }
}
