//! Operator control, end to end: `pgherd query` against the members it selects, on real etcd
//! and a real PostgreSQL 15 cluster run by `pgherd agent`. Run serially (`--test-threads=1`).

mod common;

use common::*;

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
