//! `ZooKeeperDcs` over TLS against a real ZooKeeper serving TLS with client certificates
//! (Debian's package, netty, PEM stores; started per test on loopback, stopped by PID on drop):
//! `set_acls` puts x509 ACLs on every znode (read back with ZooKeeper's own CLI) that
//! ZooKeeper enforces, a wrong CA fails with a clear error, an encrypted client key is read
//! with `key_password`, and dropping the client closes its TLS connections.

use pgherd_config::{ZookeeperAcl, ZookeeperTls};
use pgherd_dcs::zookeeper::{ZooKeeperDcs, ZooKeeperSettings};
use pgherd_dcs::{Dcs, DcsError, KeyLayout, MemberData, Role};
use pgherd_testkit::pki::{ZooKeeperClientCert, ZooKeeperPki};
use pgherd_testkit::zookeeper::{AclEntry, ZooKeeperServer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::time::sleep;
use zookeeper_client as zk;

const BASE: &str = "/service/batman";

struct Env {
    /// Shared with the blocking threads that run ZooKeeper's CLI.
    server: Arc<ZooKeeperServer>,
    pki: ZooKeeperPki,
    dir: TempDir,
}

async fn start() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let (server, pki) = tokio::task::spawn_blocking(move || {
        let pki = ZooKeeperPki::generate(&path)?;
        let tls = pgherd_testkit::zookeeper::ZooKeeperTls {
            key_store: pki.server_key_store.clone(),
            trust_store: pki.ca.clone(),
        };
        anyhow::Ok((ZooKeeperServer::start_tls(&path, tls)?, pki))
    })
    .await
    .expect("join")
    .expect("start ZooKeeper with TLS");
    let env = Env {
        server: Arc::new(server),
        pki,
        dir,
    };
    // A freshly started JVM takes seconds over its first TLS handshakes on a loaded machine,
    // more than the tests' retry_timeout: one read with a generous budget first.
    let warm = ZooKeeperDcs::new(
        ZooKeeperSettings {
            hosts: vec![env.server.secure_host().expect("TLS port")],
            tls: Some(tls(&env.pki.ca, &env.pki.client)),
            acls: Vec::new(),
        },
        KeyLayout::new("/service", "batman"),
        None,
        Duration::from_secs(10),
        Duration::from_secs(60),
    )
    .expect("client");
    warm.get_cluster()
        .await
        .expect("ZooKeeper answers over TLS");
    env
}

fn tls(cacert: &Path, client: &ZooKeeperClientCert) -> ZookeeperTls {
    ZookeeperTls {
        verify: true,
        cacert: Some(cacert.to_path_buf()),
        cert: Some(client.cert.clone()),
        key: Some(client.key.clone()),
        key_password: None,
    }
}

fn all_to(principal: &str) -> ZookeeperAcl {
    ZookeeperAcl {
        principal: principal.to_string(),
        read: true,
        write: true,
        create: true,
        delete: true,
        admin: true,
    }
}

fn client(
    env: &Env,
    name: Option<&str>,
    tls: ZookeeperTls,
    acls: Vec<ZookeeperAcl>,
) -> Result<ZooKeeperDcs, DcsError> {
    ZooKeeperDcs::new(
        ZooKeeperSettings {
            hosts: vec![env.server.secure_host().expect("TLS port")],
            tls: Some(tls),
            acls,
        },
        KeyLayout::new("/service", "batman"),
        name.map(str::to_string),
        Duration::from_secs(10),
        Duration::from_secs(3),
    )
}

fn member() -> MemberData {
    MemberData {
        conn_url: "postgres://127.0.0.1:5432/postgres".into(),
        api_url: "http://127.0.0.1:8008/patroni".into(),
        state: "running".into(),
        role: Some(Role::Primary),
        version: "3.0.2".into(),
        ..MemberData::default()
    }
}

/// The ACL of a znode, through ZooKeeper's own CLI over TLS as `client`.
async fn acl_of(env: &Env, path: &str, client: &ZooKeeperClientCert) -> Vec<AclEntry> {
    let tls = pgherd_testkit::zookeeper::ZooKeeperTls {
        key_store: client.key_store.clone(),
        trust_store: env.pki.ca.clone(),
    };
    let path = path.to_string();
    let server = env.server.clone();
    // The harness is synchronous (it runs java): off the runtime's workers.
    tokio::task::spawn_blocking(move || {
        server
            .get_acl(&path, &tls)
            .map_err(|e| format!("getAcl {path}: {e:#}"))
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_acls_puts_x509_acls_on_every_znode_and_zookeeper_enforces_them() {
    let env = start().await;
    let principal = env.pki.client.principal.clone();
    let a = client(
        &env,
        Some("node1"),
        tls(&env.pki.ca, &env.pki.client),
        vec![all_to(&principal)],
    )
    .expect("TLS client");
    a.touch_member(&member())
        .await
        .expect("member key over TLS");
    assert!(a.attempt_to_acquire_leader().await.expect("leader race"));
    assert!(a.claim_initialize().await.expect("initialize"));
    a.set_config_value("{}", None).await.expect("config");
    let cluster = a.get_cluster().await.expect("read back");
    assert_eq!(cluster.leader_name(), Some("node1"));
    assert!(cluster.members.contains_key("node1"));

    // Every znode pgherd created, parents included (ephemeral and persistent alike).
    let expected = vec![AclEntry {
        scheme: "x509".into(),
        id: principal.clone(),
        permissions: "cdrwa".into(),
    }];
    for path in [
        "/service".to_string(),
        BASE.to_string(),
        format!("{BASE}/members"),
        format!("{BASE}/members/node1"),
        format!("{BASE}/leader"),
        format!("{BASE}/initialize"),
        format!("{BASE}/config"),
    ] {
        assert_eq!(
            acl_of(&env, &path, &env.pki.client).await,
            expected,
            "{path}"
        );
    }

    // ZooKeeper enforces it: an unauthenticated plain client, and a TLS client with another
    // principal, may not read the leader key.
    let plain = zk::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(&env.server.host())
        .await
        .expect("plain client");
    match plain.get_data(&format!("{BASE}/leader")).await {
        Err(zk::Error::NoAuth) => {}
        other => panic!("a client without certificate read the leader key: {other:?}"),
    }
    let other = client(
        &env,
        None,
        tls(&env.pki.ca, &env.pki.other_client),
        Vec::new(),
    )
    .expect("TLS client with the other certificate");
    let refused = other
        .get_cluster()
        .await
        .expect_err("another principal is refused");
    let text = refused.to_string();
    assert!(
        matches!(refused, DcsError::Rejected { .. }) && text.contains("ACL"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_fails_with_a_clear_error_and_verify_false_accepts_any_server() {
    let env = start().await;
    let wrong = client(
        &env,
        Some("node1"),
        tls(&env.pki.wrong_ca, &env.pki.client),
        Vec::new(),
    )
    .expect("client");
    let started = Instant::now();
    let error = wrong
        .get_cluster()
        .await
        .expect_err("a server signed by another CA is refused");
    let text = error.to_string();
    assert!(error.is_unavailable(), "{text}");
    assert!(
        text.contains("TLS handshake failed")
            && text.contains("UnknownIssuer")
            && text.contains(&env.server.secure_host().expect("TLS port"))
            && text.contains("zookeeper.cacert"),
        "{text}"
    );
    // Bounded by retry_timeout (3 s), with slack for a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(15), "{text}");

    // verify: false (kazoo's verify_certs=False) takes the same server, with the client
    // certificate's key encrypted and read with key_password.
    let encrypted = encrypt_key(env.dir.path(), &env.pki.client.key, "zkpass");
    let mut insecure = tls(&env.pki.wrong_ca, &env.pki.client);
    insecure.verify = false;
    insecure.key = Some(encrypted.clone());
    insecure.key_password = Some("zkpass".into());
    let a = client(&env, Some("node1"), insecure.clone(), Vec::new()).expect("client");
    a.touch_member(&member()).await.expect("write over TLS");
    assert!(a
        .get_cluster()
        .await
        .expect("read")
        .members
        .contains_key("node1"));

    // A wrong key_password names the setting and the file, before any connection.
    insecure.key_password = Some("wrong".into());
    let refused = match client(&env, Some("node1"), insecure, Vec::new()) {
        Ok(_) => panic!("a wrong key_password was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        refused.contains("zookeeper.key")
            && refused.contains("key_password")
            && refused.contains(&encrypted.display().to_string()),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_client_closes_its_tls_connections() {
    let env = start().await;
    let a = client(
        &env,
        Some("node1"),
        tls(&env.pki.ca, &env.pki.client),
        Vec::new(),
    )
    .expect("client");
    let _changes = a.subscribe();
    a.touch_member(&member()).await.expect("write over TLS");
    // ZooKeeper's `cons` lists plain connections only: count the TLS ones in the kernel's table.
    let port = env.server.secure_host().expect("TLS port");
    let port: u16 = port
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    assert!(connections_to(port) > 0, "the client is connected over TLS");
    drop(a);
    // The session itself lives on until its timeout (detached, as with plain TCP); its
    // connections go with the forwarders.
    let deadline = Instant::now() + Duration::from_secs(10);
    while connections_to(port) > 0 {
        assert!(
            Instant::now() < deadline,
            "the client's TLS connections outlived it"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// Established TCP connections (IPv4) whose remote end is 127.0.0.1:`port`, from
/// /proc/net/tcp.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// `key` as an encrypted PKCS#8 file (`openssl pkcs8 -topk8 -v2 aes-256-cbc`).
fn encrypt_key(dir: &Path, key: &Path, password: &str) -> PathBuf {
    let out = dir.join("client-encrypted.key");
    let status = std::process::Command::new("openssl")
        .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in"])
        .arg(key)
        .arg("-out")
        .arg(&out)
        .args(["-passout", &format!("pass:{password}")])
        .status()
        .expect("run openssl (Debian package openssl)");
    assert!(status.success(), "openssl pkcs8 failed");
    out
}
