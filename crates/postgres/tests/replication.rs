//! Primary -> pg_basebackup replica -> streaming -> promotion -> pg_rewind of the old
//! primary, all against real PostgreSQL.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::*;
use pgherd_postgres::{CliOption, ClusterState, DataDirState, SlotDrop, StopMode, StopOutcome};

const WAIT: Duration = Duration::from_secs(60);

async fn streaming_to(primary: &Node, app: &str) -> bool {
    match primary.pg.query_state().await {
        Ok(st) => st
            .replication
            .iter()
            .any(|r| r.application_name == app && r.state == "streaming"),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_promote_and_rewind() {
    init_tracing();
    let env = TestEnv::new("repl");
    let n1 = Node::new(&env, "n1");
    let n2 = Node::new(&env, "n2");

    // --- primary ---
    n1.pg
        .initdb(&[
            CliOption::Flag("no-sync".into()),
            CliOption::Value("encoding".into(), "UTF8".into()),
        ])
        .await
        .unwrap();
    let DataDirState::Initialized { sysid } = n1.pg.data_dir_state() else {
        panic!("not initialized: {:?}", n1.pg.data_dir_state());
    };
    assert!(n1.pg.write_pg_hba(&hba()).unwrap());
    assert!(!n1.pg.write_pg_hba(&hba()).unwrap());
    assert!(n1.pg.write_config(&params(), None).unwrap());
    assert!(
        !n1.pg.write_config(&params(), None).unwrap(),
        "second write changes nothing"
    );
    let data1 = n1.pg.options().data_dir.clone();
    let base = std::fs::read_to_string(data1.join("postgresql.base.conf")).unwrap();
    assert!(
        base.contains("PostgreSQL configuration file"),
        "initdb's file kept as base"
    );
    let conf = std::fs::read_to_string(data1.join("postgresql.conf")).unwrap();
    assert!(conf.starts_with("# Managed by pgherd"));
    assert!(conf.contains("include 'postgresql.base.conf'"));
    assert!(conf.contains(&format!("port = '{}'", n1.pg.options().port)));

    n1.pg.start().await.unwrap();
    let st = n1.pg.query_state().await.unwrap();
    assert!(!st.in_recovery);
    assert_eq!(st.timeline, 1);
    assert!(st.wal_lsn > 0);
    assert!(st.server_version >= 130000, "{}", st.server_version);
    assert!(st.wal_receiver.is_none());

    n1.pg
        .create_or_update_role("replicator", Some("rep pass"), &["REPLICATION".into()])
        .await
        .unwrap();
    n1.pg
        .create_or_update_role("rewinder", Some("rw:pass"), &[])
        .await
        .unwrap();
    n1.pg.grant_rewind_privileges("rewinder").await.unwrap();
    // Updating an existing role works too.
    n1.pg.set_superuser_password().await.unwrap();
    assert!(n1.pg.create_physical_slot("n2").await.unwrap());
    assert!(!n1.pg.create_physical_slot("n2").await.unwrap());
    n1.sql()
        .await
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    // --- replica ---
    n2.pg.pg_basebackup(&n1.upstream(), &[]).await.unwrap();
    assert_eq!(n2.pg.sysid().await.unwrap(), sysid);
    assert_eq!(n1.pg.sysid().await.unwrap(), sysid);
    n2.pg.write_pg_hba(&hba()).unwrap();
    assert!(n2
        .pg
        .write_config(&params(), Some(&n2.recovery_from(&n1)))
        .unwrap());
    let data2 = n2.pg.options().data_dir.clone();
    assert!(data2.join("standby.signal").exists());
    let conf2 = std::fs::read_to_string(data2.join("postgresql.conf")).unwrap();
    assert!(conf2.contains("application_name=n2"), "{conf2}");
    assert!(conf2.contains("primary_slot_name = 'n2'"));
    assert!(
        !conf2.contains("rep pass"),
        "password stays in the passfile"
    );
    let pgpass = std::fs::metadata(&n2.pg.options().pgpass).unwrap();
    assert_eq!(pgpass.mode() & 0o777, 0o600);
    if is_root() {
        assert_ne!(pgpass.uid(), 0, "passfile belongs to the PostgreSQL user");
    }

    n2.pg.start().await.unwrap();
    wait_until("n2 streaming from n1", WAIT, || streaming_to(&n1, "n2")).await;
    let st2 = n2.pg.query_state().await.unwrap();
    assert!(st2.in_recovery);
    assert_eq!(st2.timeline, 1);
    let receiver = st2.wal_receiver.clone().expect("wal receiver");
    assert_eq!(receiver.status, "streaming");
    assert_eq!(receiver.slot_name.as_deref(), Some("n2"));
    assert_eq!(receiver.sender_port, Some(n1.pg.options().port));
    let slots = n1.pg.list_physical_slots().await.unwrap();
    assert!(slots
        .iter()
        .any(|s| s.name == "n2" && s.active && s.restart_lsn.is_some()));
    assert_eq!(n1.pg.drop_slot("n2").await.unwrap(), SlotDrop::Active);

    n1.sql()
        .await
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    wait_until("row 2 on the replica", WAIT, || async {
        n2.count("t").await == 2
    })
    .await;
    let st2 = n2.pg.query_state().await.unwrap();
    assert!(st2.wal_lsn > 0 && st2.replayed_lsn.is_some());

    // --- promote the replica ---
    n2.pg.promote(true).await.unwrap();
    wait_until("n2 out of recovery", WAIT, || async {
        n2.pg.query_state().await.is_ok_and(|s| !s.in_recovery)
    })
    .await;
    let st2 = n2.pg.query_state().await.unwrap();
    assert_eq!(st2.timeline, 2);
    let history = n2
        .pg
        .read_timeline_history(2)
        .unwrap()
        .expect("00000002.history");
    assert_eq!(history.entries.len(), 1);
    assert_eq!(history.entries[0].timeline, 1);
    assert!(history.entries[0].switch_lsn > 0);
    assert!(n2.pg.write_config(&params(), None).unwrap());
    assert!(!data2.join("standby.signal").exists());
    n2.sql()
        .await
        .batch_execute("INSERT INTO t VALUES (3)")
        .await
        .unwrap();
    assert!(n2.pg.create_physical_slot("n1").await.unwrap());

    // --- the old primary diverges, then is rewound onto the new timeline ---
    n1.sql()
        .await
        .batch_execute("INSERT INTO t VALUES (100)")
        .await
        .unwrap();
    assert_eq!(
        n1.pg
            .stop(StopMode::Fast, Duration::from_secs(30))
            .await
            .unwrap(),
        StopOutcome::Stopped(StopMode::Fast)
    );
    assert!(n1.pg.is_running().is_none());
    let cd = n1.pg.controldata().await.unwrap();
    assert_eq!(cd.state, ClusterState::ShutDown);
    assert!(cd.allows_rewind());
    // pg_rewind reads the new timeline from the source's pg_control.
    n2.pg.checkpoint().await.unwrap();
    n1.pg.pg_rewind(&n2.upstream(), false).await.unwrap();
    n1.pg.write_pg_hba(&hba()).unwrap();
    n1.pg
        .write_config(&params(), Some(&n1.recovery_from(&n2)))
        .unwrap();
    n1.pg.start().await.unwrap();
    wait_until("n1 streaming from n2", WAIT, || streaming_to(&n2, "n1")).await;
    wait_until("row 3 on the rewound node", WAIT, || async {
        n1.count("t").await == 3
    })
    .await;
    let rows: Vec<i32> = n1
        .sql()
        .await
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, vec![1, 2, 3], "the divergent row is gone");
    let st1 = n1.pg.query_state().await.unwrap();
    assert!(st1.in_recovery);
    assert_eq!(st1.timeline, 2);

    for node in [&n1, &n2] {
        assert_eq!(
            node.pg
                .stop(StopMode::Fast, Duration::from_secs(30))
                .await
                .unwrap(),
            StopOutcome::Stopped(StopMode::Fast)
        );
        assert!(node.pg.is_running().is_none());
    }
}
