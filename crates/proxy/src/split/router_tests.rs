//! The session router driven the way the proxy drives it: a query, then the server's
//! `ReadyForQuery`. Each test is one of the failure modes other poolers' users reported.

use super::classify::Classifier;
use super::functions::FunctionPolicy;
use super::reason::{PinCause, Reason, Target};
use super::router::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

struct Session {
    router: Router,
    now: Instant,
}

const PRIMARY: Target = Target::Primary;
const REPLICA: Target = Target::Replica;

fn session() -> Session {
    session_with(RouterConfig::default())
}

fn session_with(config: RouterConfig) -> Session {
    Session {
        router: Router::new(
            config,
            Arc::new(Classifier::new(FunctionPolicy::new([
                "report_total".to_string()
            ]))),
        ),
        now: Instant::now(),
    }
}

impl Session {
    /// Sends `sql`, expects it routed, and lets the server answer with `status`.
    fn run(&mut self, sql: &str, status: TxStatus) -> Route {
        self.run_with(sql, status, false)
    }

    fn run_with(&mut self, sql: &str, status: TxStatus, error: bool) -> Route {
        match self.router.route_query(sql, self.now) {
            Decision::Route(route) => {
                self.router.on_ready_for_query(Ready {
                    status,
                    error,
                    served_by: route.target,
                });
                route
            }
            other => panic!("{sql}: expected a route, got {other:?}"),
        }
    }

    /// Autocommit statement: the server is idle after it.
    fn auto(&mut self, sql: &str) -> (Target, Reason) {
        let route = self.run(sql, TxStatus::Idle);
        (route.target, route.reason)
    }

    fn answered(&mut self, sql: &str) -> (&'static str, TxStatus) {
        match self.router.route_query(sql, self.now) {
            Decision::Answer { tag, status } => (tag, status),
            other => panic!("{sql}: expected a local answer, got {other:?}"),
        }
    }

    fn refused(&mut self, sql: &str) -> &'static str {
        match self.router.route_query(sql, self.now) {
            Decision::Refuse { sqlstate, .. } => sqlstate,
            other => panic!("{sql}: expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn plain_reads_go_to_replicas_and_writes_to_the_primary() {
    let mut s = session_with(RouterConfig {
        read_your_writes: ReadYourWrites::Off,
        max_wait: Duration::ZERO,
    });
    assert_eq!(s.auto("SELECT * FROM t"), (REPLICA, Reason::ReadOnly));
    assert_eq!(s.auto("INSERT INTO t VALUES (1)"), (PRIMARY, Reason::Write));
    assert_eq!(s.auto("SELECT * FROM t"), (REPLICA, Reason::ReadOnly));
    assert_eq!(
        s.auto("SELECT * FROM t FOR UPDATE"),
        (PRIMARY, Reason::LockingClause)
    );
    assert_eq!(s.auto("SELECT report_total()"), (REPLICA, Reason::ReadOnly));
}

#[test]
fn a_write_inside_a_function_called_from_select_goes_to_the_primary() {
    let mut s = session();
    assert_eq!(
        s.auto("SELECT create_order(42)"),
        (PRIMARY, Reason::UnknownFunction)
    );
    assert_eq!(
        s.auto("SELECT * FROM t WHERE id = (SELECT bump_counter())"),
        (PRIMARY, Reason::UnknownFunction)
    );
}

#[test]
fn a_multi_statement_query_mixing_read_and_write_goes_to_the_primary_whole() {
    let mut s = session();
    assert_eq!(
        s.auto("SELECT * FROM t; UPDATE t SET v = 1"),
        (PRIMARY, Reason::Write)
    );
    assert_eq!(s.auto("SELECT 1; SELECT 2"), (REPLICA, Reason::ReadOnly));
}

#[test]
fn a_plain_begin_is_deferred_and_its_transaction_runs_on_the_primary_in_full() {
    let mut s = session();
    assert_eq!(s.answered("BEGIN"), ("BEGIN", TxStatus::InTransaction));
    // The transaction starts with a read, then writes: never split.
    let first = s.run(
        "SELECT balance FROM accounts WHERE id = 1",
        TxStatus::InTransaction,
    );
    assert_eq!(
        (first.target, first.reason),
        (PRIMARY, Reason::WriteTransaction)
    );
    assert_eq!(first.prelude, vec!["BEGIN".to_string()]);
    let write = s.run(
        "UPDATE accounts SET balance = 0 WHERE id = 1",
        TxStatus::InTransaction,
    );
    assert_eq!((write.target, write.prelude.len()), (PRIMARY, 0));
    let read = s.run("SELECT 1", TxStatus::InTransaction);
    assert_eq!(read.target, PRIMARY);
    assert_eq!(s.run("COMMIT", TxStatus::Idle).target, PRIMARY);
    // After the transaction, reads may leave the primary again (with the LSN wait).
    let after = s.run("SELECT 1", TxStatus::Idle);
    assert_eq!(after.target, REPLICA);
}

#[test]
fn begin_then_set_transaction_read_only_goes_to_a_replica() {
    let mut s = session();
    assert_eq!(s.answered("BEGIN"), ("BEGIN", TxStatus::InTransaction));
    assert_eq!(
        s.answered("SET TRANSACTION READ ONLY"),
        ("SET", TxStatus::InTransaction)
    );
    let first = s.run("SELECT * FROM t", TxStatus::InTransaction);
    assert_eq!(
        (first.target, first.reason),
        (REPLICA, Reason::ReadOnlyTransaction)
    );
    assert_eq!(
        first.prelude,
        vec!["BEGIN".to_string(), "SET TRANSACTION READ ONLY".to_string()]
    );
    assert_eq!(s.run("SELECT 2", TxStatus::InTransaction).target, REPLICA);
    assert_eq!(s.run("COMMIT", TxStatus::Idle).target, REPLICA);
}

#[test]
fn begin_read_only_and_start_transaction_read_only_go_to_a_replica() {
    for begin in [
        "BEGIN READ ONLY",
        "START TRANSACTION READ ONLY",
        "begin isolation level repeatable read, read only",
    ] {
        let mut s = session();
        let route = s.run(begin, TxStatus::InTransaction);
        assert_eq!(
            (route.target, route.reason),
            (REPLICA, Reason::ReadOnlyTransaction),
            "{begin}"
        );
        assert_eq!(s.run("SELECT 1", TxStatus::InTransaction).target, REPLICA);
        // A write inside a read-only transaction stays with it (the replica refuses it, as
        // the primary would in a READ ONLY transaction).
        assert_eq!(
            s.run_with("INSERT INTO t VALUES (1)", TxStatus::Failed, true)
                .target,
            REPLICA
        );
        assert_eq!(s.run("ROLLBACK", TxStatus::Idle).target, REPLICA);
    }
}

#[test]
fn a_transaction_that_starts_read_only_and_then_writes_is_never_split() {
    let mut s = session();
    // Explicit read-write mode: no deferral needed.
    let begin = s.run("BEGIN READ WRITE", TxStatus::InTransaction);
    assert_eq!(begin.target, PRIMARY);
    assert_eq!(
        s.run("SELECT * FROM t", TxStatus::InTransaction).target,
        PRIMARY
    );
    assert_eq!(
        s.run("DELETE FROM t", TxStatus::InTransaction).target,
        PRIMARY
    );
    s.run("COMMIT", TxStatus::Idle);
    // BEGIN then SET TRANSACTION READ WRITE after a deferred BEGIN: primary.
    let mut s = session();
    s.answered("BEGIN");
    s.answered("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE");
    let read = s.run("SELECT 1", TxStatus::InTransaction);
    assert_eq!((read.target, read.prelude.len()), (PRIMARY, 2));
}

#[test]
fn an_empty_deferred_transaction_is_answered_by_the_proxy() {
    let mut s = session();
    s.answered("BEGIN");
    assert_eq!(s.answered("COMMIT"), ("COMMIT", TxStatus::Idle));
    s.answered("BEGIN");
    assert_eq!(s.answered("ROLLBACK"), ("ROLLBACK", TxStatus::Idle));
    assert_eq!(s.auto("SELECT 1").0, REPLICA);
}

#[test]
fn session_default_read_only_sends_plain_transactions_to_replicas() {
    for set in [
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        "SET default_transaction_read_only = on",
    ] {
        let mut s = session();
        assert_eq!(s.auto(set), (PRIMARY, Reason::SessionState));
        s.answered("BEGIN");
        let first = s.run("SELECT 1", TxStatus::InTransaction);
        assert_eq!(
            (first.target, first.reason),
            (REPLICA, Reason::ReadOnlyTransaction)
        );
        s.run("COMMIT", TxStatus::Idle);
        // ...unless the transaction says READ WRITE.
        assert_eq!(
            s.run("BEGIN READ WRITE", TxStatus::InTransaction).target,
            PRIMARY
        );
        s.run("COMMIT", TxStatus::Idle);
        s.answered("BEGIN");
        s.answered("SET TRANSACTION READ WRITE");
        assert_eq!(s.run("SELECT 1", TxStatus::InTransaction).target, PRIMARY);
        s.run("COMMIT", TxStatus::Idle);
        // Back to read-write.
        s.auto("SET default_transaction_read_only = off");
        s.answered("BEGIN");
        assert_eq!(s.run("SELECT 1", TxStatus::InTransaction).target, PRIMARY);
    }
}

/// Hot standbys refuse SERIALIZABLE ("cannot use serializable mode in a hot standby"), even
/// for read-only transactions and when it is only the session's default: those reads run on
/// the primary.
#[test]
fn serializable_reads_run_on_the_primary() {
    for begin in [
        "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY",
        "START TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE",
    ] {
        let mut s = session();
        let route = s.run(begin, TxStatus::InTransaction);
        assert_eq!(
            (route.target, route.reason),
            (PRIMARY, Reason::Serializable),
            "{begin}"
        );
        assert_eq!(s.run("SELECT 1", TxStatus::InTransaction).target, PRIMARY);
        s.run("COMMIT", TxStatus::Idle);
        assert_eq!(
            s.auto("SELECT 1").0,
            REPLICA,
            "{begin}: one transaction only"
        );
    }
    // A deferred BEGIN, then SET TRANSACTION in either order.
    let mut s = session();
    s.answered("BEGIN");
    s.answered("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE");
    s.answered("SET TRANSACTION READ ONLY");
    let read = s.run("SELECT 1", TxStatus::InTransaction);
    assert_eq!((read.target, read.reason), (PRIMARY, Reason::Serializable));
    assert_eq!(read.prelude.len(), 3);
    s.run("COMMIT", TxStatus::Idle);
    // REPEATABLE READ is fine on a standby.
    s.answered("BEGIN");
    s.answered("SET TRANSACTION READ ONLY, ISOLATION LEVEL REPEATABLE READ");
    assert_eq!(s.run("SELECT 1", TxStatus::InTransaction).target, REPLICA);
    s.run("COMMIT", TxStatus::Idle);

    // The session's default (pgJDBC's setTransactionIsolation sends the first form).
    for set in [
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET default_transaction_isolation = 'serializable'",
    ] {
        let mut s = session();
        s.auto(set);
        assert_eq!(s.auto("SELECT 1"), (PRIMARY, Reason::Serializable), "{set}");
        let route = s.run("BEGIN READ ONLY", TxStatus::InTransaction);
        assert_eq!(
            (route.target, route.reason),
            (PRIMARY, Reason::Serializable)
        );
        s.run("COMMIT", TxStatus::Idle);
        // A transaction that names another level may use a replica.
        assert_eq!(
            s.run(
                "BEGIN READ ONLY ISOLATION LEVEL READ COMMITTED",
                TxStatus::InTransaction
            )
            .target,
            REPLICA,
            "{set}"
        );
        s.run("COMMIT", TxStatus::Idle);
        s.auto("RESET default_transaction_isolation");
        s.auto("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED");
        assert_eq!(
            s.auto("SELECT 1").0,
            REPLICA,
            "{set}: back to read committed"
        );
    }
    // A failed SET changes nothing; RESET ALL and DISCARD ALL clear the default.
    let mut s = session();
    s.run_with(
        "SET default_transaction_isolation = 'serializable'",
        TxStatus::Idle,
        true,
    );
    assert_eq!(s.auto("SELECT 1").0, REPLICA);
    for reset in ["RESET ALL", "DISCARD ALL"] {
        s.auto("SET default_transaction_isolation = 'serializable'");
        assert_eq!(s.auto("SELECT 1").0, PRIMARY);
        s.auto(reset);
        assert_eq!(s.auto("SELECT 1").0, REPLICA, "{reset}");
    }
}

#[test]
fn a_failed_default_read_only_set_changes_nothing() {
    let mut s = session();
    s.run_with(
        "SET default_transaction_read_only = on",
        TxStatus::Idle,
        true,
    );
    s.answered("BEGIN");
    assert_eq!(s.run("SELECT 1", TxStatus::InTransaction).target, PRIMARY);
}

/// The recorded settings as one text (`RESET ALL` then each entry's statement).
fn replay(router: &Router) -> String {
    let mut sql = String::from("RESET ALL");
    for setting in router.settings() {
        sql.push_str("; ");
        sql.push_str(&setting.replay);
    }
    sql
}

#[test]
fn set_of_a_session_variable_followed_by_a_read_is_recorded() {
    let mut s = session();
    assert!(s.router.settings().is_empty());
    assert_eq!(
        s.auto("SET search_path TO app, public"),
        (PRIMARY, Reason::SessionState)
    );
    let read = s.run("SELECT * FROM orders", TxStatus::Idle);
    assert_eq!(read.target, REPLICA);
    assert_eq!(
        replay(&s.router),
        "RESET ALL; SET search_path = app, public"
    );
    s.auto("SET statement_timeout = '5s'");
    s.auto("SET search_path = other");
    assert_eq!(
        replay(&s.router),
        "RESET ALL; SET statement_timeout = '5s'; SET search_path = other"
    );
    s.auto("RESET statement_timeout");
    assert_eq!(
        replay(&s.router),
        "RESET ALL; SET search_path = other; RESET statement_timeout"
    );
    s.auto("RESET ALL");
    assert_eq!(replay(&s.router), "RESET ALL");
}

#[test]
fn a_failed_set_is_not_replayed() {
    let mut s = session();
    s.run_with("SET work_mem = 'lots'", TxStatus::Idle, true);
    assert_eq!(replay(&s.router), "RESET ALL");
    assert_eq!(s.router.pinned(), None);
}

#[test]
fn set_inside_a_transaction_counts_only_once_committed() {
    let mut s = session();
    s.answered("BEGIN");
    s.run("SET search_path = a", TxStatus::InTransaction);
    s.run("ROLLBACK", TxStatus::Idle);
    assert_eq!(replay(&s.router), "RESET ALL");

    s.answered("BEGIN");
    s.run("SET search_path = b", TxStatus::InTransaction);
    s.run("SET LOCAL work_mem = '64MB'", TxStatus::InTransaction);
    s.run("COMMIT", TxStatus::Idle);
    assert_eq!(replay(&s.router), "RESET ALL; SET search_path = b");

    // A COMMIT of a failed transaction rolls back.
    s.answered("BEGIN");
    s.run("SET search_path = c", TxStatus::InTransaction);
    s.run_with("SELECT 1/0", TxStatus::Failed, true);
    s.run("COMMIT", TxStatus::Idle);
    assert_eq!(replay(&s.router), "RESET ALL; SET search_path = b");
}

#[test]
fn rollback_to_savepoint_undoes_the_sets_after_it() {
    let mut s = session();
    s.run("BEGIN READ WRITE", TxStatus::InTransaction);
    s.run("SET search_path = a", TxStatus::InTransaction);
    s.run("SAVEPOINT sp", TxStatus::InTransaction);
    s.run("SET timezone = 'UTC'", TxStatus::InTransaction);
    s.run("ROLLBACK TO SAVEPOINT sp", TxStatus::InTransaction);
    s.run("SET work_mem = '1MB'", TxStatus::InTransaction);
    s.run("RELEASE SAVEPOINT sp", TxStatus::InTransaction);
    s.run("COMMIT", TxStatus::Idle);
    assert_eq!(
        replay(&s.router),
        "RESET ALL; SET search_path = a; SET work_mem = '1MB'"
    );
}

#[test]
fn set_inside_a_read_only_transaction_runs_on_the_replica_and_is_recorded() {
    let mut s = session();
    s.run("BEGIN READ ONLY", TxStatus::InTransaction);
    assert_eq!(
        s.run("SET search_path = r", TxStatus::InTransaction).target,
        REPLICA
    );
    s.run("COMMIT", TxStatus::Idle);
    assert_eq!(replay(&s.router), "RESET ALL; SET search_path = r");
}

#[test]
fn a_prepared_statement_created_on_one_server_is_executed_on_the_same_one() {
    // SQL-level PREPARE: the statement lives on the primary connection, so the session stays
    // there.
    let mut s = session();
    assert_eq!(
        s.auto("PREPARE q(int) AS SELECT * FROM t WHERE id = $1"),
        (PRIMARY, Reason::PreparedStatement)
    );
    assert_eq!(s.router.pinned(), Some(PinCause::PreparedStatement));
    assert_eq!(s.auto("EXECUTE q(1)"), (PRIMARY, Reason::PreparedStatement));
    assert_eq!(
        s.auto("SELECT 1"),
        (PRIMARY, Reason::Pinned(PinCause::PreparedStatement))
    );
    // DISCARD ALL drops it: the session may move again.
    s.auto("DISCARD ALL");
    assert_eq!(s.auto("SELECT 1").0, REPLICA);
}

#[test]
fn extended_protocol_statements_are_routed_by_what_they_contain() {
    // Named statements of the extended protocol: the pool re-prepares them on whichever
    // server runs them, so each execution goes where its text says.
    let mut s = session();
    s.router.on_parse("read", "SELECT * FROM t WHERE id = $1");
    s.router
        .on_parse("write", "UPDATE t SET v = $2 WHERE id = $1");
    let run = |s: &mut Session, names: &[&str]| match s.router.route_prepared(names, s.now) {
        Decision::Route(route) => {
            s.router.on_ready_for_query(Ready {
                status: TxStatus::Idle,
                error: false,
                served_by: route.target,
            });
            (route.target, route.reason)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(run(&mut s, &["read"]), (REPLICA, Reason::ReadOnly));
    assert_eq!(run(&mut s, &["write"]), (PRIMARY, Reason::Write));
    assert_eq!(run(&mut s, &["read", "write"]), (PRIMARY, Reason::Write));
    assert_eq!(run(&mut s, &["missing"]), (PRIMARY, Reason::OtherStatement));
    s.router.on_close("read");
    assert_eq!(run(&mut s, &["read"]), (PRIMARY, Reason::OtherStatement));
}

#[test]
fn an_extended_protocol_begin_is_not_deferred() {
    let mut s = session();
    s.router.on_parse("", "BEGIN");
    match s.router.route_prepared(&[""], s.now) {
        Decision::Route(route) => {
            assert_eq!(
                (route.target, route.reason),
                (PRIMARY, Reason::WriteTransaction)
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pins_keep_the_session_on_the_primary() {
    for (sql, cause) in [
        ("CREATE TEMP TABLE tmp (id int)", PinCause::TempTable),
        ("SELECT 1 INTO TEMP tmp", PinCause::TempTable),
        ("LISTEN jobs", PinCause::Listen),
        ("SELECT pg_advisory_lock(7)", PinCause::AdvisoryLock),
        (
            "SELECT set_config('app.user', 'x', false)",
            PinCause::SessionStateFunction,
        ),
    ] {
        let mut s = session();
        assert_eq!(s.auto(sql).0, PRIMARY, "{sql}");
        assert_eq!(s.router.pinned(), Some(cause), "{sql}");
        assert_eq!(
            s.auto("SELECT * FROM tmp"),
            (PRIMARY, Reason::Pinned(cause))
        );
        // A pinned session's BEGIN is not deferred.
        assert_eq!(s.run("BEGIN", TxStatus::InTransaction).target, PRIMARY);
        s.run("COMMIT", TxStatus::Idle);
    }
    let mut s = session();
    s.run("BEGIN READ WRITE", TxStatus::InTransaction);
    s.run(
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        TxStatus::InTransaction,
    );
    s.run("COMMIT", TxStatus::Idle);
    assert_eq!(
        s.auto("FETCH 1 FROM c"),
        (PRIMARY, Reason::Pinned(PinCause::CursorWithHold))
    );
}

#[test]
fn a_pinning_statement_inside_a_replica_transaction_is_refused() {
    let mut s = session();
    s.run("BEGIN READ ONLY", TxStatus::InTransaction);
    assert_eq!(s.refused("SELECT pg_advisory_lock(1)"), "25006");
    // The transaction is failed for the client, as PostgreSQL would have it.
    assert_eq!(s.refused("SELECT 1"), "25P02");
    let end = s.run("COMMIT", TxStatus::Idle);
    assert_eq!(end.rewrite.as_deref(), Some("ROLLBACK"));
    assert_eq!(end.target, REPLICA);
    assert_eq!(s.router.pinned(), None);
    assert_eq!(s.auto("SELECT 1").0, REPLICA);
}

#[test]
fn read_your_writes_replayed_requires_the_commit_lsn_on_replicas() {
    let mut s = session_with(RouterConfig {
        read_your_writes: ReadYourWrites::Replayed,
        max_wait: Duration::from_millis(50),
    });
    let read = s.run("SELECT 1", TxStatus::Idle);
    assert_eq!(read.lsn_wait, None);
    // A write commits: the proxy must read the LSN before releasing the connection.
    let Decision::Route(write) = s.router.route_query("INSERT INTO t VALUES (1)", s.now) else {
        panic!()
    };
    let after = s.router.on_ready_for_query(Ready {
        status: TxStatus::Idle,
        error: false,
        served_by: write.target,
    });
    assert_eq!(after, AfterReady::CaptureLsn);
    let lsn = Lsn::parse("0/3000148").unwrap();
    s.router.on_commit_lsn(lsn);
    let read = s.run("SELECT * FROM t", TxStatus::Idle);
    assert_eq!(read.target, REPLICA);
    assert_eq!(
        read.lsn_wait,
        Some(LsnWait {
            lsn,
            until: s.now + Duration::from_millis(50)
        })
    );
    // Inside a replica transaction only its first message carries the wait: the connection
    // is bound by then.
    let begin = s.run("BEGIN READ ONLY", TxStatus::InTransaction);
    assert!(begin.lsn_wait.is_some());
    let inside = s.run("SELECT 1", TxStatus::InTransaction);
    assert_eq!((inside.target, inside.lsn_wait), (REPLICA, None));
    s.run("COMMIT", TxStatus::Idle);
    s.answered("BEGIN");
    s.answered("SET TRANSACTION READ ONLY");
    assert!(s
        .run("SELECT 1", TxStatus::InTransaction)
        .lsn_wait
        .is_some());
    s.run("COMMIT", TxStatus::Idle);
    // An older LSN never lowers the requirement.
    s.router.on_commit_lsn(Lsn::parse("0/1000000").unwrap());
    assert_eq!(s.router.last_commit(), Some(lsn));
}

#[test]
fn read_your_writes_no_capture_after_reads_or_in_pinned_sessions() {
    let mut s = session();
    let ready = |s: &mut Session, sql: &str| {
        let Decision::Route(route) = s.router.route_query(sql, s.now) else {
            panic!("{sql}")
        };
        s.router.on_ready_for_query(Ready {
            status: TxStatus::Idle,
            error: false,
            served_by: route.target,
        })
    };
    assert_eq!(ready(&mut s, "SELECT 1"), AfterReady::Nothing);
    // A read that fell back to the primary did not write.
    let Decision::Route(route) = s.router.route_query("SELECT 1", s.now) else {
        panic!()
    };
    assert_eq!(route.target, REPLICA);
    let after = s.router.on_ready_for_query(Ready {
        status: TxStatus::Idle,
        error: false,
        served_by: PRIMARY,
    });
    assert_eq!(after, AfterReady::Nothing);
    // A plain transaction that only read: no capture; one that wrote: capture at COMMIT.
    s.answered("BEGIN");
    s.run("SELECT 1", TxStatus::InTransaction);
    assert_eq!(ready(&mut s, "COMMIT"), AfterReady::Nothing);
    s.answered("BEGIN");
    s.run("UPDATE t SET v = 1", TxStatus::InTransaction);
    assert_eq!(ready(&mut s, "COMMIT"), AfterReady::CaptureLsn);
    // Pinned: everything is on the primary anyway.
    s.auto("LISTEN x");
    assert_eq!(ready(&mut s, "DELETE FROM t"), AfterReady::Nothing);
}

#[test]
fn read_your_writes_session_sends_reads_after_a_write_to_the_primary() {
    let mut s = session_with(RouterConfig {
        read_your_writes: ReadYourWrites::Session,
        max_wait: Duration::ZERO,
    });
    assert_eq!(s.auto("SELECT 1").0, REPLICA);
    s.auto("INSERT INTO t VALUES (1)");
    assert_eq!(s.auto("SELECT * FROM t"), (PRIMARY, Reason::ReadYourWrites));
    let ro = s.run("BEGIN READ ONLY", TxStatus::InTransaction);
    assert_eq!((ro.target, ro.reason), (PRIMARY, Reason::ReadYourWrites));
}

#[test]
fn read_your_writes_off_keeps_reads_on_replicas() {
    let mut s = session_with(RouterConfig {
        read_your_writes: ReadYourWrites::Off,
        max_wait: Duration::ZERO,
    });
    s.auto("INSERT INTO t VALUES (1)");
    let read = s.run("SELECT * FROM t", TxStatus::Idle);
    assert_eq!((read.target, read.lsn_wait), (REPLICA, None));
}

#[test]
fn a_replica_transaction_served_by_the_primary_stays_there() {
    // No replica was routable: the caller ran BEGIN READ ONLY on the primary.
    let mut s = session();
    let Decision::Route(route) = s.router.route_query("BEGIN READ ONLY", s.now) else {
        panic!()
    };
    assert_eq!(route.target, REPLICA);
    s.router.on_ready_for_query(Ready {
        status: TxStatus::InTransaction,
        error: false,
        served_by: PRIMARY,
    });
    let next = s.run("SELECT 1", TxStatus::InTransaction);
    assert_eq!((next.target, next.reason), (PRIMARY, Reason::NoReplica));
}

#[test]
fn multi_statement_transactions_in_one_query() {
    let mut s = session();
    let ro = s.run("BEGIN READ ONLY; SELECT 1; COMMIT", TxStatus::Idle);
    assert_eq!(
        (ro.target, ro.reason),
        (REPLICA, Reason::ReadOnlyTransaction)
    );
    let rw = s.run("BEGIN; SELECT 1; COMMIT", TxStatus::Idle);
    assert_eq!((rw.target, rw.reason), (PRIMARY, Reason::WriteTransaction));
    let set_ro = s.run(
        "BEGIN; SET TRANSACTION READ ONLY; SELECT 1; COMMIT",
        TxStatus::Idle,
    );
    assert_eq!(set_ro.target, REPLICA);
    // A transaction left open by the message continues where it started.
    let open = s.run("BEGIN; SELECT 1", TxStatus::InTransaction);
    assert_eq!(open.target, PRIMARY);
    assert_eq!(s.run("SELECT 2", TxStatus::InTransaction).target, PRIMARY);
    s.run("COMMIT", TxStatus::Idle);
    // A SET and a read in one message: the primary, and the SET is recorded.
    assert_eq!(
        s.auto("SET search_path = x; SELECT 1"),
        (PRIMARY, Reason::SessionState)
    );
    assert_eq!(replay(&s.router), "RESET ALL; SET search_path = x");
}

#[test]
fn a_multi_statement_query_that_fails_after_a_set_pins_the_session() {
    let mut s = session();
    s.run_with("SET search_path = x; SELECT 1/0", TxStatus::Idle, true);
    assert_eq!(s.router.pinned(), Some(PinCause::ReplayFailed));
}

#[test]
fn a_pinned_session_reads_on_the_primary() {
    let mut s = session();
    s.run_with("SET my.setting = 'x'; SELECT 1/0", TxStatus::Idle, true);
    assert_eq!(
        s.auto("SELECT 1"),
        (PRIMARY, Reason::Pinned(PinCause::ReplayFailed))
    );
}

#[test]
fn unparsable_and_empty_queries_go_to_the_primary() {
    let mut s = session();
    assert_eq!(s.auto("SELEC * FROM t"), (PRIMARY, Reason::Unparsable));
    assert_eq!(s.auto(""), (PRIMARY, Reason::EmptyQuery));
    assert_eq!(s.auto("COMMIT"), (PRIMARY, Reason::TransactionControl));
}

#[test]
fn lsn_text_round_trips() {
    for text in ["0/0", "0/3000148", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
        let lsn = Lsn::parse(text).unwrap();
        assert_eq!(lsn.to_string(), text);
    }
    assert!(Lsn::parse("0/3000148").unwrap() > Lsn::parse("0/2FFFFFF").unwrap());
    assert!(Lsn::parse("1/0").unwrap() > Lsn::parse("0/FFFFFFFF").unwrap());
    for bad in ["", "0", "x/1", "1/", "/1", "100000000/0"] {
        assert_eq!(Lsn::parse(bad), None, "{bad}");
    }
}
