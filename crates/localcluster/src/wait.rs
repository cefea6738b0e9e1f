//! Polling with a deadline: the only way tests wait for a condition.

use std::time::{Duration, Instant};

/// Polls `probe` every `every` until it returns `Some` or `timeout` passes. Blocks the calling
/// thread: async code calls it through `tokio::task::spawn_blocking`.
#[allow(
    clippy::disallowed_methods,
    reason = "synchronous harness: blocks the calling test or spawn_blocking thread, never a runtime worker"
)]
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}
