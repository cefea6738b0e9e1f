//! The management REST API and the control commands' refusals, end to end: bad requests and
//! missing credentials answered with Patroni's codes and messages and changing nothing, the
//! client-side checks of `pgherd switchover`/`failover`/`pause`, the REST API over TLS (then
//! `pgherd remove`) and with Patroni's single-openssl-certificate setup, against real etcd and real PostgreSQL 15 clusters run by
//! `pgherd agent`. Run serially (`--test-threads=1`).

mod common;

use common::*;
use pgherd_testkit::cluster::AgentKind;
use pgherd_testkit::wait::poll;
use serde_json::Value;
use std::time::Duration;

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
            .contains("content-type: text/html\r\n"),
        "{head}"
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

    // Bad requests, with credentials: 4xx with Patroni's plain-text reason.
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
        assert_eq!(
            (status, error_of(&reply).as_str()),
            (400, "Bad Request"),
            "{body}: {reply}"
        );
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

/// Patroni's common setup: one certificate made by `openssl req -x509` (`CA:TRUE`) as
/// `restapi.cafile`, `certfile` and client certificate with `verify_client: required`.
/// patronictl and pgherd reach every member; a client presenting another self-signed
/// certificate is refused, and the agent logs the peer address and the reason.
#[test]
fn a_single_openssl_certificate_for_everything() {
    use std::io::{Read, Write};
    let pki = tempfile::tempdir().unwrap();
    let (cert, key) = pgherd_testkit::pki::openssl_self_signed(pki.path(), "single").unwrap();
    let (stranger, stranger_key) =
        pgherd_testkit::pki::openssl_self_signed(pki.path(), "stranger").unwrap();
    let tls = format!(
        "restapi:\n  certfile: {}\n  keyfile: {}\n  cafile: {}\n  verify_client: required\n",
        cert.display(),
        key.display(),
        cert.display()
    );
    let c = cluster_with("ctl-openssl", 2, AgentKind::Pgherd, |_, yaml| {
        yaml.replace("restapi:\n", &tls)
    });
    // The harness's health checks speak plain HTTP: wait on the DCS instead.
    check(
        &c,
        poll(
            "a leader and both member keys running",
            Duration::from_secs(120),
            Duration::from_millis(250),
            || {
                let running = |m: &str| {
                    dcs_json(&c, &format!("members/{m}")).is_some_and(|v| v["state"] == "running")
                };
                (c.dcs_value("leader").is_some() && running("node1") && running("node2"))
                    .then_some(())
            },
        ),
    );

    for out in [patronictl(&c, &["list"]).ok(), pgherd(&c, &["list"]).ok()] {
        assert!(out.contains("node1") && out.contains("node2"), "{out}");
    }
    // Both call every member's REST API with the certificate as client certificate.
    let out = patronictl(&c, &["version", "ctl-openssl"]).ok();
    assert!(
        out.contains("node1: Patroni 3.0.2") && out.contains("node2: Patroni 3.0.2"),
        "{out}"
    );
    let out = pgherd(&c, &["version", "ctl-openssl"]).ok();
    assert!(
        out.contains("node1: pgherd") && out.contains("node2: pgherd"),
        "{out}"
    );
    let out = patronictl(&c, &["pause"]).ok();
    assert!(
        out.contains("Success: cluster management is paused"),
        "{out}"
    );
    let out = pgherd(&c, &["resume"]).ok();
    assert!(
        out.contains("Success: cluster management is resumed"),
        "{out}"
    );

    // Another self-signed certificate: the handshake fails and the agent says who and why.
    let stranger = pgherd_api::tls::ClientTls {
        cacert: Some(cert.clone()),
        certfile: Some(stranger),
        keyfile: Some(stranger_key),
        ..Default::default()
    }
    .rustls_config()
    .unwrap();
    let port = c.members[0].api_port;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let local = tcp.local_addr().unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(stranger), name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let answer = stream
        .write_all(b"GET /patroni HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .and_then(|()| stream.read_to_end(&mut Vec::new()));
    assert!(answer.is_err(), "the stranger got an answer");
    let line = check(
        &c,
        poll(
            "the agent to log the refused handshake",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || {
                let log = std::fs::read_to_string(&c.members[0].log).ok()?;
                log.lines()
                    .find(|l| l.contains(&local.to_string()) && l.contains("TLS handshake"))
                    .map(str::to_string)
            },
        ),
    );
    assert!(
        line.contains("WARN") && line.contains("refused") && line.contains("UnknownIssuer"),
        "{line}"
    );
}
