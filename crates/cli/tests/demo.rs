//! `pgherd demo --once`: the README's first command works end to end (etcd, three agents and
//! the proxy start, the cluster becomes healthy, everything is stopped again).

use std::process::Command;

#[test]
fn demo_starts_a_healthy_cluster_and_cleans_up() {
    healthy_demo(&["demo", "--once"], "etcd at http://127.0.0.1:");
}

/// Seed 004's layout: the same cluster and proxy on ZooKeeper.
#[test]
fn demo_on_zookeeper() {
    healthy_demo(
        &["demo", "--once", "--dcs", "zookeeper"],
        "ZooKeeper at 127.0.0.1:",
    );
}

fn healthy_demo(args: &[&str], store: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgherd"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pgherd demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(store), "{stdout}");
    assert!(stdout.contains("cluster healthy after"), "{stdout}");
    assert_eq!(stdout.matches("| Leader ").count(), 1, "{stdout}");
    assert_eq!(stdout.matches("| Replica ").count(), 2, "{stdout}");
    assert!(
        stdout.contains("proxy: the primary port reaches the leader"),
        "{stdout}\n{stderr}"
    );
    let root = stdout
        .lines()
        .find_map(|l| l.split("files in ").nth(1))
        .expect("demo prints its directory")
        .trim()
        .to_string();
    assert!(
        !std::path::Path::new(&root).exists(),
        "demo directory {root} was not removed"
    );
}
