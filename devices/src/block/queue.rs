//! Processing the request queue: take each available chain, validate it, carry it out, answer in
//! its status byte, give it back on the used ring, and interrupt the driver when it asked to be.
//!
//! Every chain goes back on the used ring, answered or not, so a driver is never left waiting on
//! a request the device refused. The used length is the number of bytes the device wrote to the
//! chain's buffers: the data of a successful read or GET_ID plus the status byte; just the
//! status byte for anything else; 0 if the chain has no usable status byte. Only a failure of
//! the queue itself (an available index the ring cannot hold, a used ring outside guest RAM)
//! marks the device as needing a reset.

use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};

use ballast_virtio::GuestMemoryMmap;

use super::device::ActiveQueue;
use super::io::{DiskImage, DiskIoError};
use super::metrics::{report, BlockMetrics, Counter};
use super::request::{
    byte_offset, parse, DiskLimits, Refusal, RefusalReason, Request, RequestType,
};
use super::{Block, QUEUE_SIZE, VIRTIO_BLK_ID_BYTES};

/// The most chains handled per wake-up. A driver that keeps the queue full would otherwise keep
/// the event loop (which also serves the API, the balloon and the VM's shutdown) to itself; past
/// this the device kicks itself and lets the loop serve the others first.
pub(super) const MAX_CHAINS_PER_RUN: usize = 4 * QUEUE_SIZE as usize;

impl Block {
    /// Handles every request the driver made available (up to `MAX_CHAINS_PER_RUN`). Runs on the
    /// event loop.
    pub(crate) fn process_queue(&mut self) {
        if self.core.is_broken() {
            return;
        }
        let limits = self.limits();
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut worker = Worker {
            disk: &mut self.disk,
            metrics: &self.metrics,
            label: &self.core.label,
            limits,
        };
        let failure = match worker.drain(active) {
            Ok(Drained::All) => None,
            // Come back after the loop has served everyone else.
            Ok(Drained::MoreLeft) => active.queue.event.write(1).err().map(|e| {
                self.metrics.event_errors.inc();
                format!("cannot re-kick the queue to finish the rest of the requests: {e}")
            }),
            Err(e) => Some(format!("the request queue failed: {e}")),
        };
        if let Some(failure) = failure {
            self.core.mark_broken(&failure);
        }
    }
}

enum Drained {
    All,
    MoreLeft,
}

struct Worker<'a> {
    disk: &'a mut DiskImage,
    metrics: &'a BlockMetrics,
    label: &'a str,
    limits: DiskLimits,
}

impl Worker<'_> {
    fn drain(&mut self, active: &mut ActiveQueue) -> Result<Drained, virtio_queue::Error> {
        let ActiveQueue {
            mem,
            interrupt,
            queue,
            ..
        } = active;
        let queue = &mut queue.queue;
        let mem = &*mem;
        let mut handled = 0usize;
        let mut used_any = false;
        let outcome = loop {
            // With EVENT_IDX this does nothing (the driver kicks only when the available index
            // passes `avail_event`); without it, it asks the driver not to kick while we work.
            queue.disable_notification(mem)?;
            while let Some(chain) = queue.iter(mem)?.next() {
                let head = chain.head_index();
                if head >= queue.size() {
                    // No such descriptor: nothing to read, and nothing the used ring may name.
                    report(
                        &self.metrics.invalid_requests,
                        self.label,
                        format_args!(
                            "the available ring names descriptor {head}, the queue has {}; skipped",
                            queue.size()
                        ),
                    );
                    continue;
                }
                let len = self.handle(mem, chain);
                queue.add_used(mem, head, len)?;
                used_any = true;
                handled += 1;
                if handled >= MAX_CHAINS_PER_RUN {
                    break;
                }
            }
            if handled >= MAX_CHAINS_PER_RUN {
                break Drained::MoreLeft;
            }
            // Re-enabling publishes `avail_event` (EVENT_IDX) or clears NO_NOTIFY; a chain that
            // arrived meanwhile would not be kicked, so look again.
            if !queue.enable_notification(mem)? {
                break Drained::All;
            }
        };
        if used_any && queue.needs_notification(mem)? {
            match interrupt.signal_used_queue() {
                Ok(()) => self.metrics.interrupts.inc(),
                Err(e) => report(
                    &self.metrics.interrupt_errors,
                    self.label,
                    format_args!("cannot raise the used-buffer interrupt: {e}"),
                ),
            }
        }
        Ok(outcome)
    }

    /// Carries out one chain; returns the used length.
    fn handle(&mut self, mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> u32 {
        match parse(mem, chain, self.limits) {
            Ok(request) => {
                let (status, data_written) = self.execute(mem, &request);
                answer(mem, request.status, status, data_written)
            }
            Err(Refusal { status, reason }) => {
                let counter = match reason {
                    RefusalReason::Unsupported(_) => &self.metrics.unsupported,
                    RefusalReason::Invalid(_) => &self.metrics.invalid_requests,
                };
                let answered = if status.is_some() {
                    ""
                } else {
                    " (no status byte to answer in; given back unanswered)"
                };
                report(
                    counter,
                    self.label,
                    format_args!("request refused: {reason}{answered}"),
                );
                status.map_or(0, |addr| answer(mem, addr, reason.status(), 0))
            }
        }
    }

    /// Returns the status byte and how many data bytes were written to guest memory.
    fn execute(&mut self, mem: &GuestMemoryMmap, request: &Request) -> (u8, u32) {
        let offset = byte_offset(request.sector);
        let result = match request.kind {
            RequestType::In => self.disk.read_into(mem, offset, &request.data).map(|()| {
                self.metrics.read_count.inc();
                self.metrics.read_bytes.add(request.data_len);
                request.data_len
            }),
            RequestType::Out => self.disk.write_from(mem, offset, &request.data).map(|()| {
                self.metrics.write_count.inc();
                self.metrics.write_bytes.add(request.data_len);
                0
            }),
            RequestType::Flush => self.disk.flush().map(|()| {
                self.metrics.flush_count.inc();
                0
            }),
            RequestType::GetId => write_id(mem, self.disk.serial(), request)
                .inspect(|_| self.metrics.get_id_count.inc()),
        };
        match result {
            // At most SEG_MAX * SIZE_MAX bytes, which fits: the chain iterator refuses chains of
            // 4 GiB or more.
            Ok(written) => (
                VIRTIO_BLK_S_OK as u8,
                u32::try_from(written).unwrap_or(u32::MAX),
            ),
            Err(e) => {
                let (counter, what): (&Counter, _) = match e {
                    DiskIoError::Host(_) => (&self.metrics.io_errors, "failed on the host"),
                    DiskIoError::Guest(_) => (&self.metrics.invalid_requests, "was refused"),
                };
                report(
                    counter,
                    self.label,
                    format_args!(
                        "a {} of {} bytes at sector {} {what}: {e}",
                        request.kind, request.data_len, request.sector
                    ),
                );
                (VIRTIO_BLK_S_IOERR as u8, 0)
            }
        }
    }
}

/// Writes the device ID into the GET_ID buffers (as much of its 20 bytes as they hold).
fn write_id(
    mem: &GuestMemoryMmap,
    serial: &[u8; VIRTIO_BLK_ID_BYTES],
    request: &Request,
) -> Result<u64, DiskIoError> {
    let mut rest: &[u8] = serial;
    for segment in &request.data {
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(segment.len as usize);
        mem.write_slice(&rest[..n], segment.addr)
            .map_err(DiskIoError::Guest)?;
        rest = &rest[n..];
    }
    Ok((VIRTIO_BLK_ID_BYTES - rest.len()) as u64)
}

/// Writes the status byte; returns the used length (the data written plus the status byte, or
/// just the data if the status byte could not be written).
fn answer(mem: &GuestMemoryMmap, status_addr: GuestAddress, status: u8, data_written: u32) -> u32 {
    match mem.write_obj(status, status_addr) {
        Ok(()) => data_written.saturating_add(1),
        // Checked to be in guest memory when the chain was parsed; this cannot happen.
        Err(_) => data_written,
    }
}
