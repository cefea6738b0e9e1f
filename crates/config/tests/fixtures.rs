//! Real configurations must load: Patroni's documentation examples, Debian's template, and the
//! Patroni configurations found in the source documents (see each fixture's header comment).

use pgherd_config::defaults::{
    PATRONI_DEFAULT_LOOP_WAIT, PATRONI_DEFAULT_RETRY_TIMEOUT, PATRONI_DEFAULT_TTL,
};
use pgherd_config::{load, load_str, DcsSettings, DynamicConfig, Loaded};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load_fixture(name: &str) -> Loaded {
    let loaded =
        load(Some(&fixture(name)), &BTreeMap::new()).unwrap_or_else(|e| panic!("{name}: {e}"));
    // Bootstrap.dcs is written verbatim, so it must also pass as a dynamic config.
    if let Some(bootstrap) = &loaded.config.bootstrap {
        DynamicConfig::validate(&bootstrap.dcs, "bootstrap.dcs").unwrap();
    }
    loaded
}

fn etcd_endpoints(loaded: &Loaded) -> Vec<String> {
    match loaded.config.dcs() {
        Ok(DcsSettings::Etcd { endpoints, .. }) => endpoints,
        Ok(other) => panic!("{other:?}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn patroni_example_etcd() {
    let loaded = load_fixture("patroni-postgres0-etcd.yml");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = &loaded.config;
    c.validate_for_agent().unwrap();
    assert_eq!(etcd_endpoints(&loaded), ["http://127.0.0.1:2379"]);
    assert_eq!(c.scope, "batman");
    assert_eq!(c.name.as_deref(), Some("postgresql0"));
    assert_eq!(c.conn_url().unwrap(), "postgres://127.0.0.1:5432/postgres");
    assert_eq!(c.api_url().unwrap(), "http://127.0.0.1:8008/patroni");
    let bootstrap = c.bootstrap.as_ref().unwrap();
    let dcs = DynamicConfig::validate(&bootstrap.dcs, "bootstrap.dcs").unwrap();
    // Patroni's example spells out Patroni's own timing defaults.
    assert_eq!(dcs.ttl, PATRONI_DEFAULT_TTL);
    assert_eq!(dcs.loop_wait, PATRONI_DEFAULT_LOOP_WAIT);
    assert_eq!(dcs.retry_timeout, PATRONI_DEFAULT_RETRY_TIMEOUT);
    assert_eq!(dcs.maximum_lag_on_failover, 1_048_576);
    assert!(dcs.postgresql.use_pg_rewind);
    let initdb: Vec<String> = bootstrap.initdb.iter().map(|o| o.to_arg()).collect();
    assert_eq!(initdb, ["--encoding=UTF8", "--data-checksums"]);
    assert_eq!(bootstrap.pg_hba.len(), 2);
    assert_eq!(bootstrap.users["admin"].options, ["createrole", "createdb"]);
    assert_eq!(bootstrap.users["admin"].password.as_deref(), Some("admin%"));
    let auth = &c.postgresql.authentication;
    assert_eq!(
        auth.replication.as_ref().unwrap().username.as_deref(),
        Some("replicator")
    );
    assert_eq!(
        auth.superuser.as_ref().unwrap().password.as_deref(),
        Some("zalando")
    );
    assert_eq!(
        auth.rewind.as_ref().unwrap().username.as_deref(),
        Some("rewind_user")
    );
    assert_eq!(c.postgresql.parameters["unix_socket_directories"], "..");
    assert_eq!(
        c.postgresql.pgpass.as_deref(),
        Some(Path::new("/tmp/pgpass0"))
    );
    assert!(
        c.effective_tags().is_empty(),
        "false tags are not published"
    );
}

#[test]
fn patroni_example_etcd3() {
    let loaded = load_fixture("patroni-postgres1-etcd3.yml");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    loaded.config.validate_for_agent().unwrap();
    assert_eq!(etcd_endpoints(&loaded), ["http://127.0.0.1:2379"]);
    let basebackup: Vec<String> = loaded
        .config
        .postgresql
        .basebackup
        .iter()
        .map(|o| o.to_arg())
        .collect();
    assert_eq!(basebackup, ["--verbose", "--max-rate=100M"]);
    assert_eq!(
        loaded.config.api_url().unwrap(),
        "http://127.0.0.1:8009/patroni"
    );
}

#[test]
fn patroni_example_zookeeper() {
    let loaded = load_fixture("patroni-postgres2-zookeeper.yml");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let zk = loaded.config.zookeeper.as_ref().unwrap();
    assert_eq!(zk.hosts, ["127.0.0.1:2181", "127.0.0.2:2181"]);
    assert_eq!(
        loaded.config.tags.replicatefrom.as_deref(),
        Some("postgres1")
    );
    assert_eq!(
        loaded.config.dcs().unwrap(),
        DcsSettings::Zookeeper {
            hosts: vec!["127.0.0.1:2181".into(), "127.0.0.2:2181".into()],
            tls: None,
            acls: Vec::new(),
        }
    );
}

#[test]
fn debian_template() {
    let loaded = load_fixture("debian-config-template.yml");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = &loaded.config;
    c.validate_for_agent().unwrap();
    assert_eq!(c.namespace, "/postgresql-common/");
    assert_eq!(
        etcd_endpoints(&loaded),
        [
            "http://10.0.0.1:2379",
            "http://10.0.0.2:2379",
            "http://10.0.0.3:2379"
        ]
    );
    let bootstrap = c.bootstrap.as_ref().unwrap();
    assert_eq!(bootstrap.method, "pg_createcluster");
    assert_eq!(
        bootstrap.methods["pg_createcluster"].command,
        "/usr/share/patroni/pg_createcluster_patroni"
    );
    assert_eq!(
        c.postgresql.create_replica_methods.as_deref(),
        Some(&["pg_clonecluster".to_string()][..])
    );
    assert_eq!(
        c.postgresql.replica_methods["pg_clonecluster"]
            .command
            .as_deref(),
        Some("/usr/share/patroni/pg_clonecluster_patroni")
    );
    assert_eq!(c.postgres_listen().unwrap(), (vec!["*".to_string()], 5432));
    assert!(c.postgresql.use_unix_socket);
    let superuser = c.postgresql.authentication.superuser.as_ref().unwrap();
    assert_eq!(
        (superuser.username.as_deref(), superuser.password.as_deref()),
        (Some("postgres"), None)
    );
    let dcs = DynamicConfig::validate(&bootstrap.dcs, "bootstrap.dcs").unwrap();
    assert!(dcs.check_timeline && dcs.postgresql.remove_data_directory_on_rewind_failure);
    assert_eq!(
        dcs.postgresql.extra["pg_hba"].as_array().map(Vec::len),
        Some(7)
    );
}

#[test]
fn seed_003_patroni_etcd() {
    let loaded = load_fixture("seed-003-patroni-etcd.yml");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    loaded.config.validate_for_agent().unwrap();
    let dcs = DynamicConfig::validate(
        &loaded.config.bootstrap.as_ref().unwrap().dcs,
        "bootstrap.dcs",
    )
    .unwrap();
    assert_eq!(dcs.postgresql.parameters["max_connections"], "2000");
    assert_eq!(
        dcs.postgresql.parameters["max_locks_per_transaction"],
        "512"
    );
    let params = pgherd_config::effective_parameters(&loaded.config, &dcs, 15);
    assert_eq!(params["max_connections"], "2000");
    assert_eq!(params["max_worker_processes"], "16");
    assert_eq!(params["cluster_name"], "batman");
}

#[test]
fn seed_004_patroni_zookeeper() {
    let loaded = load_fixture("seed-004-patroni-zookeeper.yml");
    let file = fixture("seed-004-patroni-zookeeper.yml")
        .display()
        .to_string();
    assert_eq!(
        loaded.warnings,
        [format!("{file}: restapi.connect_address: 0.0.0.0:8008 is not an address other members can connect to")]
    );
    let c = &loaded.config;
    assert_eq!(c.zookeeper.as_ref().unwrap().hosts, ["zoo1:2181"]);
    assert_eq!(c.conn_url().unwrap(), "postgres://pg-test-1:5432/postgres");
    assert_eq!(
        c.postgresql.bin_dir.as_deref(),
        Some(Path::new("/usr/lib/postgresql/17/bin"))
    );
    assert_eq!(c.watchdog.safety_margin, Some(5));
    let dcs = DynamicConfig::validate(&c.bootstrap.as_ref().unwrap().dcs, "bootstrap.dcs").unwrap();
    assert_eq!(dcs.primary_start_timeout, Duration::from_secs(300));
    assert!(dcs.synchronous_mode && dcs.postgresql.use_slots);
    assert_eq!(dcs.postgresql.parameters["archive_mode"], "always");
    assert_eq!(
        c.dcs().unwrap(),
        DcsSettings::Zookeeper {
            hosts: vec!["zoo1:2181".into()],
            tls: None,
            acls: Vec::new(),
        }
    );
}

#[test]
fn seed_003_docker_environment_only() {
    let text = std::fs::read_to_string(fixture("seed-003-docker-patroni1.env")).unwrap();
    let env: BTreeMap<String, String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let loaded = load(None, &env).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.source, "environment");
    let c = &loaded.config;
    c.validate_for_agent().unwrap();
    assert_eq!(
        (c.scope.as_str(), c.name.as_deref()),
        ("demo", Some("patroni1"))
    );
    assert_eq!(
        etcd_endpoints(&loaded),
        [
            "http://etcd1:2379",
            "http://etcd2:2379",
            "http://etcd3:2379"
        ]
    );
    assert_eq!(c.api_url().unwrap(), "http://172.22.0.5:8008/patroni");
    assert_eq!(c.conn_url().unwrap(), "postgres://172.22.0.5:5432/postgres");
    let superuser = c.postgresql.authentication.superuser.as_ref().unwrap();
    assert_eq!(superuser.username.as_deref(), Some("liantu"));
    let admin = &c.bootstrap.as_ref().unwrap().users["admin"];
    assert_eq!(admin.options, ["createdb", "createrole"]);
    // The same variables over a file: they win.
    let over = load_str("scope: other\nname: x\n", "node.yml", &env).unwrap();
    assert_eq!(over.config.scope, "demo");
}

#[test]
fn every_yaml_fixture_loads() {
    let mut count = 0;
    for entry in std::fs::read_dir(fixture("")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yml") {
            load_fixture(&name);
            count += 1;
        }
    }
    assert_eq!(count, 6);
}
