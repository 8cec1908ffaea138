//! The agent's part of the over-limit handler: file cache first ([`file`]), anonymous memory
//! second ([`anon`]), each in a pass over the big (≥ 50 pages) users before the small ones.

pub mod anon;
pub mod candidates;
pub mod fallback;
pub mod file;
pub mod writeback;

use std::time::{Duration, Instant};

/// A point in time a piece of work must not run past.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(budget: Duration) -> Deadline {
        let now = Instant::now();
        Deadline(now.checked_add(budget).unwrap_or(now))
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }

    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// The earlier of this deadline and one `budget` from now.
    pub fn within(&self, budget: Duration) -> Deadline {
        Deadline(self.0.min(Deadline::after(budget).0))
    }
}

/// Elapsed time since `start` in µs, for reports.
pub fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}
