use super::*;
use crate::defaults::DEFAULT_TTL;
use serde_json::json;

#[test]
fn defaults_when_empty() {
    let (c, warnings) = DynamicConfig::from_value(&json!({}));
    assert_eq!(c, DynamicConfig::default());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.ttl, Duration::from_secs(4));
    assert_eq!(c.loop_wait, Duration::from_secs(1));
    assert_eq!(c.retry_timeout, Duration::from_millis(1500));
    assert_eq!(c.maximum_lag_on_failover, 1_048_576);
    assert_eq!(c.primary_start_timeout, Duration::from_secs(300));
    assert!(c.postgresql.use_slots);
    assert_eq!(
        DynamicConfig::from_value(&json!(null)).0,
        DynamicConfig::default()
    );
}

#[test]
fn patroni_values() {
    let v = json!({
        "ttl": 30, "loop_wait": "10", "retry_timeout": 10.0,
        "maximum_lag_on_failover": "1MB", "maximum_lag_on_syncnode": -1,
        "check_timeline": "on", "synchronous_mode": "true", "synchronous_node_count": "2",
        "pause": "yes", "max_timelines_history": 5,
        "postgresql": {"use_pg_rewind": true, "use_slots": false,
                       "parameters": {"max_connections": 200, "hot_standby": "on", "wal_log_hints": true},
                       "pg_hba": ["host all all 0.0.0.0/0 md5"], "listen": "x:1"},
        "standby_cluster": {"host": "10.0.0.1", "port": 5432},
        "permanent_slots": {"s": {"type": "physical"}},
        "member_slots_ttl": "30min"
    });
    let (c, warnings) = DynamicConfig::from_value(&v);
    assert_eq!(c.ttl, Duration::from_secs(30));
    assert_eq!(c.loop_wait, Duration::from_secs(10));
    assert_eq!(c.maximum_lag_on_failover, 1 << 20);
    assert!(c.check_timeline && c.synchronous_mode && c.pause);
    assert_eq!(c.synchronous_node_count, 2);
    assert_eq!(c.max_timelines_history, 5);
    assert!(c.postgresql.use_pg_rewind && !c.postgresql.use_slots);
    assert_eq!(c.postgresql.parameters["max_connections"], "200");
    assert_eq!(c.postgresql.parameters["wal_log_hints"], "on");
    assert_eq!(
        c.postgresql.extra["pg_hba"],
        json!(["host all all 0.0.0.0/0 md5"])
    );
    assert!(!c.postgresql.extra.contains_key("listen"));
    assert_eq!(c.standby_cluster.as_ref().unwrap()["host"], "10.0.0.1");
    assert_eq!(c.slots, Some(json!({"s": {"type": "physical"}})));
    assert_eq!(c.extra["member_slots_ttl"], "30min");
    assert_eq!(
        warnings,
        [
            "postgresql.listen: only a member's own file may set this; ignored here",
            "member_slots_ttl: unknown key (kept, not used by pgherd)",
        ]
    );
}

#[test]
fn master_aliases() {
    let (c, _) =
        DynamicConfig::from_value(&json!({"master_start_timeout": 60, "master_stop_timeout": 5}));
    assert_eq!(c.primary_start_timeout, Duration::from_secs(60));
    assert_eq!(c.primary_stop_timeout, Duration::from_secs(5));
    let (c, _) = DynamicConfig::from_value(
        &json!({"master_start_timeout": 60, "primary_start_timeout": 10}),
    );
    assert_eq!(c.primary_start_timeout, Duration::from_secs(10));
}

#[test]
fn lenient_falls_back_with_warnings() {
    let (c, warnings) = DynamicConfig::from_value(&json!({
        "ttl": "abc", "synchronous_mode": "maybe", "synchronous_node_count": 0,
        "postgresql": {"parameters": {"work_mem": "4MB", "bad": [1]}}
    }));
    assert_eq!(c.ttl, DEFAULT_TTL);
    assert!(!c.synchronous_mode);
    assert_eq!(c.synchronous_node_count, 1);
    assert_eq!(c.postgresql.parameters.len(), 1);
    assert_eq!(
        warnings,
        [
            r#"ttl: expected a duration (seconds, or e.g. "30s", "500ms"), found "abc" (using the default)"#,
            r#"synchronous_mode: expected a boolean (true/false, on/off, yes/no), found "maybe" (using the default)"#,
            "synchronous_node_count: expected an integer >= 1, found 0 (using the default)",
            "postgresql.parameters.bad: expected a single value, found a list (using the default)",
        ]
    );
    let (c, warnings) = DynamicConfig::from_value(&json!("garbage"));
    assert_eq!(c, DynamicConfig::default());
    assert_eq!(
        warnings,
        [r#"expected a map of settings, found "garbage" (using defaults)"#]
    );
}

#[test]
fn strict_names_the_key() {
    let err = DynamicConfig::validate(&json!({"ttl": "abc"}), "bootstrap.dcs").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"bootstrap.dcs.ttl: expected a duration (seconds, or e.g. "30s", "500ms"), found "abc""#
    );
    let err = DynamicConfig::validate(&json!({"postgresql": {"use_slots": "x"}}), "").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"postgresql.use_slots: expected a boolean (true/false, on/off, yes/no), found "x""#
    );
    assert!(DynamicConfig::validate(&json!({"ttl": "3s", "loop_wait": "500ms"}), "").is_ok());
}

#[test]
fn timing_sanity_warnings() {
    let (_, warnings) =
        DynamicConfig::from_value(&json!({"ttl": 20, "loop_wait": 10, "retry_timeout": 10}));
    assert_eq!(
        warnings,
        ["loop_wait (10s) + 2 * retry_timeout (10s) exceeds ttl (20s): a leader that has to retry \
          the DCS may lose its lock"]
    );
    let (_, warnings) = DynamicConfig::from_value(
        &json!({"ttl": "1s", "loop_wait": "100ms", "retry_timeout": "200ms"}),
    );
    assert_eq!(
        warnings,
        ["ttl: 1s is too short: the leader key may expire between two renewals"]
    );
}

#[test]
fn dcs_json_round_trip() {
    let c = DynamicConfig::default();
    assert_eq!(
        c.to_dcs_json(),
        json!({"ttl": 4, "loop_wait": 1, "retry_timeout": 1.5})
    );
    let (c, _) = DynamicConfig::from_value(&json!({
        "ttl": "30s", "loop_wait": "500ms", "retry_timeout": 10, "master_start_timeout": 0,
        "synchronous_mode": "on", "postgresql": {"use_pg_rewind": true, "parameters": {"max_connections": 100}},
        "custom": {"a": 1}
    }));
    let json = c.to_dcs_json();
    assert_eq!(
        json,
        json!({"ttl": 30, "loop_wait": 0.5, "retry_timeout": 10, "primary_start_timeout": 0,
               "synchronous_mode": true,
               "postgresql": {"use_pg_rewind": true, "parameters": {"max_connections": "100"}},
               "custom": {"a": 1}})
    );
    assert_eq!(DynamicConfig::from_value(&json).0, c);
}
