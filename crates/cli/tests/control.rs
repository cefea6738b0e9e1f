//! Operator control, end to end: `pgherd <command>` and the management REST API against real
//! etcd and real PostgreSQL 15 clusters run by `pgherd agent`, patronictl 3.0 against pgherd,
//! and `pgherd list` against Patroni 3.0. Run serially (`--test-threads=1`).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgherd_testkit::cluster::{AgentKind, ClusterOptions, TestCluster};
use pgherd_testkit::wait::poll;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PGHERD: &str = env!("CARGO_BIN_EXE_pgherd");

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A cluster whose member files are rewritten by `edit(member_name, yaml)` before start.
fn cluster_with(
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
    let mut c = TestCluster::new(Path::new(PGHERD), options).expect("cluster directories and etcd");
    for m in &c.members {
        let yaml = std::fs::read_to_string(&m.config).unwrap();
        std::fs::write(&m.config, edit(&m.name, yaml)).unwrap();
    }
    c.start_all().expect("agents");
    c
}

fn cluster(scope: &str) -> (TestCluster, usize) {
    let c = cluster_with(scope, 3, AgentKind::Pgherd, |_, y| y);
    let leader = healthy(&c, 2);
    (c, leader)
}

/// One leader, `replicas` streaming replicas, and every member key saying `running` (what
/// the leader's engine looks at to pick a switchover target).
fn healthy(c: &TestCluster, replicas: usize) -> usize {
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

fn dump_logs(c: &TestCluster) {
    for i in 0..c.members.len() {
        eprintln!("--- {} ---\n{}", c.members[i].name, c.log_tail(i, 60));
    }
}

/// Fails the test with the agents' logs when `result` is an error.
fn check<T>(c: &TestCluster, result: anyhow::Result<T>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => {
            dump_logs(c);
            panic!("{e:#}");
        }
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self.stdout
    }
}

/// `program args -c <config of member i>` with `stdin` fed to it.
fn run_with(program: &str, c: &TestCluster, i: usize, args: &[&str], stdin: Option<&str>) -> Run {
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

fn pgherd(c: &TestCluster, args: &[&str]) -> Run {
    run_with(PGHERD, c, 0, args, None)
}

fn patronictl(c: &TestCluster, args: &[&str]) -> Run {
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
fn http(
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

/// `{"error": ...}` of a refusal.
fn error_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("not a JSON refusal: {body}"))
}

fn dcs_json(c: &TestCluster, key: &str) -> Option<Value> {
    c.dcs_value(key).and_then(|v| serde_json::from_str(&v).ok())
}

fn index_of(c: &TestCluster, name: &str) -> usize {
    c.members.iter().position(|m| m.name == name).unwrap()
}

/// Waits until member `i` is the only leader and accepts writes.
fn writable_leader(c: &TestCluster, i: usize) {
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
fn all_streaming(c: &TestCluster, leader: usize) {
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

fn rows_everywhere(c: &TestCluster, expected: &str) {
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
fn holds_for(window: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + window;
    while Instant::now() < end {
        if !condition() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    true
}

// ---------------------------------------------------------------------------------------
// pgherd commands against pgherd
// ---------------------------------------------------------------------------------------

#[test]
fn switchover_with_and_without_candidate_loses_nothing() {
    let (c, leader) = cluster("ctl-switch");
    c.sql(leader, "create table t(id serial primary key, v text)")
        .unwrap();
    c.sql(
        leader,
        "insert into t(v) select 'row' || g from generate_series(1, 100) g",
    )
    .unwrap();
    let old = c.members[leader].name.clone();
    let target = (leader + 1) % 3;
    let target_name = c.members[target].name.clone();

    // Runbook: switch over to a named replica.
    let out = pgherd(
        &c,
        &[
            "switchover",
            "--leader",
            &old,
            "--candidate",
            &target_name,
            "--force",
        ],
    )
    .ok();
    assert!(out.contains("Current cluster topology"), "{out}");
    assert!(
        out.contains(&format!("Successfully switched over to \"{target_name}\"")),
        "{out}"
    );
    writable_leader(&c, target);
    c.sql(
        target,
        "insert into t(v) select 'row' || g from generate_series(101, 150) g",
    )
    .unwrap();
    // The old leader comes back as a replica of the new one; no row is lost anywhere.
    all_streaming(&c, target);
    rows_everywhere(&c, "150");
    assert_eq!(c.sql(leader, "select pg_is_in_recovery()").unwrap(), "t");
    check(
        &c,
        poll(
            "the request cleared",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || (dcs_json(&c, "failover")? == serde_json::json!({})).then_some(()),
        ),
    );

    // Without a candidate: the cluster picks one.
    let out = pgherd(&c, &["switchover", "--force"]).ok();
    assert!(out.contains("Successfully switched over to"), "{out}");
    let third = check(
        &c,
        poll(
            "a leader other than the previous one",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || c.leader_index().filter(|&l| l != target),
        ),
    );
    writable_leader(&c, third);
    all_streaming(&c, third);
    rows_everywhere(&c, "150");

    // Both switchovers are in the history, readable by pgherd.
    let history = pgherd(&c, &["history", "-f", "json"]).ok();
    let rows: Value = serde_json::from_str(&history).unwrap();
    let leaders: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["New Leader"].as_str().unwrap())
        .collect();
    assert_eq!(
        leaders,
        vec![target_name.as_str(), c.members[third].name.as_str()]
    );

    // Read-only commands while we have a cluster: topology, dsn, version.
    let topology = pgherd(&c, &["topology"]).ok();
    let first_row = topology.lines().nth(3).unwrap();
    assert!(first_row.contains(&c.members[third].name), "{topology}");
    assert_eq!(topology.matches("| + node").count(), 2, "{topology}");
    let dsn = pgherd(&c, &["dsn"]).ok();
    assert_eq!(
        dsn.trim(),
        format!("host=127.0.0.1 port={}", c.members[third].pg_port)
    );
    let dsn = pgherd(&c, &["dsn", &old]).ok();
    assert_eq!(
        dsn.trim(),
        format!("host=127.0.0.1 port={}", c.members[leader].pg_port)
    );
    let version = pgherd(&c, &["version", "ctl-switch"]).ok();
    for m in &c.members {
        assert!(
            version.contains(&format!("{}: pgherd ", m.name)),
            "{version}"
        );
    }
    assert!(version.contains("PostgreSQL 15."), "{version}");
}

#[test]
fn bad_requests_and_missing_credentials_change_nothing() {
    // Credentials on every member; node3 may never be promoted.
    let c = cluster_with("ctl-bad", 3, AgentKind::Pgherd, |name, yaml| {
        let yaml = yaml.replace(
            "restapi:\n",
            "restapi:\n  authentication:\n    username: admin\n    password: s3cret\n",
        );
        if name == "node3" {
            yaml.replace("nofailover: false", "nofailover: true")
        } else {
            yaml
        }
    });
    let leader = healthy(&c, 2);
    let leader_name = c.members[leader].name.clone();
    let config_before = c.dcs_value("config").unwrap();
    let port = c.members[leader].api_port;
    // admin:s3cret
    let auth = ("Authorization", "Basic YWRtaW46czNjcmV0");

    // No credentials, wrong credentials: 401 with Patroni's challenge, nothing changes.
    let body = format!(r#"{{"leader":"{leader_name}","candidate":"node2"}}"#);
    let (status, head, reply) = http(port, "POST", "/switchover", &[], Some(&body));
    assert_eq!(
        (status, error_of(&reply).as_str()),
        (401, "no auth header received")
    );
    assert!(
        head.to_ascii_lowercase()
            .contains(r#"www-authenticate: basic realm="patroni""#),
        "{head}"
    );
    let wrong = ("Authorization", "Basic YWRtaW46bm9wZQ==");
    let (status, _, reply) = http(
        port,
        "PATCH",
        "/config",
        &[wrong],
        Some(r#"{"pause":true}"#),
    );
    assert_eq!(
        (status, error_of(&reply).as_str()),
        (401, "not authenticated")
    );
    for (method, path) in [
        ("POST", "/restart"),
        ("POST", "/reload"),
        ("POST", "/reinitialize"),
        ("DELETE", "/switchover"),
        ("PUT", "/config"),
    ] {
        let (status, _, _) = http(port, method, path, &[], Some("{}"));
        assert_eq!(status, 401, "{method} {path}");
    }
    // GET needs none.
    assert_eq!(http(port, "GET", "/patroni", &[], None).0, 200);

    // Bad requests, with credentials: 4xx with a JSON reason.
    let cases: Vec<(String, u16, &str)> = vec![
        (
            r#"{"leader":"node9","candidate":"node2"}"#.into(),
            412,
            "leader name does not match",
        ),
        (
            format!(r#"{{"leader":"{leader_name}","candidate":"node9"}}"#),
            412,
            "candidate does not exists",
        ),
        (
            format!(r#"{{"leader":"{leader_name}","candidate":"{leader_name}"}}"#),
            412,
            "candidate is already the leader",
        ),
        (
            format!(r#"{{"leader":"{leader_name}","candidate":"node3"}}"#),
            412,
            "switchover is not possible: no good candidates have been found",
        ),
        (
            format!(r#"{{"leader":"{leader_name}","scheduled_at":"2001-01-01T00:00:00+00:00"}}"#),
            422,
            "Cannot schedule switchover in the past",
        ),
        (
            format!(r#"{{"leader":"{leader_name}","scheduled_at":"2099-01-01T00:00:00"}}"#),
            400,
            "Timezone information is mandatory for the scheduled switchover",
        ),
        (
            r#"{"candidate":"node2"}"#.into(),
            400,
            "Switchover could be performed only from a specific leader",
        ),
    ];
    for (body, want_status, want_error) in &cases {
        let (status, _, reply) = http(port, "POST", "/switchover", &[auth], Some(body));
        assert_eq!(
            (status, error_of(&reply).as_str()),
            (*want_status, *want_error),
            "{body}"
        );
    }
    for body in ["{\"leader\":", "[]", "{}"] {
        let (status, _, reply) = http(port, "POST", "/switchover", &[auth], Some(body));
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(!error_of(&reply).is_empty());
    }
    let (status, _, _) = http(
        port,
        "POST",
        "/switchover",
        &[auth, ("Content-Type", "application/xml")],
        Some(&format!(r#"{{"leader":"{leader_name}"}}"#)),
    );
    assert_eq!(status, 415);
    let (status, _, _) = http(
        port,
        "POST",
        "/failover",
        &[auth],
        Some(r#"{"leader":"node1"}"#),
    );
    assert_eq!(status, 400);
    let (status, _, reply) = http(
        port,
        "POST",
        "/restart",
        &[auth],
        Some(r#"{"role":"leader"}"#),
    );
    assert_eq!(
        (status, error_of(&reply).as_str()),
        (400, "PostgreSQL role should be either primary or replica")
    );
    let (status, _, reply) = http(
        port,
        "POST",
        "/restart",
        &[auth],
        Some(r#"{"schedule":"2001-01-01T00:00:00+00:00"}"#),
    );
    assert_eq!(
        (status, error_of(&reply).as_str()),
        (422, "Cannot schedule restart in the past")
    );
    let (status, _, reply) = http(port, "POST", "/reinitialize", &[auth], None);
    assert_eq!(
        (status, error_of(&reply).as_str()),
        (503, "I am the leader, can not reinitialize")
    );

    // Nothing changed: same leader, same config, no request pending.
    assert_eq!(c.leader_index(), Some(leader));
    assert_eq!(c.dcs_value("config").unwrap(), config_before);
    assert!(dcs_json(&c, "failover").is_none_or(|f| f == serde_json::json!({})));

    // The CLI sends the configured credentials; client-side checks refuse early.
    let out = pgherd(&c, &["switchover", "--candidate", &leader_name, "--force"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("Switchover target and source are the same."),
        "{}",
        out.stderr
    );
    let out = pgherd(&c, &["switchover", "--candidate", "node9", "--force"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("Member node9 does not exist in cluster ctl-bad"),
        "{}",
        out.stderr
    );
    let out = pgherd(&c, &["failover", "--force"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("Failover could be performed only to a specific candidate"),
        "{}",
        out.stderr
    );
    let out = pgherd(&c, &["pause"]).ok();
    assert!(
        out.contains("Success: cluster management is paused"),
        "{out}"
    );
    let out = pgherd(&c, &["pause"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("Cluster is already paused"),
        "{}",
        out.stderr
    );
    pgherd(&c, &["resume"]).ok();
}

#[test]
fn scheduled_switchover_is_listed_and_can_be_cancelled() {
    let (c, leader) = cluster("ctl-sched");
    let old = c.members[leader].name.clone();
    let target_name = c.members[(leader + 1) % 3].name.clone();

    let out = pgherd(
        &c,
        &[
            "switchover",
            "--candidate",
            &target_name,
            "--scheduled",
            "2099-01-01T00:00:00+00:00",
            "--force",
        ],
    )
    .ok();
    assert!(out.contains("Switchover scheduled"), "{out}");
    let request = dcs_json(&c, "failover").unwrap();
    assert_eq!(request["scheduled_at"], "2099-01-01T00:00:00+00:00");
    assert_eq!(request["member"], target_name.as_str());
    assert_eq!(request["leader"], old.as_str());
    let list = pgherd(&c, &["list"]).ok();
    assert!(
        list.contains(" Switchover scheduled at: 2099-01-01T00:00:00+00:00"),
        "{list}"
    );
    assert!(list.contains(&format!("from: {old}")), "{list}");
    assert!(list.contains(&format!("to: {target_name}")), "{list}");
    // A second request while one is pending is refused client-side in a paused cluster
    // only; here we cancel with `flush switchover` (DELETE /switchover on the leader).
    let out = pgherd(&c, &["flush", "switchover"]).ok();
    assert!(
        out.contains("Success: scheduled switchover deleted"),
        "{out}"
    );
    assert_eq!(dcs_json(&c, "failover"), Some(serde_json::json!({})));
    assert!(!pgherd(&c, &["list"]).ok().contains("Switchover scheduled"));
    let out = pgherd(&c, &["flush", "switchover"]).ok();
    assert!(out.contains("No pending scheduled switchover"), "{out}");
    assert_eq!(c.leader_index(), Some(leader));
}

#[test]
fn scheduled_switchover_fires_at_its_time() {
    let (c, leader) = cluster("ctl-sched-fire");
    c.sql(leader, "create table t(id serial primary key, v text)")
        .unwrap();
    let target = (leader + 1) % 3;
    let target_name = c.members[target].name.clone();
    // Whole seconds: the time written is the time the switchover is due.
    let at = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + 8, 0).unwrap();
    let at_text = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let out = pgherd(
        &c,
        &[
            "switchover",
            "--candidate",
            &target_name,
            "--scheduled",
            &at_text,
            "--force",
        ],
    )
    .ok();
    assert!(out.contains("Switchover scheduled"), "{out}");
    let switched_at = check(
        &c,
        poll(
            "the scheduled switchover",
            Duration::from_secs(45),
            Duration::from_millis(100),
            || (c.leader_index() == Some(target)).then(chrono::Utc::now),
        ),
    );
    assert!(
        switched_at >= at,
        "switched at {switched_at}, scheduled for {at}"
    );
    writable_leader(&c, target);
    all_streaming(&c, target);
    check(
        &c,
        poll(
            "the request cleared",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || (dcs_json(&c, "failover")? == serde_json::json!({})).then_some(()),
        ),
    );
}

#[test]
fn pause_blocks_failover_until_a_manual_failover() {
    let (mut c, leader) = cluster("ctl-pause");
    let out = pgherd(&c, &["pause", "--wait"]).ok();
    assert!(
        out.contains("Success: cluster management is paused"),
        "{out}"
    );
    for m in &c.members {
        let member = dcs_json(&c, &format!("members/{}", m.name)).unwrap();
        assert_eq!(member["pause"], true, "{}", m.name);
    }
    assert!(pgherd(&c, &["list"]).ok().contains(" Maintenance mode: on"));

    // The leader dies while paused: its key expires, and nobody is promoted.
    c.signal_node(leader, nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    check(
        &c,
        poll(
            "the dead leader's key to expire",
            Duration::from_secs(40),
            Duration::from_millis(200),
            || c.dcs_value("leader").is_none().then_some(()),
        ),
    );
    let replicas: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let nobody_promoted = holds_for(Duration::from_secs(5), || {
        c.dcs_value("leader").is_none()
            && replicas
                .iter()
                .all(|&r| c.sql(r, "select pg_is_in_recovery()").ok().as_deref() == Some("t"))
    });
    assert!(nobody_promoted, "a replica was promoted while paused");

    // The operator fails over to a chosen replica: no leader is needed for that.
    let target = replicas[1];
    let target_name = c.members[target].name.clone();
    let out = pgherd(&c, &["failover", "--candidate", &target_name, "--force"]).ok();
    assert!(
        out.contains(&format!("Successfully failed over to \"{target_name}\"")),
        "{out}"
    );
    check(
        &c,
        poll(
            "the candidate to accept writes",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || (c.sql(target, "select pg_is_in_recovery()").ok()? == "f").then_some(()),
        ),
    );
    let out = pgherd(&c, &["resume", "--wait"]).ok();
    assert!(
        out.contains("Success: cluster management is resumed"),
        "{out}"
    );
    assert!(!pgherd(&c, &["list"]).ok().contains("Maintenance mode"));
    // The other replica follows the new leader once management is back.
    check(
        &c,
        poll(
            "the remaining replica streaming",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || {
                let n: usize = c
                    .sql(
                        target,
                        "select count(*) from pg_stat_replication where state = 'streaming'",
                    )
                    .ok()?
                    .parse()
                    .ok()?;
                (n >= 1).then_some(())
            },
        ),
    );
}

#[test]
fn edit_config_reaches_every_node() {
    let (c, leader) = cluster("ctl-edit");
    let pids: Vec<Option<i32>> = (0..3).map(|i| c.postmaster_pid(i)).collect();

    // A reload-only parameter: applied everywhere without a restart.
    let out = pgherd(
        &c,
        &[
            "edit-config",
            "-p",
            "work_mem=7MB",
            "-s",
            "loop_wait=2",
            "--force",
        ],
    )
    .ok();
    assert!(
        out.contains("+  parameters:") || out.contains("+    work_mem: 7MB"),
        "{out}"
    );
    assert!(out.contains("Configuration changed"), "{out}");
    let config = dcs_json(&c, "config").unwrap();
    assert_eq!(config["postgresql"]["parameters"]["work_mem"], "7MB");
    assert_eq!(config["loop_wait"], 2);
    for i in 0..3 {
        check(
            &c,
            poll(
                "work_mem applied",
                Duration::from_secs(30),
                Duration::from_millis(200),
                || (c.sql(i, "show work_mem").ok()? == "7MB").then_some(()),
            ),
        );
    }
    let after: Vec<Option<i32>> = (0..3).map(|i| c.postmaster_pid(i)).collect();
    assert_eq!(pids, after, "no member was restarted");

    // Same change again: nothing to do.
    let out = pgherd(&c, &["edit-config", "-p", "work_mem=7MB", "--force"]).ok();
    assert!(out.contains("Not changed"), "{out}");

    // A postmaster parameter: every member reports a pending restart.
    pgherd(
        &c,
        &["edit-config", "-p", "max_connections=60", "--force", "-q"],
    )
    .ok();
    for m in &c.members {
        check(
            &c,
            poll(
                "pending_restart in the member key",
                Duration::from_secs(30),
                Duration::from_millis(200),
                || {
                    (dcs_json(&c, &format!("members/{}", m.name))?["pending_restart"] == true)
                        .then_some(())
                },
            ),
        );
    }
    let list = pgherd(&c, &["list"]).ok();
    assert!(list.contains("Pending restart"), "{list}");
    assert_eq!(list.matches("| *               |").count(), 3, "{list}");
    assert_eq!(c.sql(leader, "show max_connections").unwrap(), "50");

    // Interactive: $EDITOR changes the file, the diff is shown, the answer is "y".
    let editor = c.root.join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/^loop_wait: 2$/loop_wait: 3/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut child = Command::new(PGHERD)
        .args(["edit-config", "-c"])
        .arg(&c.members[0].config)
        .env("EDITOR", &editor)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"y\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("-loop_wait: 2\n+loop_wait: 3\n"),
        "{stdout}"
    );
    assert!(stdout.contains("Apply these changes? [y/N]: "), "{stdout}");
    assert_eq!(dcs_json(&c, "config").unwrap()["loop_wait"], 3);
    // Declined: nothing written, non-zero exit.
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/^loop_wait: 3$/loop_wait: 4/' \"$1\"\n",
    )
    .unwrap();
    let mut child = Command::new(PGHERD)
        .args(["edit-config", "-c"])
        .arg(&c.members[0].config)
        .env("EDITOR", &editor)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"n\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert_eq!(dcs_json(&c, "config").unwrap()["loop_wait"], 3);

    // show-config masks secrets.
    pgherd(
        &c,
        &[
            "edit-config",
            "-s",
            "standby_cluster_password_test.password=hunter2",
            "--force",
            "-q",
        ],
    )
    .ok();
    let shown = pgherd(&c, &["show-config"]).ok();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("password: '********'") || shown.contains("password: ********"),
        "{shown}"
    );
}

#[test]
fn restart_pending_restarts_only_members_that_need_it() {
    let (c, _leader) = cluster("ctl-restart");
    let pids: Vec<Option<i32>> = (0..3).map(|i| c.postmaster_pid(i)).collect();
    // Nothing pending: nobody is restarted, and that is not an error.
    let out = pgherd(&c, &["restart", "--pending", "--force"]).ok();
    assert_eq!(
        out.matches("restart conditions are not satisfied").count(),
        3,
        "{out}"
    );
    assert_eq!(
        pids,
        (0..3).map(|i| c.postmaster_pid(i)).collect::<Vec<_>>()
    );

    // node1 gets a postmaster-level change through its own file... the whole cluster here.
    pgherd(
        &c,
        &["edit-config", "-p", "max_connections=60", "--force", "-q"],
    )
    .ok();
    for m in &c.members {
        check(
            &c,
            poll(
                "pending restart",
                Duration::from_secs(30),
                Duration::from_millis(200),
                || {
                    (dcs_json(&c, &format!("members/{}", m.name))?["pending_restart"] == true)
                        .then_some(())
                },
            ),
        );
    }
    let out = pgherd(
        &c,
        &["restart", "ctl-restart", "node2", "--pending", "--force"],
    )
    .ok();
    assert!(out.contains("Success: restart on member node2"), "{out}");
    let i = index_of(&c, "node2");
    assert_ne!(c.postmaster_pid(i), pids[i]);
    assert_eq!(c.sql(i, "show max_connections").unwrap(), "60");
    check(
        &c,
        poll(
            "pending flag cleared",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                dcs_json(&c, "members/node2")?
                    .get("pending_restart")
                    .is_none()
                    .then_some(())
            },
        ),
    );
    // The others were not touched.
    for j in (0..3).filter(|&j| j != i) {
        assert_eq!(c.postmaster_pid(j), pids[j]);
    }

    // A scheduled restart shows in list and can be flushed.
    let out = pgherd(
        &c,
        &[
            "restart",
            "node3",
            "--scheduled",
            "2099-01-01T00:00:00+00:00",
            "--force",
        ],
    )
    .ok();
    assert!(
        out.contains("Success: restart scheduled on member node3"),
        "{out}"
    );
    check(
        &c,
        poll(
            "scheduled restart published",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                pgherd(&c, &["list"])
                    .ok()
                    .contains("2099-01-01T00:00:00+00:00")
                    .then_some(())
            },
        ),
    );
    let out = pgherd(&c, &["flush", "restart", "node3", "--force"]).ok();
    assert!(
        out.contains("Success: flush scheduled restart for member node3"),
        "{out}"
    );
}

#[test]
fn reload_and_reinit() {
    let (c, leader) = cluster("ctl-reinit");
    let out = pgherd(&c, &["reload", "--force"]).ok();
    assert_eq!(
        out.matches("Reload request received for member").count(),
        3,
        "{out}"
    );

    // SIGHUP applies new REST API credentials to the running API, as Patroni's reload does.
    let target = (leader + 2) % 3;
    let m = &c.members[target];
    let port = m.api_port;
    let unsafe_call = |headers: &[(&str, &str)]| http(port, "POST", "/reload", headers, None).0;
    assert_eq!(unsafe_call(&[]), 202, "open API before the reload");
    let yaml = std::fs::read_to_string(&m.config).unwrap();
    let yaml = yaml.replacen(
        "restapi:\n",
        "restapi:\n  authentication:\n    username: admin\n    password: s3cret\n",
        1,
    );
    std::fs::write(&m.config, yaml).unwrap();
    kill(Pid::from_raw(c.agent_pid(target).unwrap()), Signal::SIGHUP).unwrap();
    poll(
        "new credentials required",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || (unsafe_call(&[]) == 401).then_some(()),
    )
    .unwrap();
    // "admin:s3cret"
    let auth = ("Authorization", "Basic YWRtaW46czNjcmV0");
    assert_eq!(unsafe_call(&[auth]), 202);

    let replica = (leader + 1) % 3;
    let name = c.members[replica].name.clone();
    c.sql(leader, "create table t(id serial primary key, v text)")
        .unwrap();
    c.sql(leader, "insert into t(v) values ('row1')").unwrap();
    let before = c.postmaster_pid(replica);
    let out = pgherd(&c, &["reinit", &name, "--force", "--wait"]).ok();
    assert!(
        out.contains(&format!("Success: reinitialize for member {name}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("Reinitialize is completed on: {name}")),
        "{out}"
    );
    assert_ne!(c.postmaster_pid(replica), before);
    all_streaming(&c, leader);
    rows_everywhere(&c, "1");
    // The leader cannot be reinitialized.
    let out = pgherd(&c, &["reinit", &c.members[leader].name, "--force"]);
    assert_eq!(out.code, 1);
}

#[test]
fn query_runs_sql_where_asked() {
    let (c, leader) = cluster("ctl-query");
    // The leader by default, tab-separated with a header (credentials from the config).
    let out = pgherd(
        &c,
        &[
            "query",
            "--command",
            "select pg_is_in_recovery() as rec, 1 as n",
        ],
    )
    .ok();
    assert_eq!(out, "rec\tn\nf\t1\n");
    // A replica, as JSON.
    let out = pgherd(
        &c,
        &[
            "query",
            "-r",
            "replica",
            "--format",
            "json",
            "--command",
            "select pg_is_in_recovery() as rec",
        ],
    )
    .ok();
    assert_eq!(out.trim(), r#"[{"rec":"t"}]"#);
    // A named member, SQL from a file with several statements: the last result set.
    let replica = (leader + 1) % 3;
    let file = c.root.join("query.sql");
    std::fs::write(
        &file,
        "select 'first' as ignored;\nselect a, inet_server_port() as port from (values (7), (NULL)) v(a) order by a;",
    )
    .unwrap();
    let out = pgherd(
        &c,
        &[
            "query",
            "-m",
            &c.members[replica].name,
            "-f",
            file.to_str().unwrap(),
            "--delimiter",
            ",",
        ],
    )
    .ok();
    let port = c.members[replica].pg_port;
    assert_eq!(out, format!("a,port\n7,{port}\n,{port}\n"));
    // Errors: the SQLSTATE and a non-zero exit; bad option combinations.
    let r = pgherd(&c, &["query", "--command", "select * from no_such_table"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("SQLSTATE: 42P01"), "{}", r.stderr);
    let r = pgherd(
        &c,
        &[
            "query",
            "-r",
            "replica",
            "-m",
            "node1",
            "--command",
            "select 1",
        ],
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("mutually exclusive"), "{}", r.stderr);
    let r = pgherd(&c, &["query"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--command or --file"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------
// TLS, remove
// ---------------------------------------------------------------------------------------

#[test]
fn tls_rest_api_and_remove() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let pki = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pgherd test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let (ca_pem, cert_pem, key_pem) = (
        pki.path().join("ca.pem"),
        pki.path().join("server.pem"),
        pki.path().join("server.key"),
    );
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    let tls = format!(
        "restapi:\n  certfile: {}\n  keyfile: {}\n  cafile: {}\n",
        cert_pem.display(),
        key_pem.display(),
        ca_pem.display()
    );
    let mut c = cluster_with("ctl-tls", 1, AgentKind::Pgherd, |_, yaml| {
        yaml.replace("restapi:\n", &tls)
    });
    let port = c.members[0].api_port;

    // HTTPS only, with our certificate; the member advertises an https api_url.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // reqwest clients need the runtime's reactor when they are built.
    let _entered = runtime.enter();
    let client = pgherd_api::tls::ClientTls {
        cacert: Some(ca_pem.clone()),
        ..Default::default()
    }
    .http_client(None, Duration::from_secs(5))
    .unwrap();
    let url = format!("https://127.0.0.1:{port}/patroni");
    let status: Value = check(
        &c,
        poll(
            "the HTTPS API to report running",
            Duration::from_secs(90),
            Duration::from_millis(250),
            || {
                let v: Value = runtime
                    .block_on(async { client.get(&url).send().await.ok()?.json().await.ok() })?;
                (v["state"] == "running" && v["role"] == "master").then_some(v)
            },
        ),
    );
    assert_eq!(status["patroni"]["scope"], "ctl-tls");
    let member = dcs_json(&c, "members/node1").unwrap();
    assert_eq!(
        member["api_url"],
        format!("https://127.0.0.1:{port}/patroni")
    );
    // Not trusted without the CA; plain HTTP gets no answer.
    let untrusted = pgherd_api::tls::ClientTls::default()
        .http_client(None, Duration::from_secs(5))
        .unwrap();
    assert!(runtime.block_on(untrusted.get(&url).send()).is_err());
    assert!(c
        .api(0, "GET", "/patroni")
        .map(|(s, _)| s != 200)
        .unwrap_or(true));

    // The CLI verifies with restapi.cafile (ctl.cacert fallback) and drives the API.
    let out = pgherd(&c, &["pause"]).ok();
    assert!(
        out.contains("Success: cluster management is paused"),
        "{out}"
    );
    pgherd(&c, &["resume"]).ok();
    let version = pgherd(&c, &["version", "ctl-tls"]).ok();
    assert!(version.contains("node1: pgherd"), "{version}");

    // remove: typed confirmations, then every key is gone.
    c.stop(0, Duration::from_secs(60)).unwrap();
    let out = run_with(PGHERD, &c, 0, &["remove", "ctl-tls"], Some("wrong\n"));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("Cluster names specified do not match"),
        "{}",
        out.stderr
    );
    assert!(c.dcs_value("initialize").is_some());
    let answers = match c.dcs_value("leader") {
        Some(l) => format!("ctl-tls\nYes I am aware\n{l}\n"),
        None => "ctl-tls\nYes I am aware\n".to_string(),
    };
    run_with(PGHERD, &c, 0, &["remove", "ctl-tls"], Some(&answers)).ok();
    assert_eq!(c.dcs_value("initialize"), None);
    assert_eq!(c.dcs_value("config"), None);
}

// ---------------------------------------------------------------------------------------
// Compatibility with Patroni's tools, both ways
// ---------------------------------------------------------------------------------------

#[test]
fn patronictl_drives_a_pgherd_cluster() {
    let (c, leader) = cluster("ctl-patronictl");
    c.sql(leader, "create table t(id serial primary key, v text)")
        .unwrap();
    c.sql(leader, "insert into t(v) values ('row1')").unwrap();

    let list = patronictl(&c, &["list"]).ok();
    assert!(list.contains("Cluster: ctl-patronictl"), "{list}");
    let leader_row = list
        .lines()
        .find(|l| l.contains(&format!("| {} ", c.members[leader].name)))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(leader_row.contains("| Leader "), "{list}");
    assert_eq!(list.matches("| Replica ").count(), 2, "{list}");
    assert_eq!(list.matches("| running ").count(), 3, "{list}");

    // switchover --force to a named candidate.
    let target = (leader + 1) % 3;
    let out = patronictl(
        &c,
        &[
            "switchover",
            "--candidate",
            &c.members[target].name,
            "--force",
        ],
    )
    .ok();
    assert!(
        out.contains(&format!(
            "Successfully switched over to \"{}\"",
            c.members[target].name
        )),
        "{out}"
    );
    writable_leader(&c, target);
    all_streaming(&c, target);

    // failover --force (a switchover to the named candidate while the leader is healthy).
    let third = (target + 1) % 3;
    let out = patronictl(
        &c,
        &["failover", "--candidate", &c.members[third].name, "--force"],
    )
    .ok();
    assert!(
        out.contains(&format!(
            "Successfully failed over to \"{}\"",
            c.members[third].name
        )),
        "{out}"
    );
    writable_leader(&c, third);
    all_streaming(&c, third);
    rows_everywhere(&c, "1");

    // history shows both.
    let history = patronictl(&c, &["history", "-f", "json"]).ok();
    let rows: Value = serde_json::from_str(history.trim()).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{history}");
    assert_eq!(rows[1]["New Leader"], c.members[third].name.as_str());

    // pause / resume.
    let out = patronictl(&c, &["pause"]).ok();
    assert!(
        out.contains("Success: cluster management is paused"),
        "{out}"
    );
    assert!(patronictl(&c, &["list"])
        .ok()
        .contains("Maintenance mode: on"));
    let out = patronictl(&c, &["resume"]).ok();
    assert!(
        out.contains("Success: cluster management is resumed"),
        "{out}"
    );

    // edit-config --set: a direct CAS write with Python's spacing, picked up by the agents.
    let out = patronictl(
        &c,
        &[
            "edit-config",
            "--set",
            "postgresql.parameters.work_mem=9MB",
            "--force",
        ],
    )
    .ok();
    assert!(out.contains("Configuration changed"), "{out}");
    assert!(
        c.dcs_value("config").unwrap().contains(": "),
        "patronictl writes spaced JSON"
    );
    for i in 0..3 {
        check(
            &c,
            poll(
                "work_mem from patronictl",
                Duration::from_secs(30),
                Duration::from_millis(200),
                || (c.sql(i, "show work_mem").ok()? == "9MB").then_some(()),
            ),
        );
    }
    // And pgherd reads what patronictl wrote.
    assert!(pgherd(&c, &["show-config"]).ok().contains("work_mem: 9MB"));
}

#[test]
fn pgherd_lists_a_patroni_cluster() {
    let c = cluster_with("ctl-patroni", 3, AgentKind::Patroni, |_, y| y);
    let leader = healthy(&c, 2);
    let leader_name = c.members[leader].name.clone();
    // Patroni refreshes member keys every loop_wait: wait for all three to show running.
    let rows: Value = check(
        &c,
        poll(
            "three running members in pgherd list",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                let out = pgherd(&c, &["list", "-f", "json"]);
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
        assert_eq!(row["Cluster"], "ctl-patroni");
        assert_eq!(row["TL"], 1, "{rows}");
        let i = index_of(&c, name);
        assert_eq!(row["Host"], format!("127.0.0.1:{}", c.members[i].pg_port));
        if name != leader_name {
            assert!(row["Lag in MB"].is_number(), "{rows}");
        }
    }
    let pretty = pgherd(&c, &["list"]).ok();
    assert!(pretty.contains("| Leader "), "{pretty}");
    let topology = pgherd(&c, &["topology"]).ok();
    assert_eq!(topology.matches("| + node").count(), 2, "{topology}");
    let config = pgherd(&c, &["show-config"]).ok();
    assert!(config.contains("loop_wait: 1"), "{config}");
    let version = pgherd(&c, &["version", "ctl-patroni"]).ok();
    assert!(
        version.contains(&format!("{leader_name}: Patroni 3.0.2 PostgreSQL 15.")),
        "{version}"
    );
}
