//! The guest's rx buffers the device has taken from the available ring and not yet used, in
//! ring order: checked once when taken (device-writable, in guest RAM, room for a header), then
//! filled by copying a frame in, or by the TAP's `readv` straight into them.

use std::collections::VecDeque;

use virtio_queue::DescriptorChain;
use vm_memory::bitmap::{Bitmap, BitmapSlice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use ballast_virtio::GuestMemoryMmap;

use super::queue::{ChainError, MAX_DESCRIPTORS};
use super::{MAX_PACKET_LEN, VNET_HDR_LEN};

/// Where a part of a buffer is, in guest memory and in the VMM's mapping of it.
#[derive(Clone, Copy, Debug)]
struct Segment {
    addr: GuestAddress,
    /// The host address guest RAM is mapped at there (see `RxBuffers::iovecs`).
    host: usize,
    len: usize,
}

/// A buffer taken from the available ring and not yet used.
struct RxChain {
    head: u16,
    /// Its room, counted up to `MAX_PACKET_LEN` (a frame never needs more).
    capacity: usize,
    segments: Vec<Segment>,
}

/// The stash of buffers, and their total room.
#[derive(Default)]
pub(super) struct RxBuffers {
    chains: VecDeque<RxChain>,
    capacity: usize,
    /// Segment lists of used buffers, kept to be filled again without allocating.
    spare: Vec<Vec<Segment>>,
}

// SAFETY: the host addresses in `Segment`s point into guest RAM, which stays mapped for as long
// as the device is active (guest RAM is never unmapped or moved while the VM runs; the balloon
// only discards pages, the mapping stays). The stash is emptied when the driver resets the
// device, before the activation's memory goes, and is only used on the event loop.
unsafe impl Send for RxBuffers {}

impl RxBuffers {
    pub fn len(&self) -> usize {
        self.chains.len()
    }

    /// The room in all the buffers.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The room in the first buffer (0 without one).
    pub fn front_capacity(&self) -> usize {
        self.chains.front().map_or(0, |c| c.capacity)
    }

    /// Forgets every buffer (the driver reset the device).
    pub fn clear(&mut self) {
        while let Some(chain) = self.chains.pop_front() {
            self.recycle(chain.segments);
        }
        self.capacity = 0;
    }

    fn recycle(&mut self, mut segments: Vec<Segment>) {
        segments.clear();
        self.spare.push(segments);
    }

    /// Checks an rx chain and stashes it. A refused chain's head is returned when it may go
    /// on the used ring (when the ring named a real descriptor).
    pub fn take(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
        size: u16,
    ) -> Result<(), (Option<u16>, ChainError)> {
        let head = chain.head_index();
        if head >= size {
            return Err((None, ChainError::NoSuchDescriptor { head, size }));
        }
        let mut segments = self.spare.pop().unwrap_or_default();
        match parse(mem, chain, &mut segments) {
            Ok(capacity) => {
                self.capacity += capacity;
                self.chains.push_back(RxChain {
                    head,
                    capacity,
                    segments,
                });
                Ok(())
            }
            Err(why) => {
                self.recycle(segments);
                Err((Some(head), why))
            }
        }
    }

    /// How many buffers, from the front, `len` bytes fill.
    pub fn buffers_for(&self, len: usize) -> usize {
        let mut room = 0;
        for (i, chain) in self.chains.iter().enumerate() {
            room += chain.capacity;
            if room >= len {
                return i + 1;
            }
        }
        self.chains.len()
    }

    /// The segments of the buffers, in order, as iovecs for `readv`, up to `max` bytes.
    pub fn iovecs(&self, max: usize, iovs: &mut Vec<libc::iovec>) {
        iovs.clear();
        let mut room = 0;
        for segment in self.chains.iter().flat_map(|c| &c.segments) {
            if room >= max {
                break;
            }
            let len = segment.len.min(max - room);
            iovs.push(libc::iovec {
                iov_base: segment.host as *mut libc::c_void,
                iov_len: len,
            });
            room += len;
        }
    }

    /// Tells the memory manager that the first `len` bytes of the buffers were written
    /// (by the TAP's `readv`, which vm-memory does not see).
    pub fn mark_written(&self, mem: &GuestMemoryMmap, len: usize) {
        self.each_part(0, len, |addr, _, n| {
            for slice in GuestMemoryBackend::get_slices(mem, addr, n).flatten() {
                slice.bitmap().mark_dirty(0, slice.len());
            }
        });
    }

    /// Copies `bytes` into the buffers from byte `offset` of the first one on.
    pub fn write_at(&self, mem: &GuestMemoryMmap, offset: usize, bytes: &[u8]) {
        // The segments were checked to be in guest RAM when taken, and guest RAM does not
        // move: these writes cannot fail. `write_slice` marks the pages dirty for the memory
        // manager.
        self.each_part(offset, bytes.len(), |addr, at, n| {
            let _ = mem.write_slice(&bytes[at..at + n], addr);
        });
    }

    /// Copies bytes of the buffers, from byte `offset` of the first one on, into `out`.
    pub fn read_at(&self, mem: &GuestMemoryMmap, offset: usize, out: &mut [u8]) {
        let len = out.len();
        self.each_part(offset, len, |addr, at, n| {
            let _ = mem.read_slice(&mut out[at..at + n], addr);
        });
    }

    /// Calls `f(address, position in the range, length)` for each piece of the buffers'
    /// bytes `offset..offset + len`.
    fn each_part(&self, offset: usize, len: usize, mut f: impl FnMut(GuestAddress, usize, usize)) {
        let (mut skip, mut done) = (offset, 0);
        for segment in self.chains.iter().flat_map(|c| &c.segments) {
            if done == len {
                break;
            }
            if skip >= segment.len {
                skip -= segment.len;
                continue;
            }
            let n = (segment.len - skip).min(len - done);
            f(GuestAddress(segment.addr.0 + skip as u64), done, n);
            done += n;
            skip = 0;
        }
    }

    /// Gives back the buffers a frame of `len` bytes (header included) filled: each one's
    /// head and used length, in order.
    pub fn take_filled(&mut self, len: usize, mut used: impl FnMut(u16, u32)) {
        let mut left = len;
        for _ in 0..self.buffers_for(len) {
            let chain = self.chains.pop_front().expect("counted above");
            let n = chain.capacity.min(left);
            left -= n;
            self.capacity -= chain.capacity;
            used(chain.head, n as u32);
            self.recycle(chain.segments);
        }
    }
}

/// The writable segments of an rx chain, up to `MAX_PACKET_LEN` of room; returns the room.
fn parse(
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
        let usable = len.min(MAX_PACKET_LEN - capacity);
        if usable == 0 {
            continue;
        }
        let outside = ChainError::OutsideRam {
            addr: desc.addr().0,
            len,
        };
        // One piece of host memory per segment (a buffer across two regions is cut in two).
        let mut at = desc.addr();
        let mut left = usable;
        for slice in GuestMemoryBackend::get_slices(mem, desc.addr(), usable) {
            let slice = slice.map_err(|_| outside)?;
            segments.push(Segment {
                addr: at,
                host: slice.ptr_guard_mut().as_ptr() as usize,
                len: slice.len(),
            });
            at = GuestAddress(at.0 + slice.len() as u64);
            left -= slice.len();
        }
        if left != 0 || !GuestMemoryBackend::check_range(mem, desc.addr(), len) {
            return Err(outside);
        }
        capacity += usable;
    }
    if capacity < VNET_HDR_LEN {
        return Err(ChainError::TooShort(capacity));
    }
    Ok(capacity)
}
