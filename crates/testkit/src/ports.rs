//! Free loopback ports, so parallel tests never collide.

use std::net::TcpListener;

/// Asks the kernel for `n` distinct free ports on 127.0.0.1. They are released before use,
/// so another process could take one in between; tests allocate just before starting.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}
