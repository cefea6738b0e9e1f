//! Where a statement goes and why: the labels the stats page and `/metrics` count by.

/// The server a statement or transaction is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Primary,
    Replica,
}

impl Target {
    /// Stable label (`target` in `/metrics`).
    pub fn label(self) -> &'static str {
        match self {
            Target::Primary => "primary",
            Target::Replica => "replica",
        }
    }
}

/// Why a session is held on the primary for good: something it created lives on one server
/// connection and cannot be moved or replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinCause {
    /// `CREATE TEMP TABLE`/`SEQUENCE`/`VIEW`, `SELECT INTO TEMP`.
    TempTable,
    /// `LISTEN`: notifications arrive on the connection that listens.
    Listen,
    /// `DECLARE ... WITH HOLD`: the cursor outlives its transaction.
    CursorWithHold,
    /// SQL-level `PREPARE`: the statement exists on one server only.
    PreparedStatement,
    /// `pg_advisory_lock()` and friends (session-level): the lock belongs to the connection.
    AdvisoryLock,
    /// `set_config(name, value, false)`: session state set by a function call, which the
    /// proxy cannot replay.
    SessionStateFunction,
    /// A multi-statement message that changed session settings failed: which of them took
    /// effect is unknown to the router.
    ReplayFailed,
}

impl PinCause {
    pub fn label(self) -> &'static str {
        match self {
            PinCause::TempTable => "temp_table",
            PinCause::Listen => "listen",
            PinCause::CursorWithHold => "cursor_with_hold",
            PinCause::PreparedStatement => "prepared_statement",
            PinCause::AdvisoryLock => "advisory_lock",
            PinCause::SessionStateFunction => "session_state_function",
            PinCause::ReplayFailed => "replay_failed",
        }
    }

    /// What the statement that caused the pin was (for logs and errors).
    pub fn describe(self) -> &'static str {
        match self {
            PinCause::TempTable => "a temporary table",
            PinCause::Listen => "LISTEN",
            PinCause::CursorWithHold => "a cursor WITH HOLD",
            PinCause::PreparedStatement => "a SQL PREPARE",
            PinCause::AdvisoryLock => "a session advisory lock",
            PinCause::SessionStateFunction => "set_config() of a session setting",
            PinCause::ReplayFailed => "a failed query that changed the session's settings",
        }
    }
}

/// Why a statement, transaction or message went where it went. Every routing decision carries
/// one; [`Reason::label`] is the stable name counted in `/metrics` and shown on the stats page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    // ---- replica ----
    /// A statement positively known read-only, outside a transaction.
    ReadOnly,
    /// A statement of a read-only transaction (`BEGIN READ ONLY`, `SET TRANSACTION READ ONLY`,
    /// or the session's default).
    ReadOnlyTransaction,

    // ---- primary: what the statement is ----
    /// `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `TRUNCATE`.
    Write,
    /// `CREATE`/`ALTER`/`DROP`/`GRANT`/`COMMENT`/... (schema or privilege changes).
    Ddl,
    /// `SELECT ... FOR UPDATE/NO KEY UPDATE/SHARE/KEY SHARE`.
    LockingClause,
    /// `SELECT ... INTO` creates a table.
    SelectInto,
    /// `WITH x AS (INSERT/UPDATE/DELETE ...)`.
    DataModifyingCte,
    /// A function known to change state or to depend on this session's server
    /// (`nextval`, `setval`, `currval`, transaction-level advisory locks, `pg_notify`,
    /// `lo_*`, `txid_current`, `pg_current_xact_id`, ...).
    WriteFunction,
    /// A function on neither the built-in read-only list nor `read_only_functions`
    /// (user functions, custom operators, `CALL`).
    UnknownFunction,
    /// `COPY ... FROM`.
    CopyFrom,
    /// `COPY ... TO` a server file or program (the primary's file system is meant).
    CopyToFile,
    /// `LISTEN`, `UNLISTEN`, `NOTIFY`.
    ListenNotify,
    /// `SET`, `RESET`, `DISCARD` outside a transaction (recorded for replay on replicas).
    SessionState,
    /// `COMMIT`/`ROLLBACK`/`SAVEPOINT` outside any transaction (PostgreSQL warns).
    TransactionControl,
    /// Creates a temporary object (and pins the session).
    TempTable,
    /// SQL `PREPARE`/`EXECUTE` (pins the session).
    PreparedStatement,
    /// `DECLARE ... WITH HOLD` (pins the session).
    CursorWithHold,
    /// A session-level advisory lock (pins the session).
    AdvisoryLock,
    /// `set_config(..., false)` (pins the session).
    SessionStateFunction,
    /// A statement outside the read-only whitelist that none of the above describes
    /// (`VACUUM`, `LOCK`, `CHECKPOINT`, `DO`, cursor commands outside a transaction, ...).
    OtherStatement,
    /// The parser did not accept the text.
    Unparsable,
    /// The text starts with Pgpool-II's `/*NO LOAD BALANCE*/` comment.
    NoLoadBalanceHint,
    /// An empty query string.
    EmptyQuery,

    // ---- primary: what the session is doing ----
    /// A statement of a read-write transaction (a plain `BEGIN` runs on the primary in full).
    WriteTransaction,
    /// A read under `SERIALIZABLE` isolation (the transaction's or the session's default):
    /// hot standbys refuse it.
    Serializable,
    /// The session is pinned to the primary (see [`PinCause`]).
    Pinned(PinCause),
    /// A read after this session's write, before a replica replayed it (or any read after a
    /// write with `read_your_writes: session`).
    ReadYourWrites,
    /// No replica is routable (or none answered): the primary serves the read.
    NoReplica,
}

impl Reason {
    /// Stable snake_case label (`reason` in `/metrics`).
    pub fn label(self) -> &'static str {
        match self {
            Reason::ReadOnly => "read_only",
            Reason::ReadOnlyTransaction => "read_only_transaction",
            Reason::Write => "write",
            Reason::Ddl => "ddl",
            Reason::LockingClause => "locking_clause",
            Reason::SelectInto => "select_into",
            Reason::DataModifyingCte => "data_modifying_cte",
            Reason::WriteFunction => "write_function",
            Reason::UnknownFunction => "unknown_function",
            Reason::CopyFrom => "copy_from",
            Reason::CopyToFile => "copy_to_file",
            Reason::ListenNotify => "listen_notify",
            Reason::SessionState => "session_state",
            Reason::TransactionControl => "transaction_control",
            Reason::TempTable => "temp_table",
            Reason::PreparedStatement => "prepared_statement",
            Reason::CursorWithHold => "cursor_with_hold",
            Reason::AdvisoryLock => "advisory_lock",
            Reason::SessionStateFunction => "session_state_function",
            Reason::OtherStatement => "other_statement",
            Reason::Unparsable => "unparsable",
            Reason::NoLoadBalanceHint => "no_load_balance_hint",
            Reason::EmptyQuery => "empty_query",
            Reason::WriteTransaction => "write_transaction",
            Reason::Serializable => "serializable",
            Reason::Pinned(PinCause::TempTable) => "pinned_temp_table",
            Reason::Pinned(PinCause::Listen) => "pinned_listen",
            Reason::Pinned(PinCause::CursorWithHold) => "pinned_cursor_with_hold",
            Reason::Pinned(PinCause::PreparedStatement) => "pinned_prepared_statement",
            Reason::Pinned(PinCause::AdvisoryLock) => "pinned_advisory_lock",
            Reason::Pinned(PinCause::SessionStateFunction) => "pinned_session_state_function",
            Reason::Pinned(PinCause::ReplayFailed) => "pinned_replay_failed",
            Reason::ReadYourWrites => "read_your_writes",
            Reason::NoReplica => "no_replica",
        }
    }

    /// The reason a pinning statement itself goes to the primary.
    pub fn of_pin(cause: PinCause) -> Reason {
        match cause {
            PinCause::TempTable => Reason::TempTable,
            PinCause::Listen => Reason::ListenNotify,
            PinCause::CursorWithHold => Reason::CursorWithHold,
            PinCause::PreparedStatement => Reason::PreparedStatement,
            PinCause::AdvisoryLock => Reason::AdvisoryLock,
            PinCause::SessionStateFunction => Reason::SessionStateFunction,
            PinCause::ReplayFailed => Reason::Pinned(PinCause::ReplayFailed),
        }
    }

    /// Every reason, for metrics that list all label values and for the label tests.
    pub const ALL: [Reason; 33] = [
        Reason::ReadOnly,
        Reason::ReadOnlyTransaction,
        Reason::Write,
        Reason::Ddl,
        Reason::LockingClause,
        Reason::SelectInto,
        Reason::DataModifyingCte,
        Reason::WriteFunction,
        Reason::UnknownFunction,
        Reason::CopyFrom,
        Reason::CopyToFile,
        Reason::ListenNotify,
        Reason::SessionState,
        Reason::TransactionControl,
        Reason::TempTable,
        Reason::PreparedStatement,
        Reason::CursorWithHold,
        Reason::AdvisoryLock,
        Reason::SessionStateFunction,
        Reason::OtherStatement,
        Reason::Unparsable,
        Reason::EmptyQuery,
        Reason::WriteTransaction,
        Reason::Serializable,
        Reason::Pinned(PinCause::TempTable),
        Reason::Pinned(PinCause::Listen),
        Reason::Pinned(PinCause::CursorWithHold),
        Reason::Pinned(PinCause::PreparedStatement),
        Reason::Pinned(PinCause::AdvisoryLock),
        Reason::Pinned(PinCause::SessionStateFunction),
        Reason::Pinned(PinCause::ReplayFailed),
        Reason::ReadYourWrites,
        Reason::NoReplica,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn labels_are_distinct_snake_case() {
        let labels: HashSet<&str> = Reason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
        for label in labels {
            assert!(
                label.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{label}"
            );
        }
    }
}
