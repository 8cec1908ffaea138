//! The virtio-vsock device (virtio 1.2, section 5.10) with a userspace backend that joins guest
//! stream sockets to host Unix sockets, following Firecracker's "hybrid" convention:
//!
//! - **Host to guest**: a host program connects to the Unix socket `--vsock-sock PATH`, writes
//!   `CONNECT <port>\n`, and once the guest's listener on `port` accepts, reads `OK <local>\n`
//!   (`local` is the host-side port the device picked for the connection). Every byte after that
//!   goes to and comes from the guest socket. If the guest refuses (nothing listens, or it does
//!   not answer within 2 s) the host program reads EOF instead of the `OK` line.
//! - **Guest to host**: a guest connection to CID 2 (the host), port P, reaches the Unix socket
//!   `PATH_P`, which a host program must be listening on; otherwise the guest gets a reset
//!   (`ECONNRESET`).
//! - **In-process**: the VMM's own agent client gets a connection without a socket file through
//!   [`Vsock::connect_local`] or a [`LocalConnector`]: one end of a `UnixStream::pair()` that
//!   behaves exactly like a host program that already wrote `CONNECT <port>\n` — it reads the
//!   `OK` line or EOF, then talks to the guest.
//!
//! The device offers VIRTIO_F_VERSION_1 and VIRTIO_RING_F_EVENT_IDX, and only stream sockets
//! (VIRTIO_VSOCK_F_SEQPACKET is not offered). Its three queues are rx (device to guest), tx (guest
//! to device) and event (the device posts no events; a driver reset drops every connection).
//!
//! Everything the guest sends is untrusted: a packet with a foreign source CID is dropped; one
//! for a CID other than the host, of an unknown type or op, for a connection that does not exist,
//! malformed, or over its credit gets a reset. Each is counted and logged (the first few of a
//! kind as warnings), never a panic. Memory the device holds for the guest is bounded: data from
//! the host is read only when the guest has a buffer and credit for it (the host program's writes
//! block meanwhile); data for the host is buffered up to the credit the device advertised per
//! connection and a global cap, past which the connection is reset; control replies are coalesced
//! per connection; stand-alone resets are capped, and the tx queue waits while they are. The
//! guest may hold at most 256 connections it opened (reset after 10 minutes without traffic),
//! and host programs leave the last connection slots to the VMM's own agent link. Every chain
//! taken off the rx or tx ring, usable or not, counts against the run's budget.
//!
//! | file | job |
//! | --- | --- |
//! | `device.rs` | the device: features, config space, activation, reset, the public API |
//! | `config.rs` | `--vsock-cid` and `--vsock-sock`, their errors, and binding the host socket |
//! | `packet.rs` | protocol constants, the packet header, parsing chains (with `virtio-vsock`) |
//! | `queue.rs` | the rx and tx queues: moving packets between the guest and the muxer |
//! | `muxer/` | the connection table (`mod.rs`), routing guest packets (`guest.rs`), the order of packets for the guest (`rx.rs`), host connections arriving (`accept.rs`), the epoll set (`epoll.rs`) |
//! | `host.rs` | the host side: the Unix listener, `CONNECT` lines, `PATH_P` connects, local pairs |
//! | `connection.rs` | one connection: states, credit both ways, shutdown, what it owes the guest |
//! | `event_handler.rs` | event-manager wiring: activation, queue kicks, host sockets, the timer |
//! | `metrics.rs` | counters of what the device did and what it refused |

mod config;
mod connection;
mod device;
mod event_handler;
mod host;
mod metrics;
mod muxer;
mod packet;
mod queue;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use config::{VsockConfig, VsockError};
pub use device::Vsock;
pub use host::LocalConnector;
pub use metrics::{Counter, VsockMetrics, VsockMetricsSnapshot};

/// The size of each of the three queues.
pub const QUEUE_SIZE: u16 = 256;
/// The CID of the host, where every guest connection ends up.
pub const HOST_CID: u64 = 2;
/// The lowest CID a guest may have (0, 1 and 2 are the hypervisor, loopback and the host).
pub const MIN_GUEST_CID: u64 = 3;
/// The largest payload of one packet, in either direction. A guest packet claiming more is
/// refused; the device never sends more.
pub const MAX_PKT_LEN: usize = 64 * 1024;

/// Bounds and timeouts of the backend. Tests shrink them; the device uses `Limits::default()`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// The receive buffer the device advertises for each connection (`buf_alloc`): how much
    /// guest data it holds for a host program that does not read. A guest sending past it is
    /// reset.
    pub conn_buf_alloc: u32,
    /// A credit update goes to the guest once the free space it knows of falls below this.
    pub credit_update_threshold: u32,
    /// All connections' buffered guest data together; past it the connection that brought the
    /// total over is reset.
    pub total_backlog: usize,
    /// Open connections (either side's); more are refused.
    pub max_connections: usize,
    /// Open connections the guest asked for; more are refused (answered RST), well below
    /// `max_connections` and the process's descriptor limit, so a guest cannot take the
    /// descriptors the API, the disks and the host's own connections need.
    pub max_guest_connections: usize,
    /// Of `max_connections`, the slots only in-process connections (the VMM's agent link) may
    /// take: host programs on the socket cannot crowd it out either.
    pub reserved_local: usize,
    /// A guest-initiated connection with no traffic either way for this long is reset.
    pub guest_idle_timeout: Duration,
    /// Host connections that have not yet sent their `CONNECT` line.
    pub max_handshakes: usize,
    /// Resets waiting for guest rx buffers before the device stops taking tx packets.
    pub max_queued_rst: usize,
    /// How long a host connection may take to send its `CONNECT` line.
    pub handshake_timeout: Duration,
    /// How long the guest may take to answer a host-initiated connection request.
    pub request_timeout: Duration,
    /// Tx chains, and rx buffers, the device takes off each ring per wake-up (good or bad)
    /// before it kicks itself and lets the event loop serve the others.
    pub chains_per_run: usize,
    /// How long a connection being shut down may take to finish (the peer's reset, or the host
    /// program reading what the guest sent) before it is reset.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            conn_buf_alloc: 256 * 1024,
            credit_update_threshold: 64 * 1024,
            total_backlog: 32 << 20,
            max_connections: 1024,
            max_guest_connections: 256,
            reserved_local: 16,
            guest_idle_timeout: Duration::from_secs(600),
            max_handshakes: 64,
            max_queued_rst: 256,
            handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(2),
            chains_per_run: queue::MAX_PER_RUN,
        }
    }
}
