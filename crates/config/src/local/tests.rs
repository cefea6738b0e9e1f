use crate::{
    load_str, Config, DcsSettings, DynamicConfig, Loaded, WatchdogMode, ZookeeperAcl, ZookeeperTls,
    REDACTED,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const MINIMAL: &str = "\
scope: batman
name: node1
restapi:
  listen: 127.0.0.1:8008
etcd3:
  hosts: 127.0.0.1:2379
postgresql:
  listen: 127.0.0.1:5432
  data_dir: /var/lib/pg
";

fn load(yaml: &str) -> Loaded {
    load_str(yaml, "node1.yml", &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"))
}

fn config(yaml: &str) -> Config {
    load(yaml).config
}

fn error(yaml: &str) -> String {
    load_str(yaml, "node1.yml", &BTreeMap::new())
        .unwrap_err()
        .to_string()
}

/// MINIMAL with `extra` appended (extra may add sections or override keys of new sections).
fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

#[test]
fn minimal_config_and_defaults() {
    let loaded = load(MINIMAL);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.source, "node1.yml");
    let c = loaded.config;
    c.validate_for_agent().unwrap();
    assert_eq!(c.namespace, "/service/");
    assert_eq!(c.postgresql.database, "postgres");
    assert_eq!(c.postgresql.pg_ctl_timeout, Duration::from_secs(60));
    assert_eq!(c.postgresql.config_base_name, "postgresql");
    assert_eq!(c.postgresql.run_as, "postgres");
    assert_eq!(c.log.level, "INFO");
    assert_eq!(c.log.file_size, 25_000_000);
    assert_eq!(c.watchdog.mode, WatchdogMode::Automatic);
    assert!(c.bootstrap.is_none());
    assert_eq!(
        c.postgres_listen().unwrap(),
        (vec!["127.0.0.1".to_string()], 5432)
    );
    assert_eq!(c.restapi_listen().unwrap(), ("127.0.0.1".to_string(), 8008));
    assert_eq!(c.conn_url().unwrap(), "postgres://localhost:5432/postgres");
    assert_eq!(c.api_url().unwrap(), "http://127.0.0.1:8008/patroni");
}

#[test]
fn cli_config_needs_only_scope_and_dcs() {
    let c = config("scope: batman\netcd3:\n  host: 10.0.0.1\n");
    assert_eq!(
        c.dcs().unwrap(),
        DcsSettings::Etcd {
            endpoints: vec!["http://10.0.0.1:2379".into()],
            username: None,
            password: None,
            cacert: None,
            cert: None,
            key: None,
        }
    );
    assert_eq!(
        c.validate_for_agent().unwrap_err().to_string(),
        "node1.yml: name: missing (expected this member's name)"
    );
    let c = config("scope: batman\nname: n\netcd3:\n  host: h\n");
    assert_eq!(
        c.validate_for_agent().unwrap_err().to_string(),
        r#"node1.yml: restapi.listen: missing (expected "host:port")"#
    );
    let c = config("scope: batman\nname: n\nrestapi:\n  listen: h:1\netcd3:\n  host: h\n");
    assert_eq!(
        c.validate_for_agent().unwrap_err().to_string(),
        r#"node1.yml: postgresql.listen: missing (expected "host:port")"#
    );
    let c = config("scope: s\nname: n\nrestapi: {listen: 'h:1'}\npostgresql: {listen: 'h:2'}\netcd3: {host: h}\n");
    assert_eq!(
        c.validate_for_agent().unwrap_err().to_string(),
        "node1.yml: postgresql.data_dir: missing (expected the data directory)"
    );
    assert_eq!(
        error("name: n\n"),
        "node1.yml: scope: missing (expected the cluster name)"
    );
}

#[test]
fn unknown_and_dynamic_keys_are_warnings() {
    let loaded = load(&with("ttl: 30\nloop_wait: 10\nfoo: 1\ntags:\n  dc: east\n").replace(
        "  data_dir: /var/lib/pg\n",
        "  data_dir: /var/lib/pg\n  paramters:\n    work_mem: 4MB\n  authentication:\n    superuser:\n      usernme: x\n",
    ));
    assert_eq!(
        loaded.warnings,
        [
            "node1.yml: postgresql.authentication.superuser.usernme: unknown key (ignored)",
            "node1.yml: postgresql.paramters: unknown key (ignored)",
            "node1.yml: ttl: dynamic setting, ignored here (put it under bootstrap.dcs, or change it with edit-config)",
            "node1.yml: loop_wait: dynamic setting, ignored here (put it under bootstrap.dcs, or change it with edit-config)",
            "node1.yml: foo: unknown key (ignored)",
        ]
    );
    assert_eq!(
        loaded.config.effective_tags(),
        json!({"dc": "east"}).as_object().cloned().unwrap()
    );
}

#[test]
fn bad_values_name_file_key_and_expectation() {
    let cases = [
        (
            "bootstrap:\n  dcs:\n    ttl: abc\n",
            r#"node1.yml: bootstrap.dcs.ttl: expected a duration (seconds, or e.g. "30s", "500ms"), found "abc""#,
        ),
        (
            "bootstrap:\n  dcs:\n    loop_wait: [1]\n",
            r#"node1.yml: bootstrap.dcs.loop_wait: expected a duration (seconds, or e.g. "30s", "500ms"), found a list"#,
        ),
        (
            "bootstrap:\n  initdb:\n  - pgdata: /tmp/x\n",
            r#"node1.yml: bootstrap.initdb: option "pgdata" is not allowed (pgherd sets it itself)"#,
        ),
        (
            "bootstrap:\n  initdb: [nosync]\n",
            r#"node1.yml: bootstrap.initdb: option "nosync" is not allowed (pgherd sets it itself)"#,
        ),
        (
            "bootstrap:\n  method: restore\n",
            "node1.yml: bootstrap.restore.command: missing (expected the command to run)",
        ),
        (
            "watchdog:\n  mode: sometimes\n",
            r#"node1.yml: watchdog.mode: expected one of off, automatic, required, found "sometimes""#,
        ),
        (
            "etcd:\n  host: h\n  protocol: gopher\n",
            r#"node1.yml: etcd.protocol: expected http or https, found "gopher""#,
        ),
        (
            "tags:\n  nofailover: perhaps\n",
            r#"node1.yml: tags.nofailover: expected a boolean (true/false, on/off, yes/no), found "perhaps""#,
        ),
        (
            "log:\n  level: LOUD\n",
            r#"node1.yml: log.level: expected a log level (DEBUG, INFO, WARNING, ERROR, CRITICAL), found "LOUD""#,
        ),
        (
            "citus:\n  database: citus\n",
            "node1.yml: citus.group: missing (expected an integer)",
        ),
    ];
    for (extra, expected) in cases {
        assert_eq!(error(&with(extra)), expected, "{extra}");
    }
    let restapi = |replacement: &str| {
        error(&MINIMAL.replace("restapi:\n  listen: 127.0.0.1:8008\n", replacement))
    };
    assert_eq!(
        restapi("restapi:\n  listen: 127.0.0.1:8008\n  verify_client: sometimes\n"),
        r#"node1.yml: restapi.verify_client: expected one of none, optional, required, found "sometimes""#
    );
    assert_eq!(
        restapi("restapi: 8008\n"),
        "node1.yml: restapi: expected a map of settings, found 8008"
    );
    let pg = |line: &str| {
        error(&MINIMAL.replace(
            "  data_dir: /var/lib/pg\n",
            &format!("  data_dir: /var/lib/pg\n{line}"),
        ))
    };
    assert_eq!(
        error(&MINIMAL.replace("listen: 127.0.0.1:5432", "listen: localhost")),
        r#"node1.yml: postgresql.listen: expected "host[,host]:port", found "localhost""#
    );
    assert_eq!(
        error(&MINIMAL.replace("listen: 127.0.0.1:8008", "listen: 127.0.0.1:80808")),
        r#"node1.yml: restapi.listen: expected "host:port", found "127.0.0.1:80808""#
    );
    assert_eq!(
        pg("  callbacks:\n    on_start: [a, b]\n"),
        "node1.yml: postgresql.callbacks.on_start: expected a string, found a list"
    );
    assert_eq!(
        pg("  basebackup:\n  - format: tar\n"),
        r#"node1.yml: postgresql.basebackup: option "format" is not allowed (pgherd sets it itself)"#
    );
    assert_eq!(
        pg("  basebackup: {X: fetch}\n"),
        r#"node1.yml: postgresql.basebackup: option "X" is not allowed (pgherd sets it itself)"#
    );
    assert_eq!(
        pg("  pg_ctl_timeout: soon\n"),
        r#"node1.yml: postgresql.pg_ctl_timeout: expected a duration (seconds, or e.g. "30s", "500ms"), found "soon""#
    );
    assert_eq!(
        pg("  parameters:\n    shared_preload_libraries: [a]\n"),
        "node1.yml: postgresql.parameters.shared_preload_libraries: expected a single value, found a list"
    );
    let syntax = error("scope: a\nrestapi:\n  listen: [\n");
    assert!(syntax.starts_with("node1.yml: invalid YAML: "), "{syntax}");
    assert!(syntax.contains("line 4 column 1"), "{syntax}");
}

#[test]
fn booleans_enums_and_units() {
    let c = config(&with(
        "tags:\n  nofailover: 'on'\n  noloadbalance: yes\n  nosync: false\n  clonefrom: 'False'\n  failover_priority: 2\n  replicatefrom: node2\nwatchdog:\n  mode: require\n  device: /dev/wd1\nlog:\n  level: debug\n  file_size: 10MB\n",
    ));
    assert!(c.tags.nofailover && c.tags.noloadbalance && !c.tags.nosync && !c.tags.clonefrom);
    assert_eq!(
        serde_json::Value::Object(c.effective_tags()),
        json!({"nofailover": true, "noloadbalance": true, "replicatefrom": "node2", "failover_priority": 2})
    );
    assert_eq!(c.watchdog.mode, WatchdogMode::Required);
    assert_eq!(c.log.level, "DEBUG");
    assert_eq!(c.log.file_size, 10 << 20);
    for (mode, expected) in [
        ("auto", WatchdogMode::Automatic),
        ("disable", WatchdogMode::Off),
        ("off", WatchdogMode::Off),
    ] {
        assert_eq!(
            config(&with(&format!("watchdog:\n  mode: {mode}\n")))
                .watchdog
                .mode,
            expected
        );
    }
    assert_eq!(
        config(&with("watchdog:\n  mode: false\n")).watchdog.mode,
        WatchdogMode::Off
    );
    let c = config(&MINIMAL.replace(
        "  data_dir: /var/lib/pg\n",
        "  data_dir: /var/lib/pg\n  pg_ctl_timeout: 1m\n  use_pg_rewind: 'yes'\n",
    ));
    assert_eq!(c.postgresql.pg_ctl_timeout, Duration::from_secs(60));
    assert_eq!(c.postgresql.use_pg_rewind, Some(true));
}

#[test]
fn bootstrap_section() {
    let c = config(&with(
        "bootstrap:
  dcs:
    ttl: 30s
    master_start_timeout: 60
    postgresql:
      parameters:
        max_connections: 200
  method: restore
  restore:
    command: /usr/bin/restore --from=s3
    keep_existing_recovery_conf: true
    recovery_conf:
      recovery_target_action: promote
  initdb:
    encoding: UTF8
    data-checksums: true
  post_init: /usr/local/bin/setup.sh
  users:
    admin:
      password: secret
      options: [createrole, createdb]
",
    ));
    let b = c.bootstrap.unwrap();
    assert_eq!(b.method, "restore");
    let restore = &b.methods["restore"];
    assert_eq!(restore.command, "/usr/bin/restore --from=s3");
    assert!(restore.keep_existing_recovery_conf && !restore.no_params);
    assert_eq!(
        restore.recovery_conf.as_ref().unwrap()["recovery_target_action"],
        "promote"
    );
    assert_eq!(b.post_bootstrap.as_deref(), Some("/usr/local/bin/setup.sh"));
    let initdb: Vec<String> = b.initdb.iter().map(|o| o.to_arg()).collect();
    assert_eq!(initdb, ["--data-checksums", "--encoding=UTF8"]);
    // Kept verbatim for the DCS; the alias resolves when read.
    assert_eq!(b.dcs["ttl"], json!("30s"));
    let dynamic = DynamicConfig::validate(&b.dcs, "bootstrap.dcs").unwrap();
    assert_eq!(dynamic.ttl, Duration::from_secs(30));
    assert_eq!(dynamic.primary_start_timeout, Duration::from_secs(60));
    assert_eq!(dynamic.to_dcs_json()["ttl"], json!(30));

    let citus = config(&with(
        "citus:\n  group: 0\n  database: citus\nbootstrap:\n  dcs: {}\n",
    ));
    assert_eq!(
        citus.bootstrap.unwrap().dcs,
        json!({"synchronous_mode": true})
    );
}

#[test]
fn postgresql_section() {
    let c = config(&MINIMAL.replace(
        "  data_dir: /var/lib/pg\n",
        "  data_dir: /var/lib/pg
  connect_address: 10.0.0.5:5432
  proxy_address: 10.0.0.5:6432
  database: app
  run_as: pg
  create_replica_methods: [wal_g, basebackup]
  wal_g:
    command: wal-g backup-fetch
    no_master: 1
    threshold_megabytes: 10240
  callbacks:
    on_role_change: /bin/notify
  pg_hba: [local all all trust]
  recovery_conf:
    restore_command: cp /a/%f %p
",
    ));
    let pg = &c.postgresql;
    assert_eq!(c.conn_url().unwrap(), "postgres://10.0.0.5:5432/app");
    assert_eq!(pg.proxy_address.as_ref().unwrap().port, 6432);
    assert_eq!(pg.run_as, "pg");
    let wal_g = &pg.replica_methods["wal_g"];
    assert_eq!(wal_g.command.as_deref(), Some("wal-g backup-fetch"));
    assert!(wal_g.no_leader);
    assert_eq!(wal_g.params["threshold_megabytes"], "10240");
    assert_eq!(pg.callbacks.on_role_change.as_deref(), Some("/bin/notify"));
    assert_eq!(
        pg.pg_hba.as_deref(),
        Some(&["local all all trust".to_string()][..])
    );
    assert_eq!(
        pg.recovery_conf.as_ref().unwrap()["restore_command"],
        "cp /a/%f %p"
    );
}

#[test]
fn legacy_authentication_forms() {
    let c = config(&MINIMAL.replace(
        "  data_dir: /var/lib/pg\n",
        "  data_dir: /var/lib/pg\n  name: legacy\n  superuser:\n    username: su\n  replication:\n    username: rep\n  pg_rewind:\n    username: rw\n",
    ));
    let auth = &c.postgresql.authentication;
    assert_eq!(
        auth.superuser.as_ref().unwrap().username.as_deref(),
        Some("su")
    );
    assert_eq!(
        auth.replication.as_ref().unwrap().username.as_deref(),
        Some("rep")
    );
    assert_eq!(c.postgresql.use_pg_rewind, Some(true));
    assert_eq!(c.name.as_deref(), Some("node1"), "top-level name wins");
    let c = config(
        "scope: s\npostgresql:\n  name: legacy\n  authentication:\n    replication: {username: r}\n  pg_rewind:\n    username: rw\n",
    );
    assert_eq!(c.name.as_deref(), Some("legacy"));
    assert_eq!(
        c.postgresql
            .authentication
            .superuser
            .as_ref()
            .unwrap()
            .username
            .as_deref(),
        Some("rw")
    );
}

#[test]
fn dcs_sections() {
    let dcs = |extra: &str| config(&format!("scope: s\n{extra}")).dcs();
    let endpoints = |extra: &str| match dcs(extra) {
        Ok(DcsSettings::Etcd { endpoints, .. }) => endpoints,
        Ok(other) => panic!("{other:?}"),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        endpoints("etcd3:\n  hosts: [h1, 'h2:3379']\n"),
        ["http://h1:2379", "http://h2:3379"]
    );
    assert_eq!(
        endpoints("etcd3:\n  hosts: h1:1,h2:2\n  protocol: https\n"),
        ["https://h1:1", "https://h2:2"]
    );
    assert_eq!(
        endpoints("etcd3:\n  host: h1\n  port: 4001\n"),
        ["http://h1:4001"]
    );
    assert_eq!(
        endpoints("etcd3:\n  proxy: https://proxy:8080\n  hosts: ignored\n"),
        ["https://proxy:8080"]
    );
    assert_eq!(
        endpoints("etcd:\n  host: e\netcd3:\n  host: e3\n"),
        ["http://e:2379"],
        "Patroni's order"
    );
    match dcs("etcd3:\n  url: https://root:pw@etcd:2379\n  username: other\n  cacert: /ca.pem\n") {
        Ok(DcsSettings::Etcd {
            endpoints,
            username,
            password,
            cacert,
            ..
        }) => {
            assert_eq!(endpoints, ["https://etcd:2379"]);
            assert_eq!(
                (username.as_deref(), password.as_deref()),
                (Some("root"), Some("pw"))
            );
            assert_eq!(cacert.unwrap().to_str(), Some("/ca.pem"));
        }
        Ok(other) => panic!("{other:?}"),
        Err(e) => panic!("{e}"),
    }
    let err = |extra: &str| dcs(extra).unwrap_err().to_string();
    assert_eq!(
        err("consul:\n  host: c:8500\netcd3:\n  host: e\n"),
        "node1.yml: consul: DCS not supported yet (pgherd supports etcd3 and etcd, both over the etcd v3 API, and zookeeper)"
    );
    assert_eq!(
        err(""),
        "node1.yml: no DCS configured (expected an etcd3:, etcd: or zookeeper: section with hosts, or PATRONI_ETCD3_HOSTS)"
    );
    assert_eq!(
        err("etcd3:\n  use_proxies: true\n"),
        "node1.yml: etcd3: missing endpoints (expected host, hosts, url or proxy)"
    );
    assert_eq!(
        err("etcd3:\n  srv: example.org\n"),
        "node1.yml: etcd3.srv: DNS SRV discovery is not supported yet (list the endpoints in hosts)"
    );
    assert_eq!(
        err("etcd3:\n  url: etcd:2379\n"),
        r#"node1.yml: etcd3.url: expected a URL like "http://host:2379", found "etcd:2379""#
    );
    assert_eq!(
        err("zookeeper:\n  exhibitor:\n    hosts: [a]\n    port: 8181\n"),
        "node1.yml: exhibitor: DCS not supported yet (pgherd supports etcd3 and etcd, both over the etcd v3 API, and zookeeper)"
    );
    let zk = config("scope: s\nzookeeper:\n  hosts: [z1:2181]\n  use_ssl: true\n  verify: false\n  set_acls:\n    CN=admin: [ALL]\n").zookeeper.unwrap();
    assert!(zk.use_ssl && !zk.verify);
    assert_eq!(zk.set_acls["CN=admin"], ["ALL"]);
    // TLS as kazoo takes it: use_ssl turns it on, the files come along; without use_ssl they
    // are ignored (kazoo ignores them too).
    let c = config("scope: s\nzookeeper:\n  hosts: z1\n  use_ssl: true\n  verify: false\n  cacert: /ca.pem\n  cert: /c.pem\n  key: /c.key\n  key_password: pw\n  set_acls:\n    'CN=node1,O=x': [read, Write]\n    CN=admin: [ALL]\n");
    let DcsSettings::Zookeeper { hosts, tls, acls } = c.dcs().unwrap() else {
        panic!("not ZooKeeper")
    };
    assert_eq!(hosts, ["z1:2181"]);
    let tls = tls.unwrap();
    assert!(!tls.verify);
    assert_eq!(tls.cacert.as_deref(), Some(Path::new("/ca.pem")));
    assert_eq!(tls.cert.as_deref(), Some(Path::new("/c.pem")));
    assert_eq!(tls.key.as_deref(), Some(Path::new("/c.key")));
    assert_eq!(tls.key_password.as_deref(), Some("pw"));
    assert!(!format!("{tls:?}").contains("pw\""), "{tls:?}");
    assert_eq!(
        acls,
        [
            ZookeeperAcl {
                principal: "CN=admin".into(),
                read: true,
                write: true,
                create: true,
                delete: true,
                admin: true,
            },
            ZookeeperAcl {
                principal: "CN=node1,O=x".into(),
                read: true,
                write: true,
                create: false,
                delete: false,
                admin: false,
            },
        ]
    );
    let plain = config("scope: s\nzookeeper:\n  hosts: z1\n  cert: /c.pem\n")
        .dcs()
        .unwrap();
    assert!(matches!(plain, DcsSettings::Zookeeper { tls: None, .. }));
    let verified = config("scope: s\nzookeeper:\n  hosts: z1\n  use_ssl: true\n")
        .dcs()
        .unwrap();
    assert!(matches!(
        verified,
        DcsSettings::Zookeeper {
            tls: Some(ZookeeperTls {
                verify: true,
                cert: None,
                ..
            }),
            ..
        }
    ));
    assert_eq!(
        err("zookeeper:\n  hosts: [z1:2181]\n  set_acls:\n    CN=admin: [ALL]\n"),
        "node1.yml: zookeeper.set_acls: x509 ACLs name the principal of a TLS client certificate: set use_ssl: true and cert (and key), or remove set_acls"
    );
    assert_eq!(
        err("zookeeper:\n  hosts: [z1:2181]\n  use_ssl: true\n  set_acls:\n    CN=admin: [ALL]\n"),
        "node1.yml: zookeeper.set_acls: x509 ACLs name the principal of a TLS client certificate: set use_ssl: true and cert (and key), or remove set_acls"
    );
    assert_eq!(
        err("zookeeper:\n  hosts: z1\n  use_ssl: true\n  cert: /c.pem\n  set_acls:\n    CN=admin: [READ, EXECUTE]\n"),
        r#"node1.yml: zookeeper.set_acls.CN=admin: unknown permission "EXECUTE" (expected READ, WRITE, CREATE, DELETE, ADMIN or ALL)"#
    );
    assert_eq!(
        err("zookeeper:\n  hosts: z1\n  use_ssl: true\n  cert: /c.pem\n  set_acls:\n    CN=admin: []\n"),
        "node1.yml: zookeeper.set_acls.CN=admin: no permission listed (expected some of READ, WRITE, CREATE, DELETE, ADMIN, ALL)"
    );
    assert_eq!(
        err("zookeeper:\n  hosts: z1\n  use_ssl: true\n  key: /c.key\n"),
        "node1.yml: zookeeper.key: a client key without its certificate: set zookeeper.cert too"
    );
    assert_eq!(
        err("zookeeper:\n  hosts: 'z1:x'\n"),
        r#"node1.yml: zookeeper.hosts: expected host or host:port, found "z1:x""#
    );
    for (hosts, expected) in [
        ("'z1:2182, z2'", vec!["z1:2182", "z2:2181"]),
        (
            "[z1, '[fd00::1]:2183', '[fd00::2]']",
            vec!["z1:2181", "[fd00::1]:2183", "[fd00::2]:2181"],
        ),
    ] {
        let c = config(&format!("scope: s\nzookeeper:\n  hosts: {hosts}\n"));
        assert_eq!(
            c.dcs().unwrap(),
            DcsSettings::Zookeeper {
                hosts: expected.into_iter().map(String::from).collect(),
                tls: None,
                acls: Vec::new(),
            },
            "{hosts}"
        );
    }
}

#[test]
fn urls() {
    let c = config(&MINIMAL.replace("restapi:\n  listen: 127.0.0.1:8008\n", "restapi:\n  listen: 0.0.0.0:8008\n  connect_address: '[fd00::5]:8008'\n  certfile: /c.pem\n"));
    assert_eq!(c.api_url().unwrap(), "https://[fd00::5]:8008/patroni");
    let c = config(&MINIMAL.replace("listen: 127.0.0.1:5432", "listen: 10.0.0.5,10.0.0.6:5433"));
    assert_eq!(c.conn_url().unwrap(), "postgres://10.0.0.5:5433/postgres");
    assert_eq!(
        config("scope: s\n").conn_url().unwrap_err().to_string(),
        r#"node1.yml: postgresql.connect_address: missing, and no postgresql.listen either (expected "host:port")"#
    );
}

#[test]
fn redaction() {
    let c = config(&with(
        "bootstrap:\n  users:\n    admin: {password: adminpw}\nctl:\n  keyfile_password: ctlpw\nzookeeper:\n  hosts: z\n  key_password: zkpw\n",
    ).replace("  hosts: 127.0.0.1:2379\n", "  hosts: 127.0.0.1:2379\n  username: root\n  password: etcdpw\n")
    .replace("  data_dir: /var/lib/pg\n", "  data_dir: /var/lib/pg\n  authentication:\n    superuser: {username: postgres, password: supw, sslpassword: sslpw}\n")
    .replace("restapi:\n  listen: 127.0.0.1:8008\n", "restapi:\n  listen: 127.0.0.1:8008\n  keyfile_password: apikeypw\n  authentication: {username: u, password: apipw}\n"));
    let json = c.to_redacted_json();
    let text = json.to_string();
    for secret in [
        "adminpw", "ctlpw", "zkpw", "etcdpw", "supw", "sslpw", "apikeypw", "apipw",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert_eq!(json["etcd3"]["password"], REDACTED);
    assert_eq!(json["restapi"]["authentication"]["username"], "u");
    assert_eq!(json["postgresql"]["pg_ctl_timeout"], 60);
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("supw") && debug.contains(REDACTED),
        "{debug}"
    );
    // The typed values keep the secrets.
    assert_eq!(c.etcd3.unwrap().password.as_deref(), Some("etcdpw"));
}

#[test]
fn vip_section() {
    assert!(config(MINIMAL).vip.is_none());
    let c = config(&with(
        "vip:\n  ip: 10.0.0.100\n  netmask: 24\n  interface: eth0\n",
    ));
    let vip = c.vip.unwrap();
    assert_eq!(vip.ip, std::net::Ipv4Addr::new(10, 0, 0, 100));
    assert_eq!((vip.prefix, vip.interface.as_str()), (24, "eth0"));
    let c = config(&with(
        "vip:\n  ip: 10.0.0.100\n  netmask: 255.255.255.0\n  interface: br-db.10\n",
    ));
    assert_eq!(c.vip.unwrap().prefix, 24);
    assert_eq!(
        config(&with("vip:\n  ip: 10.0.0.100\n  interface: eth0\n"))
            .vip
            .unwrap()
            .prefix,
        32
    );
    let e = error(&with("vip:\n  ip: 10.0.0.300\n  interface: eth0\n"));
    assert!(e.contains("vip.ip") && e.contains("IPv4"), "{e}");
    let e = error(&with(
        "vip:\n  ip: 10.0.0.1\n  netmask: 255.0.255.0\n  interface: eth0\n",
    ));
    assert!(e.contains("vip.netmask"), "{e}");
    let e = error(&with("vip:\n  ip: 10.0.0.1\n"));
    assert!(e.contains("vip.interface") && e.contains("missing"), "{e}");
    let e = error(&with("vip:\n  ip: 10.0.0.1\n  interface: 'eth0; rm -rf'\n"));
    assert!(e.contains("vip.interface"), "{e}");
}
