//! The single-port read/write split (`role: auto`) against real etcd, three real PostgreSQL
//! 15 servers run by the agent, psql and a real client library (tokio-postgres). The proxy
//! authenticates clients itself (a pooled listener, as crates/cli/tests/pool.rs sets up) and
//! routes each transaction by its SQL. Where a statement ran is read from the server itself
//! (`pg_is_in_recovery()`). Run serially (`--test-threads=1`).

mod common;

use pgherd_testkit::cluster::{TestCluster, SUPERUSER_PASSWORD};
use pgherd_testkit::proxy::ProxyProcess;
use pgherd_testkit::wait::poll;
use std::path::Path;
use std::time::Duration;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const PGHERD: &str = env!("CARGO_BIN_EXE_pgherd");

/// A proxy with one auto listener in transaction pooling mode.
fn auto_proxy(c: &TestCluster, name: &str, userlist: &Path, extra: &str) -> ProxyProcess {
    let file = userlist.display().to_string();
    ProxyProcess::start_with_listeners(Path::new(PGHERD), c, name, "", 1, |p| {
        format!(
            "    - {{name: auto, bind: 127.0.0.1:{}, role: auto, pool_mode: transaction, pool_size: 4, max_prepared_statements: 100, auth_file: {file}, read_only_functions: [ro_fn]{extra}}}\n",
            p[0]
        )
    })
    .expect("pgherd proxy")
}

async fn connect(port: u16) -> Client {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .password(SUPERUSER_PASSWORD)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(45))
        .connect(NoTls)
        .await
        .expect("a session through the auto listener");
    tokio::spawn(conn);
    client
}

/// The first column of the first row of a simple query.
async fn value(client: &Client, sql: &str) -> String {
    for m in client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    {
        if let SimpleQueryMessage::Row(r) = m {
            return r.get(0).unwrap_or_default().to_string();
        }
    }
    String::new()
}

fn auto_listener(s: &serde_json::Value) -> &serde_json::Value {
    s["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == "auto"))
        .unwrap_or(&serde_json::Value::Null)
}

/// Both replicas are up in the auto listener's replica rotation.
fn wait_replicas_routed(proxy: &ProxyProcess) {
    proxy.wait_for("two replicas in the auto listener's rotation", |s| {
        auto_listener(s)["replicas"]["servers"]
            .as_array()
            .is_some_and(|ss| ss.iter().filter(|v| v["state"] == "up").count() == 2)
    });
}

fn replicas(c: &TestCluster, leader: usize) -> Vec<usize> {
    (0..c.members.len()).filter(|i| *i != leader).collect()
}

#[test]
fn auto_listener_routes_reads_to_replicas_and_everything_else_to_the_primary() {
    let (c, leader) = common::cluster("split-route");
    c.sql(
        leader,
        "create table acct (id int primary key, v int); insert into acct values (1, 0); \
         create sequence seq; create schema app; create table app.only_in_app (x int); \
         insert into app.only_in_app values (7); create table copied (v int); \
         create function ro_fn() returns bool language sql as 'select pg_is_in_recovery()'; \
         create function bump() returns bool language sql as \
           'update acct set v = v + 1 where id = 1; select pg_is_in_recovery()'",
    )
    .expect("schema");
    for r in replicas(&c, leader) {
        poll(
            "the schema on a replica",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                c.sql(r, "select count(*) from app.only_in_app")
                    .ok()
                    .filter(|n| n == "1")
            },
        )
        .expect("the schema on the replica");
    }
    let userlist = common::userlist(&c, leader, "");
    let proxy = auto_proxy(&c, "px-split", &userlist, "");
    let port = proxy.extra[0];
    wait_replicas_routed(&proxy);
    common::runtime().block_on(async {
        let s = connect(port).await;
        // Reads: a replica.
        assert_eq!(value(&s, "select pg_is_in_recovery()").await, "t");
        assert_eq!(value(&s, "select ro_fn()").await, "t");
        // A user function that writes, called from a SELECT: the primary.
        assert_eq!(value(&s, "select bump()").await, "f");
        // Locking reads, sequences, data-modifying CTEs: the primary.
        assert_eq!(value(&s, "select pg_is_in_recovery() from acct where id = 1 for update").await, "f");
        assert_eq!(value(&s, "with x as (select nextval('seq')) select pg_is_in_recovery() from x").await, "f");
        assert_eq!(
            value(&s, "with u as (update acct set v = v + 1 returning v) select pg_is_in_recovery() from u").await,
            "f"
        );
        // A transaction that starts with a read and then writes runs on the primary in full.
        s.simple_query("begin").await.expect("begin");
        assert_eq!(value(&s, "select pg_is_in_recovery()").await, "f");
        s.simple_query("update acct set v = 100 where id = 1").await.expect("update in the transaction");
        s.simple_query("commit").await.expect("commit");
        // Read-only transactions: a replica.
        s.simple_query("begin read only").await.expect("begin read only");
        assert_eq!(value(&s, "select pg_is_in_recovery()").await, "t");
        s.simple_query("commit").await.expect("commit");
        s.simple_query("begin").await.expect("begin");
        s.simple_query("set transaction read only").await.expect("set transaction");
        assert_eq!(value(&s, "select pg_is_in_recovery()").await, "t");
        s.simple_query("commit").await.expect("commit");
        // A session SET follows the session onto the replicas: the read after it runs on a
        // replica, in the schema it names; another session does not see it.
        s.simple_query("set search_path = app, public").await.expect("a session SET");
        assert_eq!(value(&s, "select x::text || pg_is_in_recovery()::text from only_in_app").await, "7true");
        let (x, in_recovery): (i32, bool) = {
            let row = s
                .query_one("select x, pg_is_in_recovery() from only_in_app where x = $1", &[&7i32])
                .await
                .expect("a prepared read in the session's schema");
            (row.get(0), row.get(1))
        };
        assert_eq!((x, in_recovery), (7, true));
        let other = connect(port).await;
        let err = other.simple_query("select x from only_in_app").await.expect_err("not in its path");
        assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE));
        s.simple_query("reset all").await.expect("RESET ALL");
        let err = s.simple_query("select x from only_in_app").await.expect_err("reset");
        assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE));
        // SET LOCAL inside a read-only transaction runs with it on the replica.
        s.simple_query("begin read only").await.expect("begin read only");
        s.simple_query("set local search_path = app, public").await.expect("set local");
        assert_eq!(value(&s, "select x::text || pg_is_in_recovery()::text from only_in_app").await, "7true");
        s.simple_query("commit").await.expect("commit");
        // The extended protocol (named prepared statements, re-prepared on whichever server
        // runs them): a read on a replica, a write on the primary.
        let in_recovery: bool = s
            .query_one("select pg_is_in_recovery() from acct where id = $1", &[&1i32])
            .await
            .expect("prepared read")
            .get(0);
        assert!(in_recovery);
        let in_recovery: bool = s
            .query_one(
                "update acct set v = $1 where id = 1 returning pg_is_in_recovery()",
                &[&5i32],
            )
            .await
            .expect("prepared write")
            .get(0);
        assert!(!in_recovery);
        // A multi-statement query mixing a read and a write: the primary.
        assert_eq!(
            value(&s, "select pg_is_in_recovery(); update public.acct set v = 1 where id = 1").await,
            "f"
        );
        // Unparsable for the classifier (valid for PostgreSQL): the primary.
        assert_eq!(value(&s, "select pg_is_in_recovery() from public.acct for no key update").await, "f");
        // SERIALIZABLE, which hot standbys refuse ("cannot use serializable mode in a hot
        // standby"): a read-only serializable transaction, and reads under a serializable
        // session default (pgJDBC's setTransactionIsolation), run on the primary.
        let direct = connect(c.members[replicas(&c, leader)[0]].pg_port).await;
        let refused = direct
            .simple_query("begin isolation level serializable, read only")
            .await
            .expect_err("a standby refuses SERIALIZABLE");
        assert_eq!(refused.code(), Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED));
        s.simple_query("begin isolation level serializable, read only").await.expect("begin serializable");
        assert_eq!(value(&s, "select pg_is_in_recovery()").await, "f");
        s.simple_query("commit").await.expect("commit");
        s.simple_query("set session characteristics as transaction isolation level serializable")
            .await
            .expect("serializable default");
        assert_eq!(value(&s, "select pg_is_in_recovery()").await, "f");
        s.simple_query("begin read only").await.expect("begin read only");
        assert_eq!(value(&s, "select current_setting('transaction_isolation')").await, "serializable");
        s.simple_query("commit").await.expect("commit");
        s.simple_query("set default_transaction_isolation = 'read committed'").await.expect("back");
        assert_eq!(value(&s, "select pg_is_in_recovery()").await, "t");
    });
    // psql, the command-line client, through the same port.
    let out = pgherd_testkit::cluster::psql_with_timeout(port, "select pg_is_in_recovery()", 45)
        .expect("psql");
    assert_eq!(out.trim(), "t");
    // COPY ... FROM STDIN reaches the primary with its data: psql's \copy and asyncpg's
    // copy_records_to_table. asyncpg prepares its table probe with Parse, Describe and Flush
    // (no Sync; a read, so a replica) and then sends the COPY, or after prepare() an
    // execute(), as a simple query: that query is routed on its own, to the primary.
    let mut copy = std::process::Command::new("psql")
        .args(["-X", "-c", "\\copy copied from stdin"])
        .arg(format!(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres"
        ))
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql");
    {
        use std::io::Write;
        let mut stdin = copy.stdin.take().expect("psql's stdin");
        for v in 1..=1000 {
            writeln!(stdin, "{v}").expect("rows to psql");
        }
    }
    let copied = copy.wait_with_output().expect("psql \\copy");
    assert_eq!(
        String::from_utf8_lossy(&copied.stdout).trim(),
        "COPY 1000",
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let asyncpg = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import asyncio, sys, asyncpg\n\
             async def main(port, pw):\n\
             \x20   c = await asyncpg.connect(host='127.0.0.1', port=port, user='postgres', password=pw, database='postgres', ssl=False)\n\
             \x20   print(await c.copy_records_to_table('copied', records=[(v,) for v in range(5)]))\n\
             \x20   st = await c.prepare('select pg_is_in_recovery()')\n\
             \x20   print(await c.execute('insert into copied values (6)'), await st.fetchval())\n\
             asyncio.run(main(int(sys.argv[1]), sys.argv[2]))\n",
            &port.to_string(),
            SUPERUSER_PASSWORD,
        ])
        .output()
        .expect("python3 with asyncpg");
    assert_eq!(
        String::from_utf8_lossy(&asyncpg.stdout).trim(),
        "COPY 5\nINSERT 0 1 True",
        "{}",
        String::from_utf8_lossy(&asyncpg.stderr)
    );
    assert_eq!(
        c.sql(leader, "select count(*) from copied").unwrap(),
        "1006"
    );
    // psycopg 3: prepared statements and their SQL DEALLOCATEs, a SET that follows one
    // connection, on the primary and the replicas.
    common::psycopg_through(port, "postgres", SUPERUSER_PASSWORD);
    // The decisions are counted by target and reason.
    let stats = proxy.wait_for("routing counters", |s| {
        !auto_listener(s)["routing"]["replica"]["read_only"].is_null()
    });
    let routing = &auto_listener(&stats)["routing"];
    assert!(
        routing["primary"]["unknown_function"].as_u64() >= Some(1),
        "{routing}"
    );
    assert!(
        routing["primary"]["locking_clause"].as_u64() >= Some(1),
        "{routing}"
    );
    assert!(
        routing["primary"]["write_transaction"].as_u64() >= Some(1),
        "{routing}"
    );
    assert!(
        routing["replica"]["read_only_transaction"].as_u64() >= Some(2),
        "{routing}"
    );
    assert!(
        routing["primary"]["session_state"].as_u64() >= Some(2),
        "{routing}"
    );
    assert!(
        routing["primary"]["serializable"].as_u64() >= Some(3),
        "{routing}"
    );
}

#[test]
fn a_session_reads_its_own_write_despite_replica_lag() {
    let (c, leader) = common::cluster("split-ryw");
    c.sql(leader, "create table seen (id int primary key)")
        .expect("table");
    let reps = replicas(&c, leader);
    for r in &reps {
        poll(
            "the table on a replica",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || c.sql(*r, "select count(*) from seen").ok(),
        )
        .expect("the table on the replica");
    }
    let userlist = common::userlist(&c, leader, "");
    let proxy = auto_proxy(&c, "px-ryw", &userlist, "");
    let port = proxy.extra[0];
    wait_replicas_routed(&proxy);
    // Real lag: both replicas stop replaying.
    for r in &reps {
        c.sql(*r, "select pg_wal_replay_pause()")
            .expect("pause replay");
    }
    common::runtime().block_on(async {
        let writer = connect(port).await;
        writer
            .simple_query("insert into seen values (1)")
            .await
            .expect("insert");
        // The same session's next read sees its row (the primary serves it)...
        assert_eq!(
            value(&writer, "select count(*) from seen where id = 1").await,
            "1"
        );
        // ...while another session's read goes to a replica that has not replayed it.
        let other = connect(port).await;
        assert_eq!(
            value(
                &other,
                "select count(*)::text || pg_is_in_recovery()::text from seen where id = 1"
            )
            .await,
            "0true"
        );
    });
    for r in &reps {
        c.sql(*r, "select pg_wal_replay_resume()")
            .expect("resume replay");
    }
    proxy.wait_for("a read_your_writes decision", |s| {
        auto_listener(s)["routing"]["primary"]["read_your_writes"].as_u64() >= Some(1)
    });

    // A replica whose agent stops answering leaves the read rotation. Read-only transactions
    // already running there go on (the pool retires the server instead of cutting them) for
    // the grace period; one still open after it is closed; new reads go to the other replica.
    common::runtime().block_on(async {
        let mut open = Vec::new();
        for _ in 0..4 {
            let s = connect(port).await;
            s.simple_query("begin read only")
                .await
                .expect("begin read only");
            let at = value(&s, "select inet_server_port()").await;
            open.push((s, at));
        }
        let (busy, others): (Vec<_>, Vec<_>) = {
            let first = open[0].1.clone();
            let target = if open.iter().filter(|(_, p)| *p == first).count() >= 2 {
                first
            } else {
                open[1].1.clone()
            };
            open.into_iter().partition(|(_, p)| *p == target)
        };
        let port_out = busy[0].1.clone();
        let out = reps
            .iter()
            .copied()
            .find(|&r| c.members[r].pg_port.to_string() == port_out)
            .expect("the replica the transactions run on");
        let agent = nix::unistd::Pid::from_raw(c.agent_pid(out).expect("agent pid"));
        struct Thaw(nix::unistd::Pid);
        impl Drop for Thaw {
            fn drop(&mut self) {
                let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
            }
        }
        nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
        let _thaw = Thaw(agent);
        let name = c.members[out].name.clone();
        let mut down = false;
        for _ in 0..300 {
            let s = proxy.stats().unwrap_or_default();
            down = auto_listener(&s)["replicas"]["servers"]
                .as_array()
                .is_some_and(|ss| {
                    ss.iter()
                        .any(|v| v["name"] == name.as_str() && v["state"] == "down")
                });
            if down {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            down,
            "{name} never left the read rotation\n{}",
            proxy.log_tail(20)
        );
        // The first transaction finishes on the retired replica.
        let (first, _) = &busy[0];
        assert_eq!(value(first, "select inet_server_port()").await, port_out);
        first
            .simple_query("commit")
            .await
            .expect("commit on the retired replica");
        // The next read goes to the other replica.
        assert_ne!(value(first, "select inet_server_port()").await, port_out);
        drop(others);
        // The second one, left open, is closed after the grace period.
        let (second, _) = &busy[1];
        let mut closed = false;
        for _ in 0..300 {
            if second.is_closed() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            closed,
            "a transaction open past the grace period\n{}",
            proxy.log_tail(20)
        );
        assert!(
            proxy.log_tail(40).contains("still running"),
            "{}",
            proxy.log_tail(40)
        );
    });
}
