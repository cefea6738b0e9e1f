//! The agent's monotonic clock in engine units (milliseconds since start).

use pgherd_ha::Millis;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            base: Instant::now(),
        }
    }

    pub fn now(&self) -> Millis {
        self.base.elapsed().as_millis() as Millis
    }

    pub fn instant(&self, at: Millis) -> Instant {
        self.base + std::time::Duration::from_millis(at)
    }
}
