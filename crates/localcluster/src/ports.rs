//! Free loopback ports, so parallel tests never collide.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

/// Ports this process has handed out already. The kernel may offer a port again once the
/// probing socket is closed; two tests of one binary running in parallel would then start
/// servers on the same port (and one could pass its readiness check against the other's).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// `PGHERD_TEST_PORT_LANE=i/n`: this process takes only ports `p` with `p % n == i`, so that
/// `n` test processes running side by side (dev/test's lanes) never hand out the same port.
fn lane() -> Option<(u16, u16)> {
    let spec = std::env::var("PGHERD_TEST_PORT_LANE").ok()?;
    let (i, n) = spec.split_once('/')?;
    let (i, n) = (i.trim().parse().ok()?, n.trim().parse().ok()?);
    (n > 0 && i < n).then_some((i, n))
}

/// The ports below the kernel's ephemeral range (`ip_local_port_range`), where no outgoing
/// connection takes a source port: a port probed free stays free until the test's server
/// binds it, unless another test takes it (this process never hands it out twice; lanes
/// split the rest). `None` when that range is too small (the kernel then picks).
fn quiet_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = text.split_whitespace().next()?.parse().ok()?;
    (low >= QUIET_LOW + 2_000).then_some((QUIET_LOW, low))
}

/// Lowest port handed out from the quiet range (above most services' fixed ports).
const QUIET_LOW: u16 = 10_000;

/// Hands out `n` distinct free ports on 127.0.0.1, never one this process handed out before
/// (nor, with a lane, one another lane may take). They are released before use; tests
/// allocate just before starting their servers.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let lane = lane();
    let mut guard = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let handed_out = guard.get_or_insert_with(HashSet::new);
    let usable = |port: u16, handed_out: &HashSet<u16>| {
        !handed_out.contains(&port) && lane.is_none_or(|(i, n)| port % n == i)
    };
    let mut ports = Vec::with_capacity(n);
    if let Some((low, high)) = quiet_range() {
        // Start where another process is unlikely to (its pid and the clock), then walk on.
        let span = u32::from(high - low);
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
        let mut held = Vec::new();
        for step in 0..span {
            if ports.len() == n {
                break;
            }
            let port = low + ((seed.wrapping_add(step.wrapping_mul(7_919))) % span) as u16;
            if !usable(port, handed_out) || ports.contains(&port) {
                continue;
            }
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
                held.push(listener);
                ports.push(port);
            }
        }
    }
    // Otherwise (or if the quiet range is full) the kernel picks. Listeners stay open until
    // the end, so it offers a different port each time.
    let mut probes = Vec::new();
    while ports.len() < n {
        if probes.len() > 10_000 {
            return Err(std::io::Error::other("no free loopback port left"));
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        probes.push(listener);
        if usable(port, handed_out) && !ports.contains(&port) {
            ports.push(port);
        }
    }
    handed_out.extend(ports.iter().copied());
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::{free_ports, quiet_range};

    #[test]
    fn never_the_same_port_twice() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            for port in free_ports(3).unwrap() {
                assert!(seen.insert(port), "port {port} handed out twice");
            }
        }
    }

    #[test]
    fn below_the_ephemeral_range_when_there_is_room() {
        let Some((low, high)) = quiet_range() else {
            return;
        };
        for port in free_ports(20).unwrap() {
            assert!(
                (low..high).contains(&port),
                "port {port} outside {low}..{high}"
            );
        }
    }
}
