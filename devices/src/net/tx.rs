//! The tx queue: each chain the guest makes available is one frame with its header in front.
//! The header is copied out and checked (so the guest cannot change it between the check and
//! the send); the frame itself goes to the TAP straight from guest memory, in one `writev`.
//! Every chain goes back on the used ring with a used length of 0 (the device writes nothing
//! into tx buffers), sent or refused.

use std::io;

use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestMemoryBackend};

use ballast_virtio::GuestMemoryMmap;

use super::device::ActiveQueues;
use super::header::{Direction, VnetHeader};
use super::metrics::{report, NetMetrics};
use super::queue::{come_back, signal, ChainError, MAX_DESCRIPTORS, RUN_BUDGET};
use super::tap::Tap;
use super::{Net, MAX_PACKET_LEN, MIN_FRAME_LEN, VNET_HDR_LEN};

/// The device's tx side between runs.
pub(super) struct TxState {
    /// The TAP could not take a frame (its queue was full): the chain waits on the available
    /// ring until the TAP is writable again.
    pub blocked: bool,
    iovs: IoVecs,
}

/// Scratch room for one frame's iovecs. Between runs it is empty: no pointer into guest
/// memory outlives the `writev` it was made for.
struct IoVecs(Vec<libc::iovec>);

// SAFETY: the vector only holds iovecs during one call on the thread that made them (it is
// cleared before `send` returns), so moving it to another thread moves no live pointer.
unsafe impl Send for IoVecs {}

impl TxState {
    pub fn new() -> Self {
        TxState {
            blocked: false,
            // The header, and at most two slices (a region boundary) per descriptor.
            iovs: IoVecs(Vec::with_capacity(1 + 2 * MAX_DESCRIPTORS)),
        }
    }

    /// The driver reset the device: what waited was the old queue's.
    pub fn forget_queue(&mut self) {
        self.blocked = false;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxRun {
    /// The queue is empty.
    Done,
    /// The budget ran out.
    MoreLeft,
    /// The TAP's queue is full; a chain waits for it.
    Blocked,
}

impl Net {
    /// Sends the frames the guest made available (up to the run budget). Runs on the event
    /// loop.
    pub(super) fn process_tx(&mut self) {
        if self.core.is_broken() || self.tx.blocked {
            return;
        }
        let acked = self.acked();
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut worker = TxWorker {
            tap: &self.tap,
            iovs: &mut self.tx.iovs.0,
            metrics: &self.metrics,
            label: &self.core.label,
            acked,
        };
        match worker.drain(active) {
            Ok(TxRun::Done) => {}
            Ok(TxRun::Blocked) => self.tx.blocked = true,
            Ok(TxRun::MoreLeft) => come_back(&active.tx.event, &self.metrics, &self.core.label),
            Err(e) => self
                .core
                .mark_broken(&format_args!("the tx queue failed: {e}")),
        }
    }
}

struct TxWorker<'a> {
    tap: &'a Tap,
    iovs: &'a mut Vec<libc::iovec>,
    metrics: &'a NetMetrics,
    label: &'a str,
    acked: u64,
}

enum Sent {
    /// Sent, or refused: either way the chain goes back.
    Done,
    /// The TAP's queue is full: the chain stays available.
    WouldBlock,
}

impl TxWorker<'_> {
    fn drain(&mut self, active: &mut ActiveQueues) -> Result<TxRun, virtio_queue::Error> {
        let mem = &active.mem;
        let queue = &mut active.tx.queue;
        let mut handled = 0usize;
        let mut used_any = false;
        let run = 'run: loop {
            // With EVENT_IDX this does nothing (the driver kicks only when the available index
            // passes `avail_event`); without it, it asks the driver not to kick while we work.
            queue.disable_notification(mem)?;
            loop {
                if handled >= RUN_BUDGET {
                    break 'run TxRun::MoreLeft;
                }
                let Some(chain) = queue.iter(mem)?.next() else {
                    break;
                };
                handled += 1;
                let head = chain.head_index();
                if head >= queue.size() {
                    // Nothing to read, and nothing the used ring may name.
                    self.refused(&ChainError::NoSuchDescriptor {
                        head,
                        size: queue.size(),
                    });
                    continue;
                }
                if let Sent::WouldBlock = self.send(mem, chain) {
                    queue.go_to_previous_position();
                    break 'run TxRun::Blocked;
                }
                queue.add_used(mem, head, 0)?;
                used_any = true;
            }
            // Re-enabling publishes `avail_event` (EVENT_IDX) or clears NO_NOTIFY; a chain that
            // arrived meanwhile would not be kicked, so look again.
            if !queue.enable_notification(mem)? {
                break TxRun::Done;
            }
        };
        if used_any && queue.needs_notification(mem)? {
            signal(&active.interrupt, self.metrics, self.label);
        }
        Ok(run)
    }

    fn refused(&self, why: &ChainError) {
        report(
            &self.metrics.tx_refused_chains,
            self.label,
            format_args!("tx chain refused: {why}"),
        );
    }

    /// Checks one chain and writes its frame to the TAP.
    fn send(&mut self, mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> Sent {
        let mut header = [0u8; VNET_HDR_LEN];
        let frame_len = match gather(mem, chain, &mut header, self.iovs) {
            Ok(len) => len,
            Err(why) => {
                self.iovs.clear();
                self.refused(&why);
                return Sent::Done;
            }
        };
        if let Err(e) = VnetHeader::parse(&header).check(self.acked, Direction::Tx, frame_len) {
            self.iovs.clear();
            self.refused(&ChainError::Header(e));
            return Sent::Done;
        }
        // The header goes from our copy, the frame from guest memory.
        self.iovs[0] = libc::iovec {
            iov_base: header.as_mut_ptr().cast(),
            iov_len: VNET_HDR_LEN,
        };
        // SAFETY: iovs[0] points at `header`, which lives until the end of this function; the
        // others at guest memory that `gather` found in `mem`'s regions, which `mem` keeps
        // mapped for as long as it is borrowed here. writev only reads through them.
        let result = unsafe { self.tap.writev(self.iovs) };
        self.iovs.clear();
        match result {
            Ok(_) => {
                self.metrics.tx_packets.inc();
                self.metrics.tx_bytes.add(frame_len as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Sent::WouldBlock,
            // EIO: the interface is down; EINVAL: the host kernel refused the header.
            Err(e) => report(
                &self.metrics.tx_dropped,
                self.label,
                format_args!("the TAP did not take a {frame_len}-byte frame: {e}"),
            ),
        }
        Sent::Done
    }
}

/// Reads the header of a tx chain into `header` and puts an iovec for every other byte of it
/// in `iovs`, after a slot left at index 0 for the header; returns the frame's length (the
/// header not counted).
fn gather(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    header: &mut [u8; VNET_HDR_LEN],
    iovs: &mut Vec<libc::iovec>,
) -> Result<usize, ChainError> {
    iovs.clear();
    iovs.push(libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    });
    let mut header_filled = 0usize;
    let mut total = 0usize;
    for (i, desc) in chain.enumerate() {
        if i >= MAX_DESCRIPTORS {
            return Err(ChainError::TooManyDescriptors);
        }
        if desc.is_write_only() {
            return Err(ChainError::WrongDirection);
        }
        let len = desc.len() as usize;
        total += len;
        if total > MAX_PACKET_LEN {
            return Err(ChainError::TooLong);
        }
        let outside = ChainError::OutsideRam {
            addr: desc.addr().raw_value(),
            len,
        };
        let mut addr = desc.addr();
        let mut rest = len;
        if header_filled < VNET_HDR_LEN && rest > 0 {
            let take = rest.min(VNET_HDR_LEN - header_filled);
            mem.read_slice(&mut header[header_filled..header_filled + take], addr)
                .map_err(|_| outside)?;
            header_filled += take;
            addr = addr.checked_add(take as u64).ok_or(outside)?;
            rest -= take;
        }
        if rest == 0 {
            continue;
        }
        for slice in GuestMemoryBackend::get_slices(mem, addr, rest) {
            let slice = slice.map_err(|_| outside)?;
            iovs.push(libc::iovec {
                iov_base: slice.ptr_guard().as_ptr().cast_mut().cast(),
                iov_len: slice.len(),
            });
        }
    }
    if total < VNET_HDR_LEN + MIN_FRAME_LEN {
        return Err(ChainError::TooShort(total));
    }
    Ok(total - VNET_HDR_LEN)
}
