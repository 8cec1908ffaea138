//! Test helpers: guest memory with a hole, the driver's side of the balloon's queues (on
//! virtio-queue's mock), and host residency of guest pages.

use std::sync::Arc;

use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use ballast_virtio::{ActivateError, GuestMemoryMmap, QueueEvent, VirtioDevice, VirtioInterrupt};

use super::queues::{negotiated_queues, BalloonQueue};
use super::{Balloon, BalloonConfig, GUEST_PAGE_SIZE, QUEUE_SIZE};

pub const MIB: u64 = 1 << 20;
pub const PAGE: u64 = GUEST_PAGE_SIZE;

/// Test guest RAM: `[0, 8 MiB)` and `[12 MiB, 20 MiB)`, with a 4 MiB hole standing in for the
/// MMIO gap. The queues live at the bottom, driver buffers from 1 MiB, and the guest pages the
/// tests balloon from 4 MiB up.
pub const RAM0_END: u64 = 8 * MIB;
pub const HOLE_END: u64 = 12 * MIB;
pub const RAM_END: u64 = 20 * MIB;
pub const FIRST_TEST_PFN: u32 = (4 * MIB / PAGE) as u32;
pub const HOLE_FIRST_PFN: u32 = (RAM0_END / PAGE) as u32;
pub const HOLE_LAST_PFN: u32 = (HOLE_END / PAGE) as u32 - 1;
pub const RAM1_FIRST_PFN: u32 = (HOLE_END / PAGE) as u32;
pub const RAM_END_PFN: u32 = (RAM_END / PAGE) as u32;

const QUEUE_STRIDE: u64 = 0x1_0000;
const BUFFERS_START: u64 = MIB;
const BUFFERS_END: u64 = 4 * MIB;

/// Guest memory that lives as long as the test process: the mock queues borrow it.
pub fn guest_memory() -> &'static GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), RAM0_END as usize),
        (GuestAddress(HOLE_END), (RAM_END - HOLE_END) as usize),
    ])
    .unwrap();
    Box::leak(Box::new(mem))
}

pub fn pfn_addr(pfn: u32) -> u64 {
    u64::from(pfn) * PAGE
}

/// Writes `byte` over `pages` guest pages from `addr`, so the host backs them.
pub fn fill(mem: &GuestMemoryMmap, addr: u64, pages: u64, byte: u8) {
    let page = vec![byte; PAGE as usize];
    for i in 0..pages {
        mem.write_slice(&page, GuestAddress(addr + i * PAGE))
            .unwrap();
    }
}

/// Whether the host backs each of `pages` guest pages from `addr` (mincore on the mapping).
pub fn resident(mem: &GuestMemoryMmap, addr: u64, pages: u64) -> Vec<bool> {
    let host = mem.get_host_address(GuestAddress(addr)).unwrap();
    let mut status = vec![0u8; pages as usize];
    // SAFETY: the range is `pages` whole pages of one region's mapping (the callers stay inside
    // a region), and `status` has one byte per page for the kernel to fill.
    let ret = unsafe {
        libc::mincore(
            host.cast(),
            (pages * PAGE) as usize,
            status.as_mut_ptr().cast(),
        )
    };
    assert_eq!(ret, 0, "mincore: {}", std::io::Error::last_os_error());
    status.iter().map(|s| s & 1 != 0).collect()
}

pub fn all_resident(mem: &GuestMemoryMmap, addr: u64, pages: u64) -> bool {
    resident(mem, addr, pages).iter().all(|&r| r)
}

pub fn none_resident(mem: &GuestMemoryMmap, addr: u64, pages: u64) -> bool {
    resident(mem, addr, pages).iter().all(|&r| !r)
}

/// Whether every byte of `len` bytes at `addr` is `byte`.
pub fn reads_as(mem: &GuestMemoryMmap, addr: u64, len: u64, byte: u8) -> bool {
    let mut buf = vec![0u8; len as usize];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf.iter().all(|&b| b == byte)
}

pub fn encode_stats(stats: &[(u16, u64)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (tag, value) in stats {
        bytes.extend_from_slice(&tag.to_le_bytes());
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

pub fn encode_pfns(pfns: &[u32]) -> Vec<u8> {
    pfns.iter().flat_map(|pfn| pfn.to_le_bytes()).collect()
}

/// The driver's side of one queue.
pub struct DriverQueue {
    mem: &'static GuestMemoryMmap,
    mock: MockSplitQueue<'static, GuestMemoryMmap>,
    next_desc: u16,
    /// The driver's notification eventfd (a clone of the one the device got).
    pub kick: EventFd,
}

impl DriverQueue {
    fn new(mem: &'static GuestMemoryMmap, index: u64) -> (Self, QueueEvent) {
        let mock = MockSplitQueue::create(mem, GuestAddress(index * QUEUE_STRIDE), QUEUE_SIZE);
        let queue: Queue = mock.create_queue().unwrap();
        let event = EventFd::new(EFD_NONBLOCK).unwrap();
        let kick = event.try_clone().unwrap();
        let driver = DriverQueue {
            mem,
            mock,
            next_desc: 0,
            kick,
        };
        (driver, QueueEvent { queue, event })
    }

    /// Makes a chain of `(addr, len, flags)` descriptors available; returns its head index.
    pub fn add_chain(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        assert!(usize::from(head) + descs.len() <= usize::from(QUEUE_SIZE));
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let last = i + 1 == descs.len();
                let flags = if last {
                    flags
                } else {
                    flags | VRING_DESC_F_NEXT as u16
                };
                let next = if last { 0 } else { head + i as u16 + 1 };
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
            })
            .collect();
        self.mock.add_desc_chains(&raw, head).unwrap();
        self.next_desc += descs.len() as u16;
        head
    }

    /// Puts `head` on the available ring as is, valid or not.
    pub fn push_avail_head(&self, head: u16) {
        let avail = self.mock.avail_addr();
        let idx: u16 = self.mem.read_obj(avail.unchecked_add(2)).unwrap();
        let slot = avail.unchecked_add(4 + 2 * u64::from(idx % QUEUE_SIZE));
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

    /// How many chains the device has given back.
    pub fn used_count(&self) -> u16 {
        self.mock.used().idx().load()
    }

    /// The `i`th used element: (head index, length).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let elem = self
            .mock
            .used()
            .ring()
            .ref_at(usize::from(i))
            .unwrap()
            .load();
        (elem.id(), elem.len())
    }
}

/// The driver's side of an activated balloon.
pub struct Driver {
    pub mem: &'static GuestMemoryMmap,
    pub interrupt: Arc<VirtioInterrupt>,
    pub queues: Vec<DriverQueue>,
    roles: Vec<Option<BalloonQueue>>,
    next_buffer: u64,
}

impl Driver {
    /// Negotiates `acked` (all offered features if `None`), sets up the queues those features
    /// call for (plus `extra_queues`) at a distinct address each, and activates the balloon.
    pub fn activate(
        balloon: &mut Balloon,
        mem: &'static GuestMemoryMmap,
        acked: Option<u64>,
        extra_queues: usize,
    ) -> Result<Self, ActivateError> {
        let acked = acked.unwrap_or(balloon.avail_features());
        balloon.set_acked_features(acked);
        // The device keeps only what it offered; so does a real driver.
        let roles = negotiated_queues(acked & balloon.avail_features());
        let (queues, events): (Vec<_>, Vec<_>) = (0..roles.len() + extra_queues)
            .map(|i| DriverQueue::new(mem, i as u64))
            .unzip();
        let interrupt = Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        balloon.activate(mem.clone(), interrupt.clone(), events)?;
        Ok(Driver {
            mem,
            interrupt,
            queues,
            roles,
            next_buffer: BUFFERS_START,
        })
    }

    pub fn queue(&mut self, which: BalloonQueue) -> &mut DriverQueue {
        let index = self
            .roles
            .iter()
            .position(|&role| role == Some(which))
            .unwrap_or_else(|| panic!("no {which} queue was negotiated"));
        &mut self.queues[index]
    }

    /// Copies `bytes` into a fresh driver buffer in guest RAM; returns its address.
    pub fn buffer(&mut self, bytes: &[u8]) -> u64 {
        let addr = self.next_buffer;
        self.next_buffer = (addr + bytes.len() as u64).next_multiple_of(16);
        assert!(
            self.next_buffer <= BUFFERS_END,
            "test driver out of buffer space"
        );
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
        addr
    }

    /// Makes one PFN array available on `which` (inflate or deflate); returns the head index.
    pub fn send_pfns(&mut self, which: BalloonQueue, pfns: &[u32]) -> u16 {
        let addr = self.buffer(&encode_pfns(pfns));
        let len = (pfns.len() * 4) as u32;
        self.queue(which).add_chain(&[(addr, len, 0)])
    }
}

/// A balloon activated with every offered feature, and its driver.
pub fn activated(config: BalloonConfig) -> (Balloon, Driver) {
    let mut balloon = Balloon::new(config).unwrap();
    let driver = Driver::activate(&mut balloon, guest_memory(), None, 0).unwrap();
    (balloon, driver)
}

/// Whether guest RAM has `pfn`, by the test layout.
pub fn in_test_ram(pfn: u32) -> bool {
    pfn < HOLE_FIRST_PFN || (RAM1_FIRST_PFN..RAM_END_PFN).contains(&pfn)
}

#[test]
fn the_test_layout_has_its_hole() {
    let mem = guest_memory();
    assert_eq!(mem.num_regions(), 2);
    assert!(mem
        .find_region(GuestAddress(pfn_addr(HOLE_FIRST_PFN)))
        .is_none());
    assert!(mem
        .find_region(GuestAddress(pfn_addr(HOLE_LAST_PFN)))
        .is_none());
    assert!(mem
        .find_region(GuestAddress(pfn_addr(RAM1_FIRST_PFN)))
        .is_some());
    assert!(in_test_ram(RAM_END_PFN - 1) && !in_test_ram(RAM_END_PFN));
}
