//! The agent's part of the over-limit handler: file cache first ([`file`]), anonymous memory
//! second ([`anon`]), each in a pass over the big (≥ 50 pages) users before the small ones.

pub mod anon;
pub mod candidates;
pub mod fallback;
pub mod file;
pub mod writeback;

use std::time::{Duration, Instant};

/// A point in time a piece of work must not run past; optionally also an amount of the
/// calling thread's CPU time, so that work at a low priority on a busy guest gets its CPU's
/// worth before it stops, rather than a slice of wall time spent waiting for a CPU.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    wall: Instant,
    /// The thread's CPU clock reading at which the work stops.
    cpu: Option<Duration>,
}

impl Deadline {
    pub fn after(budget: Duration) -> Deadline {
        let now = Instant::now();
        Deadline {
            wall: now.checked_add(budget).unwrap_or(now),
            cpu: None,
        }
    }

    /// `budget` of this thread's CPU time, and at most `wall` of wall time whatever happens.
    /// Without a thread CPU clock it is a wall-time budget.
    pub fn cpu_after(budget: Duration, wall: Duration) -> Deadline {
        Deadline {
            cpu: thread_cpu_time().map(|now| now.saturating_add(budget)),
            ..Deadline::after(wall.max(budget))
        }
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.wall
            || self
                .cpu
                .is_some_and(|end| thread_cpu_time().is_none_or(|now| now >= end))
    }

    /// Wall time left.
    pub fn remaining(&self) -> Duration {
        self.wall.saturating_duration_since(Instant::now())
    }

    /// The earlier of this deadline and one `budget` from now.
    pub fn within(&self, budget: Duration) -> Deadline {
        Deadline {
            wall: self.wall.min(Deadline::after(budget).wall),
            cpu: self.cpu,
        }
    }
}

/// CPU time the calling thread has used.
pub fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives across the call.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ret == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Elapsed time since `start` in µs, for reports.
pub fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}
