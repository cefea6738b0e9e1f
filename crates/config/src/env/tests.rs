use crate::{load, load_str, DcsSettings, Loaded};
use std::collections::BTreeMap;

const FILE: &str = "scope: batman\nname: node1\netcd3:\n  host: 127.0.0.1:2379\npostgresql:\n  listen: 127.0.0.1:5432\n";

fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn with_env(vars: &[(&str, &str)]) -> Loaded {
    load_str(FILE, "node1.yml", &env(vars)).unwrap_or_else(|e| panic!("{e}"))
}

fn endpoints(loaded: &Loaded) -> Vec<String> {
    match loaded.config.dcs() {
        Ok(DcsSettings::Etcd { endpoints, .. }) => endpoints,
        Ok(other) => panic!("{other:?}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn overrides_win_over_the_file() {
    let loaded = with_env(&[
        ("PATRONI_NAME", "node9"),
        ("PATRONI_SCOPE", ""),
        ("PATRONI_ETCD3_HOSTS", "h1:2379,h2:2379"),
        ("PATRONI_ETCD3_USERNAME", "root"),
        ("PATRONI_ETCD3_PASSWORD", "pw"),
        ("PATRONI_POSTGRESQL_LISTEN", "0.0.0.0:5433"),
        ("PATRONI_POSTGRESQL_DATA_DIR", "/data"),
        ("PATRONI_RESTAPI_LISTEN", "0.0.0.0:8009"),
        ("PATRONI_RESTAPI_USERNAME", "api"),
        ("PATRONI_RESTAPI_PASSWORD", "apipw"),
        ("PATRONI_RESTAPI_ALLOWLIST", "10.0.0.0/8, 127.0.0.1"),
        (
            "PATRONI_RESTAPI_HTTP_EXTRA_HEADERS",
            "X-Frame-Options: SAMEORIGIN",
        ),
        ("PATRONI_RESTAPI_ALLOWLIST_INCLUDE_MEMBERS", "on"),
        ("PATRONI_CTL_INSECURE", "true"),
        ("PATRONI_SUPERUSER_USERNAME", "postgres"),
        ("PATRONI_SUPERUSER_PASSWORD", "supw"),
        ("PATRONI_REPLICATION_SSLMODE", "require"),
        ("PATRONI_REWIND_USERNAME", "rewinder"),
        ("PATRONI_LOGLEVEL", "DEBUG"),
        (
            "PATRONI_LOG_LOGGERS",
            "{patroni.postmaster: WARNING, urllib3: DEBUG}",
        ),
        ("PATRONI_LOG_FILE_NUM", "7"),
        ("PATRONI_admin_PASSWORD", "adminpw"),
        ("PATRONI_admin_OPTIONS", "createdb, createrole"),
        ("PATRONI_app_PASSWORD", "apppw"),
    ]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = &loaded.config;
    assert_eq!(c.name.as_deref(), Some("node9"));
    assert_eq!(c.scope, "batman", "empty variables are ignored");
    assert_eq!(endpoints(&loaded), ["http://h1:2379", "http://h2:2379"]);
    let etcd = c.etcd3.as_ref().unwrap();
    assert_eq!(
        etcd.host.as_deref(),
        Some("127.0.0.1:2379"),
        "deep merge keeps file keys"
    );
    assert_eq!(
        (etcd.username.as_deref(), etcd.password.as_deref()),
        (Some("root"), Some("pw"))
    );
    assert_eq!(
        c.postgres_listen().unwrap(),
        (vec!["0.0.0.0".to_string()], 5433)
    );
    assert_eq!(c.restapi_listen().unwrap(), ("0.0.0.0".to_string(), 8009));
    let api_auth = c.restapi.authentication.as_ref().unwrap();
    assert_eq!(api_auth.password.as_deref(), Some("apipw"));
    assert_eq!(c.restapi.allowlist, ["10.0.0.0/8", "127.0.0.1"]);
    assert_eq!(
        c.restapi.http_extra_headers["X-Frame-Options"],
        "SAMEORIGIN"
    );
    assert!(c.restapi.allowlist_include_members && c.ctl.insecure);
    let auth = &c.postgresql.authentication;
    assert_eq!(
        auth.superuser.as_ref().unwrap().password.as_deref(),
        Some("supw")
    );
    assert_eq!(
        auth.replication.as_ref().unwrap().sslmode.as_deref(),
        Some("require")
    );
    assert_eq!(
        auth.rewind.as_ref().unwrap().username.as_deref(),
        Some("rewinder")
    );
    assert_eq!(c.log.level, "DEBUG");
    assert_eq!(c.log.loggers["patroni.postmaster"], "WARNING");
    assert_eq!(c.log.file_num, 7);
    let users = &c.bootstrap.as_ref().unwrap().users;
    assert_eq!(users["admin"].password.as_deref(), Some("adminpw"));
    assert_eq!(users["admin"].options, ["createdb", "createrole"]);
    assert_eq!(users["app"].options, Vec::<String>::new());
    c.validate_for_agent().unwrap();
}

#[test]
fn list_forms_and_sections_from_variables() {
    let loaded = load(
        None,
        &env(&[
            ("PATRONI_SCOPE", "demo"),
            ("PATRONI_ETCD3_HOSTS", "'etcd1:2379','etcd2:2379'"),
            ("PATRONI_ETCD3_PROTOCOL", "https"),
            ("PATRONI_CITUS_GROUP", "1"),
            ("PATRONI_CITUS_DATABASE", "citus"),
            ("PATRONI_ZOOKEEPER_SET_ACLS", "CN=x: [READ]"),
        ]),
    )
    .unwrap();
    assert_eq!(
        endpoints(&loaded),
        ["https://etcd1:2379", "https://etcd2:2379"]
    );
    let citus = loaded.config.citus.as_ref().unwrap();
    assert_eq!((citus.group, citus.database.as_str()), (1, "citus"));
    assert_eq!(
        loaded.config.zookeeper.as_ref().unwrap().set_acls["CN=x"],
        ["READ"]
    );
    // ZooKeeper alone: its hosts as Patroni's list form, port 2181 by default.
    let zk = load(
        None,
        &env(&[
            ("PATRONI_SCOPE", "d"),
            ("PATRONI_ZOOKEEPER_HOSTS", "'zk1:2182','zk2'"),
        ]),
    )
    .unwrap();
    assert_eq!(
        zk.config.dcs().unwrap(),
        crate::DcsSettings::Zookeeper {
            hosts: vec!["zk1:2182".into(), "zk2:2181".into()],
            tls: None,
            acls: Vec::new(),
        }
    );
    let block = load(
        None,
        &env(&[
            ("PATRONI_SCOPE", "d"),
            ("PATRONI_ETCD_HOSTS", "- a:1\n- b:2"),
        ]),
    )
    .unwrap();
    assert_eq!(endpoints(&block), ["http://a:1", "http://b:2"]);
}

#[test]
fn bad_variables_are_named() {
    let err = load_str(
        FILE,
        "node1.yml",
        &env(&[("PATRONI_POSTGRESQL_LISTEN", "localhost")]),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        r#"PATRONI_POSTGRESQL_LISTEN: postgresql.listen: expected "host[,host]:port", found "localhost""#
    );
    let err = load_str(
        FILE,
        "node1.yml",
        &env(&[("PATRONI_CTL_INSECURE", "maybe")]),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        r#"PATRONI_CTL_INSECURE: ctl.insecure: expected a boolean (true/false, on/off, yes/no), found "maybe""#
    );
    let loaded = with_env(&[
        ("PATRONI_POSTGRES_LISTEN", "x:1"),
        ("PATRONI_ETCD_PASSWORD", "pw"),
        ("PATRONI_POSTGRESQL_PORT", "5433"),
    ]);
    assert_eq!(
        loaded.warnings,
        [
            "PATRONI_ETCD_PASSWORD: ignored (no etcd section)",
            "PATRONI_POSTGRES_LISTEN: unknown variable (ignored)",
            "PATRONI_POSTGRESQL_PORT: postgresql.port: unknown key (ignored)",
        ]
    );
}

#[test]
fn configuration_variable() {
    let vars = env(&[
        (
            "PATRONI_CONFIGURATION",
            "scope: fromvar\netcd3: {host: e}\n",
        ),
        ("PATRONI_NAME", "ignored"),
    ]);
    let loaded = load(None, &vars).unwrap();
    assert_eq!(loaded.source, "PATRONI_CONFIGURATION");
    assert_eq!(loaded.config.scope, "fromvar");
    assert_eq!(loaded.config.name, None, "other variables are not applied");
    let err = load(None, &env(&[("PATRONI_CONFIGURATION", "scope: [\n")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("PATRONI_CONFIGURATION: invalid YAML: "),
        "{err}"
    );
    let err = load(None, &BTreeMap::new()).unwrap_err().to_string();
    assert_eq!(err, "environment: the configuration is empty");
}

/// The container image's file (deploy/container/pgherd.yml) with the variables the compose
/// stack (deploy/compose/compose.yml), the entrypoint (deploy/container/pgherd-entrypoint) and
/// the Kubernetes StatefulSet (deploy/k8s/base/members.yaml) set.
#[test]
fn the_container_image_is_configured_by_its_variables() {
    let image = include_str!("../../../../deploy/container/pgherd.yml");
    let loaded = load_str(
        image,
        "/etc/pgherd/pgherd.yml",
        &env(&[
            ("PATRONI_NAME", "pg2"),
            ("PATRONI_SCOPE", "orders"),
            ("PATRONI_ETCD3_HOSTS", "etcd-0.etcd:2379,etcd-1.etcd:2379"),
            ("PATRONI_RESTAPI_LISTEN", "0.0.0.0:8009"),
            ("PATRONI_RESTAPI_CONNECT_ADDRESS", "10.1.2.3:8009"),
            ("PATRONI_POSTGRESQL_LISTEN", "0.0.0.0:5433"),
            ("PATRONI_POSTGRESQL_CONNECT_ADDRESS", "pg2:5433"),
            ("PATRONI_POSTGRESQL_DATA_DIR", "/data/pg2"),
            ("PATRONI_SUPERUSER_USERNAME", "admin"),
            ("PATRONI_SUPERUSER_PASSWORD", "s3cret"),
            ("PATRONI_REPLICATION_USERNAME", "repl"),
            ("PATRONI_REPLICATION_PASSWORD", "r3pl"),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = &loaded.config;
    c.validate_for_agent().unwrap();
    assert_eq!(
        (c.name.as_deref(), c.scope.as_str()),
        (Some("pg2"), "orders")
    );
    assert_eq!(
        endpoints(&loaded),
        ["http://etcd-0.etcd:2379", "http://etcd-1.etcd:2379"]
    );
    assert_eq!(c.restapi_listen().unwrap(), ("0.0.0.0".to_string(), 8009));
    assert_eq!(c.api_url().unwrap(), "http://10.1.2.3:8009/patroni");
    assert_eq!(
        c.postgres_listen().unwrap(),
        (vec!["0.0.0.0".to_string()], 5433)
    );
    assert_eq!(c.conn_url().unwrap(), "postgres://pg2:5433/postgres");
    assert_eq!(
        c.postgresql.data_dir.as_deref(),
        Some(std::path::Path::new("/data/pg2"))
    );
    let auth = &c.postgresql.authentication;
    let superuser = auth.superuser.as_ref().unwrap();
    let replication = auth.replication.as_ref().unwrap();
    assert_eq!(
        (superuser.username.as_deref(), superuser.password.as_deref()),
        (Some("admin"), Some("s3cret"))
    );
    assert_eq!(
        (
            replication.username.as_deref(),
            replication.password.as_deref()
        ),
        (Some("repl"), Some("r3pl"))
    );
    // The rewind user keeps the file's values: only what a variable names changes.
    assert_eq!(
        auth.rewind.as_ref().unwrap().username.as_deref(),
        Some("rewind_user")
    );
}

/// The image's file alone names no member: the entrypoint (or the operator) must.
#[test]
fn the_container_image_needs_a_member_name() {
    let image = include_str!("../../../../deploy/container/pgherd.yml");
    let loaded = load_str(image, "/etc/pgherd/pgherd.yml", &env(&[])).unwrap();
    let err = loaded.config.validate_for_agent().unwrap_err().to_string();
    assert!(err.contains("name"), "{err}");
}

/// The Debian package's example (deploy/deb/node.yml.example) is a valid agent file.
#[test]
fn the_debian_example_is_valid() {
    let example = include_str!("../../../../deploy/deb/node.yml.example");
    let loaded = load_str(example, "/etc/pgherd/node.yml.example", &env(&[])).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    loaded.config.validate_for_agent().unwrap();
}

/// `PGHERD_<X>` is pgherd's name for `PATRONI_<X>` and wins over it; pgherd's tool variables
/// (`PGHERD_BIN`, `PGHERD_STATS_PORT`, ...) are neither configuration nor warned about.
#[test]
fn pgherd_aliases_of_patroni_variables() {
    let loaded = with_env(&[
        ("PGHERD_NAME", "node7"),
        ("PATRONI_NAME", "node9"),
        ("PGHERD_ETCD3_HOSTS", "h1:2379,h2:2379"),
        ("PGHERD_POSTGRESQL_DATA_DIR", "/data"),
        ("PGHERD_SUPERUSER_PASSWORD", "su-secret"),
        ("PGHERD_admin_PASSWORD", "admin-secret"),
        ("PGHERD_BIN", "/usr/bin/pgherd"),
        ("PGHERD_STATS_PORT", "7000"),
        ("PGHERD_PG_BIN_DIR", "/usr/lib/postgresql/15/bin"),
    ]);
    let c = &loaded.config;
    assert_eq!(
        c.name.as_deref(),
        Some("node7"),
        "PGHERD_ wins over PATRONI_"
    );
    assert_eq!(endpoints(&loaded), ["http://h1:2379", "http://h2:2379"]);
    assert_eq!(
        c.postgresql.data_dir.as_deref(),
        Some(std::path::Path::new("/data"))
    );
    assert_eq!(
        c.postgresql
            .authentication
            .superuser
            .as_ref()
            .and_then(|u| u.password.as_deref()),
        Some("su-secret")
    );
    let users = &c.bootstrap.as_ref().expect("bootstrap users").users;
    assert!(users.contains_key("admin"), "{users:?}");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert!(c.other_dcs.is_empty() && c.proxy.is_none(), "{c:?}");
}
