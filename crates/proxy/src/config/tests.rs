//! The `proxy:` section's parsing, defaults and messages.

use super::*;
use crate::split::router::ReadYourWrites;
use serde_json::json;

fn parse(v: Value) -> Result<ProxyConfig, String> {
    ProxyConfig::parse(&v, "proxy.yml", "demo", "/service", "host").map_err(|e| e.to_string())
}

fn minimal() -> Value {
    json!({
        "listeners": [
            {"name": "primary", "bind": "127.0.0.1:5000", "role": "primary"},
            {"name": "replicas", "bind": "127.0.0.1:5001", "role": "replica",
             "balance": "roundrobin", "max_lag": "16MB", "fallback": "primary"}
        ],
        "stats": {"bind": "127.0.0.1:7000"}
    })
}

#[test]
fn issue_example_parses_with_defaults() {
    let c = parse(minimal()).unwrap();
    assert_eq!(c.name, "host-5000");
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[0].role, ListenerRole::Primary);
    assert_eq!(c.listeners[0].hold_timeout, DEFAULT_HOLD_TIMEOUT);
    assert_eq!(c.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    assert_eq!(c.listeners[1].max_lag, Some(16 << 20));
    assert!(c.listeners[1].fallback_primary);
    assert_eq!(c.listeners[1].balance, Balance::RoundRobin);
    assert_eq!(c.health.rise, 2);
    assert_eq!(c.health.fall, 3);
    assert!(c.keepalive.is_some());
    assert!(c.registration.enabled);
    assert_eq!(c.stats.as_ref().unwrap().bind.port(), 7000);
    assert_eq!(c.threads, DEFAULT_THREADS);
    assert_eq!(c.lag_limits(), vec![Some(16 << 20)]);
}

#[test]
fn every_knob_parses() {
    let c = parse(json!({
        "name": "px1", "maxconn": 500, "buffer_size": "32kB", "hold_timeout": "5s", "threads": 2,
        "drain_timeout": "2s",
        "listener_maxconn": 100, "maxqueue": 7, "queue_timeout": "2s",
        "timeouts": {"connect": "500ms", "client_idle": "10m", "server_idle": 0},
        "tcp_keepalive": {"idle": "30s", "interval": "5s", "count": 3},
        "health_check": {"interval": "2s", "fast_interval": "20ms", "timeout": "300ms", "rise": 1, "fall": 2},
        "registration": {"enabled": false, "ttl": "6s"},
        "listeners": [{"name": "rw", "bind": "127.0.0.1:6000", "role": "primary", "maxconn": 3,
                       "maxqueue": 1, "queue_timeout": "1s", "hold_timeout": "1m", "balance": "first",
                       "accept_proxy": true},
                      {"name": "ro", "bind": "127.0.0.1:6001", "role": "read-only", "balance": "leastconn"}],
        "stats": {"bind": "127.0.0.1:7001", "admin": {"username": "a", "password": "b"}, "refresh": "5s"}
    }))
    .unwrap();
    assert_eq!(c.name, "px1");
    assert_eq!(c.maxconn, 500);
    assert_eq!(c.buffer_size, 32 * 1024);
    assert_eq!(c.threads, 2);
    assert_eq!(c.drain_timeout, Duration::from_secs(2));
    assert_eq!(c.timeouts.connect, Duration::from_millis(500));
    assert_eq!(c.timeouts.client_idle, Some(Duration::from_secs(600)));
    assert_eq!(c.timeouts.server_idle, None);
    assert_eq!(c.keepalive.as_ref().unwrap().count, 3);
    assert_eq!(c.health.fast_interval, Duration::from_millis(20));
    assert!(!c.registration.enabled);
    let rw = &c.listeners[0];
    assert_eq!(
        (rw.maxconn, rw.maxqueue, rw.balance),
        (Some(3), 1, Balance::First)
    );
    assert_eq!(rw.hold_timeout, Duration::from_secs(60));
    assert!(rw.accept_proxy);
    let ro = &c.listeners[1];
    assert!(!ro.accept_proxy);
    assert_eq!((ro.maxconn, ro.maxqueue), (Some(100), 7));
    assert_eq!(ro.queue_timeout, Duration::from_secs(2));
    assert_eq!(ro.hold_timeout, Duration::from_secs(5));
    assert_eq!(c.stats.unwrap().admin.unwrap().username, "a");
}

#[test]
fn errors_name_file_and_key() {
    let mut v = minimal();
    v["listeners"][1]["balance"] = json!("x");
    assert_eq!(
        parse(v).unwrap_err(),
        r#"proxy.yml: proxy.listeners[1].balance: expected roundrobin, leastconn or first, found "x""#
    );
    let mut v = minimal();
    v["listeners"][0]["role"] = json!("writer");
    assert!(parse(v)
        .unwrap_err()
        .starts_with("proxy.yml: proxy.listeners[0].role: expected primary"));
    let mut v = minimal();
    v["listeners"][0]["bind"] = json!("localhost");
    assert!(parse(v)
        .unwrap_err()
        .contains("proxy.listeners[0].bind: expected an IP address"));
    let mut v = minimal();
    v["health_check"] = json!({"intervl": "1s"});
    assert!(parse(v)
        .unwrap_err()
        .contains("proxy.health_check.intervl: unknown key"));
    let mut v = minimal();
    v["timeouts"] = json!({"connect": "soon"});
    assert!(parse(v)
        .unwrap_err()
        .contains("proxy.timeouts.connect: expected a duration"));
    let mut v = minimal();
    v["listeners"][1]["bind"] = json!("127.0.0.1:5000");
    assert!(parse(v)
        .unwrap_err()
        .contains("proxy.listeners[1].bind: 127.0.0.1:5000 is already used"));
    let mut v = minimal();
    v["threads"] = json!(0);
    assert!(parse(v).unwrap_err().contains("proxy.threads: expected"));
    let mut v = minimal();
    v["listeners"][0]["accept_proxy"] = json!("v2");
    assert!(parse(v)
        .unwrap_err()
        .contains("proxy.listeners[0].accept_proxy: expected"));
    let mut v = minimal();
    v["listeners"][0]["max_lag"] = json!("1MB");
    assert!(parse(v)
        .unwrap_err()
        .contains("proxy.listeners[0].max_lag: only applies"));
    assert!(parse(json!({"listeners": []}))
        .unwrap_err()
        .contains("proxy.listeners: missing"));
    let mut v = minimal();
    v["stats"]["admin"] = json!({"username": "a"});
    assert!(parse(v)
        .unwrap_err()
        .contains("proxy.stats.admin.password: missing"));
    let mut v = minimal();
    v["maxconn"] = json!(0);
    assert!(parse(v)
        .unwrap_err()
        .contains("proxy.maxconn: expected an integer >= 1"));
}

#[test]
fn keepalive_can_be_disabled() {
    let mut v = minimal();
    v["tcp_keepalive"] = json!(false);
    assert!(parse(v).unwrap().keepalive.is_none());
}

#[test]
fn messages_of_the_shared_reader_keep_the_proxy_wording() {
    let fails = |patch: Value| {
        let mut v = minimal();
        for (key, value) in patch.as_object().unwrap() {
            v[key] = value.clone();
        }
        parse(v).unwrap_err()
    };
    assert_eq!(
        fails(json!({"timeouts": {"connect": "1s", "idle": "1s"}})),
        "proxy.yml: proxy.timeouts.idle: unknown key (expected one of: client_idle, connect, server_idle)"
    );
    assert_eq!(
        fails(json!({"health_check": 5})),
        "proxy.yml: proxy.health_check: expected a mapping, found 5"
    );
    assert_eq!(
        fails(json!({"registration": {"enabled": "1"}})),
        r#"proxy.yml: proxy.registration.enabled: expected true or false, found "1""#
    );
    assert_eq!(
        fails(json!({"listeners": "primary"})),
        r#"proxy.yml: proxy.listeners: expected a list, found "primary""#
    );
    assert_eq!(
        fails(json!({"listeners": [7]})),
        "proxy.yml: proxy.listeners[0]: expected a mapping, found 7"
    );
    assert_eq!(
        fails(json!({"name": "a/b"})),
        r#"proxy.yml: proxy.name: must not contain '/', found "a/b""#
    );
    assert_eq!(
        fails(json!({"buffer_size": "100"})),
        "proxy.yml: proxy.buffer_size: expected a size between 1kB and 16MB"
    );
    assert_eq!(
        fails(json!({"health_check": {"timeout": "5ms"}})),
        "proxy.yml: proxy.health_check.timeout: must be at least 10ms"
    );
    assert_eq!(
        fails(json!({"registration": {"ttl": 1}})),
        "proxy.yml: proxy.registration.ttl: must be at least 2s (etcd leases are whole seconds)"
    );
    assert_eq!(
        fails(json!({"maxqueue": 2.0})),
        "proxy.yml: proxy.maxqueue: expected an integer >= 0, found 2.0"
    );
}

#[test]
fn idle_limits_take_zero_or_false_for_none() {
    let mut v = minimal();
    v["timeouts"] = json!({"client_idle": false, "server_idle": "0s"});
    let c = parse(v).unwrap();
    assert_eq!(
        (c.timeouts.client_idle, c.timeouts.server_idle),
        (None, None)
    );
    assert_eq!(c.timeouts.connect, defaults::DEFAULT_CONNECT_TIMEOUT);
    let mut v = minimal();
    v["name"] = json!(" ");
    v["listeners"][0]["bind"] = json!("*:6432");
    let c = parse(v).unwrap();
    assert_eq!(c.name, "host-6432");
    assert_eq!(c.listeners[0].bind.to_string(), "0.0.0.0:6432");
}

#[test]
fn split_keys_only_on_auto_listeners() {
    for (key, value) in [
        ("read_only_functions", json!(["f"])),
        ("read_your_writes", json!("session")),
    ] {
        let mut v = minimal();
        v["listeners"][1][key] = value;
        assert_eq!(
            parse(v).unwrap_err(),
            format!("proxy.yml: proxy.listeners[1].{key}: only applies to role: auto listeners")
        );
    }
}

#[test]
fn split_keys_name_what_they_expect() {
    let auto = |extra: Value| {
        let mut l = json!({"name": "auto", "bind": "127.0.0.1:5002", "role": "auto"});
        for (k, v) in extra.as_object().unwrap() {
            l[k] = v.clone();
        }
        let mut v = minimal();
        v["listeners"].as_array_mut().unwrap().push(l);
        parse(v).unwrap_err()
    };
    assert_eq!(
        auto(json!({"read_your_writes": "lsn"})),
        r#"proxy.yml: proxy.listeners[2].read_your_writes: expected replayed, session or off (or a mapping with mode and max_wait), found "lsn""#
    );
    assert_eq!(
        auto(json!({"read_your_writes": {"mode": "always"}})),
        r#"proxy.yml: proxy.listeners[2].read_your_writes.mode: expected replayed, session or off, found "always""#
    );
    assert!(auto(json!({"read_your_writes": {"max_wait": "soon"}}))
        .contains("proxy.listeners[2].read_your_writes.max_wait: expected a duration"));
    assert!(
        auto(json!({"read_your_writes": {"mode": "off", "wait": "1s"}}))
            .contains("proxy.listeners[2].read_your_writes.wait")
    );
    for bad in [
        json!("f"),
        json!(["a b"]),
        json!(["a.b.c"]),
        json!([""]),
        json!([1]),
    ] {
        assert!(
            auto(json!({"read_only_functions": bad})).contains(
                "proxy.listeners[2].read_only_functions: expected a list of function names"
            ),
            "{bad}"
        );
    }
    assert!(auto(json!({"fallback": "primary"}))
        .contains("proxy.listeners[2].fallback: does not apply to auto listeners"));
    assert!(auto(json!({}))
        .starts_with("proxy.yml: proxy.listeners[2].role: auto needs pool_mode: transaction"));
}

#[test]
fn auto_listener_keys_and_defaults() {
    let with = |extra: Value| {
        let mut l = json!({"name": "auto", "bind": "127.0.0.1:5002", "role": "auto",
                           "pool_mode": "transaction", "auth_file": "/u.txt"});
        for (k, v) in extra.as_object().unwrap() {
            l[k] = v.clone();
        }
        let mut v = minimal();
        v["listeners"].as_array_mut().unwrap().push(l);
        let c = parse(v).unwrap();
        c.listeners[2].split.clone().unwrap()
    };
    let d = with(json!({}));
    assert!(d.read_only_functions.is_empty());
    assert_eq!(d.router.read_your_writes, ReadYourWrites::Replayed);
    assert_eq!(
        d.router.max_wait,
        defaults::DEFAULT_READ_YOUR_WRITES_MAX_WAIT
    );
    let s = with(json!({"read_only_functions": ["f", "app.g"], "read_your_writes": "session"}));
    assert_eq!(s.read_only_functions, ["f", "app.g"]);
    assert_eq!(s.router.read_your_writes, ReadYourWrites::Session);
    let m = with(json!({"read_your_writes": {"mode": "off", "max_wait": "50ms"}}));
    assert_eq!(m.router.read_your_writes, ReadYourWrites::Off);
    assert_eq!(m.router.max_wait, Duration::from_millis(50));
    let m = with(json!({"read_your_writes": {"max_wait": "1s"}}));
    assert_eq!(
        (m.router.read_your_writes, m.router.max_wait),
        (ReadYourWrites::Replayed, Duration::from_secs(1))
    );
}

#[test]
fn pooled_listeners() {
    let mut v = minimal();
    assert_eq!(parse(v.clone()).unwrap().listeners[0].pool, None);
    v["listeners"][0]["pool_mode"] = json!("transaction");
    v["listeners"][0]["auth_file"] = json!("/etc/pgherd/userlist.txt");
    let p = parse(v.clone()).unwrap().listeners[0].pool.clone().unwrap();
    assert_eq!(p.mode, PoolMode::Transaction);
    assert_eq!(p.pool_size, defaults::DEFAULT_POOL_SIZE);
    assert_eq!(p.max_client_conn, defaults::DEFAULT_MAX_CLIENT_CONN);
    assert_eq!(p.server_reset_query, "DISCARD ALL");
    assert_eq!(p.auth_type, crate::pool::auth::AuthType::ScramSha256);
    assert_eq!(p.max_prepared_statements, 200);
    assert_eq!(p.auth_user, None);
    assert_eq!(p.auth_query, defaults::DEFAULT_AUTH_QUERY);
    for (k, val) in [
        ("pool_mode", json!("session")),
        ("pool_size", json!(5)),
        ("min_pool_size", json!(2)),
        ("max_client_conn", json!(1000)),
        ("server_idle_timeout", json!("30s")),
        ("server_lifetime", json!("1h")),
        ("query_wait_timeout", json!("5s")),
        ("server_reset_query", json!("RESET ALL")),
        ("auth_type", json!("md5")),
        (
            "ignore_startup_parameters",
            json!("extra_float_digits, search_path"),
        ),
        ("auth_user", json!("lookup")),
        ("auth_query", json!("SELECT * FROM user_lookup($1)")),
    ] {
        v["listeners"][0][k] = val;
    }
    let p = parse(v.clone()).unwrap().listeners[0].pool.clone().unwrap();
    assert_eq!(
        (p.mode, p.pool_size, p.min_pool_size, p.max_client_conn),
        (PoolMode::Session, 5, 2, 1000)
    );
    assert_eq!(p.server_idle_timeout, Duration::from_secs(30));
    assert_eq!(p.server_lifetime, Duration::from_secs(3600));
    assert_eq!(p.query_wait_timeout, Duration::from_secs(5));
    assert_eq!(p.server_reset_query, "RESET ALL");
    assert_eq!(p.auth_type, crate::pool::auth::AuthType::Md5);
    assert_eq!(p.auth_user.as_deref(), Some("lookup"));
    assert_eq!(p.auth_query, "SELECT * FROM user_lookup($1)");
    assert_eq!(
        p.ignore_startup_parameters,
        ["extra_float_digits", "search_path"]
    );

    let err = |edit: &dyn Fn(&mut Value)| {
        let mut v = minimal();
        v["listeners"][0]["pool_mode"] = json!("transaction");
        v["listeners"][0]["auth_file"] = json!("/u.txt");
        edit(&mut v);
        parse(v).unwrap_err()
    };
    assert!(
        err(&|v| v["listeners"][0]["pool_mode"] = json!("statement")).contains(
            "proxy.listeners[0].pool_mode: expected session or transaction, found \"statement\""
        )
    );
    assert!(err(&|v| v["listeners"][0]["auth_type"] = json!("trust"))
        .contains("proxy.listeners[0].auth_type: expected scram-sha-256, md5 or plain"));
    assert!(err(&|v| v["listeners"][0]["min_pool_size"] = json!(50))
        .contains("proxy.listeners[0].min_pool_size: expected at most pool_size (20), found 50"));
    assert!(err(&|v| v["listeners"][0]["pool_size"] = json!(0))
        .contains("proxy.listeners[0].pool_size: expected"));
    assert!(err(&|v| {
        v["listeners"][0]
            .as_object_mut()
            .unwrap()
            .remove("auth_file");
    })
    .contains("proxy.listeners[0].auth_file: missing"));
    assert!(
        err(&|v| v["listeners"][0]["tls"] = json!({"cert": "/c.pem"}))
            .contains("proxy.listeners[0].tls.key")
    );
    assert!(
        err(&|v| v["listeners"][0]["server_tls"] = json!({"mode": "verify-full"}))
            .contains("proxy.listeners[0].server_tls.ca: missing")
    );
    assert!(
        err(&|v| v["listeners"][0]["server_tls"] = json!({"mode": "always"})).contains(
            "proxy.listeners[0].server_tls.mode: expected disable, prefer, require or verify-full"
        )
    );
    let mut v = minimal();
    v["listeners"][0]["pool_mode"] = json!("transaction");
    v["listeners"][0]["auth_file"] = json!("/u.txt");
    v["listeners"][0]["tls"] = json!({"cert": "/c.pem", "key": "/k.pem"});
    v["listeners"][0]["server_tls"] = json!({"mode": "verify-full", "ca": "/ca.pem"});
    let p = parse(v).unwrap().listeners[0].pool.clone().unwrap();
    assert_eq!(
        p.tls,
        Some(TlsFiles {
            cert: "/c.pem".into(),
            key: "/k.pem".into()
        })
    );
    assert_eq!(p.server_tls, ServerTlsMode::VerifyFull);
    assert_eq!(p.server_tls_ca, Some("/ca.pem".into()));
    // Pooling keys without pool_mode are a mistake, not silently ignored.
    let mut v = minimal();
    v["listeners"][1]["pool_size"] = json!(5);
    assert!(parse(v).unwrap_err().contains(
        "proxy.listeners[1].pool_size: only applies to a pooled listener (set pool_mode: session or transaction)"
    ));
}
