//! Start/stop/restart/reload, crash recovery, data directory states and helpers, against
//! real PostgreSQL.

mod common;

use std::time::Duration;

use common::*;
use pgherd_postgres::{
    AllowRemoval, CallbackAction, CliOption, ClusterState, DataDirState, PgError, Postgres,
    PostmasterStatus, RemovalMode, SlotDrop, StopMode, StopOutcome, Upstream,
};

const WAIT: Duration = Duration::from_secs(60);

fn fast_initdb() -> Vec<CliOption> {
    vec![CliOption::Flag("no-sync".into())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_restart_reload_and_crash_recovery() {
    init_tracing();
    let env = TestEnv::new("life");
    let n = Node::new(&env, "n");
    let mut initdb = fast_initdb();
    initdb.push(CliOption::Flag("data-checksums".into()));
    n.pg.initdb(&initdb).await.unwrap();
    n.pg.write_pg_hba(&hba()).unwrap();
    n.pg.write_config(&params(), None).unwrap();
    assert!(n.pg.is_running().is_none());
    assert_eq!(
        n.pg.stop(StopMode::Fast, Duration::from_secs(5))
            .await
            .unwrap(),
        StopOutcome::NotRunning
    );
    let cd = n.pg.controldata().await.unwrap();
    assert_eq!(cd.state, ClusterState::ShutDown);
    assert_eq!(cd.data_checksum_version, 1);
    assert!(n
        .pg
        .data_dir_major_version()
        .unwrap()
        .is_some_and(|v| v >= 13));

    n.pg.start().await.unwrap();
    let pm = n.pg.is_running().expect("running");
    assert!(pm.pid > 0 && !pm.single_user);
    assert_eq!(pm.port, Some(n.pg.options().port));
    assert_eq!(pm.status, Some(PostmasterStatus::Ready));
    assert!(matches!(n.pg.start().await, Err(PgError::AlreadyRunning { pid }) if pid == pm.pid));

    let st = n.pg.query_state().await.unwrap();
    assert!(!st.pending_restart);
    assert!(!st.postmaster_start_time.is_empty());
    let contexts =
        n.pg.parameter_contexts(&["max_connections", "work_mem", "wal_level", "no_such_guc"])
            .await
            .unwrap();
    assert_eq!(contexts["max_connections"], "postmaster");
    assert_eq!(contexts["work_mem"], "user");
    assert_eq!(contexts["wal_level"], "postmaster");
    assert!(!contexts.contains_key("no_such_guc"));

    // A reload applies sighup/user settings; postmaster ones wait for a restart.
    let mut p = params();
    p.insert("work_mem".into(), "8MB".into());
    p.insert("max_connections".into(), "25".into());
    assert!(n.pg.write_config(&p, None).unwrap());
    n.pg.reload().await.unwrap();
    wait_until("work_mem reloaded", WAIT, || async {
        n.pg.current_settings(&["work_mem"])
            .await
            .is_ok_and(|s| s["work_mem"] == "8192")
    })
    .await;
    wait_until("pending_restart", WAIT, || async {
        n.pg.query_state().await.is_ok_and(|s| s.pending_restart)
    })
    .await;
    assert_eq!(
        n.pg.current_settings(&["max_connections"]).await.unwrap()["max_connections"],
        "20"
    );

    n.pg.restart().await.unwrap();
    let st2 = n.pg.query_state().await.unwrap();
    assert!(!st2.pending_restart);
    assert_ne!(st2.postmaster_start_time, st.postmaster_start_time);
    assert_eq!(
        n.pg.current_settings(&["max_connections"]).await.unwrap()["max_connections"],
        "25"
    );
    assert_ne!(n.pg.is_running().unwrap().pid, pm.pid);

    // Unclean shutdown, then single-user crash recovery leaves a clean "shut down".
    n.sql()
        .await
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    assert_eq!(
        n.pg.stop(StopMode::Immediate, Duration::from_secs(30))
            .await
            .unwrap(),
        StopOutcome::Stopped(StopMode::Immediate)
    );
    assert!(n.pg.is_running().is_none());
    assert_eq!(
        n.pg.controldata().await.unwrap().state,
        ClusterState::InProduction
    );
    std::fs::write(n.pg.options().data_dir.join("standby.signal"), "").unwrap();
    n.pg.crash_recovery().await.unwrap();
    assert_eq!(
        n.pg.controldata().await.unwrap().state,
        ClusterState::ShutDown
    );
    assert!(!n.pg.options().data_dir.join("standby.signal").exists());
    assert!(n.pg.is_running().is_none());

    // Start without waiting; the server becomes ready on its own.
    n.pg.start_no_wait().await.unwrap();
    wait_until("server ready", WAIT, || async {
        n.pg.query_state().await.is_ok()
    })
    .await;
    assert_eq!(n.count("t").await, 1);

    assert!(n.pg.create_physical_slot("spare").await.unwrap());
    assert_eq!(n.pg.drop_slot("spare").await.unwrap(), SlotDrop::Dropped);
    assert_eq!(n.pg.drop_slot("spare").await.unwrap(), SlotDrop::Missing);
    assert!(n.pg.list_physical_slots().await.unwrap().is_empty());

    // A smart shutdown waits for this session forever; stop escalates to immediate.
    let session = n.sql().await;
    assert_eq!(
        n.pg.stop(StopMode::Smart, Duration::from_secs(2))
            .await
            .unwrap(),
        StopOutcome::Stopped(StopMode::Immediate)
    );
    drop(session);
    assert!(n.pg.is_running().is_none());

    n.pg.start().await.unwrap();
    assert_eq!(
        n.pg.stop(StopMode::Fast, Duration::from_secs(30))
            .await
            .unwrap(),
        StopOutcome::Stopped(StopMode::Fast)
    );
    assert!(n.pg.is_running().is_none());
    assert!(matches!(n.pg.reload().await, Err(PgError::NotRunning)));
    assert!(matches!(
        n.pg.query_state().await,
        Err(PgError::Connect { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_states_and_removal() {
    init_tracing();
    let env = TestEnv::new("datadir");
    let n = Node::new(&env, "n");
    let data = n.pg.options().data_dir.clone();

    assert_eq!(n.pg.data_dir_state(), DataDirState::Missing);
    assert!(matches!(
        n.pg.write_config(&params(), None),
        Err(PgError::NotInitialized { .. })
    ));
    assert!(matches!(
        n.pg.start().await,
        Err(PgError::NotInitialized { .. })
    ));

    // A stray file: never touched, initdb refused.
    mkdir_for_postgres(&data);
    std::fs::write(data.join("notes.txt"), "mine").unwrap();
    assert!(matches!(n.pg.data_dir_state(), DataDirState::Invalid(r) if r.contains("notes.txt")));
    assert!(matches!(
        n.pg.initdb(&fast_initdb()).await,
        Err(PgError::DataDirNotEmpty { .. })
    ));
    assert_eq!(
        std::fs::read_to_string(data.join("notes.txt")).unwrap(),
        "mine"
    );
    std::fs::remove_file(data.join("notes.txt")).unwrap();

    // A fresh mount point counts as empty; initdb's complaint reaches the error.
    std::fs::create_dir(data.join("lost+found")).unwrap();
    assert_eq!(n.pg.data_dir_state(), DataDirState::Empty);
    match n.pg.initdb(&fast_initdb()).await {
        Err(PgError::CommandFailed {
            command, output, ..
        }) => {
            assert!(command.contains("initdb"), "{command}");
            assert!(output.contains("lost+found"), "{output}");
        }
        other => panic!("expected initdb to fail: {other:?}"),
    }
    assert!(data.join("lost+found").exists());
    std::fs::remove_dir(data.join("lost+found")).unwrap();

    assert!(matches!(
        n.pg.initdb(&[CliOption::Value("pwfile".into(), "/x".into())])
            .await,
        Err(PgError::InvalidOption { .. })
    ));
    n.pg.initdb(&fast_initdb()).await.unwrap();
    let DataDirState::Initialized { sysid } = n.pg.data_dir_state() else {
        panic!("{:?}", n.pg.data_dir_state());
    };
    assert_eq!(sysid, n.pg.sysid().await.unwrap());
    assert!(sysid.len() >= 10);
    assert!(n.pg.read_timeline_history(2).unwrap().is_none());

    // Managed pg_ident.conf and the bootstrap-style pg_hba.conf append.
    let ident = vec!["map1 root su".to_string()];
    assert!(n.pg.write_pg_ident(&ident).unwrap());
    assert!(!n.pg.write_pg_ident(&ident).unwrap());
    let ident_text = std::fs::read_to_string(data.join("pg_ident.conf")).unwrap();
    assert!(
        ident_text.starts_with("# Managed by pgherd") && ident_text.ends_with("map1 root su\n")
    );
    n.pg.append_pg_hba(&["host all all 10.9.9.9/32 reject".to_string()])
        .unwrap();
    let hba_text = std::fs::read_to_string(data.join("pg_hba.conf")).unwrap();
    assert!(hba_text.contains("local") && hba_text.ends_with("host all all 10.9.9.9/32 reject\n"));

    // Removal only with an explicit permission, never while running.
    n.pg.write_pg_hba(&hba()).unwrap();
    n.pg.write_config(&params(), None).unwrap();
    n.pg.start().await.unwrap();
    assert!(matches!(
        n.pg.remove_data_dir(AllowRemoval::granted_by("test"), RemovalMode::Delete),
        Err(PgError::Running { .. })
    ));
    n.pg.stop(StopMode::Fast, Duration::from_secs(30))
        .await
        .unwrap();
    let failed =
        n.pg.remove_data_dir(
            AllowRemoval::granted_by("test"),
            RemovalMode::RenameToFailed,
        )
        .unwrap()
        .unwrap();
    assert!(failed.ends_with("data.failed") && failed.join("PG_VERSION").exists());
    assert_eq!(n.pg.data_dir_state(), DataDirState::Missing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_basebackup_leaves_an_empty_data_dir() {
    init_tracing();
    let env = TestEnv::new("bb");
    let n = Node::new(&env, "n");
    let nowhere = Upstream::new("127.0.0.1", free_port());
    match n.pg.pg_basebackup(&nowhere, &[]).await {
        Err(PgError::CommandFailed {
            command, output, ..
        }) => {
            assert!(
                command.contains("pg_basebackup") && command.contains("-X stream"),
                "{command}"
            );
            assert!(
                !command.contains("rep pass"),
                "no password on the command line"
            );
            assert!(output.contains("connection"), "{output}");
        }
        other => panic!("expected pg_basebackup to fail: {other:?}"),
    }
    assert_eq!(n.pg.data_dir_state(), DataDirState::Empty);
    assert!(matches!(
        n.pg.pg_basebackup(
            &nowhere,
            &[CliOption::Value("wal-method".into(), "fetch".into())]
        )
        .await,
        Err(PgError::InvalidOption { .. })
    ));
}

#[tokio::test]
async fn callbacks_run_in_the_background() {
    init_tracing();
    let env = TestEnv::new("cb");
    let pg = Postgres::new(options(&env, "n")).unwrap();
    let out = env.path().join("cb.out");
    let script = env.path().join("cb.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" > {}.tmp && mv {0}.tmp {0}\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    pg.run_callback(
        &format!("{} '--flag x'", script.display()),
        CallbackAction::OnRoleChange,
        "master",
        "demo",
    )
    .unwrap();
    wait_until("callback output", WAIT, || async { out.exists() }).await;
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "--flag x on_role_change master demo\n"
    );
    assert!(matches!(
        pg.run_callback("'unterminated", CallbackAction::OnStart, "replica", "demo"),
        Err(PgError::Callback { .. })
    ));
}

#[test]
fn missing_run_as_user_is_a_clear_error() {
    let env = TestEnv::new("runas");
    let mut o = options(&env, "n");
    o.run_as = Some("pgherd-no-such-user".into());
    match Postgres::new(o) {
        Err(e) if is_root() => assert_eq!(
            e.to_string(),
            "PostgreSQL refuses to run as root; create the OS user 'pgherd-no-such-user' or set postgresql.run_as"
        ),
        Err(e) => panic!("run_as must be ignored when not root: {e}"),
        Ok(pg) => {
            assert!(!is_root());
            assert_eq!(pg.run_as_user(), None);
        }
    }
}
