//! Operator control, end to end: `pgherd edit-config` (flags, `$EDITOR`, `--apply`) and
//! `show-config`, and the change reaching every node, against real etcd and real PostgreSQL 15
//! clusters run by `pgherd agent`. Run serially (`--test-threads=1`).

mod common;

use common::*;
use pgherd_testkit::wait::poll;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

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
