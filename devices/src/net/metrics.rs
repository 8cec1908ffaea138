//! Counters of what a network device did and what it refused. Shared as an `Arc` so the API
//! and tests can read them without taking the device's lock.

pub use ballast_virtio::metrics::Counter;

macro_rules! metrics {
    ($( $(#[doc = $doc:literal])* $name:ident, )*) => {
        /// Network device counters.
        #[derive(Debug, Default)]
        pub struct NetMetrics {
            $( $(#[doc = $doc])* pub $name: Counter, )*
        }

        /// A plain copy of the counters at one moment, for the API (each field a metric of
        /// its name) and for tests.
        #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
        pub struct NetMetricsSnapshot {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl NetMetrics {
            pub fn snapshot(&self) -> NetMetricsSnapshot {
                NetMetricsSnapshot { $( $name: self.$name.get(), )* }
            }
        }
    };
}

metrics! {
    /// Frames given to the guest.
    rx_packets,
    /// Bytes of those frames (Ethernet header and payload; the virtio header not counted).
    rx_bytes,
    /// Frames sent from the guest to the TAP.
    tx_packets,
    /// Bytes of those frames.
    tx_bytes,
    /// Frames from the TAP the guest could not be given: bigger than all the buffers the
    /// device may hold for one frame, with an offload the driver did not negotiate, or read
    /// just before a driver reset.
    rx_dropped,
    /// Guest frames the host kernel refused (the TAP is down, or a header it would not take).
    tx_dropped,
    /// Rx chains given back empty: a read-only descriptor, a buffer outside guest RAM, too
    /// many descriptors, room for less than the header, an available ring entry naming no
    /// descriptor.
    rx_refused_chains,
    /// Tx chains given back unsent: a write-only descriptor, a buffer outside guest RAM, too
    /// many descriptors, a frame too short or too long, a header asking for an offload that
    /// was not negotiated, an available ring entry naming no descriptor.
    tx_refused_chains,
    /// Times a frame waited because the guest had no rx buffers for it.
    rx_waits_for_buffers,
    /// Runs that stopped at their budget with work left (the device came back to it after
    /// the event loop served the others).
    budget_exhausted,
    /// TAP reads and writes that failed for a reason other than an empty or full queue.
    tap_errors,
    /// Queue failures that left the device needing a reset.
    queue_errors,
    /// Used-buffer interrupts raised.
    interrupts,
    /// Interrupts that could not be raised.
    interrupt_errors,
    /// Event loop failures: an eventfd that could not be read or (un)registered.
    event_errors,
}

pub(super) use ballast_virtio::metrics::report;
