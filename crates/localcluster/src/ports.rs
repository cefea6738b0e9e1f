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

/// Asks the kernel for `n` distinct free ports on 127.0.0.1, never one this process handed
/// out before (nor, with a lane, one another lane may take). They are released before use,
/// so an unrelated process could take one in between; tests allocate just before starting.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let lane = lane();
    let mut guard = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let handed_out = guard.get_or_insert_with(HashSet::new);
    // Listeners stay open until the end, so the kernel offers a different port each time.
    let mut probes = Vec::new();
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        if probes.len() > 10_000 {
            return Err(std::io::Error::other("no free loopback port left"));
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        probes.push(listener);
        if lane.is_some_and(|(i, n)| port % n != i) {
            continue;
        }
        if handed_out.insert(port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::free_ports;

    #[test]
    fn never_the_same_port_twice() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            for port in free_ports(3).unwrap() {
                assert!(seen.insert(port), "port {port} handed out twice");
            }
        }
    }
}
