//! What every device's metrics are made of: event counters, and a way to count a guest's
//! misbehaviour without letting it flood the host's log.

use std::fmt::{Arguments, Display};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use log::{debug, warn};

/// A monotonically increasing event counter. Clones count into the same count, so a device's
/// core can count into the device's metrics.
#[derive(Debug, Default, Clone)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        // Relaxed: each counter is a statistic on its own; nothing is ordered by it.
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// How many problems of one kind are logged as warnings before the rest go to debug level.
pub const LOUD_REPORTS: u64 = 5;

/// Counts a problem and logs it: the first few of each kind as warnings, the rest at debug level,
/// so a hostile or broken guest cannot flood the log (the counter says how many there were).
pub fn report(counter: &Counter, label: impl Display, message: Arguments<'_>) {
    let seen = counter.get();
    if seen < LOUD_REPORTS {
        if seen + 1 == LOUD_REPORTS {
            warn!("{label}: {message} (further ones of this kind are logged at debug level)");
        } else {
            warn!("{label}: {message}");
        }
    } else {
        debug!("{label}: {message}");
    }
    counter.inc();
}
