//! The rx queue: frames from the TAP into the guest's buffers.
//!
//! A frame (with the header the host kernel put in front of it) is read from the TAP into the
//! device's frame buffer, checked against the offloads the driver negotiated, and copied into
//! the guest's buffers. With MRG_RXBUF a frame spans as many buffers as it needs (the header's
//! `num_buffers` says how many); without it, it must fit the first one. Buffers the device has
//! taken from the available ring but not yet filled wait in a stash, so a frame bigger than
//! what the guest has posted so far waits with them for more, and no chain is ever put back
//! on the ring. A frame waits in the device (one at a time) only while the guest has no room
//! for it; the host's next frames wait in the TAP's queue meanwhile.
//!
//! The TAP is watched edge-triggered: `tap_readable` remembers that it may hold frames until a
//! read finds it empty.

use std::collections::VecDeque;
use std::io;

use virtio_bindings::virtio_net::{VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MRG_RXBUF};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryBackend};

use ballast_virtio::GuestMemoryMmap;

use super::device::ActiveQueues;
use super::header::{Direction, VnetHeader, NUM_BUFFERS_OFFSET};
use super::metrics::{report, NetMetrics};
use super::queue::{come_back, signal, ChainError, Segment, MAX_DESCRIPTORS, RUN_BUDGET};
use super::tap::Tap;
use super::{Net, MAX_PACKET_LEN, MIN_FRAME_LEN, QUEUE_SIZE, VNET_HDR_LEN};

/// A guest buffer taken from the available ring and not yet used.
struct RxChain {
    head: u16,
    /// Its room, counted up to `MAX_PACKET_LEN` (a frame never needs more).
    capacity: usize,
    segments: Vec<Segment>,
}

/// The device's rx side between runs.
pub(super) struct RxState {
    /// The TAP may hold frames: it said so, and no read has found it empty since.
    pub tap_readable: bool,
    /// One frame read from the TAP, header first; `frame_len` 0 when there is none.
    frame: Box<[u8]>,
    frame_len: usize,
    /// Buffers taken from the available ring, in ring order, and their total room.
    stash: VecDeque<RxChain>,
    stash_capacity: usize,
    /// Segment lists of used buffers, kept to be filled again without allocating.
    spare: Vec<Vec<Segment>>,
}

impl RxState {
    pub fn new() -> Self {
        RxState {
            // A spurious read costs one EAGAIN; a missed frame would wait for the next one.
            tap_readable: true,
            frame: vec![0u8; MAX_PACKET_LEN].into_boxed_slice(),
            frame_len: 0,
            stash: VecDeque::new(),
            stash_capacity: 0,
            spare: Vec::new(),
        }
    }

    /// The driver reset the device: its buffers are gone. Returns whether a frame waiting for
    /// them was lost.
    pub fn forget_queue(&mut self) -> bool {
        while let Some(chain) = self.stash.pop_front() {
            self.recycle(chain.segments);
        }
        self.stash_capacity = 0;
        std::mem::take(&mut self.frame_len) > 0
    }

    fn recycle(&mut self, mut segments: Vec<Segment>) {
        segments.clear();
        self.spare.push(segments);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RxRun {
    /// The TAP is empty.
    Done,
    /// The budget ran out.
    MoreLeft,
    /// A frame waits for the guest's buffers.
    Waiting,
}

/// What became of the waiting frame.
enum Delivery {
    Delivered,
    /// Not enough buffers yet.
    NoBuffers,
    /// It can never fit what the guest gives it; dropped.
    TooBig,
    /// The budget ran out while looking for buffers.
    Budget,
}

impl Net {
    /// Moves frames from the TAP into the guest's buffers (up to the run budget). Runs on the
    /// event loop, once the TAP's offloads follow the driver's features.
    pub(super) fn process_rx(&mut self) {
        if self.core.is_broken() {
            return;
        }
        let acked = self.acked();
        let Some(active) = self.active.as_mut().filter(|a| a.offloads_set) else {
            return;
        };
        let mut worker = RxWorker {
            tap: &self.tap,
            state: &mut self.rx,
            metrics: &self.metrics,
            label: &self.core.label,
            acked,
            work: 0,
            used_any: false,
        };
        match worker.drain(active) {
            Ok(RxRun::Done | RxRun::Waiting) => {}
            Ok(RxRun::MoreLeft) => come_back(&active.rx.event, &self.metrics, &self.core.label),
            Err(e) => self
                .core
                .mark_broken(&format_args!("the rx queue failed: {e}")),
        }
    }
}

struct RxWorker<'a> {
    tap: &'a Tap,
    state: &'a mut RxState,
    metrics: &'a NetMetrics,
    label: &'a str,
    acked: u64,
    /// Frames handled and chains refused in this run.
    work: usize,
    used_any: bool,
}

impl RxWorker<'_> {
    fn drain(&mut self, active: &mut ActiveQueues) -> Result<RxRun, virtio_queue::Error> {
        let mem = &active.mem;
        let queue = &mut active.rx.queue;
        // Kicks are wanted only when the guest's buffers ran out (see below).
        queue.disable_notification(mem)?;
        let run = loop {
            if self.work >= RUN_BUDGET {
                break RxRun::MoreLeft;
            }
            if self.state.frame_len == 0 && !self.read_frame() {
                break RxRun::Done;
            }
            match self.deliver(mem, queue)? {
                Delivery::Delivered => {
                    self.metrics.rx_packets.inc();
                    self.metrics
                        .rx_bytes
                        .add((self.state.frame_len - VNET_HDR_LEN) as u64);
                    self.state.frame_len = 0;
                    self.work += 1;
                }
                Delivery::TooBig => {
                    report(
                        &self.metrics.rx_dropped,
                        self.label,
                        format_args!(
                            "a {}-byte frame does not fit the guest's rx buffers; dropped",
                            self.state.frame_len - VNET_HDR_LEN
                        ),
                    );
                    self.state.frame_len = 0;
                    self.work += 1;
                }
                Delivery::Budget => break RxRun::MoreLeft,
                Delivery::NoBuffers => {
                    // Ask for a kick when buffers come (EVENT_IDX publishes the index to kick
                    // at), and look once more in case they just did.
                    if queue.enable_notification(mem)? {
                        queue.disable_notification(mem)?;
                        continue;
                    }
                    self.metrics.rx_waits_for_buffers.inc();
                    break RxRun::Waiting;
                }
            }
        };
        if self.used_any && queue.needs_notification(mem)? {
            signal(&active.interrupt, self.metrics, self.label);
        }
        Ok(run)
    }

    /// Reads the TAP's next frame into the frame buffer; false when there is none to deliver.
    fn read_frame(&mut self) -> bool {
        while self.state.tap_readable && self.work < RUN_BUDGET {
            let n = match self.tap.read(&mut self.state.frame) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.state.tap_readable = false;
                    return false;
                }
                Err(e) => {
                    report(
                        &self.metrics.tap_errors,
                        self.label,
                        format_args!("cannot read from the TAP: {e}"),
                    );
                    // A frame that could not be copied is gone and the next may be fine; any
                    // other failure (a TAP whose interface was deleted) another read would not
                    // mend: wait for the TAP to say it has frames again.
                    if !matches!(e.raw_os_error(), Some(libc::EFAULT | libc::EINVAL)) {
                        self.state.tap_readable = false;
                    }
                    self.work += 1;
                    continue;
                }
            };
            match self.check_frame(n) {
                Ok(()) => {
                    self.state.frame_len = n;
                    return true;
                }
                Err(why) => {
                    self.work += 1;
                    report(
                        &self.metrics.rx_dropped,
                        self.label,
                        format_args!("a frame from the TAP was dropped: {why}"),
                    );
                }
            }
        }
        false
    }

    /// Checks a frame of `n` bytes (header included) against what the driver negotiated.
    /// Without GUEST_CSUM the guest must see no checksum flags at all (virtio 1.2, 5.1.6.3.1),
    /// so DATA_VALID is cleared rather than refused.
    fn check_frame(&mut self, n: usize) -> Result<(), String> {
        if n < VNET_HDR_LEN + MIN_FRAME_LEN {
            return Err(format!("only {n} bytes"));
        }
        let bytes: &mut [u8; VNET_HDR_LEN] = (&mut self.state.frame[..VNET_HDR_LEN])
            .try_into()
            .expect("the frame buffer holds a header");
        let mut header = VnetHeader::parse(bytes);
        if self.acked & (1 << VIRTIO_NET_F_GUEST_CSUM) == 0 {
            header.flags = 0;
            bytes[0] = 0;
        }
        header
            .check(self.acked, Direction::Rx, n - VNET_HDR_LEN)
            .map_err(|e| format!("its header has {e}"))
    }

    // Long on purpose: finding buffers, counting them into the header, filling them and giving
    // them back are one step of the used ring's order; split, that order would be harder to see.
    fn deliver(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<Delivery, virtio_queue::Error> {
        let len = self.state.frame_len;
        let merge = self.acked & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0;
        // Enough buffers: with merging, room for the whole frame; without, one buffer.
        loop {
            let enough = match merge {
                true => self.state.stash_capacity >= len,
                false => !self.state.stash.is_empty(),
            };
            if enough {
                break;
            }
            if self.state.stash.len() >= usize::from(QUEUE_SIZE) {
                return Ok(Delivery::TooBig);
            }
            if self.work >= RUN_BUDGET {
                return Ok(Delivery::Budget);
            }
            let Some(chain) = queue.iter(mem)?.next() else {
                return Ok(Delivery::NoBuffers);
            };
            if let Err((head, why)) = self.take(mem, chain, queue.size()) {
                self.work += 1;
                report(
                    &self.metrics.rx_refused_chains,
                    self.label,
                    format_args!("rx chain refused: {why}"),
                );
                // Before the frame's own buffers, so those stay together on the used ring.
                if let Some(head) = head {
                    queue.add_used(mem, head, 0)?;
                    self.used_any = true;
                }
            }
        }
        let count = match merge {
            true => self.buffers_for(len),
            false if self.state.stash[0].capacity < len => return Ok(Delivery::TooBig),
            false => 1,
        };
        // Without MRG_RXBUF, num_buffers is 1 all the same (virtio 1.2, 5.1.6.3.1).
        self.state.frame[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2]
            .copy_from_slice(&(count as u16).to_le_bytes());
        let mut offset = 0;
        for _ in 0..count {
            let chain = self.state.stash.pop_front().expect("counted above");
            self.state.stash_capacity -= chain.capacity;
            let written = self.fill(mem, &chain.segments, offset, len);
            offset += written;
            queue.add_used(mem, chain.head, written as u32)?;
            self.state.recycle(chain.segments);
        }
        self.used_any = true;
        Ok(Delivery::Delivered)
    }

    /// How many stashed buffers, from the front, a frame of `len` bytes fills.
    fn buffers_for(&self, len: usize) -> usize {
        let mut room = 0;
        for (i, chain) in self.state.stash.iter().enumerate() {
            room += chain.capacity;
            if room >= len {
                return i + 1;
            }
        }
        self.state.stash.len()
    }

    /// Copies the frame's bytes from `offset` (up to `len`) into one buffer's segments;
    /// returns how many it took.
    fn fill(
        &self,
        mem: &GuestMemoryMmap,
        segments: &[Segment],
        offset: usize,
        len: usize,
    ) -> usize {
        let mut at = offset;
        for segment in segments {
            if at == len {
                break;
            }
            let n = segment.len.min(len - at);
            // The segment was checked to be in guest RAM when the buffer was taken, and guest
            // RAM does not move: this cannot fail. `write_slice` marks the pages dirty for the
            // memory manager.
            if mem
                .write_slice(&self.state.frame[at..at + n], segment.addr)
                .is_err()
            {
                break;
            }
            at += n;
        }
        at - offset
    }

    /// Checks an rx chain and stashes it. A refused chain's head is returned when it may go
    /// on the used ring (when the ring named a real descriptor).
    fn take(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
        size: u16,
    ) -> Result<(), (Option<u16>, ChainError)> {
        let head = chain.head_index();
        if head >= size {
            return Err((None, ChainError::NoSuchDescriptor { head, size }));
        }
        let mut segments = self.state.spare.pop().unwrap_or_default();
        match parse_rx(mem, chain, &mut segments) {
            Ok(capacity) => {
                self.state.stash_capacity += capacity;
                self.state.stash.push_back(RxChain {
                    head,
                    capacity,
                    segments,
                });
                Ok(())
            }
            Err(why) => {
                self.state.recycle(segments);
                Err((Some(head), why))
            }
        }
    }
}

/// The writable segments of an rx chain, up to `MAX_PACKET_LEN` of room; returns the room.
fn parse_rx(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    segments: &mut Vec<Segment>,
) -> Result<usize, ChainError> {
    let mut capacity = 0usize;
    for (i, desc) in chain.enumerate() {
        if i >= MAX_DESCRIPTORS {
            return Err(ChainError::TooManyDescriptors);
        }
        if !desc.is_write_only() {
            return Err(ChainError::WrongDirection);
        }
        let len = desc.len() as usize;
        if len == 0 {
            continue;
        }
        if !GuestMemoryBackend::check_range(mem, desc.addr(), len) {
            return Err(ChainError::OutsideRam {
                addr: desc.addr().0,
                len,
            });
        }
        let usable = len.min(MAX_PACKET_LEN - capacity);
        if usable > 0 {
            segments.push(Segment {
                addr: desc.addr(),
                len: usable,
            });
            capacity += usable;
        }
    }
    if capacity < VNET_HDR_LEN {
        return Err(ChainError::TooShort(capacity));
    }
    Ok(capacity)
}
