//! The classifier against a table of statements, including the failure modes other poolers'
//! users reported (writes hidden in functions, locking reads, `SELECT INTO`, data-modifying
//! CTEs, sequences, `COPY` directions, `EXPLAIN ANALYZE` of writes).

use super::classify::{Classifier, StatementClass};
use super::functions::FunctionPolicy;

/// A compact form of a classification: one word per statement, `; `-separated.
fn summary(classifier: &Classifier, sql: &str) -> String {
    classifier
        .classify(sql)
        .statements
        .iter()
        .map(|s| match s {
            StatementClass::ReadOnly => "ro".to_string(),
            StatementClass::Primary(n) => match n.pin {
                Some(cause) => format!("pin {}", cause.label()),
                None => n.reason.label().to_string(),
            },
            StatementClass::Begin {
                read_only,
                serializable,
                ..
            } => transaction_modes("begin", *read_only, *serializable),
            StatementClass::SetTransaction {
                read_only,
                serializable,
                ..
            } => transaction_modes("set_tx", *read_only, *serializable),
            StatementClass::Commit { chain: false } => "commit".to_string(),
            StatementClass::Commit { chain: true } => "commit chain".to_string(),
            StatementClass::Rollback { chain: false } => "rollback".to_string(),
            StatementClass::Rollback { chain: true } => "rollback chain".to_string(),
            StatementClass::Savepoint { name } => format!("savepoint {name}"),
            StatementClass::ReleaseSavepoint { name } => format!("release {name}"),
            StatementClass::RollbackToSavepoint { name } => format!("rollback_to {name}"),
            StatementClass::SetSession(s) => match (s.default_read_only, s.default_serializable) {
                (None, None) => format!("set {}", s.name),
                (Some(ro), None) => format!("set default_ro={ro}"),
                (None, Some(ser)) => format!("set default_serializable={ser}"),
                (Some(ro), Some(ser)) => format!("set default_ro={ro} default_serializable={ser}"),
            },
            StatementClass::SetLocal => "set_local".to_string(),
            StatementClass::ResetAll => "reset_all".to_string(),
            StatementClass::DiscardAll => "discard_all".to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `begin`/`set_tx` with ` ro`/` rw` when the access mode is named and ` serializable` (or
/// ` not_serializable`) when the isolation level is.
fn transaction_modes(word: &str, read_only: Option<bool>, serializable: Option<bool>) -> String {
    let mut s = word.to_string();
    match read_only {
        Some(true) => s.push_str(" ro"),
        Some(false) => s.push_str(" rw"),
        None => {}
    }
    match serializable {
        Some(true) => s.push_str(" serializable"),
        Some(false) => s.push_str(" not_serializable"),
        None => {}
    }
    s
}

const CASES: &[(&str, &str)] = &[
    // Plain reads.
    ("SELECT 1", "ro"),
    ("select * from accounts where id = 7", "ro"),
    ("SELECT abalance FROM pgbench_accounts WHERE aid = 42;", "ro"),
    ("VALUES (1, 'a'), (2, 'b')", "ro"),
    ("SELECT a FROM t UNION ALL SELECT b FROM u ORDER BY 1 LIMIT 5", "ro"),
    ("SELECT count(*), max(x), string_agg(y, ',') FROM t GROUP BY z HAVING count(*) > 1", "ro"),
    ("SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t", "ro"),
    ("SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE EXISTS (SELECT 1 FROM v))", "ro"),
    ("SELECT * FROM a JOIN b USING (id) LEFT JOIN c ON c.id = a.id", "ro"),
    ("SELECT * FROM (SELECT 1 AS x) s", "ro"),
    ("SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.t = t.id) l", "ro"),
    ("WITH x AS (SELECT 1) SELECT * FROM x", "ro"),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r", "ro"),
    ("SELECT $1::int + $2", "ro"),
    ("SELECT now(), current_timestamp, current_user, current_date, pg_catalog.now()", "ro"),
    ("SELECT pg_is_in_recovery(), inet_server_port(), pg_backend_pid()", "ro"),
    ("SELECT pg_last_wal_replay_lsn()", "ro"),
    ("SELECT coalesce(a, b), nullif(a, 0), greatest(a, b), least(a, b) FROM t", "ro"),
    ("SELECT x::int, CAST(y AS text), EXTRACT(year FROM now()), substring(s FROM 2 FOR 3) FROM t", "ro"),
    ("SELECT lower(name), upper(name), length(name), md5(name), concat_ws('-', a, b) FROM t", "ro"),
    ("SELECT jsonb_build_object('a', 1), to_jsonb(t.*), json_agg(t) FROM t", "ro"),
    ("SELECT * FROM generate_series(1, 10)", "ro"),
    ("SELECT * FROM generate_series(1, 10) WITH ORDINALITY AS g(n, i)", "ro"),
    ("SELECT * FROM unnest(ARRAY[1, 2, 3])", "ro"),
    ("SELECT random(), gen_random_uuid(), clock_timestamp()", "ro"),
    ("SELECT int4(x), numeric(y), text(z) FROM t", "ro"),
    ("SELECT * FROM t ORDER BY lower(name) LIMIT 1 OFFSET 2", "ro"),
    ("SELECT a, sum(b) OVER w FROM t WINDOW w AS (PARTITION BY a)", "ro"),
    ("SELECT * FROM t WHERE x = ANY (SELECT nextval('s'))", "write_function"),
    ("SELECT \"pg_catalog\".\"nextval\"('s')", "write_function"),
    ("SELECT * FROM t ORDER BY my_rank(x)", "unknown_function"),
    ("SELECT * FROM t GROUP BY 1 HAVING audit_log(count(*)) > 0", "unknown_function"),
    ("SELECT pg_sleep(0.1)", "ro"),
    ("SELECT current_setting('search_path')", "ro"),
    ("SELECT has_table_privilege('t', 'select'), pg_get_viewdef('v'::regclass)", "ro"),
    ("SELECT pg_size_pretty(pg_database_size(current_database()))", "ro"),
    ("SELECT * FROM pg_stat_activity", "ro"),
    ("SELECT relname FROM pg_catalog.pg_class WHERE relkind = 'r'", "ro"),
    ("SELECT CASE WHEN a > 0 THEN 'p' ELSE 'n' END FROM t", "ro"),
    ("SELECT to_tsvector('english', body) @@ to_tsquery('cat') FROM docs", "ro"),
    ("SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b DESC", "ro"),
    ("SELECT * FROM t FETCH FIRST 3 ROWS ONLY", "ro"),
    ("SELECT 1; SELECT 2", "ro; ro"),
    ("SELECT ROW(1, 2), ARRAY(SELECT id FROM t)", "ro"),
    ("SELECT data->'a'->>'b' FROM t WHERE data @> '{\"x\": 1}' AND data ? 'k'", "ro"),
    ("SELECT array_agg(x ORDER BY y) FILTER (WHERE z > 0) FROM t", "ro"),
    ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM t", "ro"),
    ("SELECT * FROM t TABLESAMPLE SYSTEM (10)", "ro"),
    ("SELECT count(*) FROM t GROUP BY GROUPING SETS ((a), (b))", "ro"),
    ("SELECT * FROM t WHERE (a, b) IN ((1, 2), (3, 4)) AND c = ANY($1)", "ro"),
    ("SELECT host(inet '10.0.0.1'), masklen(cidr '10.0.0.0/8'), isempty(int4range(1, 2))", "ro"),
    ("SELECT \"users\".* FROM \"users\" WHERE \"users\".\"id\" = $1 LIMIT $2", "ro"),
    // psql's `\\d t` spells PostgreSQL's own operators with OPERATOR(pg_catalog.~).
    ("SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid)", "ro"),
    ("SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a WHERE a.attrelid = '\"users\"'::regclass AND a.attnum > 0 AND NOT a.attisdropped", "ro"),
    // Odd casing, quoting and comments.
    ("sElEcT NOW()", "ro"),
    ("/* leading comment */ SELECT 1", "ro"),
    ("-- a line comment\nSELECT 1", "ro"),
    ("SELECT 1 /* DELETE FROM t */", "ro"),
    ("SELECT 'DELETE FROM t; INSERT' AS s", "ro"),
    ("SELECT \"NOW\"()", "unknown_function"),
    ("SELECT \"now\"()", "ro"),
    ("SELECT * FROM \"Accounts\" WHERE \"Id\" = 1", "ro"),
    ("SELECT NextVal('s')", "write_function"),
    ("SELECT 1 -- ; DELETE FROM t", "ro"),
    ("  \n\tSELECT\n1\n;  ", "ro"),
    // SHOW, EXPLAIN.
    ("SHOW search_path", "ro"),
    ("SHOW ALL", "ro"),
    ("EXPLAIN SELECT * FROM t", "ro"),
    ("EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM t", "ro"),
    ("EXPLAIN ANALYZE SELECT * FROM t", "ro"),
    ("EXPLAIN ANALYZE DELETE FROM t", "write"),
    ("EXPLAIN DELETE FROM t", "write"),
    ("EXPLAIN ANALYZE SELECT nextval('s')", "write_function"),
    ("EXPLAIN SELECT * FROM t FOR UPDATE", "locking_clause"),
    // Writes.
    ("INSERT INTO t VALUES (1)", "write"),
    ("insert into t select * from u", "write"),
    ("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET v = excluded.v RETURNING *", "write"),
    ("UPDATE t SET v = v + 1 WHERE id = 1", "write"),
    ("UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid = 1", "write"),
    ("DELETE FROM t WHERE id = 1 RETURNING id", "write"),
    ("TRUNCATE t", "write"),
    ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN UPDATE SET v = u.v", "write"),
    ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "write"),
    // Reads that write or lock.
    ("SELECT * FROM t FOR UPDATE", "locking_clause"),
    // sqlparser 0.64 does not know these two lock strengths: refused, so the primary.
    ("SELECT * FROM t FOR NO KEY UPDATE", "unparsable"),
    ("SELECT * FROM t FOR SHARE", "locking_clause"),
    ("SELECT * FROM t FOR KEY SHARE", "unparsable"),
    ("SELECT * FROM t WHERE id = 1 FOR UPDATE SKIP LOCKED", "locking_clause"),
    ("SELECT * FROM t FOR UPDATE OF t NOWAIT", "locking_clause"),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", "locking_clause"),
    ("WITH l AS (SELECT * FROM t FOR UPDATE) SELECT * FROM l", "locking_clause"),
    ("SELECT * INTO new_t FROM t", "select_into"),
    ("SELECT 1 INTO TEMP tmp", "pin temp_table"),
    ("SELECT * INTO TEMPORARY TABLE tmp FROM t", "pin temp_table"),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "data_modifying_cte"),
    ("WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM i", "data_modifying_cte"),
    ("WITH u AS (UPDATE t SET v = 1 RETURNING *) SELECT count(*) FROM u", "data_modifying_cte"),
    ("WITH a AS (SELECT 1), d AS (DELETE FROM t) SELECT * FROM a", "data_modifying_cte"),
    // Functions.
    ("SELECT nextval('s')", "write_function"),
    ("WITH x AS (SELECT 1) SELECT nextval('s') FROM x", "write_function"),
    ("SELECT * FROM t WHERE id = nextval('s')", "write_function"),
    ("SELECT currval('s')", "write_function"),
    ("SELECT setval('s', 10)", "write_function"),
    ("SELECT pg_catalog.setval('s', 10)", "write_function"),
    ("SELECT txid_current()", "write_function"),
    ("SELECT pg_current_xact_id()", "write_function"),
    ("SELECT pg_notify('c', 'x')", "write_function"),
    ("SELECT lo_create(0)", "write_function"),
    ("SELECT lo_import('/tmp/f')", "write_function"),
    ("SELECT pg_advisory_xact_lock(1)", "write_function"),
    ("SELECT pg_advisory_lock(1)", "pin advisory_lock"),
    ("SELECT pg_try_advisory_lock(1, 2)", "pin advisory_lock"),
    ("SELECT pg_advisory_lock_shared(1)", "pin advisory_lock"),
    ("SELECT pg_advisory_unlock(1)", "write_function"),
    ("SELECT set_config('search_path', 'a', true)", "write_function"),
    ("SELECT set_config('search_path', 'a', false)", "pin session_state_function"),
    ("SELECT set_config('search_path', 'a', $1)", "pin session_state_function"),
    ("SELECT my_func()", "unknown_function"),
    ("SELECT do_transfer(1, 2, 100)", "unknown_function"),
    ("SELECT * FROM my_srf(1)", "unknown_function"),
    ("SELECT * FROM t WHERE x = app.compute(y)", "unknown_function"),
    ("SELECT * FROM t WHERE id IN (SELECT f(id) FROM u)", "unknown_function"),
    ("SELECT count(*) FILTER (WHERE my_check(x)) FROM t", "unknown_function"),
    ("SELECT public.now()", "unknown_function"),
    ("SELECT pg_current_wal_lsn()", "unknown_function"),
    ("SELECT a OPERATOR(myschema.+++) b FROM t", "unparsable"),
    ("SELECT a OPERATOR(myschema.@@) b FROM t", "unknown_function"),
    ("SELECT uuid_generate_v4()", "unknown_function"),
    ("select nextval ('hibernate_sequence')", "write_function"),
    ("SELECT lastval()", "write_function"),
    ("VALUES (nextval('s'))", "write_function"),
    ("SELECT pg_terminate_backend(1)", "unknown_function"),
    ("SELECT pg_switch_wal()", "unknown_function"),
    ("CALL transfer(1, 2)", "unknown_function"),
    // Pgpool-II's hint keeps a read on the primary; elsewhere in the text it is a comment.
    ("/*NO LOAD BALANCE*/ SELECT * FROM t", "no_load_balance_hint"),
    ("  /*NO LOAD BALANCE*/ SELECT 1; SELECT 2", "no_load_balance_hint; no_load_balance_hint"),
    ("/*NO LOAD BALANCE*/ UPDATE t SET a = 1", "write"),
    ("SELECT 1 /*NO LOAD BALANCE*/", "ro"),
    // COPY.
    ("COPY t FROM STDIN", "copy_from"),
    ("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", "copy_from"),
    ("COPY t FROM '/tmp/data.csv'", "copy_from"),
    ("COPY t TO STDOUT", "ro"),
    ("COPY (SELECT * FROM t WHERE x > 1) TO STDOUT WITH (FORMAT csv)", "ro"),
    ("COPY (SELECT nextval('s')) TO STDOUT", "write_function"),
    ("COPY t TO '/tmp/out.csv'", "copy_to_file"),
    // DDL.
    ("CREATE TABLE t (id int)", "ddl"),
    ("CREATE TABLE t2 AS SELECT * FROM t", "ddl"),
    ("CREATE INDEX ON t (id)", "ddl"),
    ("ALTER TABLE t ADD COLUMN v int", "ddl"),
    ("DROP TABLE t", "ddl"),
    ("CREATE VIEW v AS SELECT 1", "ddl"),
    ("CREATE SEQUENCE s", "ddl"),
    ("GRANT SELECT ON t TO app", "ddl"),
    ("COMMENT ON TABLE t IS 'x'", "ddl"),
    ("CREATE TEMP TABLE tmp (id int)", "pin temp_table"),
    ("CREATE TEMPORARY TABLE tmp AS SELECT 1", "pin temp_table"),
    ("CREATE TEMP SEQUENCE s", "pin temp_table"),
    ("CREATE TEMPORARY VIEW v AS SELECT 1", "pin temp_table"),
    // Other utility statements.
    ("VACUUM t", "other_statement"),
    ("ANALYZE t", "other_statement"),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "other_statement"),
    ("CHECKPOINT", "unparsable"),
    ("DO $$BEGIN PERFORM 1; END$$", "unparsable"),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", "ddl"),
    ("SELECT * INTO UNLOGGED y FROM t", "select_into"),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d; SELECT 1", "data_modifying_cte; ro"),
    ("DISCARD PLANS", "session_state"),
    // LISTEN/NOTIFY.
    ("LISTEN events", "pin listen"),
    ("NOTIFY events, 'x'", "listen_notify"),
    ("UNLISTEN *", "listen_notify"),
    // Transactions.
    ("BEGIN", "begin"),
    ("begin transaction", "begin"),
    ("START TRANSACTION", "begin"),
    ("BEGIN READ ONLY", "begin ro"),
    ("BEGIN TRANSACTION READ ONLY", "begin ro"),
    ("START TRANSACTION READ ONLY", "begin ro"),
    ("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", "begin ro not_serializable"),
    // DEFERRABLE is outside the parser's grammar: the primary runs the transaction.
    ("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", "unparsable"),
    ("BEGIN READ WRITE", "begin rw"),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE", "begin serializable"),
    // Hot standbys refuse SERIALIZABLE: the router sends such transactions to the primary.
    ("START TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE", "begin ro serializable"),
    ("BEGIN WORK", "begin"),
    ("COMMIT WORK", "commit"),
    ("SET TRANSACTION READ ONLY", "set_tx ro"),
    ("SET TRANSACTION READ WRITE", "set_tx rw"),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "set_tx serializable"),
    ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED, READ ONLY", "set_tx ro not_serializable"),
    ("SET transaction_isolation = 'serializable'", "set_tx serializable"),
    ("SET transaction_isolation TO 'repeatable read'", "set_tx not_serializable"),
    ("SET transaction_read_only = on", "set_tx ro"),
    ("SET transaction_read_only TO off", "set_tx rw"),
    ("COMMIT", "commit"),
    ("END", "commit"),
    ("COMMIT AND CHAIN", "commit chain"),
    ("ROLLBACK", "rollback"),
    ("ABORT", "rollback"),
    ("SAVEPOINT a", "savepoint a"),
    ("RELEASE SAVEPOINT a", "release a"),
    ("ROLLBACK TO SAVEPOINT A", "rollback_to a"),
    // Session state.
    ("SET search_path TO app, public", "set search_path"),
    ("SET SESSION search_path = app", "set search_path"),
    ("set Statement_Timeout = '5s'", "set statement_timeout"),
    ("SET LOCAL statement_timeout = '5s'", "set_local"),
    ("SET TIME ZONE 'UTC'", "set timezone"),
    ("SET ROLE app_reader", "set role"),
    ("SET SESSION AUTHORIZATION app", "set session_authorization"),
    ("RESET search_path", "set search_path"),
    ("RESET ALL", "reset_all"),
    ("DISCARD ALL", "discard_all"),
    ("SET default_transaction_read_only = on", "set default_ro=true"),
    ("SET default_transaction_read_only TO 'off'", "set default_ro=false"),
    ("SET default_transaction_read_only = true", "set default_ro=true"),
    ("SET default_transaction_read_only TO DEFAULT", "set default_ro=false"),
    ("RESET default_transaction_read_only", "set default_ro=false"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "set default_ro=true"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "set default_ro=false"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", "set default_serializable=true"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", "set default_ro=true default_serializable=true"),
    ("SET default_transaction_isolation = 'serializable'", "set default_serializable=true"),
    ("SET default_transaction_isolation TO 'read committed'", "set default_serializable=false"),
    ("SET default_transaction_isolation TO DEFAULT", "set default_serializable=false"),
    ("RESET default_transaction_isolation", "set default_serializable=false"),
    // Cursors and prepared statements.
    ("DECLARE c CURSOR FOR SELECT * FROM t", "ro"),
    ("DECLARE c CURSOR FOR SELECT nextval('s')", "write_function"),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t", "pin cursor_with_hold"),
    ("FETCH 10 FROM c", "ro"),
    ("CLOSE c", "ro"),
    ("PREPARE q AS SELECT 1", "pin prepared_statement"),
    ("EXECUTE q", "pin prepared_statement"),
    // The pool translates DEALLOCATE (crates/proxy/src/pool/prepared.rs).
    ("DEALLOCATE q", "ro"),
    // Multi-statement strings.
    ("SELECT 1; DELETE FROM t", "ro; write"),
    ("BEGIN; SELECT 1; COMMIT", "begin; ro; commit"),
    ("SET search_path = a; SELECT 1", "set search_path; ro"),
    // What the parser rejects goes to the primary.
    ("SELEC 1", "unparsable"),
    ("SELECT (1", "unparsable"),
    ("SELECT 1; DELETE FROM", "unparsable"),
    // `TABLE name` is `SELECT * FROM name`.
    ("TABLE t", "ro"),
    ("table ONLY app.\"T\";", "ro"),
    ("TABLE t; DELETE FROM t", "unparsable"),
    ("TABLE nextval('s')", "unparsable"),
    ("\u{0}", "unparsable"),
    ("", ""),
    (";", ""),
];

#[test]
fn classification_table() {
    let classifier = Classifier::default();
    let mut failures = Vec::new();
    for (sql, expected) in CASES {
        let got = summary(&classifier, sql);
        if got != *expected {
            failures.push(format!("{sql:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
    assert!(CASES.len() >= 150, "{}", CASES.len());
}

#[test]
fn configured_read_only_functions_reach_replicas() {
    let classifier = Classifier::new(FunctionPolicy::new([
        "price_of".to_string(),
        "app.visible_orders".to_string(),
    ]));
    assert_eq!(summary(&classifier, "SELECT price_of(1)"), "ro");
    assert_eq!(summary(&classifier, "SELECT app.price_of(1)"), "ro");
    assert_eq!(
        summary(&classifier, "SELECT * FROM app.visible_orders(3)"),
        "ro"
    );
    assert_eq!(
        summary(&classifier, "SELECT * FROM visible_orders(3)"),
        "unknown_function"
    );
    assert_eq!(
        summary(&classifier, "SELECT price_of(1), other(2)"),
        "unknown_function"
    );
    // Listing a function does not make a write around it read-only.
    assert_eq!(
        summary(&classifier, "SELECT price_of(id) FROM t FOR UPDATE"),
        "locking_clause"
    );
}

#[test]
fn deeply_nested_input_is_refused_not_a_crash() {
    let sql = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert_eq!(summary(&Classifier::default(), &sql), "unparsable");
}

#[test]
fn replay_text_of_settings_is_sql_the_server_accepts() {
    // What the router replays on other connections is the parser's rendering of the
    // statement: it must stay a valid statement with the same meaning.
    let classifier = Classifier::default();
    for (sql, replay) in [
        (
            "set search_path to app, public",
            "SET search_path = app, public",
        ),
        (
            "SET TIME ZONE 'Europe/Paris'",
            "SET TIME ZONE 'Europe/Paris'",
        ),
        ("RESET work_mem", "RESET work_mem"),
        (
            "SET application_name = 'it''s'",
            "SET application_name = 'it''s'",
        ),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        ),
    ] {
        match classifier.classify(sql).statements.as_slice() {
            [StatementClass::SetSession(s)] => assert_eq!(s.replay, replay, "{sql}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
}

#[test]
fn cached_classifications_match_fresh_ones_and_the_cache_stays_bounded() {
    let classifier = Classifier::default();
    for (sql, expected) in CASES {
        // Twice: the second answer comes from the cache.
        assert_eq!(summary(&classifier, sql), *expected, "{sql}");
        assert_eq!(summary(&classifier, sql), *expected, "{sql}");
    }
    for i in 0..(super::classify::CACHE_ENTRIES + 10) {
        let sql = format!("SELECT {i}");
        assert!(classifier.classify(&sql).is_read_only());
    }
    let long = format!("SELECT 1 WHERE 1 = 1{}", " AND 1 = 1".repeat(500));
    assert!(long.len() > super::classify::CACHE_TEXT_BYTES);
    assert!(classifier.classify(&long).is_read_only());
    assert_eq!(
        summary(&classifier, "SELECT nextval('s')"),
        "write_function"
    );
}

/// Each case with its literals changed, classified by a classifier that has seen every case:
/// a read-only result shared by shape must be what a fresh parse of the new text says.
#[test]
fn results_shared_by_shape_match_fresh_ones() {
    let warmed = Classifier::default();
    for (sql, _) in CASES {
        warmed.classify(sql);
    }
    let mut checked = 0;
    for (sql, _) in CASES {
        // Another number and another string in place of each literal (a crude rewrite: the
        // comparison only needs texts that still parse the same way most of the time).
        let variant = sql
            .replace('1', "7")
            .replace("'a'", "'zz'")
            .replace("'s'", "'q'");
        let fresh = Classifier::default();
        assert_eq!(
            summary(&warmed, &variant),
            summary(&fresh, &variant),
            "{variant}"
        );
        checked += usize::from(variant != *sql);
    }
    assert!(checked > 50, "{checked}");
}

#[test]
fn only_read_only_results_are_shared_by_shape() {
    let c = Classifier::default();
    let first = c.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 4711");
    let second = c.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 815");
    assert!(
        std::sync::Arc::ptr_eq(&first, &second),
        "same shape, one parse"
    );
    let other = c.classify("SELECT abalance FROM pgbench_accounts WHERE aid = '815'");
    assert!(
        std::sync::Arc::ptr_eq(&first, &other),
        "a string literal is a literal too"
    );
    // An identifier is not a literal.
    assert!(!std::sync::Arc::ptr_eq(
        &c.classify("SELECT \"a\" FROM t"),
        &c.classify("SELECT \"b\" FROM t")
    ));
    // set_config's third literal decides: never shared.
    assert_eq!(
        summary(&c, "SELECT set_config('a', 'b', true)"),
        "write_function"
    );
    assert_eq!(
        summary(&c, "SELECT set_config('a', 'b', false)"),
        "pin session_state_function"
    );
    // The hint is a comment token: part of the shape.
    assert_eq!(summary(&c, "SELECT 1"), "ro");
    assert_eq!(
        summary(&c, "/*NO LOAD BALANCE*/ SELECT 2"),
        "no_load_balance_hint"
    );
    assert_eq!(summary(&c, "SELECT 1; SELECT 2"), "ro; ro");
    assert_eq!(summary(&c, "SELECT 3; UPDATE t SET a = 4"), "ro; write");
}
