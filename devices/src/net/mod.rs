//! The virtio-net device (virtio 1.2, section 5.1), backed by an existing TAP interface of the
//! host (`--net tap=NAME[,mac=MAC]`).
//!
//! ballast opens the TAP through `/dev/net/tun` with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`; it
//! never creates or configures host interfaces (the user makes the TAP, with `ip tuntap add`,
//! and gives it an address or puts it in a bridge). Every frame crosses the TAP with the
//! 12-byte `virtio_net_hdr_v1` in front, so checksum and segmentation offloads pass straight
//! between the guest and the host kernel.
//!
//! Two queues of 256 entries, rx (device to guest) and tx (guest to device); no control queue.
//! The device offers VIRTIO_F_VERSION_1, MAC, CSUM and GUEST_CSUM, HOST_TSO4/6 and
//! GUEST_TSO4/6, MRG_RXBUF, EVENT_IDX and INDIRECT_DESC. The TAP's own offloads
//! (`TUNSETOFFLOAD`) follow what the driver acked, so the host kernel sends the guest only
//! what it can take.
//!
//! Everything in a chain is the guest's to get wrong: a tx chain with a write-only descriptor,
//! too short or too long a frame, a buffer outside guest RAM, too many descriptors, or a
//! header asking for an offload that was not negotiated is refused (given back unsent, and
//! counted); an rx chain with a read-only descriptor, outside guest RAM or too small for the
//! header is given back empty and counted. Both queues work in bounded runs (chains and frames
//! per wake-up), so a guest cannot hold the event loop; frames the host sends while the guest
//! has no buffers wait in the TAP's own queue (the host kernel drops past its length), never in
//! ballast's memory.
//!
//! | file | job |
//! | --- | --- |
//! | `device.rs` | the device: features, config space, activation, reset, what the API shows |
//! | `config.rs` | the `--net tap=NAME[,mac=MAC]` option, MAC addresses, the default MAC |
//! | `tap.rs` | the TAP: opening it through `/dev/net/tun`, offloads, reads and writes |
//! | `header.rs` | `virtio_net_hdr_v1`: parsing, and what a guest may ask of it |
//! | `queue.rs` | what both queues share: run budgets, chain limits, the interrupt |
//! | `tx.rs` | the tx queue: guest frames checked and written to the TAP from guest memory |
//! | `rx.rs` | the rx queue: TAP frames into the guest's buffers, merged buffers included |
//! | `event_handler.rs` | event-manager wiring: activation, queue kicks, the TAP |
//! | `metrics.rs` | counters of what the device did and what it refused |

mod config;
mod device;
mod event_handler;
mod header;
mod metrics;
mod queue;
mod rx;
mod tap;
mod tx;

#[cfg(test)]
mod tests;

pub use config::{MacAddr, NetConfig, NetConfigError};
pub use device::{Net, NetError, NetInfo};
pub use metrics::{Counter, NetMetrics, NetMetricsSnapshot};
pub use tap::Tap;

/// The size of each of the two queues.
pub const QUEUE_SIZE: u16 = 256;
/// `virtio_net_hdr_v1`: the header in front of every frame, both ways (with VERSION_1 it
/// always has `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;
/// The shortest frame: an Ethernet header.
pub const MIN_FRAME_LEN: usize = 14;
/// The longest frame: a 64 KiB IP packet (what TSO hands over at most), its Ethernet header
/// and a VLAN tag.
pub const MAX_FRAME_LEN: usize = 65535 + 14 + 4;
/// The longest thing that crosses the TAP: the header and the longest frame.
pub const MAX_PACKET_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;
