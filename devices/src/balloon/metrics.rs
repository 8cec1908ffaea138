//! Counters of what the balloon did and what it refused. Shared as an `Arc` so the memory manager
//! and the API can read them without taking the device's lock.

pub use ballast_virtio::metrics::Counter;

/// Balloon device counters. PFN counts are in 4 KiB guest pages, after duplicates within one
/// descriptor were merged.
#[derive(Debug, Default)]
pub struct BalloonMetrics {
    /// Valid guest PFNs received on the inflate queue, whether or not already in the balloon.
    pub inflate_pfns: Counter,
    /// Of those, PFNs that were already in the balloon (inflating them again changes nothing).
    pub inflate_repeat_pfns: Counter,
    /// Valid guest PFNs received on the deflate queue.
    pub deflate_pfns: Counter,
    /// Of those, PFNs that were not in the balloon.
    pub deflate_absent_pfns: Counter,
    /// PFNs outside guest RAM (beyond its end or in the MMIO hole), skipped.
    pub invalid_pfns: Counter,
    /// Bytes of guest RAM released on the host for inflated pages.
    pub released_bytes: Counter,
    /// Bytes of guest RAM released on the host for free page reports.
    pub reported_bytes: Counter,
    /// Host release calls made (one per coalesced run of guest pages within one region).
    pub release_calls: Counter,
    /// Host release calls that failed (`madvise`, `fallocate` or `mmap`).
    pub madvise_errors: Counter,
    /// Descriptors skipped as malformed: wrong direction, bad length, unreadable, or a reported
    /// range that is not page aligned or not all guest RAM.
    pub invalid_descriptors: Counter,
    /// Statistics buffers parsed.
    pub stats_updates: Counter,
    /// Statistics with a tag the device does not know, skipped.
    pub stats_unknown_tags: Counter,
    /// Config-change interrupts raised for a new target.
    pub config_changes: Counter,
    /// Queue failures that left the device needing a reset.
    pub queue_errors: Counter,
    /// Interrupts that could not be raised.
    pub interrupt_errors: Counter,
    /// Event loop failures: an eventfd or timer that could not be read or (un)registered.
    pub event_errors: Counter,
}

/// A plain copy of the counters at one moment, for the API and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BalloonMetricsSnapshot {
    pub inflate_pfns: u64,
    pub inflate_repeat_pfns: u64,
    pub deflate_pfns: u64,
    pub deflate_absent_pfns: u64,
    pub invalid_pfns: u64,
    pub released_bytes: u64,
    pub reported_bytes: u64,
    pub release_calls: u64,
    pub madvise_errors: u64,
    pub invalid_descriptors: u64,
    pub stats_updates: u64,
    pub stats_unknown_tags: u64,
    pub config_changes: u64,
    pub queue_errors: u64,
    pub interrupt_errors: u64,
    pub event_errors: u64,
}

impl BalloonMetrics {
    pub fn snapshot(&self) -> BalloonMetricsSnapshot {
        BalloonMetricsSnapshot {
            inflate_pfns: self.inflate_pfns.get(),
            inflate_repeat_pfns: self.inflate_repeat_pfns.get(),
            deflate_pfns: self.deflate_pfns.get(),
            deflate_absent_pfns: self.deflate_absent_pfns.get(),
            invalid_pfns: self.invalid_pfns.get(),
            released_bytes: self.released_bytes.get(),
            reported_bytes: self.reported_bytes.get(),
            release_calls: self.release_calls.get(),
            madvise_errors: self.madvise_errors.get(),
            invalid_descriptors: self.invalid_descriptors.get(),
            stats_updates: self.stats_updates.get(),
            stats_unknown_tags: self.stats_unknown_tags.get(),
            config_changes: self.config_changes.get(),
            queue_errors: self.queue_errors.get(),
            interrupt_errors: self.interrupt_errors.get(),
            event_errors: self.event_errors.get(),
        }
    }
}
