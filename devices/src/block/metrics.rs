//! Counters of what the block device did and what it refused. Shared as an `Arc` so the API and
//! tests can read them without taking the device's lock.

pub use ballast_virtio::metrics::Counter;

/// Block device counters.
#[derive(Debug, Default)]
pub struct BlockMetrics {
    /// Bytes read from the image into guest memory by successful reads.
    pub read_bytes: Counter,
    /// Bytes written from guest memory to the image by successful writes.
    pub write_bytes: Counter,
    /// Successful VIRTIO_BLK_T_IN requests.
    pub read_count: Counter,
    /// Successful VIRTIO_BLK_T_OUT requests.
    pub write_count: Counter,
    /// Successful VIRTIO_BLK_T_FLUSH requests (each one an `fdatasync` of the image).
    pub flush_count: Counter,
    /// Successful VIRTIO_BLK_T_GET_ID requests.
    pub get_id_count: Counter,
    /// Requests refused as malformed or out of bounds (answered VIRTIO_BLK_S_IOERR when the
    /// chain has a status byte to answer in): a bad header, data descriptors of the wrong
    /// direction, a missing or read-only status descriptor, a range past the end of the disk, a
    /// length that is not whole sectors, a buffer outside guest memory, a write to a read-only
    /// disk, an available ring entry naming no descriptor.
    pub invalid_requests: Counter,
    /// Requests that failed on the host: the image could not be read, written or synced
    /// (answered VIRTIO_BLK_S_IOERR).
    pub io_errors: Counter,
    /// Requests of a type the device does not implement (answered VIRTIO_BLK_S_UNSUPP).
    pub unsupported: Counter,
    /// Queue failures that left the device needing a reset.
    pub queue_errors: Counter,
    /// Used-buffer interrupts raised.
    pub interrupts: Counter,
    /// Interrupts that could not be raised.
    pub interrupt_errors: Counter,
    /// Event loop failures: an eventfd that could not be read or (un)registered.
    pub event_errors: Counter,
}

/// A plain copy of the counters at one moment, for the API and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockMetricsSnapshot {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_count: u64,
    pub write_count: u64,
    pub flush_count: u64,
    pub get_id_count: u64,
    pub invalid_requests: u64,
    pub io_errors: u64,
    pub unsupported: u64,
    pub queue_errors: u64,
    pub interrupts: u64,
    pub interrupt_errors: u64,
    pub event_errors: u64,
}

impl BlockMetrics {
    pub fn snapshot(&self) -> BlockMetricsSnapshot {
        BlockMetricsSnapshot {
            read_bytes: self.read_bytes.get(),
            write_bytes: self.write_bytes.get(),
            read_count: self.read_count.get(),
            write_count: self.write_count.get(),
            flush_count: self.flush_count.get(),
            get_id_count: self.get_id_count.get(),
            invalid_requests: self.invalid_requests.get(),
            io_errors: self.io_errors.get(),
            unsupported: self.unsupported.get(),
            queue_errors: self.queue_errors.get(),
            interrupts: self.interrupts.get(),
            interrupt_errors: self.interrupt_errors.get(),
            event_errors: self.event_errors.get(),
        }
    }
}

pub(super) use ballast_virtio::metrics::report;
