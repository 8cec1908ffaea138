//! The driver-side test kit of every device's unit tests (the `test-utils` feature): guest memory
//! with a hole that outlives the test, the driver's side of a split virtqueue on virtio-queue's
//! mock ([`DriverQueue`]), a driver that activates a device with its queues and lays out buffers
//! in guest RAM ([`TestDriver`]), and a way to run the event loop until something happens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber};
use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::{
    ActivateError, Activation, GuestMemoryMmap, QueueEvent, VirtioDevice, VirtioInterrupt,
};

pub const MIB: u64 = 1 << 20;
/// Test guest RAM is `[0, 8 MiB)` and `[12 MiB, end)`: the 4 MiB hole stands in for the MMIO gap.
pub const TEST_RAM0_END: u64 = 8 * MIB;
pub const TEST_HOLE_END: u64 = 12 * MIB;
/// The driver's queues live at the bottom of guest RAM, one every 64 KiB.
pub const QUEUE_STRIDE: u64 = 0x1_0000;
/// Driver buffers start at 1 MiB, above the queues.
pub const BUFFERS_START: u64 = MIB;

/// Test guest RAM up to `end` (above the hole), leaked so the mock queues can borrow it.
pub fn test_guest_memory(end: u64) -> &'static GuestMemoryMmap {
    leaked_guest_memory(&[(0, TEST_RAM0_END), (TEST_HOLE_END, end - TEST_HOLE_END)])
}

/// Guest memory made of `ranges` (start, length), leaked so that it lives as long as the test
/// process: the mock queues borrow it.
pub fn leaked_guest_memory(ranges: &[(u64, u64)]) -> &'static GuestMemoryMmap {
    let ranges: Vec<(GuestAddress, usize)> = ranges
        .iter()
        .map(|&(start, len)| (GuestAddress(start), len as usize))
        .collect();
    Box::leak(Box::new(GuestMemoryMmap::from_ranges(&ranges).unwrap()))
}

/// An interrupt as a transport would hand it to a device, its irqfd a plain eventfd.
pub fn test_interrupt() -> Arc<VirtioInterrupt> {
    Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()))
}

/// The driver's side of one split virtqueue: its rings at a fixed address in guest memory, the
/// descriptors it makes available and the used elements the device gives back.
pub struct DriverQueue {
    mem: &'static GuestMemoryMmap,
    mock: MockSplitQueue<'static, GuestMemoryMmap>,
    /// Where the used ring is (see `new`).
    used_addr: GuestAddress,
    size: u16,
    next_desc: u16,
    used_seen: u16,
    /// The driver's notification eventfd (a clone of the one the device got).
    pub kick: EventFd,
}

impl DriverQueue {
    /// A queue of `size` entries with its rings from `base`, and what the transport would hand
    /// the device for it.
    pub fn new(mem: &'static GuestMemoryMmap, base: u64, size: u16) -> (Self, QueueEvent) {
        let mock = MockSplitQueue::create(mem, GuestAddress(base), size);
        let mut queue: Queue = mock.create_queue().unwrap();
        // virtio-queue 0.18's mock puts the used ring `size` bytes after the available ring's
        // entries rather than `2 * size` + 2 (its `end()` counts elements as bytes), so the two
        // overlap once more than half the ring is in use: the used ring goes where the spec
        // puts it instead, and this side reads it there.
        let used = used_ring_addr(mock.avail_addr(), size);
        queue.set_used_ring_address(Some(used.0 as u32), Some((used.0 >> 32) as u32));
        let event = EventFd::new(EFD_NONBLOCK).unwrap();
        let kick = event.try_clone().unwrap();
        let driver = DriverQueue {
            mem,
            mock,
            used_addr: used,
            size,
            next_desc: 0,
            used_seen: 0,
            kick,
        };
        (driver, QueueEvent { queue, event })
    }

    /// Makes a chain of `(addr, len, flags)` descriptors available (the descriptor table is used
    /// round-robin); returns its head index.
    pub fn add_chain(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let index = (head + i as u16) % self.size;
            let last = i + 1 == descs.len();
            let (flags, next) = if last {
                (flags, 0)
            } else {
                (flags | VRING_DESC_F_NEXT as u16, (index + 1) % self.size)
            };
            self.mock
                .desc_table()
                .store(
                    index,
                    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next)),
                )
                .unwrap();
        }
        self.next_desc = (head + descs.len() as u16) % self.size;
        self.push_avail_head(head);
        head
    }

    /// Puts `head` on the available ring as is, valid or not.
    pub fn push_avail_head(&self, head: u16) {
        let avail = self.mock.avail_addr();
        let idx: u16 = self.mem.read_obj(avail.unchecked_add(2)).unwrap();
        let slot = avail.unchecked_add(4 + 2 * u64::from(idx % self.size));
        self.mem.write_obj(head, slot).unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1), avail.unchecked_add(2))
            .unwrap();
    }

    /// Overwrites the available index, as a hostile driver could.
    pub fn set_avail_idx(&self, idx: u16) {
        self.mem
            .write_obj(idx, self.mock.avail_addr().unchecked_add(2))
            .unwrap();
    }

    /// `used_event` (EVENT_IDX): the used index after which the driver wants an interrupt.
    pub fn set_used_event(&self, idx: u16) {
        let addr = self
            .mock
            .avail_addr()
            .unchecked_add(4 + 2 * u64::from(self.size));
        self.mem.write_obj(idx, addr).unwrap();
    }

    /// `avail_event` (EVENT_IDX): the available index at which the device wants a kick.
    pub fn avail_event(&self) -> u16 {
        let addr = self.used_addr.unchecked_add(4 + 8 * u64::from(self.size));
        self.mem.read_obj(addr).unwrap()
    }

    /// The used ring's flags (VRING_USED_F_NO_NOTIFY).
    pub fn used_flags(&self) -> u16 {
        self.mem.read_obj(self.used_addr).unwrap()
    }

    /// How many chains the device has given back (the used index).
    pub fn used_count(&self) -> u16 {
        self.mem.read_obj(self.used_addr.unchecked_add(2)).unwrap()
    }

    /// The `i`th used element: (head index, length).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let elem = self
            .used_addr
            .unchecked_add(4 + 8 * u64::from(i % self.size));
        let id: u32 = self.mem.read_obj(elem).unwrap();
        let len: u32 = self.mem.read_obj(elem.unchecked_add(4)).unwrap();
        (id, len)
    }

    /// The used elements added since the last call: (head index, length).
    pub fn take_used(&mut self) -> Vec<(u16, u32)> {
        let idx = self.used_count();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let (head, len) = self.used(self.used_seen);
            out.push((head as u16, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

/// Where the spec puts a split queue's used ring: after the available ring's flags, index,
/// `size` entries and `used_event`, aligned to 4 bytes.
fn used_ring_addr(avail: GuestAddress, size: u16) -> GuestAddress {
    GuestAddress((avail.0 + 6 + 2 * u64::from(size)).next_multiple_of(4))
}

/// The driver's side of an activated device: guest memory, the queues it set up, the interrupt
/// the device raises, and its buffers in guest RAM.
pub struct TestDriver {
    pub mem: &'static GuestMemoryMmap,
    pub interrupt: Arc<VirtioInterrupt>,
    pub queues: Vec<DriverQueue>,
    next_buffer: u64,
    buffers_end: u64,
    /// Buffers wrap round to the start instead of running out (for tests that keep few
    /// buffers outstanding but make many).
    wrap: bool,
}

impl TestDriver {
    /// Acks `acked` (all offered features if `None`), sets up `queues` queues of `size` at the
    /// bottom of `mem`, and activates `device` with them. Buffers go from 1 MiB to
    /// `buffers_end`.
    pub fn activate(
        device: &mut dyn VirtioDevice,
        mem: &'static GuestMemoryMmap,
        acked: Option<u64>,
        queues: usize,
        size: u16,
        buffers_end: u64,
    ) -> Result<Self, ActivateError> {
        device.set_acked_features(acked.unwrap_or(device.avail_features()));
        let (queues, events): (Vec<_>, Vec<_>) = (0..queues)
            .map(|i| DriverQueue::new(mem, i as u64 * QUEUE_STRIDE, size))
            .unzip();
        let interrupt = test_interrupt();
        device.activate(Activation::new(mem.clone(), interrupt.clone(), events))?;
        Ok(TestDriver {
            mem,
            interrupt,
            queues,
            next_buffer: BUFFERS_START,
            buffers_end,
            wrap: false,
        })
    }

    /// Buffers wrap round instead of running out.
    pub fn wrapping(mut self) -> Self {
        self.wrap = true;
        self
    }

    /// Room for `len` bytes in guest RAM (16-byte aligned); its address.
    pub fn alloc(&mut self, len: usize) -> u64 {
        if self.wrap && self.next_buffer + len as u64 > self.buffers_end {
            self.next_buffer = BUFFERS_START;
        }
        let addr = self.next_buffer;
        self.next_buffer = (addr + len.max(1) as u64).next_multiple_of(16);
        assert!(
            self.next_buffer <= self.buffers_end,
            "test driver out of buffer space"
        );
        addr
    }

    /// Copies `bytes` into a fresh buffer in guest RAM; its address.
    pub fn buffer_with(&mut self, bytes: &[u8]) -> u64 {
        let addr = self.alloc(bytes.len());
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
        addr
    }

    /// A fresh buffer of `len` bytes filled with `fill`; its address.
    pub fn buffer(&mut self, len: usize, fill: u8) -> u64 {
        self.buffer_with(&vec![fill; len])
    }
}

/// Runs the event loop until `done` holds (true) or `deadline` has passed (false).
pub fn run_until<T: MutEventSubscriber>(
    manager: &mut EventManager<T>,
    deadline: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        manager.run_with_timeout(50).unwrap();
        if done() {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;

    use super::*;

    #[test]
    fn a_full_ring_of_used_chains_reads_back() {
        // The whole ring in flight: the used ring must not overlap the available ring.
        let mem = leaked_guest_memory(&[(0, 0x10_0000)]);
        let (mut driver, mut device) = DriverQueue::new(mem, 0, 256);
        device.queue.set_event_idx(true);
        driver.set_used_event(300);
        let heads: Vec<u16> = (0..256u64)
            .map(|i| driver.add_chain(&[(0x8_0000 + i, 1, VRING_DESC_F_WRITE as u16)]))
            .collect();
        for &head in &heads {
            let chain = device.queue.pop_descriptor_chain(mem).unwrap();
            assert_eq!(chain.head_index(), head);
            device
                .queue
                .add_used(mem, head, u32::from(head) + 1)
                .unwrap();
        }
        let used = driver.take_used();
        assert_eq!(used.len(), 256);
        assert!(used
            .iter()
            .zip(&heads)
            .all(|(&(h, len), &want)| h == want && len == u32::from(want) + 1));
        assert!(device.queue.enable_notification(mem).is_ok());
        assert_eq!(driver.avail_event(), 256);
    }

    #[test]
    fn chains_wrap_around_the_descriptor_table_and_the_available_ring() {
        let mem = leaked_guest_memory(&[(0, 0x10_0000)]);
        let (mut driver, mut device) = DriverQueue::new(mem, 0, 4);
        device.queue.set_event_idx(false);
        let mut heads = Vec::new();
        for round in 0..3u64 {
            heads.push(driver.add_chain(&[(0x8_0000 + round, 1, 0), (0x9_0000, 1, 0)]));
            let chain = device.queue.pop_descriptor_chain(mem).unwrap();
            assert_eq!(chain.head_index(), *heads.last().unwrap());
            let addrs: Vec<u64> = chain.map(|d| d.addr().raw_value()).collect();
            assert_eq!(addrs, [0x8_0000 + round, 0x9_0000]);
        }
        assert_eq!(heads, [0, 2, 0]);
    }
}
