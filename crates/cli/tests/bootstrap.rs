//! Bootstrap of a new cluster with `bootstrap.post_bootstrap`, end to end on real etcd and
//! PostgreSQL 15, as Patroni 3.0.2 runs it (docs/compat.md#bootstrap): the command split
//! shell-style with the local connection appended as key=value, the password in a passfile
//! named by PGPASSFILE; a failure cancels the bootstrap (initialize key removed, data
//! directory kept as `<data_dir>.failed`) and the agent exits instead of trying again.
//! One-member clusters; run serially (`--test-threads=1`).

mod common;

use common::*;
use pgherd_testkit::cluster::{ClusterOptions, TestCluster};
use pgherd_testkit::wait::poll;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A one-member cluster whose `bootstrap:` runs `post_bootstrap` (written as is into the
/// YAML), with `script` (if any) installed as `<root>/post_bootstrap.sh` first.
fn cluster_with_post_bootstrap(
    scope: &str,
    post_bootstrap: impl Fn(&Path) -> String,
    script: Option<&str>,
) -> TestCluster {
    let options = ClusterOptions {
        scope: scope.into(),
        members: 1,
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::new(Path::new(PGHERD), options).expect("cluster directories and etcd");
    let script_path = c.root.join("post_bootstrap.sh");
    if let Some(text) = script {
        std::fs::write(&script_path, text).unwrap();
        std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let m = &c.members[0];
    let yaml = std::fs::read_to_string(&m.config).unwrap();
    let line = format!(
        "\n  post_bootstrap: {}\n  initdb:\n",
        post_bootstrap(&script_path)
    );
    let edited = yaml.replacen("\n  initdb:\n", &line, 1);
    assert_ne!(
        edited, yaml,
        "bootstrap.initdb not found in the generated YAML"
    );
    std::fs::write(&m.config, edited).unwrap();
    c.start_all().expect("agent");
    c
}

fn agent_log(c: &TestCluster) -> String {
    std::fs::read_to_string(&c.members[0].log).unwrap_or_default()
}

fn failed_dir(c: &TestCluster) -> PathBuf {
    let mut p = c.members[0].data_dir.clone().into_os_string();
    p.push(".failed");
    PathBuf::from(p)
}

/// The initialize key holds the system identifier of the running server, written by the one
/// and only initdb; nothing was discarded.
fn bootstrapped_once(c: &TestCluster) {
    let sysid = c
        .sql(0, "select system_identifier from pg_control_system()")
        .unwrap();
    assert_eq!(c.dcs_value("initialize").as_deref(), Some(sysid.as_str()));
    let log = agent_log(c);
    assert_eq!(log.matches("running initdb").count(), 1, "{log}");
    assert_eq!(log.matches("post_bootstrap finished").count(), 1, "{log}");
    assert!(!log.contains("bootstrap failed"), "{log}");
    assert!(!failed_dir(c).exists(), "a bootstrap was discarded");
}

#[test]
fn post_bootstrap_psql_from_the_issue_bootstraps_on_the_first_attempt() {
    let c = cluster_with_post_bootstrap("boot-psql", |_| r#"psql -w -c "SELECT 1""#.into(), None);
    healthy(&c, 0);
    bootstrapped_once(&c);
}

/// Writes its arguments, who runs it and what the environment says about the password (not
/// the password), then uses the connection string it was given.
const RECORDING_SCRIPT: &str = r#"#!/bin/sh
out="$(dirname "$0")/node1/post_bootstrap.out"
{
  for a in "$@"; do echo "arg=$a"; done
  echo "PGPASSFILE=${PGPASSFILE:+set}"
  echo "PGPASSWORD=${PGPASSWORD:+set}"
  echo "PGOPTIONS=$PGOPTIONS"
  for a in "$@"; do dsn="$a"; done
  echo "query=$(psql -X -w -At -c 'select current_user' "$dsn" 2>&1)"
} > "$out.tmp"
mv "$out.tmp" "$out"
"#;

#[test]
fn post_bootstrap_script_gets_the_dsn_and_a_passfile() {
    let c = cluster_with_post_bootstrap(
        "boot-script",
        |script| format!(r#"{} --label "two words""#, script.display()),
        Some(RECORDING_SCRIPT),
    );
    healthy(&c, 0);
    bootstrapped_once(&c);
    let m = &c.members[0];
    let out = std::fs::read_to_string(m.dir.join("post_bootstrap.out")).unwrap();
    let args: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("arg=")).collect();
    // Split shell-style, then Patroni's key=value string (listening on 127.0.0.1: localhost).
    assert_eq!(
        args,
        [
            "--label",
            "two words",
            &format!(
                "dbname=postgres user=postgres host=localhost port={}",
                m.pg_port
            ),
        ],
        "{out}"
    );
    assert!(out.contains("\nPGPASSFILE=set\n"), "{out}");
    assert!(out.contains("\nPGPASSWORD=\n"), "{out}");
    assert!(
        out.contains("\nPGOPTIONS=-c synchronous_commit=local\n"),
        "{out}"
    );
    // The passfile authenticated the script's own connection (md5 over TCP)...
    assert!(out.contains("\nquery=postgres\n"), "{out}");
    // ...and the secret does not stay on disk.
    let mut passfile = m.dir.join("pgpass").into_os_string();
    passfile.push(".post_bootstrap");
    assert!(!PathBuf::from(passfile).exists());
}

const FAILING_SCRIPT: &str = r#"#!/bin/sh
echo attempt >> "$(dirname "$0")/node1/attempts"
exit 3
"#;

#[test]
fn failing_post_bootstrap_is_cancelled_once_and_the_agent_exits() {
    let mut c = cluster_with_post_bootstrap(
        "boot-fail",
        |script| format!("{} fail-arg", script.display()),
        Some(FAILING_SCRIPT),
    );
    // Patroni raises PatroniFatalException after cancel_initialization: the process exits.
    let gone = poll(
        "the agent to exit after the failed bootstrap",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || {
            let gone = c.reap();
            (!gone.is_empty()).then_some(gone)
        },
    );
    let gone = check(&c, gone);
    assert!(gone[0].contains("exit status: 1"), "{gone:?}");

    let log = agent_log(&c);
    let script = c.root.join("post_bootstrap.sh");
    let named = format!(
        "post_bootstrap script '{} fail-arg' returned non-zero code 3",
        script.display()
    );
    assert!(
        log.contains(&named),
        "no line naming the command and its status:\n{log}"
    );
    assert!(
        log.contains("removing initialize key after failed attempt to bootstrap the cluster"),
        "{log}"
    );
    assert!(log.contains("Failed to bootstrap cluster"), "{log}");
    // One attempt, whatever the time it took: no second initdb from this process.
    assert_eq!(log.matches("running initdb").count(), 1, "{log}");
    let attempts = std::fs::read_to_string(c.members[0].dir.join("attempts")).unwrap();
    assert_eq!(attempts.lines().count(), 1, "{attempts}");

    // Patroni's cleanup: no initialize key, PostgreSQL stopped, the data kept aside.
    assert_eq!(c.dcs_value("initialize"), None);
    assert!(!c.members[0].data_dir.exists());
    let failed = failed_dir(&c);
    assert!(failed.join("PG_VERSION").exists(), "{}", failed.display());
    assert!(
        !failed.join("postmaster.pid").exists(),
        "PostgreSQL still running"
    );
}
