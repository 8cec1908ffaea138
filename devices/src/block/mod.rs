//! The virtio-blk device (virtio 1.2, section 5.2), backed by a raw disk image on the host.
//!
//! One request queue of 256 entries. The device offers VIRTIO_F_VERSION_1, EVENT_IDX,
//! INDIRECT_DESC, FLUSH (a guest flush is an `fdatasync` of the image), SEG_MAX (254: a chain is
//! at most the queue size), SIZE_MAX (1 MiB per buffer), BLK_SIZE (512) and, for a read-only
//! disk, RO. Requests: IN, OUT, FLUSH, GET_ID; anything else is answered VIRTIO_BLK_S_UNSUPP.
//!
//! Everything in a chain is the guest's to get wrong: a malformed chain or header, a buffer of
//! the wrong direction or outside guest memory, a request past the end of the disk or not in
//! whole sectors, a write to a read-only disk — each is answered VIRTIO_BLK_S_IOERR (when the
//! chain has a status byte to answer in), counted and logged (the first few of a kind as
//! warnings), and the device goes on. Nothing outside the image is ever read or written.
//!
//! | file | job |
//! | --- | --- |
//! | `device.rs` | the device: features, config space, activation, reset |
//! | `config.rs` | the `--disk PATH[,readonly=on]` option and its parser |
//! | `request.rs` | turning a descriptor chain into a validated request |
//! | `queue.rs` | the queue on the event loop: taking chains within a budget, handing requests to the I/O thread, completing them |
//! | `worker.rs` | the disk's I/O thread: carrying requests out, answering them |
//! | `io.rs` | the image file: opening, locking, reading and writing guest memory |
//! | `event_handler.rs` | event-manager wiring: activation and queue kicks |
//! | `metrics.rs` | counters of what the device did and what it refused |

mod config;
mod device;
mod event_handler;
mod io;
mod metrics;
mod queue;
mod request;
mod worker;

#[cfg(test)]
mod tests;

pub use config::{BlockConfig, BlockConfigError};
pub use device::{Block, BlockError};
pub use metrics::{BlockMetrics, BlockMetricsSnapshot, Counter};
pub use worker::WorkerSetup;

/// The unit of capacity and of every read and write.
pub const SECTOR_SIZE: u64 = 512;
/// The size of the one request queue.
pub const QUEUE_SIZE: u16 = 256;
/// The most data buffers in one request: the queue size less the header and the status.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// The largest data buffer one descriptor may carry. With SEG_MAX this bounds a request to
/// 254 MiB (carried out on the disk's I/O thread, not the event loop).
pub const SIZE_MAX: u32 = 1 << 20;
/// The length of the device ID that GET_ID returns.
pub const VIRTIO_BLK_ID_BYTES: usize = 20;
