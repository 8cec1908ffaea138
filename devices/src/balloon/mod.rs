//! The virtio-balloon device (virtio 1.2, section 5.5), driven by the guest's `virtio_balloon`
//! driver over virtio-mmio.
//!
//! The driver gives guest pages to the balloon (inflate) and takes them back (deflate); the device
//! releases the host memory behind every page it is given, and remembers which guest pages the
//! balloon holds so that the memory manager can ask. Free page reporting releases the pages the
//! guest reports as free without moving them into the balloon. The statistics queue carries the
//! guest's memory statistics, refreshed on a timer.
//!
//! One wake-up of a queue handles at most 32 Ki guest pages (`queue.rs`, `PAGES_PER_RUN`); the
//! rest waits for the next run, which the queue asks for itself.
//!
//! | file | job |
//! | --- | --- |
//! | `device.rs` | the device: features, config space, activation, reset, the target |
//! | `config.rs` | the `--balloon` options and their parser |
//! | `queue.rs` | what each virtqueue's descriptors mean and how they are answered |
//! | `event_handler.rs` | event-manager wiring: activation, queue kicks, the statistics timer |
//! | `release.rs` | giving guest pages back to the host (`madvise`, hole punching) |
//! | `bitmap.rs` | the set of guest pages in the balloon |
//! | `stats.rs` | the statistics tags and their parser |
//! | `metrics.rs` | counters of what the device did and what it refused |
//! | `tests/` | the device against a driver on virtio-queue's mock queues (`util.rs`: the test kit) |

mod bitmap;
mod config;
mod device;
mod event_handler;
mod metrics;
mod queue;
mod release;
pub mod stats;

#[cfg(test)]
mod tests;

pub use bitmap::BalloonBitmap;
pub use config::{BalloonConfig, BalloonConfigError};
pub use device::{Balloon, BalloonError};
pub use metrics::{BalloonMetrics, BalloonMetricsSnapshot, Counter};
pub use release::{release_guest_range, release_pfns, ReleaseRangeError};
pub use stats::{BalloonStats, STAT_SIZE};

// virtio-bindings 0.2 carries no balloon header, so the balloon's own constants are spelled out
// here from the virtio spec (5.5.3, 5.5.6.3) and Linux's include/uapi/linux/virtio_balloon.h.

/// Feature: the driver must tell the host before it reuses a deflated page. Not offered: deflate
/// needs no host action, so the guest may reuse pages at once.
pub const VIRTIO_BALLOON_F_MUST_TELL_HOST: u32 = 0;
/// Feature: the statistics virtqueue exists.
pub const VIRTIO_BALLOON_F_STATS_VQ: u32 = 1;
/// Feature: the guest deflates the balloon when it runs out of memory.
pub const VIRTIO_BALLOON_F_DEFLATE_ON_OOM: u32 = 2;
/// Feature: free page hinting (the free_page_vq). Not offered, but it shifts the queue indices
/// after it if a driver ever acks it.
pub const VIRTIO_BALLOON_F_FREE_PAGE_HINT: u32 = 3;
/// Feature: the guest poisons free pages with `poison_val`. Not offered.
pub const VIRTIO_BALLOON_F_PAGE_POISON: u32 = 4;
/// Feature: free page reporting (the reporting_vq).
pub const VIRTIO_BALLOON_F_REPORTING: u32 = 5;

/// Balloon PFNs always count 4 KiB pages, whatever the guest's own page size.
pub const VIRTIO_BALLOON_PFN_SHIFT: u32 = 12;
/// The size of the page a balloon PFN names.
pub const GUEST_PAGE_SIZE: u64 = 1 << VIRTIO_BALLOON_PFN_SHIFT;
/// 4 KiB guest pages in one MiB.
pub const PAGES_PER_MIB: u32 = (1 << 20) >> VIRTIO_BALLOON_PFN_SHIFT;

/// The maximum size of every balloon queue.
pub const QUEUE_SIZE: u16 = 256;
/// The most PFNs one inflate or deflate buffer may carry: Linux's
/// `VIRTIO_BALLOON_ARRAY_PFNS_MAX`, the size of the array the driver sends from. A longer buffer
/// is refused, which bounds the work one descriptor can ask of the device to 1 MiB of guest RAM.
pub const MAX_PFNS_PER_DESCRIPTOR: usize = 256;
/// The most statistics one stats buffer may carry. The spec defines 16 tags today; the margin
/// leaves room for tags a newer guest may add (counted as unknown) without accepting a buffer
/// of arbitrary size.
pub const MAX_STATS_PER_DESCRIPTOR: usize = 64;
