//! Counters of what the vsock device did and what it refused. Shared as an `Arc` so the API and
//! tests can read them without taking the device's lock.

pub use ballast_virtio::metrics::Counter;

macro_rules! metrics {
    ($( $(#[doc = $doc:literal])* $name:ident, )*) => {
        /// vsock device counters.
        #[derive(Debug, Default)]
        pub struct VsockMetrics {
            $( $(#[doc = $doc])* pub $name: Counter, )*
        }

        /// A plain copy of the counters at one moment, for the API and for tests.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct VsockMetricsSnapshot {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl VsockMetrics {
            pub fn snapshot(&self) -> VsockMetricsSnapshot {
                VsockMetricsSnapshot { $( $name: self.$name.get(), )* }
            }
        }
    };
}

metrics! {
    /// Packets the guest sent (every tx chain, valid or not).
    tx_packets,
    /// Packets the device gave the guest.
    rx_packets,
    /// Payload bytes from the guest accepted for host streams.
    tx_bytes,
    /// Payload bytes from host streams given to the guest.
    rx_bytes,
    /// Connections a host program (or the VMM's in-process client) opened with `CONNECT`.
    host_connections,
    /// Connections the guest opened to a `PATH_P` socket.
    guest_connections,
    /// Connections that ended in an orderly way (a shutdown both sides finished, or an RST from
    /// the guest).
    closed,
    /// Connections the device reset: a host stream error, a timeout, the guest breaking the
    /// protocol or its credit, a backlog cap.
    resets,
    /// Connections dropped because the driver reset the device.
    dropped_by_reset,
    /// Host connections refused: a bad `CONNECT` line, too many waiting, the device not yet
    /// activated by the driver, or the guest refusing (RST) or not answering the request.
    host_refused,
    /// Guest connections refused because nothing could be reached at `PATH_P`.
    connect_failures,
    /// Timeouts: a `CONNECT` line, a guest answer or a shutdown that took too long.
    timeouts,
    /// Tx chains that could not be parsed: descriptors of the wrong direction or too short, a
    /// `len` beyond the descriptor or above 64 KiB, buffers outside guest memory.
    malformed_tx,
    /// Rx buffers the device could not use (read-only, too short, outside guest memory).
    bad_rx_buffers,
    /// Guest packets whose source CID is not the guest's (dropped).
    wrong_src_cid,
    /// Guest packets addressed to a CID other than the host's (answered RST).
    wrong_dst_cid,
    /// Guest packets of a socket type other than stream (answered RST).
    bad_type,
    /// Guest packets with an op the protocol does not define (answered RST).
    bad_op,
    /// Guest packets for a connection that does not exist (answered RST).
    unknown_connection,
    /// Guest packets that break the protocol on an existing connection (the connection is
    /// reset): data before the handshake or after a shutdown, a second REQUEST, a payload on a
    /// control packet.
    protocol_errors,
    /// Guest data beyond the credit the device advertised (the connection is reset).
    credit_overruns,
    /// Connections reset because all connections' buffered guest data hit the global cap.
    backlog_overflows,
    /// Guest connections refused because the connection table was full.
    too_many_connections,
    /// Resets for unknown connections dropped because the queue of them was full.
    rst_dropped,
    /// Times the tx queue waited because the guest was not taking the device's resets.
    tx_stalls,
    /// Host stream read or write failures (the connection is reset).
    host_io_errors,
    /// Queue failures that left the device needing a reset.
    queue_errors,
    /// Used-buffer interrupts raised.
    interrupts,
    /// Interrupts that could not be raised.
    interrupt_errors,
    /// Event loop failures: an fd that could not be read or (un)registered, a failed accept.
    event_errors,
}

pub(super) use ballast_virtio::metrics::report;
