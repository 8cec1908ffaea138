//! Test helpers on the shared driver-side kit (`ballast_virtio::test_utils`): the balloon's
//! queues by role, PFN arrays, statistics buffers, and host residency of guest pages.

use std::ops::{Deref, DerefMut};

use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

pub use ballast_virtio::test_utils::{run_until, test_interrupt, DriverQueue};
use ballast_virtio::test_utils::{test_guest_memory, TestDriver, TEST_HOLE_END, TEST_RAM0_END};
use ballast_virtio::{ActivateError, GuestMemoryMmap, VirtioDevice};

use crate::balloon::queue::{negotiated_queues, BalloonQueue};
use crate::balloon::{Balloon, BalloonConfig, GUEST_PAGE_SIZE, QUEUE_SIZE};

pub const MIB: u64 = 1 << 20;
pub const PAGE: u64 = GUEST_PAGE_SIZE;

/// Test guest RAM: `[0, 8 MiB)` and `[12 MiB, 20 MiB)`, with a 4 MiB hole standing in for the
/// MMIO gap. The queues live at the bottom, driver buffers from 1 MiB, and the guest pages the
/// tests balloon from 4 MiB up.
pub const RAM0_END: u64 = TEST_RAM0_END;
pub const HOLE_END: u64 = TEST_HOLE_END;
pub const RAM_END: u64 = 20 * MIB;
pub const FIRST_TEST_PFN: u32 = (4 * MIB / PAGE) as u32;
pub const HOLE_FIRST_PFN: u32 = (RAM0_END / PAGE) as u32;
pub const HOLE_LAST_PFN: u32 = (HOLE_END / PAGE) as u32 - 1;
pub const RAM1_FIRST_PFN: u32 = (HOLE_END / PAGE) as u32;
pub const RAM_END_PFN: u32 = (RAM_END / PAGE) as u32;

/// Driver buffers end where the pages the tests balloon begin.
const BUFFERS_END: u64 = 4 * MIB;

/// Guest memory that lives as long as the test process: the mock queues borrow it.
pub fn guest_memory() -> &'static GuestMemoryMmap {
    test_guest_memory(RAM_END)
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

/// An indirect descriptor table of `(addr, len, flags)` entries, each chained to the next.
pub fn descriptor_table(descs: &[(u64, u32, u16)]) -> Vec<u8> {
    let mut table = Vec::new();
    for (i, &(addr, len, flags)) in descs.iter().enumerate() {
        let last = i + 1 == descs.len();
        let (flags, next) = if last {
            (flags, 0)
        } else {
            (flags | VRING_DESC_F_NEXT as u16, i as u16 + 1)
        };
        let desc = virtio_queue::desc::split::Descriptor::new(addr, len, flags, next);
        table.extend_from_slice(vm_memory::ByteValued::as_slice(&desc));
    }
    table
}

/// The driver's side of an activated balloon: the shared test driver (which it dereferences
/// to), and which negotiated queue is which.
pub struct Driver {
    driver: TestDriver,
    roles: Vec<Option<BalloonQueue>>,
}

impl Deref for Driver {
    type Target = TestDriver;

    fn deref(&self) -> &TestDriver {
        &self.driver
    }
}

impl DerefMut for Driver {
    fn deref_mut(&mut self) -> &mut TestDriver {
        &mut self.driver
    }
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
        // The device keeps only what it offered; so does a real driver.
        let roles = negotiated_queues(acked & balloon.avail_features());
        let queues = roles.len() + extra_queues;
        let driver =
            TestDriver::activate(balloon, mem, Some(acked), queues, QUEUE_SIZE, BUFFERS_END)?;
        Ok(Driver { driver, roles })
    }

    pub fn queue(&mut self, which: BalloonQueue) -> &mut DriverQueue {
        let index = self
            .roles
            .iter()
            .position(|&role| role == Some(which))
            .unwrap_or_else(|| panic!("no {which} queue was negotiated"));
        &mut self.driver.queues[index]
    }

    /// Copies `bytes` into a fresh driver buffer in guest RAM; returns its address.
    pub fn buffer(&mut self, bytes: &[u8]) -> u64 {
        self.driver.buffer_with(bytes)
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
