//! The read-write split proxy against real etcd, three real PostgreSQL 15 servers and the agent:
//! `pgherd proxy <file>` runs as a child process on free loopback ports, like an operator would
//! run it. Each test reads like the runbook it verifies. Run serially (`--test-threads=1`).

use nix::sys::signal::Signal;
use pgherd_testkit::cluster::{http_request, ClusterOptions, TestCluster, SUPERUSER_PASSWORD};
use pgherd_testkit::proxy::ProxyProcess;
use pgherd_testkit::wait::poll;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const PGHERD: &str = env!("CARGO_BIN_EXE_pgherd");

fn cluster(scope: &str) -> (TestCluster, usize) {
    let options = ClusterOptions {
        scope: scope.into(),
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::new(Path::new(PGHERD), options).expect("cluster directories and etcd");
    c.start_all().expect("agents");
    let leader = match c.wait_healthy(2, Duration::from_secs(120)) {
        Ok(l) => l,
        Err(e) => {
            dump_logs(&c);
            panic!("{e}");
        }
    };
    (c, leader)
}

fn dump_logs(c: &TestCluster) {
    for i in 0..c.members.len() {
        eprintln!("--- {} ---\n{}", c.members[i].name, c.log_tail(i, 40));
    }
}

/// `pgherd proxy` for the cluster (the extra listeners on demand).
fn start_proxy(c: &TestCluster, name: &str, extra_listeners: bool) -> ProxyProcess {
    ProxyProcess::start(Path::new(PGHERD), c, name, extra_listeners).expect("pgherd proxy")
}

/// psql through a proxy port; `connect_timeout` long enough to sit out a hold.
fn psql(port: u16, sql: &str) -> anyhow::Result<String> {
    pgherd_testkit::cluster::psql_with_timeout(port, sql, 45)
}

/// `insert ... returning x` prints the value, then the command tag.
fn first_line(out: &str) -> &str {
    out.lines().next().unwrap_or_default().trim()
}

fn server_port(port: u16) -> u16 {
    psql(port, "select inet_server_port()")
        .expect("query through the proxy")
        .parse()
        .expect("a port")
}

fn listener<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
        .expect("listener in stats")
}

fn server_state(s: &Value, listener_name: &str, member: &str) -> String {
    listener(s, listener_name)["servers"]
        .as_array()
        .and_then(|ss| ss.iter().find(|v| v["name"] == member))
        .and_then(|v| v["state"].as_str())
        .unwrap_or("absent")
        .to_string()
}

fn up_count(s: &Value, listener_name: &str) -> usize {
    listener(s, listener_name)["servers"]
        .as_array()
        .map(|ss| ss.iter().filter(|v| v["state"] == "up").count())
        .unwrap_or(0)
}

fn etcd_get(c: &TestCluster, key: &str) -> Vec<(String, String)> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &c.etcd().client_url(),
            "get",
            "--prefix",
            key,
        ])
        .output()
        .expect("etcdctl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .map(|kv| (kv[0].to_string(), kv.get(1).unwrap_or(&"").to_string()))
        .collect()
}

fn etcd_put(c: &TestCluster, key: &str, value: &str) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &c.etcd().client_url(), "put", key, value])
        .output()
        .expect("etcdctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The proxies' registrations: name -> routing_leader.
fn registrations(c: &TestCluster) -> Vec<(String, Value)> {
    let prefix = format!("/service/{}/proxies/", c.options.scope);
    etcd_get(c, &prefix)
        .into_iter()
        .map(|(k, v)| {
            let v: Value = serde_json::from_str(&v).unwrap_or_default();
            (
                k.trim_start_matches(&prefix).to_string(),
                v["routing_leader"].clone(),
            )
        })
        .collect()
}

/// A PostgreSQL SSLRequest: the server answers one byte ('N' without TLS).
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

fn ssl_probe(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
    s.write_all(&SSL_REQUEST).expect("send SSLRequest");
    s
}

fn read_byte(s: &mut TcpStream) -> Option<u8> {
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

#[test]
fn splits_reads_and_writes_and_shows_every_server() {
    let (c, leader) = cluster("pxsplit");
    let replicas: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let px = start_proxy(&c, "px-a", true);
    let px2 = start_proxy(&c, "px-b", false);
    for p in [&px, &px2] {
        p.wait_for("primary routed and both replicas up", |s| {
            up_count(s, "primary") == 1 && up_count(s, "replicas") == 2
        });
    }

    // Writes through the primary port land on the leader, through either proxy.
    for p in [&px, &px2] {
        assert_eq!(psql(p.primary, "select pg_is_in_recovery()").unwrap(), "f");
        assert_eq!(server_port(p.primary), c.members[leader].pg_port);
    }
    psql(px.primary, "create table t(id serial primary key, v text)").unwrap();
    psql(px.primary, "insert into t(v) values ('through the proxy')").unwrap();

    // Reads through the replica port reach both replicas and never the leader.
    let seen: BTreeSet<u16> = (0..8).map(|_| server_port(px.replicas)).collect();
    let expected: BTreeSet<u16> = replicas.iter().map(|&i| c.members[i].pg_port).collect();
    assert_eq!(seen, expected);
    assert_eq!(
        psql(px.replicas, "select pg_is_in_recovery()").unwrap(),
        "t"
    );

    // Both proxies registered, each routing writes to the leader.
    let regs = poll(
        "both registrations",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let r = registrations(&c);
            (r.len() == 2 && r.iter().all(|(_, l)| l == c.members[leader].name.as_str()))
                .then_some(r)
        },
    )
    .unwrap();
    assert_eq!(
        regs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["px-a", "px-b"]
    );

    // maxconn 1 + maxqueue 1: one session, one waiting, the third closed at once.
    let limited = px.limited.unwrap();
    let mut first = ssl_probe(limited);
    assert_eq!(read_byte(&mut first), Some(b'N'));
    let mut second = ssl_probe(limited);
    px.wait_for("one client queued", |s| {
        listener(s, "limited")["queued"] == 1
    });
    let mut third = ssl_probe(limited);
    assert_eq!(
        read_byte(&mut third),
        None,
        "queue full: the third client is closed"
    );
    px.wait_for("queue-full refusal counted", |s| {
        listener(s, "limited")["refused"]["queue_full"] == 1
    });
    drop(first);
    assert_eq!(
        read_byte(&mut second),
        Some(b'N'),
        "the queued client gets the slot"
    );
    drop((second, third));

    // Behind a load balancer: the PROXY header (v2 and v1) is removed before PostgreSQL sees
    // the session; a client without one is closed and counted.
    let lb = px.behind_lb.unwrap();
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[192, 0, 2, 7, 127, 0, 0, 1, 0x9c, 0xbb, 0x15, 0x38]);
    for header in [
        v2,
        b"PROXY TCP4 192.0.2.7 127.0.0.1 40123 5432\r\n".to_vec(),
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", lb)).expect("connect");
        s.write_all(&header).unwrap();
        s.write_all(&SSL_REQUEST).unwrap();
        assert_eq!(
            read_byte(&mut s),
            Some(b'N'),
            "PostgreSQL answered the SSLRequest"
        );
    }
    let mut bare = ssl_probe(lb);
    assert_eq!(read_byte(&mut bare), None, "no PROXY header: closed");
    px.wait_for("missing PROXY header counted", |s| {
        listener(s, "behind_lb")["refused"]["proxy_header"] == 1
    });

    // A replica over max_lag leaves the rotation and comes back.
    let lagger = replicas[0];
    let lag_name = c.members[lagger].name.clone();
    c.sql(lagger, "select pg_wal_replay_pause()").unwrap();
    c.sql(
        leader,
        "create table big as select g, repeat('x', 1000) as pad from generate_series(1, 6000) g",
    )
    .unwrap();
    px.wait_for("lagging replica out of rotation", |s| {
        server_state(s, "replicas", &lag_name) == "lag"
    });
    let seen: BTreeSet<u16> = (0..4).map(|_| server_port(px.replicas)).collect();
    assert_eq!(seen, BTreeSet::from([c.members[replicas[1]].pg_port]));
    c.sql(lagger, "select pg_wal_replay_resume()").unwrap();
    px.wait_for("replica back in rotation", |s| {
        server_state(s, "replicas", &lag_name) == "up"
    });

    // Admin actions need the credentials; maint takes a server out, ready brings it back.
    let path = format!("/admin/servers/{lag_name}/maint");
    let (code, _) = http_request(px.stats, "POST", &path, None).unwrap();
    assert_eq!(code, 401);
    let (code, body) = admin_post(px.stats, &path);
    assert_eq!(code, 200, "{body}");
    px.wait_for("server in maint", |s| {
        server_state(s, "replicas", &lag_name) == "maint"
    });
    let (code, _) = admin_post(px.stats, &format!("/admin/servers/{lag_name}/ready"));
    assert_eq!(code, 200);
    px.wait_for("server ready again", |s| {
        server_state(s, "replicas", &lag_name) == "up"
    });

    // 1,000 aborted clients leave no descriptor and no task behind.
    let base = px.wait_for("no client left", |s| {
        s["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["clients"] == 0)
    });
    let (fds0, tasks0) = (
        base["proxy"]["open_fds"].as_u64().unwrap(),
        base["proxy"]["tasks"].as_u64().unwrap(),
    );
    for i in 0..1000 {
        let mut s = TcpStream::connect(("127.0.0.1", px.replicas)).expect("connect");
        if i % 2 == 0 {
            // Half send a truncated startup packet, so a server session is opened, then vanish.
            let _ = s.write_all(&[0, 0, 0, 40, 0, 3]);
        }
        drop(s);
    }
    let total0 = listener(&base, "replicas")["clients_total"]
        .as_u64()
        .unwrap();
    // Every aborted client must have been accepted (not just queued in the kernel) first.
    let after = px.wait_for("aborted clients cleaned up", |s| {
        listener(s, "replicas")["clients_total"].as_u64().unwrap() >= total0 + 1000
            && s["listeners"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["clients"] == 0 && l["sessions"] == 0)
            && s["proxy"]["open_fds"].as_u64().unwrap() <= fds0 + 2
            && s["proxy"]["tasks"].as_u64().unwrap() <= tasks0 + 2
    });
    assert!(
        listener(&after, "replicas")["clients_total"]
            .as_u64()
            .unwrap()
            >= 1000
    );

    // Metrics and the stats page list every server.
    let (code, metrics) = http_request(px.stats, "GET", "/metrics", None).unwrap();
    assert_eq!(code, 200);
    for m in &c.members {
        assert!(
            metrics.contains(&format!("server=\"{}\",state=\"up\"", m.name)),
            "{metrics}"
        );
    }
    let (code, html) = http_request(px.stats, "GET", "/", None).unwrap();
    assert_eq!(code, 200);
    for m in &c.members {
        assert!(html.contains(&format!("<b>{}</b>", m.name)));
    }
    screenshot_stats_page(&c, &px);
    drop(px2);
    drop(px);
}

fn admin_post(port: u16, path: &str) -> (u16, String) {
    // "admin:adm-pass" in base64.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("stats port");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic YWRtaW46YWRtLXBhc3M=\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

/// Renders the stats page in headless Chromium: the DOM must list every server, and the
/// screenshot is kept under artifacts/ for people to look at.
fn screenshot_stats_page(c: &TestCluster, px: &ProxyProcess) {
    let Some(browser) = chromium() else {
        eprintln!("\n!!!!! SKIPPED the Chromium check of the stats page: chromium is not installed (apt-get install chromium) !!!!!\n");
        return;
    };
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join("proxy-stats.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("http://127.0.0.1:{}/", px.stats);
    let run = |extra: &[&str]| {
        let profile = tempfile::tempdir().expect("profile dir");
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("run chromium")
    };
    let dom = run(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for m in &c.members {
        assert!(
            dom.contains(&format!("<b>{}</b>", m.name)),
            "{} missing from the rendered page",
            m.name
        );
    }
    assert!(dom.contains("pgherd proxy"));
    let out = run(&[&format!("--screenshot={}", shot.display())]);
    assert!(
        shot.exists()
            && std::fs::metadata(&shot)
                .map(|m| m.len() > 10_000)
                .unwrap_or(false),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("stats page screenshot: {}", shot.display());
}

#[test]
fn follows_switchover_and_leader_kill_without_restart() {
    let (mut c, leader) = cluster("pxfail");
    let px = start_proxy(&c, "px-f", false);
    px.wait_for("primary routed", |s| up_count(s, "primary") == 1);
    psql(px.primary, "create table t(id serial primary key, v text)").unwrap();

    // A session opened on the old primary before the switchover.
    let mut held = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            "select pg_sleep(300)",
        ])
        .arg("-p")
        .arg(px.primary.to_string())
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .env("PGSSLMODE", "disable")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    let old = c.members[leader].name.clone();
    px.wait_for("the held session is on the leader", |s| {
        listener(s, "primary")["servers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == old.as_str() && v["sessions"] == 1)
    });
    // The proxy counts the session once it has a server connection, before PostgreSQL took its
    // startup: a switchover then could still refuse it (57P03) and the proxy would retry it on
    // the new leader (seen once in ./dev/test). Wait for its query to run.
    poll(
        "the held session's query running on the leader",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            (c.sql(
                leader,
                "select count(*) from pg_stat_activity where query = 'select pg_sleep(300)'",
            )
            .ok()?
                == "1")
                .then_some(())
        },
    )
    .unwrap();

    // Switchover (written like patronictl's fallback: the failover key). The leader clears a
    // request it finds no healthy candidate for (e.g. the target's position not yet
    // published): then it is asked again.
    let target = (0..3).find(|&i| i != leader).unwrap();
    let new = c.members[target].name.clone();
    let key = format!("/service/{}/failover", c.options.scope);
    let request = format!(r#"{{"leader":"{old}","member":"{new}"}}"#);
    etcd_put(&c, &key, &request);
    // Connections opened while nobody is primary wait, then succeed on the new leader.
    poll(
        "primary listener holding during the switchover",
        Duration::from_secs(60),
        Duration::from_millis(10),
        || {
            let s = px.stats()?;
            if listener(&s, "primary")["readiness"] == "holding" {
                return Some(());
            }
            let pending = etcd_get(&c, &key)
                .first()
                .is_some_and(|(_, v)| v.contains("member"));
            if !pending && s["proxy"]["leader"] == old.as_str() {
                etcd_put(&c, &key, &request);
            }
            None
        },
    )
    .unwrap_or_else(|e| {
        dump_logs(&c);
        eprintln!("--- proxy log ---\n{}", px.log_tail(40));
        panic!("{e}")
    });
    let waiters: Vec<_> = (0..3)
        .map(|i| {
            let port = px.primary;
            std::thread::spawn(move || {
                psql(
                    port,
                    &format!("insert into t(v) values ('gap {i}') returning inet_server_port()"),
                )
            })
        })
        .collect();
    for w in waiters {
        let port = w
            .join()
            .unwrap()
            .expect("a write opened during the switchover gap");
        assert_eq!(first_line(&port), c.members[target].pg_port.to_string());
    }
    // The old primary's session was closed, and the registration names the new leader.
    let status = poll(
        "held session closed",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || held.try_wait().ok().flatten(),
    )
    .unwrap_or_else(|e| {
        // Seen once in four full runs: keep what explains it.
        eprintln!("--- proxy stats ---\n{:?}", px.stats());
        eprintln!("--- proxy log ---\n{}", px.log_tail(60));
        for i in 0..c.members.len() {
            eprintln!("--- {} ---\n{}", c.members[i].name, c.log_tail(i, 40));
        }
        panic!("{e}")
    });
    assert!(!status.success());
    let s = px.wait_for("no session left on the old primary", |s| {
        listener(s, "primary")["servers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["name"] != old.as_str() || v["sessions"] == 0)
    });
    assert_eq!(s["proxy"]["routing_leader"], new.as_str());
    poll(
        "registration names the new leader",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            registrations(&c)
                .iter()
                .any(|(n, l)| n == "px-f" && l == new.as_str())
                .then_some(())
        },
    )
    .unwrap();

    // Let the rows reach the other members (replication is asynchronous).
    for i in (0..3).filter(|&i| i != target) {
        poll(
            "gap rows replicated",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                (c.sql(i, "select count(*) from t where v like 'gap%'")
                    .ok()?
                    == "3")
                    .then_some(())
            },
        )
        .unwrap_or_else(|e| {
            dump_logs(&c);
            panic!("{e}")
        });
    }

    // kill -9 of the new leader: the proxy serves the next leader without restart, and
    // connections opened meanwhile wait instead of failing.
    let proxy_pid = px.pid();
    c.signal_node(target, Signal::SIGKILL).unwrap();
    px.wait_for("primary listener holding after the kill", |s| {
        listener(s, "primary")["readiness"] == "holding"
    });
    let during = psql(
        px.primary,
        "insert into t(v) values ('after kill') returning inet_server_port()",
    )
    .expect("a write opened while the leader was dead");
    let newest = c
        .members
        .iter()
        .position(|m| m.pg_port.to_string() == first_line(&during))
        .expect("a member's port");
    assert_ne!(newest, target);
    assert_eq!(psql(px.primary, "select pg_is_in_recovery()").unwrap(), "f");
    assert_eq!(px.pid(), proxy_pid, "same proxy process");
    let s = px.stats().unwrap();
    assert_eq!(s["proxy"]["leader"], c.members[newest].name.as_str());
    let rows = psql(px.primary, "select count(*) from t where v like 'gap%'").unwrap();
    assert_eq!(rows, "3");
}

#[test]
fn bad_config_fails_fast_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.yml");
    std::fs::write(
        &file,
        "scope: demo\netcd3:\n  hosts: 127.0.0.1:1\nproxy:\n  listeners:\n    - name: primary\n      bind: 127.0.0.1:1\n      role: primary\n    - name: replicas\n      bind: 127.0.0.1:2\n      role: replica\n      balance: x\n",
    )
    .unwrap();
    let out = Command::new(PGHERD)
        .arg("proxy")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            r#"proxy.listeners[1].balance: expected roundrobin, leastconn or first, found "x""#
        ),
        "{err}"
    );
    assert!(err.contains("proxy.yml"), "{err}");
}
