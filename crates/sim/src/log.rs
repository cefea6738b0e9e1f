//! The event log: one line per fault, decision (with its reason), lock operation, PostgreSQL
//! transition and invariant verdict. Off during bulk runs (a failing seed is re-run with it
//! on: the run is deterministic and logging draws no random numbers).

use crate::Time;

#[derive(Debug, Default, Clone)]
pub struct Log {
    pub enabled: bool,
    pub lines: Vec<String>,
}

pub fn fmt_time(t: Time) -> String {
    format!("{}.{:03}s", t / 1000, t % 1000)
}

impl Log {
    pub fn push(&mut self, t: Time, step: u64, who: &str, msg: impl FnOnce() -> String) {
        if self.enabled {
            self.lines.push(format!(
                "{:>9} #{:<6} {:<6} {}",
                fmt_time(t),
                step,
                who,
                msg()
            ));
        }
    }

    /// The last `n` lines, joined.
    pub fn tail(&self, n: usize) -> String {
        let from = self.lines.len().saturating_sub(n);
        self.lines[from..].join("\n")
    }
}
