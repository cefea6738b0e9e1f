//! Connection pooling in `pgherd proxy` (`pool_mode`) against real etcd, three real PostgreSQL
//! 15 servers run by the agent, pgbench, psql and a real client library (tokio-postgres).
//! The proxy authenticates clients itself from a pgbouncer userlist: `postgres` with the
//! server's own SCRAM verifier (the proxy logs in to servers with the ClientKey the client
//! proved), `admin` with its plaintext password. Run serially (`--test-threads=1`).

mod common;

use pgherd_testkit::cluster::{AgentKind, TestCluster, SUPERUSER_PASSWORD};
use pgherd_testkit::pki::Pki;
use pgherd_testkit::proxy::ProxyProcess;
use pgherd_testkit::wait::poll;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const PGHERD: &str = env!("CARGO_BIN_EXE_pgherd");
const POOL_SIZE: usize = 4;
/// The `application_name` of this file's tokio-postgres clients (kept by the proxy on every
/// server connection they use, which is how the server side is counted).
const APPLICATION: &str = "pool-test";

/// A proxy with a transaction pool (`pool_size` 4, TLS to clients), a session pool
/// (`pool_size` 1, so that consecutive sessions share one server connection) and a second
/// transaction pool with one server connection (clients with different session settings
/// take turns on it) on the primary.
fn pooled_proxy(c: &TestCluster, name: &str, userlist: &Path) -> ProxyProcess {
    let file = userlist.display().to_string();
    let pki = Pki::generate(&c.root).expect("test certificates");
    let (cert, key) = (pki.server_cert.display(), pki.server_key.display());
    ProxyProcess::start_with_listeners(Path::new(PGHERD), c, name, "", 3, |p| {
        format!(
            "    - {{name: pool_tx, bind: 127.0.0.1:{}, role: primary, pool_mode: transaction, pool_size: {POOL_SIZE}, auth_file: {file}, query_wait_timeout: 60s, max_prepared_statements: 100, auth_user: admin, auth_query: 'SELECT * FROM public.user_lookup($1)', tls: {{cert: {cert}, key: {key}}}}}\n    - {{name: pool_session, bind: 127.0.0.1:{}, role: primary, pool_mode: session, pool_size: 1, auth_file: {file}, auth_type: md5}}\n    - {{name: pool_one, bind: 127.0.0.1:{}, role: primary, pool_mode: transaction, pool_size: 1, auth_file: {file}, query_wait_timeout: 60s, max_prepared_statements: 100}}\n",
            p[0], p[1], p[2]
        )
    })
    .expect("pgherd proxy")
}

/// A proxy (`extra_yaml` under `proxy:`) with one transaction pool, `name` (pool_size 2 and
/// `options`), on the primary, once that pool routes to the leader.
fn one_pool(
    c: &TestCluster,
    leader: usize,
    proxy: &str,
    extra_yaml: &str,
    name: &str,
    options: &str,
) -> ProxyProcess {
    let px = ProxyProcess::start_with_listeners(Path::new(PGHERD), c, proxy, extra_yaml, 1, |p| {
        format!(
            "    - {{name: {name}, bind: 127.0.0.1:{}, role: primary, pool_mode: transaction, pool_size: 2, {options}}}\n",
            p[0]
        )
    })
    .expect("pgherd proxy");
    let member = c.members[leader].name.clone();
    px.wait_for("the pool routes to the leader", |s| {
        routed(s, name, &member)
    });
    px
}

fn listener<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
        .expect("listener in stats")
}

fn routed(s: &Value, name: &str, member: &str) -> bool {
    listener(s, name)["servers"]
        .as_array()
        .is_some_and(|ss| ss.iter().any(|v| v["name"] == member && v["state"] == "up"))
}

async fn connect(port: u16, user: &str, password: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname("postgres")
        .application_name(APPLICATION)
        .connect_timeout(Duration::from_secs(45))
        .connect(NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The first column of the first row of a simple query.
async fn value(client: &Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    for m in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(r) = m {
            return Ok(r.get(0).unwrap_or_default().to_string());
        }
    }
    Ok(String::new())
}

fn pgbench(port: u16, args: &[&str]) -> Command {
    let mut cmd = Command::new("pgbench");
    cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(port.to_string())
        .args(args)
        .arg("postgres")
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .env("PGSSLMODE", "disable");
    cmd
}

/// Stops a child started by the test, by PID, also when the test fails.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Client connections with `application_name` open on member `i`.
fn backends(c: &TestCluster, i: usize, application: &str) -> usize {
    c.sql(
        i,
        &format!("select count(*) from pg_stat_activity where application_name = '{application}' and backend_type = 'client backend' and pid <> pg_backend_pid()"),
    )
    .ok()
    .and_then(|v| v.parse().ok())
    .unwrap_or(usize::MAX)
}

/// The asyncpg client of the transaction-pool test (argument: the port).
const ASYNCPG: &str = r#"
import asyncio, sys
import asyncpg

async def main(port):
    conns = [await asyncpg.connect(host='127.0.0.1', port=port, user='admin',
                                   password='admin-pass', database='postgres', ssl=False)
             for _ in range(3)]

    async def work(c, k):
        s = 0
        for i in range(50):
            s += await c.fetchval('select $1::int + $2::int', i, k)
            async with c.transaction():
                s += await c.fetchval('select $1::int * 2', i)
        return s

    total = sum(await asyncio.gather(*(work(c, k) for k, c in enumerate(conns))))
    stmt = await conns[0].prepare('select $1::text || $2::text')
    print(total, await stmt.fetchval('a', 'b'))

asyncio.run(main(int(sys.argv[1])))
"#;

/// Session settings on a transaction pool with one server connection: three clients take
/// turns on it, each sees its own settings and never another's; what a rolled-back or
/// failed transaction set is not kept; `RESET` and `RESET ALL` work.
async fn session_settings_follow_their_clients(port: u16) {
    let client = || async {
        connect(port, "postgres", SUPERUSER_PASSWORD)
            .await
            .expect("a client of the one-connection pool")
    };
    let (a, b, plain) = (client().await, client().await, client().await);
    let default_path = value(&plain, "show search_path").await.unwrap();
    a.batch_execute("SET search_path = s1").await.unwrap();
    b.batch_execute("SET SESSION search_path TO s2, public")
        .await
        .unwrap();
    // One server connection for all three.
    let pid = value(&a, "select pg_backend_pid()").await.unwrap();
    assert_eq!(value(&b, "select pg_backend_pid()").await.unwrap(), pid);
    for i in 0..5i32 {
        assert_eq!(value(&a, "select v from t").await.unwrap(), "s1");
        assert_eq!(value(&b, "select v from t").await.unwrap(), "s2");
        assert_eq!(
            value(&plain, "show search_path").await.unwrap(),
            default_path
        );
        // The extended protocol (named prepared statements) too.
        let v: String = a
            .query_one("select v || ($1::int)::text from t", &[&i])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, format!("s1{i}"));
        let v: String = b
            .query_one("select v || ($1::int)::text from t", &[&i])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, format!("s2{i}"));
    }
    // statement_timeout, TimeZone (kept from ParameterStatus) and a custom variable.
    let default_zone = value(&plain, "show timezone").await.unwrap();
    a.batch_execute(
        "SET statement_timeout = 1500; SET TIME ZONE 'Asia/Tokyo'; SET app.tenant = 'alpha'",
    )
    .await
    .unwrap();
    assert_eq!(value(&a, "show statement_timeout").await.unwrap(), "1500ms");
    assert_eq!(value(&b, "show statement_timeout").await.unwrap(), "0");
    assert_eq!(value(&a, "show timezone").await.unwrap(), "Asia/Tokyo");
    assert_eq!(value(&b, "show timezone").await.unwrap(), default_zone);
    // The startup packet's parameters survive the RESET ALL of every switch.
    assert_eq!(
        value(&b, "show application_name").await.unwrap(),
        APPLICATION
    );
    assert_eq!(
        value(&a, "show application_name").await.unwrap(),
        APPLICATION
    );
    assert_eq!(
        value(&a, "select current_setting('app.tenant')")
            .await
            .unwrap(),
        "alpha"
    );
    assert_eq!(
        value(&b, "select current_setting('app.tenant', true)")
            .await
            .unwrap(),
        ""
    );
    let e = a
        .batch_execute("select pg_sleep(5)")
        .await
        .expect_err("a's statement_timeout");
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e}");
    b.batch_execute("select pg_sleep(1.7)")
        .await
        .expect("b has no statement_timeout");
    // A SET in a transaction that rolls back, fails, or is rolled back to a savepoint before
    // it is not kept; in one that commits it is.
    b.batch_execute("BEGIN; SET search_path = s1")
        .await
        .unwrap();
    assert_eq!(value(&b, "select v from t").await.unwrap(), "s1");
    b.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(value(&b, "select v from t").await.unwrap(), "s2");
    b.batch_execute("BEGIN; SET search_path = s1")
        .await
        .unwrap();
    b.batch_execute("select 1/0")
        .await
        .expect_err("division by zero");
    b.batch_execute("COMMIT").await.unwrap();
    assert_eq!(value(&b, "select v from t").await.unwrap(), "s2");
    b.batch_execute("SET search_path = s1; select 1/0")
        .await
        .expect_err("division by zero");
    assert_eq!(value(&b, "select v from t").await.unwrap(), "s2");
    b.batch_execute("BEGIN; SAVEPOINT x; SET search_path = s1; ROLLBACK TO SAVEPOINT x; COMMIT")
        .await
        .unwrap();
    assert_eq!(value(&b, "select v from t").await.unwrap(), "s2");
    b.batch_execute("BEGIN; SET search_path = s1; COMMIT")
        .await
        .unwrap();
    assert_eq!(value(&b, "select v from t").await.unwrap(), "s1");
    assert_eq!(value(&a, "select v from t").await.unwrap(), "s1");
    // RESET of one variable, RESET ALL.
    b.batch_execute("SET work_mem = '3MB'; RESET search_path")
        .await
        .unwrap();
    assert_eq!(value(&b, "show search_path").await.unwrap(), default_path);
    assert_eq!(value(&b, "show work_mem").await.unwrap(), "3MB");
    a.batch_execute("RESET ALL").await.unwrap();
    assert_eq!(value(&a, "show search_path").await.unwrap(), default_path);
    assert_eq!(value(&a, "show statement_timeout").await.unwrap(), "0");
    assert_eq!(
        value(&a, "select current_setting('app.tenant', true)")
            .await
            .unwrap(),
        ""
    );
    assert_eq!(value(&b, "show work_mem").await.unwrap(), "3MB");
}

/// SQL `DEALLOCATE` of statements the pool renamed, sent as simple queries (libpq's
/// `PQexec`) beside psycopg's prepared statements (named `_pg3_0`, `_pg3_1`, ... per
/// connection); prints one line per answer (arguments: port, user, password).
const DEALLOCATE_CASES: &str = r#"
import sys
import psycopg
from psycopg import pq

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
a, b = [psycopg.connect(host='127.0.0.1', port=port, user=user, password=password,
                        dbname='postgres', sslmode='disable', autocommit=True) for _ in range(2)]

def simple(conn, sql):
    r = conn.pgconn.exec_(sql.encode())
    if r.status == pq.ExecStatus.COMMAND_OK:
        return r.command_status.decode()
    code = r.error_field(pq.DiagnosticField.SQLSTATE).decode()
    message = r.error_field(pq.DiagnosticField.MESSAGE_PRIMARY).decode()
    return f"{code} {message}"

def run(conn, query, arg):
    try:
        return str(conn.execute(query, (arg,), prepare=True).fetchone()[0])
    except psycopg.Error as e:
        return e.sqlstate

print(run(a, "select %s::int + 100", 1))
print(run(b, "select %s::int + 100", 1))
print(simple(a, "DEALLOCATE _pg3_0"))
print(run(a, "select %s::int + 100", 2))
print(run(b, "select %s::int + 100", 2))
print(simple(a, "DEALLOCATE nosuch"))
print(simple(a, "BEGIN"), simple(a, "DEALLOCATE nosuch")[:5], simple(a, "select 1")[:5],
      simple(a, "ROLLBACK"))
# The proxy's own statement names are not the client's to deallocate.
print(set(simple(a, f"DEALLOCATE pgherd_{n}")[:5] for n in range(300)))
print(run(b, "select %s::int + 100", 3))
print(run(a, "select %s::int * 3", 1))
print(simple(a, "BEGIN"), simple(a, "DEALLOCATE PREPARE ALL"), simple(a, "COMMIT"))
print(run(a, "select %s::int * 3", 2))
print(run(a, "select %s::int * 4", 2))
print(simple(a, "BEGIN"), simple(a, "select 1/0")[:5], simple(a, "DEALLOCATE _pg3_2"), simple(a, "ROLLBACK"))
print(run(a, "select %s::int * 4", 3))
"#;

/// [`DEALLOCATE_CASES`] through `port`: PostgreSQL's answers, statements forgotten for the
/// client that deallocated them only.
fn deallocate_forgets_the_clients_statements(port: u16) {
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            DEALLOCATE_CASES,
            &port.to_string(),
            "admin",
            "admin-pass",
        ])
        .output()
        .expect("python3 (Debian's, with python3-psycopg)");
    let aborted =
        "25P02 current transaction is aborted, commands ignored until end of transaction block";
    let expected = [
        "101",
        "101",
        "DEALLOCATE",
        // The client's statement is gone; another client's with the same text is not.
        "26000",
        "102",
        "26000 prepared statement \"nosuch\" does not exist",
        // In a transaction it fails the transaction.
        "BEGIN 26000 25P02 ROLLBACK",
        "{'26000'}",
        "103",
        "3",
        "BEGIN DEALLOCATE ALL COMMIT",
        "26000",
        "8",
        &format!("BEGIN 22012 {aborted} ROLLBACK"),
        // Its DEALLOCATE failed with its transaction: still prepared.
        "12",
    ]
    .join("\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        expected,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pgJDBC client (Debian's libpostgresql-jdbc-java) of the transaction-pool test, run as
/// a single-file Java program (arguments: the port, the user, the password). pgJDBC sends
/// `extra_float_digits` and (from `currentSchema`) `search_path` in its startup packet and,
/// with `prepareThreshold=1`, names every statement it prepares; it prints its
/// `extra_float_digits`, its `search_path`, and the sum of its prepared selects and of a
/// transaction with autocommit off.
const JDBC: &str = r#"
import java.sql.*;
public class Jdbc {
  public static void main(String[] a) throws Exception {
    String url = "jdbc:postgresql://127.0.0.1:" + a[0] + "/postgres?sslmode=disable&prepareThreshold=1&currentSchema=s2,public";
    Connection[] cs = new Connection[3];
    for (int i = 0; i < 3; i++) cs[i] = DriverManager.getConnection(url, a[1], a[2]);
    long total = 0;
    for (int k = 0; k < 50; k++) for (int i = 0; i < 3; i++) {
      try (PreparedStatement ps = cs[i].prepareStatement("select ?::int + ?::int")) {
        ps.setInt(1, k); ps.setInt(2, i);
        try (ResultSet r = ps.executeQuery()) { r.next(); total += r.getInt(1); }
      }
    }
    cs[1].setAutoCommit(false);
    try (PreparedStatement ps = cs[1].prepareStatement("select count(*) from t where v = ?")) {
      for (int k = 0; k < 5; k++) {
        ps.setString(1, "s2");
        try (ResultSet r = ps.executeQuery()) { r.next(); total += r.getLong(1); }
      }
    }
    cs[1].commit();
    String out = "";
    try (Statement st = cs[2].createStatement();
         ResultSet r = st.executeQuery("select current_setting('extra_float_digits'), current_setting('search_path')")) {
      r.next(); out = r.getString(1) + " [" + r.getString(2) + "] ";
    }
    System.out.println(out + total);
  }
}
"#;

/// Runs [`JDBC`] against `port`; its output line.
fn jdbc(dir: &Path, port: u16, user: &str, password: &str) -> String {
    let src = dir.join("Jdbc.java");
    std::fs::write(&src, JDBC).expect("writing Jdbc.java");
    let out = Command::new("java")
        .args(["-cp", "/usr/share/java/postgresql.jar"])
        .arg(&src)
        .args([&port.to_string(), user, password])
        .output()
        .expect("java (Debian's openjdk-17-jdk-headless)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `insert ... returning` the port of the server that took it.
async fn insert_port(c: &Client) -> Result<String, tokio_postgres::Error> {
    value(
        c,
        "insert into t(port) values (inet_server_port()) returning port",
    )
    .await
}

#[test]
fn transaction_pool_bounds_servers_authenticates_refuses_and_cancels() {
    let (c, leader) = common::cluster("pooltx");
    let userlist = common::userlist(&c, leader, "\"admin\" \"admin-pass\"\n");
    let px = pooled_proxy(&c, "px-pool", &userlist);
    let leader_name = c.members[leader].name.clone();
    px.wait_for("the pools route to the leader", |s| {
        routed(s, "pool_tx", &leader_name) && routed(s, "pool_session", &leader_name)
    });
    let (tx, session, one) = (px.extra[0], px.extra[1], px.extra[2]);
    c.sql(
        leader,
        "create schema s1; create schema s2; create table s1.t(v text); create table s2.t(v text); \
         insert into s1.t values ('s1'); insert into s2.t values ('s2')",
    )
    .expect("two schemas");
    let rt = common::runtime();

    // pgbench with five times more clients than pool_size, with named prepared statements
    // (each client lands on several server connections): no error, and never more server
    // connections than pool_size. Throttled to 1000 transactions/s: a saturated 2-core
    // machine starves the agents' health answers, and the proxy then rightly cuts write
    // transactions.
    let init = pgbench(c.members[leader].pg_port, &["-i", "-s", "1", "-q"])
        .output()
        .expect("pgbench -i");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let clients = (5 * POOL_SIZE).to_string();
    let mut most = 0;
    let run = |most: &mut usize| {
        let mut bench = Reaped(
            pgbench(
                tx,
                &[
                    "-n", "-S", "-M", "prepared", "-c", &clients, "-j", "2", "-T", "6", "-R",
                    "1000",
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pgbench"),
        );
        let finished = poll(
            "pgbench through the transaction pool",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                let n = backends(&c, leader, "pgbench");
                if n != usize::MAX {
                    *most = (*most).max(n);
                }
                bench.0.try_wait().ok().flatten()
            },
        )
        .expect("pgbench ends");
        let mut out = String::new();
        let mut err = String::new();
        use std::io::Read;
        let _ = bench
            .0
            .stdout
            .take()
            .map(|mut s| s.read_to_string(&mut out));
        let _ = bench
            .0
            .stderr
            .take()
            .map(|mut s| s.read_to_string(&mut err));
        (finished, out, err)
    };
    let (mut finished, mut out, mut err) = run(&mut most);
    // On an overloaded machine the leader may miss its live-status deadline twice (`fall`)
    // and answer GET /primary 503: the proxy then closes every write transaction in flight,
    // as it must. That run says nothing about pooling: run once more.
    if !finished.success()
        && px
            .log_tail(1000)
            .contains("closing sessions (writes must stop)")
    {
        eprintln!("the routing flapped during pgbench (see the proxy log): once more\n{err}");
        (finished, out, err) = run(&mut most);
    }
    assert!(
        finished.success(),
        "pgbench failed:\n{out}\n{err}\n{}",
        px.log_tail(30)
    );
    assert!(
        out.contains(&format!("number of clients: {clients}")),
        "{out}"
    );
    assert!(
        out.contains("number of failed transactions: 0 (0.000%)"),
        "{out}"
    );
    assert!(
        (1..=POOL_SIZE).contains(&most),
        "server connections seen: {most} (pool_size {POOL_SIZE})"
    );
    let s = px.stats().expect("stats");
    let pools = &listener(&s, "pool_tx")["pool"]["pools"];
    let mine = pools
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["user"] == "postgres"))
        .expect("the postgres pool in the stats");
    assert!(
        mine["servers_open"].as_u64().unwrap() <= POOL_SIZE as u64,
        "{mine}"
    );
    assert!(mine["checkouts"].as_u64().unwrap() > 100, "{mine}");
    // TLS to clients: psql verifying the proxy's certificate (verify-full) gets in; the
    // plain clients above were let in without it.
    let ca = c.root.join("ca.pem");
    let tls = Command::new("psql")
        .args(["-X", "-A", "-t", "-c", "select 1"])
        .arg(format!(
            "host=127.0.0.1 port={tx} user=admin dbname=postgres sslmode=verify-full sslrootcert={}",
            ca.display()
        ))
        .env("PGPASSWORD", "admin-pass")
        .output()
        .expect("psql");
    assert_eq!(
        String::from_utf8_lossy(&tls.stdout).trim(),
        "1",
        "{}",
        String::from_utf8_lossy(&tls.stderr)
    );
    // asyncpg (every query a named prepared statement of its cache) through the transaction
    // pool: three connections, transactions interleaved, statements landing on whichever
    // server connection is free.
    let asyncpg = Command::new("/usr/bin/python3")
        .args(["-c", ASYNCPG, &tx.to_string()])
        .output()
        .expect("python3 (Debian's, with python3-asyncpg)");
    let expected: i64 = (0..3i64)
        .map(|k| (0..50i64).map(|i| (i + k) + 2 * i).sum::<i64>())
        .sum();
    assert_eq!(
        String::from_utf8_lossy(&asyncpg.stdout).trim(),
        format!("{expected} ab"),
        "{}",
        String::from_utf8_lossy(&asyncpg.stderr)
    );
    // pgJDBC through the transaction pool gives what it gets from PostgreSQL directly: its
    // startup packet's extra_float_digits and currentSchema (search_path) on every server
    // connection it lands on, its named statements re-prepared there.
    let through_pool = jdbc(&c.root, tx, "postgres", SUPERUSER_PASSWORD);
    let direct = jdbc(
        &c.root,
        c.members[leader].pg_port,
        "postgres",
        SUPERUSER_PASSWORD,
    );
    assert_eq!(through_pool, direct);
    assert!(direct.ends_with(" [s2,public] 3830"), "{direct}");
    // psycopg 3 (SQL DEALLOCATE as its cache evicts) through the one-connection pool.
    common::psycopg_through(one, "admin", "admin-pass");
    deallocate_forgets_the_clients_statements(one);
    let metrics = pgherd_testkit::cluster::http_request(px.stats, "GET", "/metrics", None)
        .expect("metrics")
        .1;
    assert!(
        metrics.contains("pgherd_proxy_pool_checkouts_total{"),
        "{metrics}"
    );

    rt.block_on(async {
        // Authentication at the proxy: a wrong password is refused with 28P01, the
        // plaintext user and the SCRAM-verifier user get in.
        let wrong = connect(tx, "admin", "not-the-password").await.map(drop).expect_err("refused");
        assert_eq!(wrong.code(), Some(&SqlState::INVALID_PASSWORD), "{wrong}");
        let wrong = connect(tx, "postgres", "nope").await.map(drop).expect_err("refused");
        assert_eq!(wrong.code(), Some(&SqlState::INVALID_PASSWORD), "{wrong}");
        let admin = connect(tx, "admin", "admin-pass").await.expect("admin through the pool");
        assert_eq!(value(&admin, "select current_user").await.unwrap(), "admin");
        let wrong = connect(session, "admin", "wrong").await.map(drop).expect_err("refused (md5)");
        assert_eq!(wrong.code(), Some(&SqlState::INVALID_PASSWORD), "{wrong}");

        // A user missing from the userlist is looked up with auth_query (as auth_user, through
        // a SECURITY DEFINER function as pgbouncer recommends).
        let pg0 = connect(tx, "postgres", SUPERUSER_PASSWORD).await.unwrap();
        pg0.batch_execute(
            "CREATE ROLE carol LOGIN PASSWORD 'carol-pw';
             CREATE FUNCTION public.user_lookup(i_user text, OUT uname name, OUT phash text)
               RETURNS record AS $$ SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = i_user $$
               LANGUAGE sql SECURITY DEFINER;
             REVOKE ALL ON FUNCTION public.user_lookup(text) FROM public;
             GRANT EXECUTE ON FUNCTION public.user_lookup(text) TO admin;",
        )
        .await
        .unwrap();
        let carol = connect(tx, "carol", "carol-pw").await.expect("auth_query user");
        assert_eq!(value(&carol, "select current_user").await.unwrap(), "carol");
        let wrong = connect(tx, "carol", "nope").await.map(drop).expect_err("refused");
        assert_eq!(wrong.code(), Some(&SqlState::INVALID_PASSWORD), "{wrong}");
        let wrong = connect(tx, "nobody", "x").await.map(drop).expect_err("refused");
        assert_eq!(wrong.code(), Some(&SqlState::INVALID_PASSWORD), "{wrong}");

        // Session state the transaction pool cannot keep is refused, clearly, and the
        // session goes on.
        let pg = connect(tx, "postgres", SUPERUSER_PASSWORD).await.expect("postgres through the pool");
        for (sql, named) in [
            ("PREPARE p AS select 1", "PREPARE"),
            ("LISTEN chan", "LISTEN"),
            ("SET ROLE admin", "SET ROLE"),
            ("SET SESSION AUTHORIZATION admin", "SET SESSION AUTHORIZATION"),
            ("select pg_advisory_lock(1)", "pg_advisory_lock()"),
            ("create temp table t(a int)", "CREATE TEMPORARY"),
            // Another server connection's sequence state (or none): refused in a transaction
            // of its own, also through the extended protocol.
            ("select currval('seq_t')", "currval() or lastval()"),
            ("select lastval()", "currval() or lastval()"),
        ] {
            let e = pg.batch_execute(sql).await.map(drop).expect_err(sql);
            assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{sql}: {e}");
            let text = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
            assert!(text.contains(named) && text.contains("pool_mode transaction"), "{text}");
        }
        let e = pg.query("select currval('seq_t')", &[]).await.map(drop).expect_err("extended");
        assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e}");
        // In the transaction that called nextval(), currval() is what PostgreSQL says.
        pg.batch_execute("create sequence seq_t").await.unwrap();
        assert_eq!(value(&pg, "select nextval('seq_t'); select currval('seq_t')").await.unwrap(), "1");
        pg.batch_execute("BEGIN").await.unwrap();
        assert_eq!(value(&pg, "select nextval('seq_t')").await.unwrap(), "2");
        let current: i64 = pg.query_one("select currval('seq_t')", &[]).await.expect("in the block").get(0);
        assert_eq!(current, 2);
        pg.batch_execute("COMMIT").await.unwrap();
        // Inside a transaction block the transaction fails as for any error.
        pg.batch_execute("BEGIN").await.unwrap();
        let e = pg.batch_execute("SET ROLE admin").await.map(drop).expect_err("refused");
        assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e}");
        let e = pg.batch_execute("select 1").await.map(drop).expect_err("aborted transaction");
        assert_eq!(e.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION), "{e}");
        pg.batch_execute("ROLLBACK").await.unwrap();
        // Parameters the proxy keeps per client follow it onto every server connection.
        pg.batch_execute("SET application_name = 'kept-by-the-proxy'").await.unwrap();
        for _ in 0..10 {
            assert_eq!(value(&pg, "show application_name").await.unwrap(), "kept-by-the-proxy");
        }
        // Named prepared statements (tokio-postgres prepares every statement under a name)
        // follow their clients across server connections: `a` holds one connection in a
        // transaction while `b`'s statement runs on another.
        let a = connect(tx, "postgres", SUPERUSER_PASSWORD).await.unwrap();
        let b = connect(tx, "postgres", SUPERUSER_PASSWORD).await.unwrap();
        let sa = a.prepare("select $1::int + 1").await.expect("prepare through the pool");
        let sb = b.prepare("select $1::int * 2").await.unwrap();
        a.batch_execute("BEGIN").await.unwrap();
        for i in 0..20i32 {
            let x: i32 = a.query_one(&sa, &[&i]).await.unwrap().get(0);
            let y: i32 = b.query_one(&sb, &[&i]).await.expect("on another server connection").get(0);
            assert_eq!((x, y), (i + 1, i * 2));
        }
        a.batch_execute("COMMIT").await.unwrap();
        let sb2 = b.prepare("select $1::int + 1").await.unwrap();
        drop(sb);
        let x: i32 = b.query_one(&sb2, &[&41]).await.unwrap().get(0);
        assert_eq!(x, 42);
        let e = b.batch_execute("PREPARE p AS select 1").await.map(drop).expect_err("SQL PREPARE");
        assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e}");

        session_settings_follow_their_clients(one).await;

        // Session mode keeps everything.
        let s = connect(session, "admin", "admin-pass").await.expect("admin through the session pool");
        s.batch_execute("PREPARE p AS select 41 + 1; SET search_path = x").await.unwrap();
        assert_eq!(value(&s, "EXECUTE p").await.unwrap(), "42");
        assert_eq!(value(&s, "show search_path").await.unwrap(), "x");
        drop(s);
        // The next session gets a reset connection (DISCARD ALL).
        let s = connect(session, "admin", "admin-pass").await.unwrap();
        assert_eq!(value(&s, "show search_path").await.unwrap(), "\"$user\", public");

        // Cancel: the proxy's key reaches the server connection running the query.
        let watcher = connect(tx, "postgres", SUPERUSER_PASSWORD).await.expect("a second client");
        let token = pg.cancel_token();
        let sleeper = tokio::spawn(async move { pg.simple_query("select pg_sleep(60)").await.map(|_| ()) });
        let running = async {
            loop {
                let n = value(
                    &watcher,
                    "select count(*) from pg_stat_activity where query = 'select pg_sleep(60)' and state = 'active'",
                )
                .await
                .unwrap();
                if n == "1" {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), running).await.expect("pg_sleep running");
        token.cancel_query(NoTls).await.expect("cancel request sent");
        let ended = tokio::time::timeout(Duration::from_secs(20), sleeper)
            .await
            .expect("the query was cancelled")
            .unwrap();
        let e = ended.map(drop).expect_err("cancelled");
        assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e}");
    });
}

#[test]
fn switchover_under_pooled_load_moves_clients_between_transactions() {
    let (c, leader) = common::cluster("poolsw");
    let userlist = common::userlist(&c, leader, "\"admin\" \"admin-pass\"\n");
    let px = pooled_proxy(&c, "px-sw", &userlist);
    let old = c.members[leader].name.clone();
    px.wait_for("the pool routes to the leader", |s| {
        routed(s, "pool_tx", &old)
    });
    let tx = px.extra[0];
    let rt = common::runtime();
    rt.block_on(async {
        let idle = connect(tx, "postgres", SUPERUSER_PASSWORD)
            .await
            .expect("client");
        idle.batch_execute("create table t(id serial primary key, port int)")
            .await
            .unwrap();
        assert_eq!(
            insert_port(&idle).await.unwrap(),
            c.members[leader].pg_port.to_string()
        );

        // Load: writers through the pool for the whole switchover, each a loop of one-statement
        // transactions on one connection.
        let mut writers = Vec::new();
        for _ in 0..6 {
            let w = connect(tx, "postgres", SUPERUSER_PASSWORD)
                .await
                .expect("writer");
            let new_port = c.members[(0..3).find(|&i| i != leader).unwrap()]
                .pg_port
                .to_string();
            writers.push(tokio::spawn(async move {
                let (mut on_new, mut failed) = (0u32, 0u32);
                for _ in 0..2_000 {
                    match insert_port(&w).await {
                        Ok(p) if p == new_port => on_new += 1,
                        Ok(_) => {}
                        Err(e) if e.is_closed() => return (on_new, failed + 1),
                        Err(_) => failed += 1,
                    }
                    if on_new >= 50 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (on_new, failed)
            }));
        }
        let target = (0..3).find(|&i| i != leader).unwrap();
        let new = c.members[target].name.clone();
        let out = c
            .ctl(
                leader,
                &[
                    "switchover",
                    "--leader",
                    &old,
                    "--candidate",
                    &new,
                    "--force",
                ],
            )
            .expect("switchover");
        eprintln!("{out}");
        let mut s = Value::Null;
        for _ in 0..600 {
            s = px.stats().unwrap_or_default();
            if routed(&s, "pool_tx", &new) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(routed(&s, "pool_tx", &new), "{s}\n{}", px.log_tail(40));
        // The pool's connections to the old primary are closed.
        let gone = listener(&s, "pool_tx")["pool"]["pools"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["member"] == old.as_str())
                    .all(|p| p["servers_open"] == 0)
            })
            .unwrap_or(true);
        assert!(gone, "{s}");
        // The client that sat between transactions does not notice: its next transaction
        // runs on the new primary.
        assert_eq!(
            insert_port(&idle)
                .await
                .expect("the idle client's next transaction"),
            c.members[target].pg_port.to_string()
        );
        let mut total = (0, 0);
        for w in writers {
            let (on_new, failed) = w.await.unwrap();
            total = (total.0 + on_new, total.1 + failed);
        }
        // Writers between transactions at the switchover went on to the new primary; one cut
        // in the middle of a transaction failed loudly (FATAL) instead.
        eprintln!(
            "writers: {} transactions on the new primary, {} failed",
            total.0, total.1
        );
        assert!(total.0 > 0, "no writer reached the new primary");
    });
    // The old primary's server connections are gone on the server side too.
    let closed = poll(
        "no pooled server connection left on the old primary",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || (backends(&c, leader, APPLICATION) == 0).then_some(()),
    );
    assert!(closed.is_ok(), "{}", px.log_tail(40));
}

/// Server connections over TLS to PostgreSQL itself (`ssl = on`, `server_tls` verify-full),
/// the `auth_file` read again on SIGHUP (a broken file keeps the users read before), and a
/// client that logs in while the leader's node is down: it gets in at once and its first
/// query waits for the new primary.
#[test]
fn server_tls_to_postgres_auth_file_reload_and_login_during_a_failover() {
    // The certificates PostgreSQL serves: readable by the postgres OS user (PostgreSQL runs
    // as it when the test runs as root), the key private to it.
    let pki_dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(pki_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let pki = Pki::generate(pki_dir.path()).expect("test certificates");
    std::fs::set_permissions(&pki.server_cert, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&pki.server_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    if nix::unistd::geteuid().is_root() {
        let pg = nix::unistd::User::from_name("postgres")
            .unwrap()
            .expect("the postgres OS user");
        nix::unistd::chown(pki.server_key.as_path(), Some(pg.uid), Some(pg.gid)).unwrap();
    }
    let ssl = format!(
        "        max_connections: 50\n        ssl: 'on'\n        ssl_cert_file: {}\n        ssl_key_file: {}\n",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let c = common::cluster_with("pooltls", 3, AgentKind::Pgherd, |_, yaml| {
        yaml.replace("        max_connections: 50\n", &ssl)
    });
    let leader = common::healthy(&c, 2);
    let userlist = common::userlist(&c, leader, "");
    let file = userlist.display().to_string();
    let ca = pki.ca.display().to_string();
    let px = one_pool(
        &c,
        leader,
        "px-tls",
        "",
        "pool_tls",
        &format!(
            "auth_file: {file}, hold_timeout: 60s, server_tls: {{mode: verify-full, ca: {ca}}}"
        ),
    );
    let port = px.extra[0];
    let pid = nix::unistd::Pid::from_raw(px.pid().expect("proxy pid"));
    let rt = common::runtime();
    rt.block_on(async {
        // The server connection is TLS, verified against the CA.
        let pg = connect(port, "postgres", SUPERUSER_PASSWORD)
            .await
            .expect("client");
        assert_eq!(
            value(
                &pg,
                "select ssl::text || ' ' || version from pg_stat_ssl where pid = pg_backend_pid()"
            )
            .await
            .unwrap(),
            "true TLSv1.3"
        );
        pg.batch_execute("create role carol login password 'carol-pw'")
            .await
            .unwrap();

        // carol is not in the auth file yet; after SIGHUP she is.
        let refused = connect(port, "carol", "carol-pw")
            .await
            .map(drop)
            .expect_err("not yet a user");
        assert_eq!(
            refused.code(),
            Some(&SqlState::INVALID_PASSWORD),
            "{refused}"
        );
        let mut text = std::fs::read_to_string(&userlist).unwrap();
        text.push_str("\"carol\" \"carol-pw\"\n");
        std::fs::write(&userlist, &text).unwrap();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        let mut carol = None;
        for _ in 0..100 {
            if let Ok(cl) = connect(port, "carol", "carol-pw").await {
                carol = Some(cl);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let carol = carol.unwrap_or_else(|| panic!("carol after SIGHUP\n{}", px.log_tail(20)));
        assert_eq!(value(&carol, "select current_user").await.unwrap(), "carol");

        // A file that does not parse: logged, the users read before stay.
        std::fs::write(&userlist, "\"carol\" \"unterminated\n").unwrap();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        let mut logged = false;
        for _ in 0..100 {
            if px.log_tail(20).contains("stay in force") {
                logged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(logged, "{}", px.log_tail(20));
        let again = connect(port, "carol", "carol-pw")
            .await
            .expect("carol still a user");
        assert_eq!(value(&again, "select current_user").await.unwrap(), "carol");
        std::fs::write(&userlist, &text).unwrap();
    });

    // The leader's node crashes. Once the proxy has no server to route to, a new client
    // still logs in at once (with the parameters the old primary gave); its first query
    // waits for the new primary.
    let mut c = c;
    c.signal_node(leader, nix::sys::signal::Signal::SIGKILL)
        .expect("crash the leader's node");
    px.wait_for("the pool holding (no primary)", |s| {
        listener(s, "pool_tls")["readiness"] == "holding"
    });
    rt.block_on(async {
        let login = tokio::time::timeout(
            Duration::from_secs(3),
            connect(port, "postgres", SUPERUSER_PASSWORD),
        )
        .await
        .expect("the login waited for a primary")
        .expect("login during the failover");
        let s = px.stats().expect("stats");
        assert_eq!(
            listener(&s, "pool_tls")["readiness"],
            "holding",
            "a primary appeared before the login ended: the check proves nothing"
        );
        let port_now = tokio::time::timeout(
            Duration::from_secs(90),
            value(&login, "select inet_server_port()"),
        )
        .await
        .expect("the held query ran")
        .expect("the held query");
        assert_ne!(port_now, c.members[leader].pg_port.to_string());
        // The new primary's server connection is TLS too.
        assert_eq!(
            value(
                &login,
                "select ssl::text from pg_stat_ssl where pid = pg_backend_pid()"
            )
            .await
            .unwrap(),
            "true"
        );
    });
}

/// The pooled side of listener `name` in the stats: (clients, parked).
fn pooled_clients(s: &Value, name: &str) -> (u64, u64) {
    let pool = &listener(s, name)["pool"];
    (
        pool["clients"].as_u64().unwrap_or(u64::MAX),
        pool["parked"].as_u64().unwrap_or(u64::MAX),
    )
}

/// Idle clients of a transaction pool leave their tasks ("parked", see
/// crates/proxy/src/pool/client/park.rs): a parked client wakes up for its next transaction,
/// one that closes is cleaned up, and one idle for `client_idle` is closed by the proxy.
#[test]
fn idle_clients_are_parked_woken_up_and_closed() {
    let (c, leader) = common::cluster("poolpark");
    let userlist = common::userlist(&c, leader, "");
    let file = userlist.display().to_string();
    let px = one_pool(
        &c,
        leader,
        "px-park",
        "  timeouts:\n    client_idle: 3s\n",
        "pool_tx",
        &format!("auth_file: {file}"),
    );
    let port = px.extra[0];
    let rt = common::runtime();

    // Logged in and idle: parked, and it still runs its next transactions.
    let a = rt
        .block_on(connect(port, "postgres", SUPERUSER_PASSWORD))
        .expect("client a logs in");
    px.wait_for("client a parked", |s| {
        pooled_clients(s, "pool_tx") == (1, 1)
    });
    assert_eq!(rt.block_on(value(&a, "select 41 + 1")).unwrap(), "42");
    px.wait_for("client a parked again", |s| {
        pooled_clients(s, "pool_tx") == (1, 1)
    });
    rt.block_on(a.batch_execute("begin; create temp table t(v int) on commit drop; commit"))
        .expect("a transaction of several statements after parking");

    // A parked client that closes is gone from every count.
    let b = rt
        .block_on(connect(port, "postgres", SUPERUSER_PASSWORD))
        .expect("client b logs in");
    px.wait_for("clients a and b parked", |s| {
        pooled_clients(s, "pool_tx") == (2, 2)
    });
    drop(b);
    px.wait_for("client b cleaned up", |s| {
        pooled_clients(s, "pool_tx") == (1, 1) && listener(s, "pool_tx")["clients"] == 1
    });

    // Client a, left idle: closed after client_idle (3 s), not before.
    let last = std::time::Instant::now();
    assert_eq!(rt.block_on(value(&a, "select 1")).unwrap(), "1");
    px.wait_for("client a closed after client_idle", |s| {
        pooled_clients(s, "pool_tx") == (0, 0) && listener(s, "pool_tx")["clients"] == 0
    });
    let idle = last.elapsed();
    assert!(idle >= Duration::from_secs(3), "closed after {idle:?}");
    assert!(rt.block_on(value(&a, "select 1")).is_err());
}
