//! Free loopback ports, so parallel tests never collide.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

/// Ports this process has handed out already. The kernel may offer a port again once the
/// probing socket is closed; two tests of one binary running in parallel would then start
/// servers on the same port (and one could pass its readiness check against the other's).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Asks the kernel for `n` distinct free ports on 127.0.0.1, never one this process handed
/// out before. They are released before use, so another process could take one in between;
/// tests allocate just before starting.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
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
