//! What the rx and tx queues share: how much one run may do, how long a chain may be, why a
//! chain is refused, and the used-buffer interrupt.
//!
//! Every chain goes back on the used ring, sent, filled or refused, so a driver is never left
//! waiting on a buffer the device will not use. Only a failure of a queue itself (an available
//! index the ring cannot hold, a ring outside guest RAM) marks the device as needing a reset.

use std::fmt;

use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use ballast_virtio::VirtioInterrupt;

use super::header::HeaderError;
use super::metrics::{report, NetMetrics};
use super::QUEUE_SIZE;

/// The most tx chains, and rx frames (or refused rx chains), handled per wake-up. A guest that
/// keeps a queue busy, or a host that floods the TAP, would otherwise keep the event loop
/// (which also serves the API, the balloon and the VM's shutdown) to itself; past this the
/// device kicks itself and lets the loop serve the others first.
pub(super) const RUN_BUDGET: usize = QUEUE_SIZE as usize;

/// The most descriptors in one chain, indirect ones included. Linux uses at most 19 (a
/// header and the 17 fragments of an skb, or a big-packet rx buffer); this bounds the work
/// one chain can cause.
pub(super) const MAX_DESCRIPTORS: usize = QUEUE_SIZE as usize;

/// Where a part of a buffer is in guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Segment {
    pub addr: GuestAddress,
    pub len: usize,
}

/// Why a chain was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChainError {
    /// The available ring names a descriptor the table does not have.
    NoSuchDescriptor {
        head: u16,
        size: u16,
    },
    /// A write-only descriptor in a tx chain, or a read-only one in an rx chain.
    WrongDirection,
    /// A buffer that is not all in guest RAM.
    OutsideRam {
        addr: u64,
        len: usize,
    },
    TooManyDescriptors,
    /// A tx chain with less than a header and an Ethernet header, or an rx chain with no
    /// room for the header.
    TooShort(usize),
    /// A tx chain longer than the header and the longest frame.
    TooLong,
    Header(HeaderError),
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainError::NoSuchDescriptor { head, size } => write!(
                f,
                "the available ring names descriptor {head}, the queue has {size}"
            ),
            ChainError::WrongDirection => {
                write!(
                    f,
                    "a descriptor goes the wrong way (device-writable or not)"
                )
            }
            ChainError::OutsideRam { addr, len } => {
                write!(f, "a {len}-byte buffer at {addr:#x} is not in guest RAM")
            }
            ChainError::TooManyDescriptors => {
                write!(f, "more than {MAX_DESCRIPTORS} descriptors")
            }
            ChainError::TooShort(len) => write!(f, "only {len} bytes"),
            ChainError::TooLong => write!(f, "longer than {} bytes", super::MAX_PACKET_LEN),
            ChainError::Header(e) => write!(f, "its header asks for {e}"),
        }
    }
}

/// Raises the used-buffer interrupt, counting it or its failure.
pub(super) fn signal(interrupt: &VirtioInterrupt, metrics: &NetMetrics, label: &str) {
    match interrupt.signal_used_queue() {
        Ok(()) => metrics.interrupts.inc(),
        Err(e) => report(
            &metrics.interrupt_errors,
            label,
            format_args!("cannot raise the used-buffer interrupt: {e}"),
        ),
    }
}

/// A run stopped at its budget: counts it and kicks the queue's own eventfd, so the device
/// comes back to it once the event loop has served the others.
pub(super) fn come_back(event: &EventFd, metrics: &NetMetrics, label: &str) {
    metrics.budget_exhausted.inc();
    if let Err(e) = event.write(1) {
        report(
            &metrics.event_errors,
            label,
            format_args!("cannot re-kick a queue to finish its work: {e}"),
        );
    }
}
