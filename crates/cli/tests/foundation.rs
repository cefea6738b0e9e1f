//! The agent foundation, end to end: real etcd + three real PostgreSQL 15 servers, each run by
//! a `pgherd agent` process from a Patroni-style YAML file. Run serially (`--test-threads=1`).

use pgherd_testkit::cluster::{ClusterOptions, TestCluster};
use pgherd_testkit::wait::poll;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PGHERD: &str = env!("CARGO_BIN_EXE_pgherd");

fn cluster(scope: &str) -> TestCluster {
    let options = ClusterOptions {
        scope: scope.into(),
        ..ClusterOptions::default()
    };
    TestCluster::new(Path::new(PGHERD), options).expect("cluster directories and etcd")
}

fn healthy(c: &TestCluster) -> usize {
    match c.wait_healthy(2, Duration::from_secs(120)) {
        Ok(leader) => leader,
        Err(e) => {
            for i in 0..c.members.len() {
                eprintln!("--- {} ---\n{}", c.members[i].name, c.log_tail(i, 40));
            }
            panic!("{e}");
        }
    }
}

fn etcd_dump(c: &TestCluster, prefix: &str) -> Vec<(String, String)> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &c.etcd().client_url(),
            "get",
            "--prefix",
            prefix,
        ])
        .output()
        .expect("etcdctl (Debian package etcd-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .map(|kv| (kv[0].to_string(), kv.get(1).unwrap_or(&"").to_string()))
        .collect()
}

fn replicas_of(leader: usize) -> Vec<usize> {
    (0..3).filter(|&i| i != leader).collect()
}

#[test]
fn bootstrap_streams_and_serves_patroni_interfaces() {
    let mut c = cluster("boot");
    c.start_all().unwrap();
    let leader = healthy(&c);

    // Both replicas stream from the leader, with their member names as application_name.
    let names = c
        .sql(leader, "select string_agg(application_name || ':' || state, ',' order by application_name) from pg_stat_replication")
        .unwrap();
    let expected: Vec<String> = replicas_of(leader)
        .iter()
        .map(|&i| format!("{}:streaming", c.members[i].name))
        .collect();
    assert_eq!(names, expected.join(","));
    assert_eq!(c.sql(leader, "select pg_is_in_recovery()").unwrap(), "f");

    // A row written on the leader is read on both replicas.
    c.sql(
        leader,
        "create table t(id int primary key, v text); insert into t values (1, 'hello')",
    )
    .unwrap();
    for r in replicas_of(leader) {
        assert_eq!(c.sql(r, "select pg_is_in_recovery()").unwrap(), "t");
        poll(
            "row replicated",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || (c.sql(r, "select v from t where id = 1").ok()? == "hello").then_some(()),
        )
        .unwrap();
    }

    // Patroni's DCS layout: bare leader name, compact member JSON with role master/replica.
    let base = "/service/boot/";
    // Member keys are refreshed every loop_wait: wait until each shows its running role.
    let dump = poll(
        "member keys up to date",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let dump = etcd_dump(&c, base);
            let fresh = dump
                .iter()
                .filter(|(k, v)| {
                    k.contains("/members/")
                        && v.contains(r#""state":"running""#)
                        && (v.contains(r#""role":"master""#) || v.contains(r#""role":"replica""#))
                })
                .count();
            (fresh == 3).then_some(dump)
        },
    )
    .unwrap();
    let get = |k: &str| {
        dump.iter()
            .find(|(key, _)| key == &format!("{base}{k}"))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("leader").as_deref(),
        Some(c.members[leader].name.as_str())
    );
    let sysid = get("initialize").expect("initialize key");
    assert!(
        sysid.len() >= 10 && sysid.chars().all(|ch| ch.is_ascii_digit()),
        "{sysid}"
    );
    let config: Value = serde_json::from_str(&get("config").expect("config key")).unwrap();
    assert_eq!(config["ttl"], 10);
    assert_eq!(config["postgresql"]["use_pg_rewind"], true);
    let status: Value = serde_json::from_str(&get("status").expect("status key")).unwrap();
    assert!(status["optime"].as_u64().unwrap() > 0);
    for (i, m) in c.members.iter().enumerate() {
        let raw = get(&format!("members/{}", m.name)).expect("member key");
        assert!(!raw.contains(": "), "compact JSON expected: {raw}");
        let v: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["role"], if i == leader { "master" } else { "replica" });
        assert_eq!(v["state"], "running");
        assert_eq!(
            v["conn_url"],
            format!("postgres://127.0.0.1:{}/postgres", m.pg_port)
        );
        assert_eq!(
            v["api_url"],
            format!("http://127.0.0.1:{}/patroni", m.api_port)
        );
        assert!(v["xlog_location"].as_u64().is_some());
        assert_eq!(v["timeline"], 1);
    }

    // Health endpoints: the contract's codes on the leader and on a replica, GET and OPTIONS.
    let replica = replicas_of(leader)[0];
    let table: &[(&str, u16, u16)] = &[
        ("/", 200, 503),
        ("/primary", 200, 503),
        ("/master", 200, 503),
        ("/read-write", 200, 503),
        ("/leader", 200, 503),
        ("/standby-leader", 503, 503),
        ("/replica", 503, 200),
        ("/replica?lag=1GB", 503, 200),
        ("/read-only", 200, 200),
        ("/sync", 503, 503),
        ("/synchronous", 503, 503),
        ("/async", 503, 200),
        ("/asynchronous", 503, 200),
        ("/health", 200, 200),
    ];
    for &(path, on_leader, on_replica) in table {
        for method in ["GET", "OPTIONS"] {
            assert_eq!(
                c.api(leader, method, path).unwrap().0,
                on_leader,
                "{method} {path} on leader"
            );
            assert_eq!(
                c.api(replica, method, path).unwrap().0,
                on_replica,
                "{method} {path} on replica"
            );
        }
    }
    // Status-only probes: 200 for GET; HEAD/OPTIONS fall to Patroni's "anything else" (503).
    for path in ["/liveness", "/readiness"] {
        for i in [leader, replica] {
            assert_eq!(c.api(i, "GET", path).unwrap().0, 200, "GET {path}");
            assert_eq!(c.api(i, "OPTIONS", path).unwrap().0, 503, "OPTIONS {path}");
        }
    }
    let (code, body) = c.api(leader, "GET", "/patroni").unwrap();
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["role"], "master");
    assert_eq!(v["database_system_identifier"], sysid);
    assert_eq!(v["patroni"]["scope"], "boot");
    assert_eq!(v["replication"].as_array().map(Vec::len), Some(2));
    let (_, body) = c.api(replica, "GET", "/patroni").unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["role"], "replica");
    assert!(v["xlog"]["replayed_location"].as_u64().is_some());
    let (code, body) = c.api(replica, "GET", "/cluster").unwrap();
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["members"].as_array().map(Vec::len), Some(3));
    assert_eq!(c.api(leader, "GET", "/config").unwrap().0, 200);
    assert_eq!(c.api(leader, "GET", "/history").unwrap().0, 200);
    let (code, metrics) = c.api(leader, "GET", "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("patroni_primary{scope=\"boot\"} 1"),
        "{metrics}"
    );
    let (code, body) = c.api(leader, "GET", "/no-such-endpoint").unwrap();
    assert_eq!(code, 404);
    assert!(serde_json::from_str::<Value>(&body).is_ok(), "{body}");

    // pgherd list shows the same roles.
    let list: Value =
        serde_json::from_str(&c.ctl(replica, &["list", "-f", "json"]).unwrap()).unwrap();
    let roles: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Role"].as_str().unwrap())
        .collect();
    assert_eq!(roles.iter().filter(|r| **r == "Leader").count(), 1);
    assert_eq!(roles.iter().filter(|r| **r == "Replica").count(), 2);
    let table = c.ctl(0, &["list"]).unwrap();
    assert!(
        table.contains(&format!("Cluster: boot ({sysid})")),
        "{table}"
    );
}

#[test]
fn restart_keeps_cluster_identity_and_data() {
    let mut c = cluster("restart");
    c.start_all().unwrap();
    let leader = healthy(&c);
    let sysid = c
        .sql(leader, "select system_identifier from pg_control_system()")
        .unwrap();
    c.sql(
        leader,
        "create table keep(id int); insert into keep select generate_series(1, 100)",
    )
    .unwrap();

    // Restarting only the agent leaves a running PostgreSQL alone.
    let replica = replicas_of(leader)[0];
    let pm_before = c.postmaster_pid(replica).expect("replica postmaster");
    c.kill_agent(replica).unwrap();
    c.start(replica).unwrap();
    poll(
        "restarted agent reports running",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let (code, body) = c.api(replica, "GET", "/patroni").ok()?;
            (code == 200 && body.contains("\"running\"")).then_some(())
        },
    )
    .unwrap();
    assert_eq!(
        c.postmaster_pid(replica),
        Some(pm_before),
        "the agent restart must not restart PostgreSQL"
    );

    // SIGTERM stops each agent and its PostgreSQL cleanly.
    for i in 0..3 {
        c.stop(i, Duration::from_secs(60)).unwrap();
        assert_eq!(
            c.postmaster_pid(i),
            None,
            "{} still has a postmaster",
            c.members[i].name
        );
    }
    // All agents again: same cluster, no re-initialization, no data lost.
    c.start_all().unwrap();
    let leader = healthy(&c);
    assert_eq!(
        c.sql(leader, "select system_identifier from pg_control_system()")
            .unwrap(),
        sysid
    );
    for i in 0..3 {
        poll(
            "data on every node",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || (c.sql(i, "select count(*) from keep").ok()? == "100").then_some(()),
        )
        .unwrap();
    }
}

#[test]
fn foreign_data_directory_is_refused_and_kept() {
    let mut c = cluster("foreign");
    c.start_all().unwrap();
    let leader = healthy(&c);
    let victim = replicas_of(leader)[1];
    c.stop(victim, Duration::from_secs(60)).unwrap();

    // Replace the member's data directory with a fresh, unrelated cluster.
    let data = c.members[victim].data_dir.clone();
    std::fs::rename(&data, data.with_extension("old")).unwrap();
    std::fs::create_dir(&data).unwrap();
    let owner = if nix::unistd::geteuid().is_root() {
        Some("postgres")
    } else {
        None
    };
    let mut initdb = match owner {
        Some(user) => {
            Command::new("chown")
                .args([user, data.to_str().unwrap()])
                .status()
                .unwrap();
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", user, "--"]);
            cmd
        }
        None => Command::new("env"),
    };
    let st = initdb
        .arg("/usr/lib/postgresql/15/bin/initdb")
        .arg("-D")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    c.start(victim).unwrap();
    let exited = poll(
        "agent refuses the foreign data directory",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let log = c.log_tail(victim, 50);
            log.contains("system identifier").then_some(log)
        },
    )
    .unwrap();
    assert!(exited.contains("belongs to another cluster"), "{exited}");
    assert!(
        data.join("PG_VERSION").exists(),
        "the foreign data directory must be left in place"
    );
    assert_eq!(c.postmaster_pid(victim), None);
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "scope: x\nname: n1\nrestapi:\n  listen: 127.0.0.1:8008\netcd3:\n  hosts: 127.0.0.1:2379\nbootstrap:\n  dcs:\n    ttl: thirty\npostgresql:\n  listen: 127.0.0.1:5432\n  data_dir: /tmp/x\n",
    )
    .unwrap();
    let out = Command::new(PGHERD)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yml") && err.contains("bootstrap.dcs.ttl"),
        "{err}"
    );

    let good = dir.path().join("good.yml");
    std::fs::write(
        &good,
        std::fs::read_to_string(&bad)
            .unwrap()
            .replace("thirty", "30"),
    )
    .unwrap();
    let out = Command::new(PGHERD)
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shipped proxy files (container image, Debian example) pass `check-config --proxy`; an
/// agent file does not, and the error names the missing section.
#[test]
fn check_config_checks_proxy_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let check = |file: &str| {
        Command::new(PGHERD)
            .args(["check-config", "--proxy"])
            .arg(root.join(file))
            .output()
            .unwrap()
    };
    for file in ["deploy/container/proxy.yml", "deploy/deb/proxy.yml.example"] {
        let out = check(file);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{file}: {err}");
    }
    let out = check("deploy/deb/node.yml.example");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proxy"), "{err}");
}

/// `pgherd version` and `--version` name the commit and the build date (crates/cli/build.rs).
#[test]
fn version_names_commit_and_build_date() {
    let out = Command::new(PGHERD).arg("version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert!(
        lines.next().is_some_and(|l| l.starts_with("pgherd 0.")),
        "{text}"
    );
    let build = lines.next().unwrap_or_default();
    let (commit, date) = build
        .strip_prefix("commit ")
        .and_then(|b| b.split_once(", built "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        commit == "unknown"
            || commit
                .trim_end_matches("-dirty")
                .chars()
                .all(|c| c.is_ascii_hexdigit()),
        "{text}"
    );
    assert!(date.ends_with(" UTC") && date.len() == 23, "{text}");
    let out = Command::new(PGHERD).arg("--version").output().unwrap();
    let short = String::from_utf8_lossy(&out.stdout);
    assert!(short.contains(build), "{short}");
}

#[test]
fn patronictl_sees_the_same_roles() {
    if Command::new("patronictl").arg("--help").output().is_err() {
        panic!("patronictl missing: ./dev/setup installs the Debian package patroni");
    }
    let mut c = cluster("compat");
    c.start_all().unwrap();
    let leader = healthy(&c);
    // A replica streams before its agent publishes "running" (it says "creating replica",
    // then "starting", as Patroni's do): wait for every member key to say "running".
    let list = || {
        let out = Command::new("patronictl")
            .arg("-c")
            .arg(&c.members[0].config)
            .args(["list", "-f", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let all_running = |v: &Value| {
        v.as_array()
            .is_some_and(|rows| rows.len() == 3 && rows.iter().all(|r| r["State"] == "running"))
    };
    let v = poll(
        "every member running in patronictl list",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || Some(list()).filter(all_running),
    )
    .unwrap_or_else(|_| list());
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{v}");
    for row in rows {
        let name = row["Member"].as_str().unwrap();
        let expected = if name == c.members[leader].name {
            "Leader"
        } else {
            "Replica"
        };
        assert_eq!(row["Role"], expected, "{row}");
        assert_eq!(row["State"], "running", "{row}");
    }
}

/// An unchanged HAProxy configuration of the reference stack (REST health checks with
/// `OPTIONS /master` and `OPTIONS /replica`) routes to the right nodes of a pgherd cluster.
#[test]
fn haproxy_health_checks_route_by_role() {
    let mut c = cluster("haproxy");
    c.start_all().unwrap();
    let leader = healthy(&c);
    let ports = pgherd_testkit::ports::free_ports(2).unwrap();
    let servers: String = c
        .members
        .iter()
        .map(|m| {
            format!(
                "    server {} 127.0.0.1:{} maxconn 100 check port {}\n",
                m.name, m.pg_port, m.api_port
            )
        })
        .collect();
    let cfg = format!(
        "global\n    maxconn 200\n    stats socket {sock} level admin\ndefaults\n    mode tcp\n    timeout connect 4s\n    timeout client 30m\n    timeout server 30m\n    timeout check 5s\n\
listen primary\n    bind 127.0.0.1:{p}\n    option httpchk OPTIONS /master\n    http-check expect status 200\n    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions\n{s1}\
listen replicas\n    bind 127.0.0.1:{r}\n    balance roundrobin\n    option httpchk OPTIONS /replica\n    http-check expect status 200\n    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions\n{s2}",
        sock = c.root.join("haproxy.sock").display(),
        p = ports[0],
        r = ports[1],
        s1 = servers,
        s2 = servers,
    );
    let file = c.root.join("haproxy.cfg");
    std::fs::write(&file, cfg).unwrap();
    let child = Command::new("/usr/sbin/haproxy")
        .arg("-f")
        .arg(&file)
        .arg("-db")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("haproxy (Debian package haproxy)");
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Guard(child);
    // HAProxy (2.6) starts every server UP until its checks fail: wait for the checks to
    // settle (the leader UP only in `primary`, DOWN only in `replicas`) before routing.
    let sock = c.root.join("haproxy.sock");
    let leader_name = c.members[leader].name.clone();
    poll(
        "HAProxy health checks settled",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            use std::io::{Read, Write};
            let mut s = std::os::unix::net::UnixStream::connect(&sock).ok()?;
            s.write_all(b"show stat\n").ok()?;
            let mut csv = String::new();
            s.read_to_string(&mut csv).ok()?;
            let status = |proxy: &str, server: &str| {
                csv.lines()
                    .map(|l| l.split(',').collect::<Vec<_>>())
                    .find(|f| f.len() > 17 && f[0] == proxy && f[1] == server)
                    .map(|f| f[17].to_string())
            };
            let settled = c.members.iter().all(|m| {
                let leader = m.name == leader_name;
                let (p, r) = (status("primary", &m.name), status("replicas", &m.name));
                p.as_deref() == Some(if leader { "UP" } else { "DOWN" })
                    && r.as_deref() == Some(if leader { "DOWN" } else { "UP" })
            });
            settled.then_some(())
        },
    )
    .unwrap();
    assert_eq!(c.sql(leader, "select pg_is_in_recovery()").unwrap(), "f");
    poll(
        "HAProxy routes writes to the leader",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            (pgherd_testkit::cluster::psql(ports[0], "select pg_is_in_recovery()").ok()? == "f")
                .then_some(())
        },
    )
    .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    poll(
        "HAProxy routes reads to both replicas",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let port = pgherd_testkit::cluster::psql(
                ports[1],
                "select pg_is_in_recovery()::text || current_setting('port')",
            )
            .ok()?;
            assert!(
                port.starts_with("true"),
                "a primary answered on the replica port: {port}"
            );
            seen.insert(port);
            (seen.len() == 2).then_some(())
        },
    )
    .unwrap();
}
