//! Counting and logging the guest accesses the transport ignores.
//!
//! Everything a guest writes is untrusted, and a hostile or buggy driver can hammer a register
//! in a loop. Each refusal is counted, but only the first `WARN_LIMIT` are logged at warn level
//! so that a guest cannot fill the host's logs; the rest go to debug.

use std::fmt;

use log::{debug, warn};

const WARN_LIMIT: u64 = 64;

#[derive(Debug)]
pub struct Refusals {
    device_type: u32,
    count: u64,
}

impl Refusals {
    pub fn new(device_type: u32) -> Self {
        Self {
            device_type,
            count: 0,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Counts and logs one ignored access.
    pub fn note(&mut self, what: fmt::Arguments<'_>) {
        self.count = self.count.saturating_add(1);
        let device = self.device_type;
        if self.count < WARN_LIMIT {
            warn!("virtio-mmio (device type {device}): {what}");
        } else if self.count == WARN_LIMIT {
            warn!("virtio-mmio (device type {device}): {what} (further refusals logged at debug level)");
        } else {
            debug!("virtio-mmio (device type {device}): {what}");
        }
    }
}

/// Notes a refused access on `$transport.refusals`, formatting like `format!`. A macro rather
/// than a method so that the message may borrow other fields of the transport.
macro_rules! refuse {
    ($transport:expr, $($arg:tt)+) => {
        $transport.refusals.note(format_args!($($arg)+))
    };
}
pub(super) use refuse;
