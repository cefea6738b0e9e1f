//! The HTML stats page, rendered from the JSON snapshot: one table per listener with a row
//! per server, then the members' health. Readable at a glance: the state column is coloured.

use serde_json::Value;
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => esc(s),
        other => esc(&other.to_string()),
    }
}

fn bytes(v: &Value) -> String {
    let Some(n) = v.as_u64() else {
        return "-".into();
    };
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut f = n as f64;
    let mut u = 0;
    while f >= 1024.0 && u < UNITS.len() - 1 {
        f /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{f:.1} {}", UNITS[u])
    }
}

fn age(v: &Value) -> String {
    let Some(s) = v.as_f64() else {
        return "-".into();
    };
    let s = s as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 4px}
.meta{color:#555;font-size:13px;margin-bottom:8px}
table{border-collapse:collapse;width:100%;font-size:13px;background:#fff}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;white-space:nowrap}
th{background:#e8e8f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.reason{white-space:normal;color:#444;font-size:12px}
.s-up{background:#c8f0c0}.s-hold{background:#fff2a8}.s-lag{background:#ffd9a0}.s-down{background:#f6b8b8}
.s-drain{background:#c8dcff}.s-maint{background:#d8c8ff}.s-standby{background:#eee;color:#777}
.r-open{color:#060;font-weight:bold}.r-holding{color:#a60;font-weight:bold}.r-fail-fast{color:#a00;font-weight:bold}
.badge{display:inline-block;padding:0 6px;border-radius:3px;background:#333;color:#fff;font-size:12px}
"#;

/// One row per server of a rotation.
fn server_table(h: &mut String, servers: &Value) {
    h.push_str(
        "<table><tr><th>server</th><th>address</th><th>state</th><th>for</th><th>weight</th>\
         <th>sessions</th><th>max</th><th>total</th><th>bytes in</th><th>bytes out</th><th>errors</th><th>why</th></tr>",
    );
    for sv in servers.as_array().into_iter().flatten() {
        let state = sv["state"].as_str().unwrap_or("-");
        let _ = write!(
            h,
            "<tr><td><b>{name}</b></td><td>{addr}</td><td class=\"s-{state}\">{state}</td><td class=\"num\">{since}</td>\
             <td class=\"num\">{w}</td><td class=\"num\">{cur}</td><td class=\"num\">{max}</td><td class=\"num\">{tot}</td>\
             <td class=\"num\">{bin}</td><td class=\"num\">{bout}</td><td class=\"num\">{err}</td><td class=\"reason\">{why}</td></tr>",
            name = text(&sv["name"]),
            addr = text(&sv["addr"]),
            since = age(&sv["since_s"]),
            w = text(&sv["weight"]),
            cur = text(&sv["sessions"]),
            max = text(&sv["sessions_max"]),
            tot = text(&sv["sessions_total"]),
            bin = bytes(&sv["bytes_in"]),
            bout = bytes(&sv["bytes_out"]),
            err = text(&sv["errors"]),
            why = text(&sv["reason"]),
        );
    }
    h.push_str("</table>");
}

/// A pooled listener: its mode and clients, then a row per (server, user, database) pool,
/// the columns of pgbouncer's `SHOW POOLS`.
fn pool_table(h: &mut String, pool: &Value) {
    let _ = write!(
        h,
        "<div class=\"meta\">pool_mode {mode} &middot; pool_size {size} &middot; clients {clients} (max_client_conn {max})</div>\
         <table><tr><th>server</th><th>user</th><th>database</th><th>clients active</th><th>clients waiting</th>\
         <th>servers active</th><th>servers idle</th><th>servers open</th><th>pool_size</th><th>checkouts</th>\
         <th>server logins</th><th>wait avg</th><th>wait max</th></tr>",
        mode = text(&pool["mode"]),
        size = text(&pool["pool_size"]),
        clients = text(&pool["clients"]),
        max = text(&pool["max_client_conn"]),
    );
    let ms = |us: Option<f64>| us.map_or("-".into(), |us| format!("{:.1} ms", us / 1000.0));
    for p in pool["pools"].as_array().into_iter().flatten() {
        let checkouts = p["checkouts"].as_f64().filter(|&n| n > 0.0);
        let _ = write!(
            h,
            "<tr><td><b>{member}</b></td><td>{user}</td><td>{db}</td><td class=\"num\">{ca}</td><td class=\"num\">{cw}</td>\
             <td class=\"num\">{sa}</td><td class=\"num\">{si}</td><td class=\"num\">{so}</td><td class=\"num\">{size}</td>\
             <td class=\"num\">{co}</td><td class=\"num\">{logins}</td><td class=\"num\">{avg}</td><td class=\"num\">{max}</td></tr>",
            member = text(&p["member"]),
            user = text(&p["user"]),
            db = text(&p["database"]),
            ca = text(&p["clients_active"]),
            cw = text(&p["clients_waiting"]),
            sa = text(&p["servers_active"]),
            si = text(&p["servers_idle"]),
            so = text(&p["servers_open"]),
            size = text(&p["pool_size"]),
            co = text(&p["checkouts"]),
            logins = text(&p["server_connects"]),
            avg = ms(checkouts.and_then(|n| Some(p["wait_us_total"].as_f64()? / n))),
            max = ms(p["wait_us_max"].as_f64()),
        );
    }
    h.push_str("</table>");
}

/// Renders the page; it reloads itself every `refresh_s` seconds.
pub fn render(s: &Value, refresh_s: u64) -> String {
    let p = &s["proxy"];
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{refresh_s}\">\
         <title>pgherd proxy {name}</title><style>{STYLE}</style></head><body>\
         <h1>pgherd proxy <span class=\"badge\">{name}</span> cluster <span class=\"badge\">{scope}</span></h1>\
         <div class=\"meta\">DCS leader: <b>{leader}</b> &middot; routing writes to: <b>{routing}</b> &middot; uptime {uptime} \
         &middot; bytes in {bin} / out {bout} &middot; open fds {fds} &middot; tasks {tasks} &middot; table generation {gen} \
         &middot; refreshes every {refresh_s}s &middot; <a href=\"stats.json\">stats.json</a> &middot; <a href=\"metrics\">metrics</a></div>",
        name = text(&p["name"]),
        scope = text(&p["scope"]),
        leader = text(&p["leader"]),
        routing = text(&p["routing_leader"]),
        uptime = age(&p["uptime_s"]),
        bin = bytes(&p["bytes_in"]),
        bout = bytes(&p["bytes_out"]),
        fds = text(&p["open_fds"]),
        tasks = text(&p["tasks"]),
        gen = text(&p["generation"]),
    );
    for l in s["listeners"].as_array().into_iter().flatten() {
        let readiness = l["readiness"].as_str().unwrap_or("-");
        let r = &l["refused"];
        let _ = write!(
            h,
            "<h2>{name} <span class=\"badge\">{role}</span> {bind} &middot; <span class=\"r-{readiness}\">{readiness}</span></h2>\
             <div class=\"meta\">balance {balance} &middot; max_lag {lag} &middot; fallback {fallback}{lb} &middot; \
             clients {clients} (max {cmax}, total {ctotal}) &middot; queue {q} (max {qmax}, limit {maxq}) &middot; maxconn {maxconn} \
             &middot; holding {holding} &middot; refused: hold timeout {rh}, queue full {rq}, queue timeout {rt}, connect failed {rc}, bad PROXY header {rp}</div>",
            name = text(&l["name"]),
            role = text(&l["role"]),
            bind = text(&l["bind"]),
            balance = text(&l["balance"]),
            lag = if l["max_lag"].is_null() { "-".into() } else { bytes(&l["max_lag"]) },
            fallback = text(&l["fallback"]),
            lb = if l["accept_proxy"] == true { " &middot; PROXY protocol" } else { "" },
            clients = text(&l["clients"]),
            cmax = text(&l["clients_max"]),
            ctotal = text(&l["clients_total"]),
            q = text(&l["queued"]),
            qmax = text(&l["queued_max"]),
            maxq = text(&l["maxqueue"]),
            maxconn = text(&l["maxconn"]),
            holding = text(&l["holding"]),
            rh = text(&r["hold_timeout"]),
            rq = text(&r["queue_full"]),
            rt = text(&r["queue_timeout"]),
            rc = text(&r["connect_failed"]),
            rp = text(&r["proxy_header"]),
        );
        server_table(&mut h, &l["servers"]);
        if !l["pool"].is_null() {
            pool_table(&mut h, &l["pool"]);
        }
        if !l["replicas"].is_null() {
            let _ = write!(
                h,
                "<div class=\"meta\">replica rotation: {}</div>",
                text(&l["replicas"]["readiness"])
            );
            server_table(&mut h, &l["replicas"]["servers"]);
        }
        if let Some(routing) = l["routing"].as_object() {
            h.push_str("<table><tr><th>routed to</th><th>reason</th><th>decisions</th></tr>");
            for (target, reasons) in routing {
                for (reason, n) in reasons.as_object().into_iter().flatten() {
                    let _ = write!(
                        h,
                        "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
                        esc(target),
                        esc(reason),
                        text(n)
                    );
                }
            }
            h.push_str("</table>");
        }
    }
    h.push_str(
        "<h2>Members (DCS and health checks)</h2><table><tr><th>member</th><th>DCS role</th><th>state</th>\
         <th>address</th><th>REST API</th><th>lag</th><th>/primary</th><th>/replica</th><th>last check</th>\
         <th>age</th><th>latency</th><th>admin</th><th>tags</th></tr>",
    );
    for m in s["members"].as_array().into_iter().flatten() {
        let hc = &m["health"];
        let mark = |v: &Value| match v.as_str() {
            Some("up") => "<td class=\"s-up\">up</td>".to_string(),
            Some("down") => "<td class=\"s-standby\">down</td>".to_string(),
            _ => "<td>unknown</td>".to_string(),
        };
        let mut tags = Vec::new();
        if m["leader"].as_bool() == Some(true) {
            tags.push("leader".to_string());
        }
        if m["sync_standby"].as_bool() == Some(true) {
            tags.push("sync".to_string());
        }
        if m["noloadbalance"].as_bool() == Some(true) {
            tags.push("noloadbalance".to_string());
        }
        if m["weight"].as_u64().is_some_and(|w| w != 1) {
            tags.push(format!("weight={}", m["weight"]));
        }
        let _ = write!(
            h,
            "<tr><td><b>{name}</b></td><td>{role}</td><td>{state}</td><td>{addr}</td><td>{api}</td><td class=\"num\">{lag}</td>\
             {p}{r}<td class=\"reason\">{last}</td><td class=\"num\">{age}</td><td class=\"num\">{lat}</td><td>{admin}</td><td>{tags}</td></tr>",
            name = text(&m["name"]),
            role = text(&m["role"]),
            state = text(&m["state"]),
            addr = text(&m["addr"]),
            api = text(&m["api"]),
            lag = if m["lag"].is_null() { "-".into() } else { bytes(&m["lag"]) },
            p = mark(&hc["primary"]),
            r = mark(&hc["replica"]),
            last = text(&hc["last_result"]),
            age = age(&hc["last_check_age_s"]),
            lat = hc["latency_ms"].as_f64().map_or("-".into(), |ms| format!("{ms:.1} ms")),
            admin = text(&m["admin"]),
            tags = esc(&tags.join(", ")),
        );
    }
    h.push_str("</table>");
    if let Some(proxies) = s["proxies"].as_object().filter(|p| !p.is_empty()) {
        h.push_str("<h2>Registered proxies</h2><table><tr><th>proxy</th><th>routing writes to</th><th>stats</th></tr>");
        for (name, v) in proxies {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                text(&v["routing_leader"]),
                text(&v["api"])
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_every_server_and_escapes() {
        let s = json!({
            "proxy": {"name": "px<1>", "scope": "demo", "leader": "node1", "routing_leader": "node1"},
            "listeners": [{"name": "primary", "role": "primary", "bind": "127.0.0.1:5000", "readiness": "open",
                "refused": {}, "servers": [
                    {"name": "node1", "state": "up", "bytes_in": 2048, "since_s": 75.0},
                    {"name": "node2", "state": "standby"}]}],
            "members": [{"name": "node1", "leader": true, "health": {"primary": "up"}, "lag": null},
                        {"name": "node2", "health": {"replica": "up"}, "lag": 4096}],
            "proxies": {"px2": {"routing_leader": "node1"}}
        });
        let page = render(&s, 2);
        assert!(page.contains("px&lt;1&gt;"));
        assert!(page.contains("class=\"s-up\">up<"));
        assert!(page.contains("2.0 kB"));
        assert!(page.contains("1m15s"));
        assert!(page.contains("<b>node2</b>"));
        assert!(page.contains("4.0 kB"));
        assert!(page.contains("content=\"2\""));
        assert!(page.contains("px2"));
    }

    #[test]
    fn auto_listener_shows_its_replicas_and_routing() {
        let s = json!({
            "proxy": {"name": "px1"},
            "listeners": [{"name": "auto", "role": "auto", "readiness": "open", "refused": {},
                "servers": [{"name": "node1", "state": "up"}],
                "replicas": {"readiness": "open", "servers": [{"name": "node2", "state": "lag"}]},
                "routing": {"primary": {"write": 3}, "replica": {"read_only": 7}}}],
            "members": []
        });
        let page = render(&s, 2);
        assert!(page.contains("replica rotation: open"));
        assert!(page.contains("class=\"s-lag\">lag<"));
        assert!(page.contains("<td>replica</td><td>read_only</td><td class=\"num\">7</td>"));
        assert!(page.contains("<td>primary</td><td>write</td><td class=\"num\">3</td>"));
    }

    #[test]
    fn pooled_listener_shows_its_pools() {
        let s = json!({
            "proxy": {"name": "px1"},
            "listeners": [{"name": "pooled", "role": "primary", "readiness": "open", "refused": {},
                "servers": [{"name": "node1", "state": "up"}],
                "pool": {"mode": "transaction", "pool_size": 4, "max_client_conn": 100, "clients": 12,
                    "pools": [{"member": "node1", "user": "app", "database": "db", "pool_size": 4,
                        "servers_open": 4, "servers_idle": 1, "servers_active": 3, "clients_active": 3,
                        "clients_waiting": 9, "checkouts": 4, "server_connects": 4,
                        "wait_us_total": 10000, "wait_us_max": 7000}]}}],
            "members": []
        });
        let page = render(&s, 2);
        assert!(page.contains("pool_mode transaction"), "{page}");
        assert!(page.contains("clients 12 (max_client_conn 100)"));
        assert!(page.contains("<td><b>node1</b></td><td>app</td><td>db</td><td class=\"num\">3</td><td class=\"num\">9</td>"));
        // 10 ms waited over 4 checkouts.
        assert!(page.contains("<td class=\"num\">2.5 ms</td><td class=\"num\">7.0 ms</td>"));
    }
}
