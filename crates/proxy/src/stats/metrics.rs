//! Prometheus text exposition of the snapshot.

use serde_json::Value;
use std::fmt::Write;

fn label(v: &Value) -> String {
    v.as_str()
        .unwrap_or_default()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &str, v: &Value) {
        let n = v.as_f64().unwrap_or(0.0);
        let _ = writeln!(self.0, "{name}{{{labels}}} {n}");
    }
}

const STATES: [&str; 7] = ["up", "hold", "lag", "down", "drain", "maint", "standby"];

pub fn render(s: &Value) -> String {
    let mut o = Out(String::with_capacity(8 * 1024));
    let proxy = label(&s["proxy"]["name"]);
    let scope = label(&s["proxy"]["scope"]);
    let base = format!("proxy=\"{proxy}\",scope=\"{scope}\"");
    let listeners: Vec<&Value> = s["listeners"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();

    for (name, kind, help, key) in [
        (
            "pgherd_proxy_bytes_in_total",
            "counter",
            "Bytes received from clients.",
            "bytes_in",
        ),
        (
            "pgherd_proxy_bytes_out_total",
            "counter",
            "Bytes sent to clients.",
            "bytes_out",
        ),
        (
            "pgherd_proxy_open_fds",
            "gauge",
            "Open file descriptors of the proxy process.",
            "open_fds",
        ),
        ("pgherd_proxy_tasks", "gauge", "Live async tasks.", "tasks"),
        (
            "pgherd_proxy_table_generation",
            "counter",
            "Routing table versions published.",
            "generation",
        ),
    ] {
        o.header(name, kind, help);
        o.sample(name, &base, &s["proxy"][key]);
    }

    let per_listener = [
        (
            "pgherd_proxy_listener_clients",
            "gauge",
            "Client connections open on the listener.",
            "clients",
        ),
        (
            "pgherd_proxy_listener_clients_total",
            "counter",
            "Client connections accepted.",
            "clients_total",
        ),
        (
            "pgherd_proxy_listener_queued",
            "gauge",
            "Sessions waiting for a maxconn slot.",
            "queued",
        ),
        (
            "pgherd_proxy_listener_holding",
            "gauge",
            "Sessions waiting for a routable server.",
            "holding",
        ),
        (
            "pgherd_proxy_listener_sessions",
            "gauge",
            "Server sessions open.",
            "sessions",
        ),
        (
            "pgherd_proxy_listener_sessions_total",
            "counter",
            "Server sessions opened.",
            "sessions_total",
        ),
    ];
    for (name, kind, help, key) in per_listener {
        o.header(name, kind, help);
        for l in &listeners {
            let labels = format!(
                "{base},listener=\"{}\",role=\"{}\"",
                label(&l["name"]),
                label(&l["role"])
            );
            o.sample(name, &labels, &l[key]);
        }
    }
    o.header(
        "pgherd_proxy_listener_open",
        "gauge",
        "1 if the listener has a routable server.",
    );
    for l in &listeners {
        let labels = format!("{base},listener=\"{}\"", label(&l["name"]));
        let open = Value::from(u8::from(l["readiness"].as_str() == Some("open")));
        o.sample("pgherd_proxy_listener_open", &labels, &open);
    }
    o.header(
        "pgherd_proxy_listener_refused_total",
        "counter",
        "Clients closed without a server, by reason.",
    );
    for l in &listeners {
        for reason in [
            "hold_timeout",
            "queue_full",
            "queue_timeout",
            "connect_failed",
            "proxy_header",
        ] {
            let labels = format!(
                "{base},listener=\"{}\",reason=\"{reason}\"",
                label(&l["name"])
            );
            o.sample(
                "pgherd_proxy_listener_refused_total",
                &labels,
                &l["refused"][reason],
            );
        }
    }

    let per_server = [
        (
            "pgherd_proxy_server_sessions",
            "gauge",
            "Sessions open to the server through the listener.",
            "sessions",
        ),
        (
            "pgherd_proxy_server_sessions_total",
            "counter",
            "Sessions opened to the server.",
            "sessions_total",
        ),
        (
            "pgherd_proxy_server_bytes_in_total",
            "counter",
            "Bytes sent to the server.",
            "bytes_in",
        ),
        (
            "pgherd_proxy_server_bytes_out_total",
            "counter",
            "Bytes received from the server.",
            "bytes_out",
        ),
        (
            "pgherd_proxy_server_connect_errors_total",
            "counter",
            "Failed connections to the server.",
            "errors",
        ),
    ];
    for (name, kind, help, key) in per_server {
        o.header(name, kind, help);
        for l in &listeners {
            for sv in l["servers"].as_array().into_iter().flatten() {
                let labels = format!(
                    "{base},listener=\"{}\",server=\"{}\"",
                    label(&l["name"]),
                    label(&sv["name"])
                );
                o.sample(name, &labels, &sv[key]);
            }
        }
    }
    o.header(
        "pgherd_proxy_server_state",
        "gauge",
        "1 for the server's current routing state on the listener.",
    );
    for l in &listeners {
        for sv in l["servers"].as_array().into_iter().flatten() {
            for st in STATES {
                let labels = format!(
                    "{base},listener=\"{}\",server=\"{}\",state=\"{st}\"",
                    label(&l["name"]),
                    label(&sv["name"])
                );
                o.sample(
                    "pgherd_proxy_server_state",
                    &labels,
                    &Value::from(u8::from(sv["state"].as_str() == Some(st))),
                );
            }
        }
    }
    let per_pool = [
        (
            "pgherd_proxy_pool_servers_active",
            "gauge",
            "Server connections lent to clients.",
            "servers_active",
        ),
        (
            "pgherd_proxy_pool_servers_idle",
            "gauge",
            "Idle server connections in the pool.",
            "servers_idle",
        ),
        (
            "pgherd_proxy_pool_clients_active",
            "gauge",
            "Clients holding a server connection.",
            "clients_active",
        ),
        (
            "pgherd_proxy_pool_clients_waiting",
            "gauge",
            "Clients waiting for a server connection (pool_size reached).",
            "clients_waiting",
        ),
        (
            "pgherd_proxy_pool_checkouts_total",
            "counter",
            "Server connections lent (transactions in transaction mode, sessions in session mode).",
            "checkouts",
        ),
        (
            "pgherd_proxy_pool_server_connects_total",
            "counter",
            "Server connections opened.",
            "server_connects",
        ),
        (
            "pgherd_proxy_pool_wait_microseconds_total",
            "counter",
            "Time clients waited for a server connection.",
            "wait_us_total",
        ),
    ];
    for (name, kind, help, key) in per_pool {
        o.header(name, kind, help);
        for l in &listeners {
            for p in l["pool"]["pools"].as_array().into_iter().flatten() {
                let labels = format!(
                    "{base},listener=\"{}\",server=\"{}\",user=\"{}\",database=\"{}\"",
                    label(&l["name"]),
                    label(&p["member"]),
                    label(&p["user"]),
                    label(&p["database"])
                );
                o.sample(name, &labels, &p[key]);
            }
        }
    }
    o.header(
        "pgherd_proxy_member_lag_bytes",
        "gauge",
        "Replication lag from the DCS (replicas).",
    );
    for m in s["members"].as_array().into_iter().flatten() {
        if !m["lag"].is_null() {
            let labels = format!("{base},member=\"{}\"", label(&m["name"]));
            o.sample("pgherd_proxy_member_lag_bytes", &labels, &m["lag"]);
        }
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exposition() {
        let s = json!({
            "proxy": {"name": "px1", "scope": "demo", "bytes_in": 10, "generation": 3},
            "listeners": [{"name": "primary", "role": "primary", "readiness": "open", "clients": 2,
                "refused": {"hold_timeout": 1},
                "servers": [{"name": "node1", "state": "up", "sessions": 2}]}],
            "members": [{"name": "node2", "lag": 5}]
        });
        let text = render(&s);
        assert!(text.contains("# TYPE pgherd_proxy_bytes_in_total counter"));
        assert!(text.contains("pgherd_proxy_bytes_in_total{proxy=\"px1\",scope=\"demo\"} 10"));
        assert!(text.contains(
            "pgherd_proxy_listener_open{proxy=\"px1\",scope=\"demo\",listener=\"primary\"} 1"
        ));
        assert!(text.contains("pgherd_proxy_server_state{proxy=\"px1\",scope=\"demo\",listener=\"primary\",server=\"node1\",state=\"up\"} 1"));
        assert!(text.contains("reason=\"hold_timeout\"} 1"));
        assert!(text.contains(
            "pgherd_proxy_member_lag_bytes{proxy=\"px1\",scope=\"demo\",member=\"node2\"} 5"
        ));
    }
}
