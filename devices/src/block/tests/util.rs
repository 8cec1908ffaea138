//! Test helpers: guest memory with a hole, disk images in temporary files, and the driver's side
//! of the request queue (on virtio-queue's mock).

use std::io::Write;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempfile::TempFile;

pub use ballast_virtio::test_utils::{run_until, test_interrupt, DriverQueue};
use ballast_virtio::test_utils::{test_guest_memory, TestDriver, TEST_RAM0_END};
use ballast_virtio::{ActivateError, GuestMemoryMmap, VirtioInterrupt};

use crate::block::{Block, BlockConfig, QUEUE_SIZE, SECTOR_SIZE};

pub const MIB: u64 = 1 << 20;
pub const WRITE: u16 = VRING_DESC_F_WRITE as u16;
pub const READ: u16 = 0;

/// Test guest RAM: `[0, 8 MiB)` and `[12 MiB, 16 MiB)`, with a 4 MiB hole standing in for the
/// MMIO gap. The queue lives at the bottom, driver buffers from 1 MiB.
pub const RAM0_END: u64 = TEST_RAM0_END;
pub const RAM_END: u64 = 16 * MIB;

/// What a status byte holds before the device answers.
pub const UNANSWERED: u8 = 0xee;

/// Guest memory that lives as long as the test process: the mock queue borrows it.
pub fn guest_memory() -> &'static GuestMemoryMmap {
    test_guest_memory(RAM_END)
}

/// The byte at `offset` of a test image: varies with the offset inside a sector and with the
/// sector, so data read from the wrong place shows.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset % 251) as u8 ^ ((offset / SECTOR_SIZE) as u8).rotate_left(3)
}

pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64).map(pattern_byte).collect()
}

/// A temporary image of `size` bytes holding the test pattern.
pub fn image(size: u64) -> TempFile {
    let file = TempFile::new_with_prefix("/tmp/ballast-block-test-").unwrap();
    file.as_file()
        .write_all(&pattern(0, size as usize))
        .unwrap();
    file
}

pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A block device on a fresh 64-sector image, and the image (kept so it outlives the test).
pub fn block(read_only: bool) -> (Block, TempFile) {
    block_of_size(64 * SECTOR_SIZE, read_only)
}

pub fn block_of_size(size: u64, read_only: bool) -> (Block, TempFile) {
    let file = image(size);
    let config = BlockConfig {
        path: file.as_path().to_path_buf(),
        read_only,
    };
    (Block::new(config).unwrap(), file)
}

/// One request as the driver built it.
#[derive(Clone, Debug)]
pub struct Req {
    pub head: u16,
    /// (address, length) of each data buffer.
    pub data: Vec<(u64, u32)>,
    pub status: u64,
}

/// The driver's side of an activated block device: its request queue (which it dereferences
/// to, for `add_chain`, `used`, `kick` and the rest), its buffers and the requests it builds.
pub struct Driver {
    pub mem: &'static GuestMemoryMmap,
    pub interrupt: Arc<VirtioInterrupt>,
    driver: TestDriver,
}

impl Deref for Driver {
    type Target = DriverQueue;

    fn deref(&self) -> &DriverQueue {
        &self.driver.queues[0]
    }
}

impl DerefMut for Driver {
    fn deref_mut(&mut self) -> &mut DriverQueue {
        &mut self.driver.queues[0]
    }
}

impl Driver {
    /// Acks `acked` (all offered features if `None`) and activates `block` with one queue.
    pub fn activate(block: &mut Block, acked: Option<u64>) -> Result<Self, ActivateError> {
        let driver = TestDriver::activate(block, guest_memory(), acked, 1, QUEUE_SIZE, RAM0_END)?;
        Ok(Driver {
            mem: driver.mem,
            interrupt: driver.interrupt.clone(),
            driver,
        })
    }

    /// A fresh buffer of `len` bytes in guest RAM, filled with `fill`; returns its address.
    pub fn buffer(&mut self, len: usize, fill: u8) -> u64 {
        self.driver.buffer(len, fill)
    }

    /// Copies `bytes` into a fresh buffer in guest RAM; returns its address.
    pub fn buffer_with(&mut self, bytes: &[u8]) -> u64 {
        self.driver.buffer_with(bytes)
    }

    /// A request header in guest RAM.
    pub fn header(&mut self, request_type: u32, sector: u64) -> u64 {
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&request_type.to_le_bytes());
        header[4..8].copy_from_slice(&7u32.to_le_bytes()); // an ioprio, ignored
        header[8..].copy_from_slice(&sector.to_le_bytes());
        self.buffer_with(&header)
    }

    /// A status byte in guest RAM, holding `UNANSWERED`.
    pub fn status_byte(&mut self) -> u64 {
        self.buffer(1, UNANSWERED)
    }

    /// Makes a chain available through one indirect descriptor whose table holds `descs`.
    pub fn add_indirect_chain(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let mut table = Vec::with_capacity(descs.len() * 16);
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let last = i + 1 == descs.len();
            let flags = if last {
                flags
            } else {
                flags | VRING_DESC_F_NEXT as u16
            };
            let next = if last { 0 } else { i as u16 + 1 };
            table.extend_from_slice(&addr.to_le_bytes());
            table.extend_from_slice(&len.to_le_bytes());
            table.extend_from_slice(&flags.to_le_bytes());
            table.extend_from_slice(&next.to_le_bytes());
        }
        let table_addr = self.buffer_with(&table);
        self.add_chain(&[(table_addr, table.len() as u32, VRING_DESC_F_INDIRECT as u16)])
    }

    /// A read of `lens` bytes (one data buffer per length, pre-filled with 0xaa) from `sector`.
    pub fn read(&mut self, sector: u64, lens: &[u32]) -> Req {
        self.data_request(VIRTIO_BLK_T_IN, sector, lens, WRITE, None)
    }

    /// A write of `chunks` (one data buffer each) to `sector`.
    pub fn write(&mut self, sector: u64, chunks: &[&[u8]]) -> Req {
        let header = self.header(VIRTIO_BLK_T_OUT, sector);
        let data: Vec<(u64, u32)> = chunks
            .iter()
            .map(|chunk| (self.buffer_with(chunk), chunk.len() as u32))
            .collect();
        let status = self.status_byte();
        let mut descs = vec![(header, 16, READ)];
        descs.extend(data.iter().map(|&(addr, len)| (addr, len, READ)));
        descs.push((status, 1, WRITE));
        let head = self.add_chain(&descs);
        Req { head, data, status }
    }

    pub fn flush(&mut self) -> Req {
        let header = self.header(VIRTIO_BLK_T_FLUSH, 0);
        let status = self.status_byte();
        let head = self.add_chain(&[(header, 16, READ), (status, 1, WRITE)]);
        Req {
            head,
            data: Vec::new(),
            status,
        }
    }

    pub fn get_id(&mut self, len: u32) -> Req {
        self.data_request(VIRTIO_BLK_T_GET_ID, 0, &[len], WRITE, None)
    }

    /// A request of `request_type` with data buffers of `lens` (flagged `data_flags`, filled with
    /// 0xaa) and, unless `header_len` says otherwise, a 16-byte header.
    pub fn data_request(
        &mut self,
        request_type: u32,
        sector: u64,
        lens: &[u32],
        data_flags: u16,
        header_len: Option<u32>,
    ) -> Req {
        let buffers: Vec<_> = lens.iter().map(|&len| (len, data_flags)).collect();
        self.request_with(request_type, sector, &buffers, 0xaa, header_len)
    }

    /// A read of `buffers` 512-byte buffers from `sector`, through an indirect table.
    pub fn indirect_read(&mut self, sector: u64, buffers: u32) -> Req {
        let header = self.header(VIRTIO_BLK_T_IN, sector);
        let mut descs = vec![(header, 16, READ)];
        let mut data = Vec::new();
        for _ in 0..buffers {
            let addr = self.buffer(512, 0xaa);
            descs.push((addr, 512, WRITE));
            data.push((addr, 512));
        }
        let status = self.status_byte();
        descs.push((status, 1, WRITE));
        let head = self.add_indirect_chain(&descs);
        Req { head, data, status }
    }

    /// A read into one 512-byte buffer whose header is at `header` with `flags`, as a hostile
    /// driver may put it.
    pub fn request_with_header(&mut self, header: u64, flags: u16) -> Req {
        let data = self.buffer(512, 0xaa);
        let status = self.status_byte();
        let head = self.add_chain(&[(header, 16, flags), (data, 512, WRITE), (status, 1, WRITE)]);
        Req {
            head,
            data: vec![(data, 512)],
            status,
        }
    }

    /// A request whose data buffers each have their own length and flags, filled with `fill`
    /// (the header is `header_len` bytes, 16 if `None`).
    pub fn request_with(
        &mut self,
        request_type: u32,
        sector: u64,
        buffers: &[(u32, u16)],
        fill: u8,
        header_len: Option<u32>,
    ) -> Req {
        let header = self.header(request_type, sector);
        let data: Vec<(u64, u32, u16)> = buffers
            .iter()
            .map(|&(len, flags)| (self.buffer(len as usize, fill), len, flags))
            .collect();
        let status = self.status_byte();
        let mut descs = vec![(header, header_len.unwrap_or(16), READ)];
        descs.extend(data.iter().copied());
        descs.push((status, 1, WRITE));
        let head = self.add_chain(&descs);
        let data = data.into_iter().map(|(addr, len, _)| (addr, len)).collect();
        Req { head, data, status }
    }

    /// The status byte the device wrote (or `UNANSWERED`).
    pub fn status(&self, req: &Req) -> u8 {
        self.mem.read_obj(GuestAddress(req.status)).unwrap()
    }

    pub fn guest_bytes(&self, addr: u64, len: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; len as usize];
        self.mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
        bytes
    }

    /// The bytes of all of a request's data buffers, concatenated.
    pub fn data_bytes(&self, req: &Req) -> Vec<u8> {
        req.data
            .iter()
            .flat_map(|&(addr, len)| self.guest_bytes(addr, len))
            .collect()
    }

    /// Whether the device raised the used-buffer interrupt since the last call (and clears it).
    pub fn take_interrupt(&self) -> bool {
        let raised = self.interrupt.irqfd().read().is_ok();
        self.interrupt.ack(u32::MAX);
        raised
    }
}

/// A block device on a fresh 64-sector image, activated with every offered feature.
pub fn activated(read_only: bool) -> (Block, Driver, TempFile) {
    let (mut block, file) = block(read_only);
    let driver = Driver::activate(&mut block, None).unwrap();
    (block, driver, file)
}
