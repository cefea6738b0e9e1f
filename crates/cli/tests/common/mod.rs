//! The harness of the operator-control tests (`control_*.rs`, `patroni_interop.rs`): clusters
//! of real etcd (or ZooKeeper) and PostgreSQL 15 run by `pgherd agent` (or Patroni), the `pgherd` and
//! `patronictl` commands, raw HTTP requests and the waits the tests share.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use pgherd_testkit::cluster::{AgentKind, ClusterOptions, TestCluster};
use pgherd_testkit::wait::poll;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const PGHERD: &str = env!("CARGO_BIN_EXE_pgherd");

/// A cluster whose member files are rewritten by `edit(member_name, yaml)` before start.
pub fn cluster_with(
    scope: &str,
    members: usize,
    agent: AgentKind,
    edit: impl Fn(&str, String) -> String,
) -> TestCluster {
    let options = ClusterOptions {
        scope: scope.into(),
        members,
        agent,
        ..ClusterOptions::default()
    };
    cluster_from(options, edit)
}

/// [`cluster_with`] from whole options (e.g. another DCS).
pub fn cluster_from(options: ClusterOptions, edit: impl Fn(&str, String) -> String) -> TestCluster {
    let mut c = TestCluster::new(Path::new(PGHERD), options).expect("cluster directories and etcd");
    for m in &c.members {
        let yaml = std::fs::read_to_string(&m.config).unwrap();
        std::fs::write(&m.config, edit(&m.name, yaml)).unwrap();
    }
    c.start_all().expect("agents");
    c
}

pub fn cluster(scope: &str) -> (TestCluster, usize) {
    let c = cluster_with(scope, 3, AgentKind::Pgherd, |_, y| y);
    let leader = healthy(&c, 2);
    (c, leader)
}

/// One leader, `replicas` streaming replicas, and every member key saying `running` (what
/// the leader's engine looks at to pick a switchover target).
pub fn healthy(c: &TestCluster, replicas: usize) -> usize {
    let leader = match c.wait_healthy(replicas, Duration::from_secs(120)) {
        Ok(leader) => leader,
        Err(e) => {
            dump_logs(c);
            panic!("{e}");
        }
    };
    check(
        c,
        poll(
            "every member key to say running",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                c.members
                    .iter()
                    .all(|m| {
                        dcs_json(c, &format!("members/{}", m.name))
                            .is_some_and(|v| v["state"] == "running" && v["xlog_location"].is_u64())
                    })
                    .then_some(())
            },
        ),
    );
    leader
}

pub fn dump_logs(c: &TestCluster) {
    for i in 0..c.members.len() {
        eprintln!("--- {} ---\n{}", c.members[i].name, c.log_tail(i, 60));
    }
}

/// Fails the test with the agents' logs when `result` is an error.
pub fn check<T>(c: &TestCluster, result: anyhow::Result<T>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => {
            dump_logs(c);
            panic!("{e:#}");
        }
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self.stdout
    }
}

/// `program args -c <config of member i>` with `stdin` fed to it.
pub fn run_with(
    program: &str,
    c: &TestCluster,
    i: usize,
    args: &[&str],
    stdin: Option<&str>,
) -> Run {
    let mut child = Command::new(program)
        .args(args)
        .arg("-c")
        .arg(&c.members[i].config)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn pgherd(c: &TestCluster, args: &[&str]) -> Run {
    run_with(PGHERD, c, 0, args, None)
}

pub fn patronictl(c: &TestCluster, args: &[&str]) -> Run {
    // patronictl takes -c before the command.
    let out = Command::new("patronictl")
        .arg("-c")
        .arg(&c.members[0].config)
        .args(args)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .output()
        .expect("patronictl (Debian package patroni)");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One HTTP/1.1 request with extra headers: (status, raw head, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        request.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// The message of a refusal as Patroni sends it: the plain text, or the status phrase of
/// Python's error page (`send_error`).
pub fn error_of(body: &str) -> String {
    match body.split_once("<p>Message: ") {
        Some((_, rest)) => rest
            .split_once(".</p>")
            .unwrap_or_else(|| panic!("not Python's error page: {body}"))
            .0
            .to_string(),
        None => body.to_string(),
    }
}

pub fn dcs_json(c: &TestCluster, key: &str) -> Option<Value> {
    c.dcs_value(key).and_then(|v| serde_json::from_str(&v).ok())
}

pub fn index_of(c: &TestCluster, name: &str) -> usize {
    c.members.iter().position(|m| m.name == name).unwrap()
}

/// Waits until member `i` is the only leader and accepts writes.
pub fn writable_leader(c: &TestCluster, i: usize) {
    check(
        c,
        poll(
            "the new leader accepting writes",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                (c.leader_index() == Some(i)).then_some(())?;
                c.sql(i, "insert into t(v) values ('probe')").ok()
            },
        ),
    );
}

/// Waits until every member but the leader streams from `leader`.
pub fn all_streaming(c: &TestCluster, leader: usize) {
    let wanted = c.members.len() - 1;
    check(
        c,
        poll(
            "every replica streaming from the leader",
            Duration::from_secs(90),
            Duration::from_millis(250),
            || {
                let n: usize = c
                    .sql(
                        leader,
                        "select count(*) from pg_stat_replication where state = 'streaming'",
                    )
                    .ok()?
                    .parse()
                    .ok()?;
                (n >= wanted).then_some(())
            },
        ),
    );
}

pub fn rows_everywhere(c: &TestCluster, expected: &str) {
    for i in 0..c.members.len() {
        check(
            c,
            poll(
                "rows on every member",
                Duration::from_secs(60),
                Duration::from_millis(200),
                || {
                    (c.sql(i, "select count(*) from t where v like 'row%'")
                        .ok()?
                        == expected)
                        .then_some(())
                },
            ),
        );
    }
}

/// `condition` holds at every check during `window` (for "nothing happens" assertions).
#[allow(
    clippy::disallowed_methods,
    reason = "synchronous tests: waits on the test thread, no async runtime"
)]
pub fn holds_for(window: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + window;
    while Instant::now() < end {
        if !condition() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    true
}

/// Waits until the `failover` key says "no request" (`{}`): a switchover was carried out.
pub fn failover_request_cleared(c: &TestCluster) {
    check(
        c,
        poll(
            "the request cleared",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || (dcs_json(c, "failover")? == serde_json::json!({})).then_some(()),
        ),
    );
}

/// `pgherd list -f json` of a Patroni cluster of three, once all three are running (Patroni
/// refreshes member keys every loop_wait): one Leader, the others Replica, on timeline 1, with
/// their PostgreSQL addresses. Returns the rows.
pub fn pgherd_lists_patroni(c: &TestCluster, leader: usize, scope: &str) -> Value {
    let leader_name = c.members[leader].name.clone();
    let rows: Value = check(
        c,
        poll(
            "three running members in pgherd list",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                let out = pgherd(c, &["list", "-f", "json"]);
                let v: Value = serde_json::from_str(&out.stdout).ok()?;
                (v.as_array()?
                    .iter()
                    .filter(|r| r["State"] == "running")
                    .count()
                    == 3)
                    .then_some(v)
            },
        ),
    );
    for row in rows.as_array().unwrap() {
        let name = row["Member"].as_str().unwrap();
        let want = if name == leader_name {
            "Leader"
        } else {
            "Replica"
        };
        assert_eq!(row["Role"], want, "{rows}");
        assert_eq!(row["Cluster"], scope);
        assert_eq!(row["TL"], 1, "{rows}");
        let i = index_of(c, name);
        assert_eq!(row["Host"], format!("127.0.0.1:{}", c.members[i].pg_port));
    }
    rows
}

/// A pgbouncer-format userlist in the cluster's directory: `postgres` with the SCRAM verifier
/// the servers store (so the proxy logs in with the client's proven key), then `extra` lines.
pub fn userlist(c: &TestCluster, leader: usize, extra: &str) -> std::path::PathBuf {
    let verifier = c
        .sql(
            leader,
            "select rolpassword from pg_authid where rolname = 'postgres'",
        )
        .expect("the superuser's verifier");
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let file = c.root.join("userlist.txt");
    std::fs::write(&file, format!("\"postgres\" \"{verifier}\"\n{extra}"))
        .expect("writing the userlist");
    file
}

/// The psycopg 3 client of the pooled-listener tests (arguments: port, user, password).
/// psycopg prepares every statement (`prepare_threshold=0`) and, its cache holding
/// `prepared_max` = 4 of them, sends a SQL `DEALLOCATE` for each one it evicts, and a
/// `DEALLOCATE ALL` after a `ROLLBACK`: 4 connections, 40 distinct statements each, through a
/// pool with fewer server connections. A prepared `SET` follows its connection only.
const PSYCOPG: &str = r#"
import sys
import psycopg

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
conns = [psycopg.connect(host='127.0.0.1', port=port, user=user, password=password,
                         dbname='postgres', sslmode='disable', autocommit=True,
                         prepare_threshold=0) for _ in range(4)]
for c in conns:
    c.prepared_max = 4
total = 0
for i in range(40):
    for k, c in enumerate(conns):
        total += c.execute(f"select %s::int + {i}", (k,)).fetchone()[0]
for k, c in enumerate(conns):
    with c.transaction():
        total += c.execute("select %s::int * 2", (k,)).fetchone()[0]
    try:
        with c.transaction():
            c.execute("select 1 / %s::int", (0,))
    except psycopg.errors.DivisionByZero:
        pass
    total += c.execute("select %s::int + 1000", (k,)).fetchone()[0]
conns[0].execute("set statement_timeout = '1234ms'")
shown = [c.execute("show statement_timeout").fetchone()[0] for c in conns]
print(total, ' '.join(shown))
"#;

/// Runs [`PSYCOPG`] through `port` and checks its sums and settings.
pub fn psycopg_through(port: u16, user: &str, password: &str) {
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", PSYCOPG, &port.to_string(), user, password])
        .output()
        .expect("python3 (Debian's, with python3-psycopg)");
    let expected: i64 = (0..40i64)
        .map(|i| (0..4i64).map(|k| k + i).sum::<i64>())
        .sum::<i64>()
        + (0..4i64).map(|k| 2 * k + k + 1000).sum::<i64>();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{expected} 1234ms 0 0 0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A two-worker runtime for the tests that drive clients (tokio-postgres) through a proxy.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
