//! The block device against virtio-queue's mock driver queue and real image files.

mod util;

use std::mem::offset_of;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast_virtio::interrupt::VIRTIO_MMIO_INT_CONFIG;
use ballast_virtio::{ActivateError, VirtioDevice};
use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VRING_USED_F_NO_NOTIFY,
};
use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::tempdir::TempDir;
use vmm_sys_util::tempfile::TempFile;

use super::io::{open_error, serial_for};
use super::*;
use util::*;

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
const S: u64 = SECTOR_SIZE;
const S32: u32 = SECTOR_SIZE as u32;
/// The default test image: 64 sectors.
const IMAGE_SIZE: u64 = 64 * S;

fn bit(feature: u32) -> u64 {
    1 << feature
}

/// The test image's content after writing `bytes` at `offset`.
fn image_with(size: u64, offset: u64, bytes: &[u8]) -> Vec<u8> {
    let mut image = pattern(0, size as usize);
    image[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
    image
}

// --- features, config space ---

#[test]
fn features_offer_ro_only_for_a_read_only_disk() {
    let (rw, _image) = block(false);
    assert_eq!(rw.device_type(), 2);
    assert_eq!(rw.queue_max_sizes(), &[256]);
    let common = bit(VIRTIO_F_VERSION_1)
        | bit(VIRTIO_RING_F_EVENT_IDX)
        | bit(VIRTIO_RING_F_INDIRECT_DESC)
        | bit(VIRTIO_BLK_F_FLUSH)
        | bit(VIRTIO_BLK_F_SEG_MAX)
        | bit(VIRTIO_BLK_F_SIZE_MAX)
        | bit(VIRTIO_BLK_F_BLK_SIZE);
    assert_eq!(rw.avail_features(), common);
    assert!(!rw.is_read_only());

    let (ro, _image) = block(true);
    assert_eq!(ro.avail_features(), common | bit(VIRTIO_BLK_F_RO));
    assert!(ro.is_read_only());

    for absent in [
        VIRTIO_BLK_F_BARRIER,
        VIRTIO_BLK_F_GEOMETRY,
        VIRTIO_BLK_F_SCSI,
        VIRTIO_BLK_F_TOPOLOGY,
        VIRTIO_BLK_F_CONFIG_WCE,
        VIRTIO_BLK_F_MQ,
        VIRTIO_BLK_F_DISCARD,
        VIRTIO_BLK_F_WRITE_ZEROES,
    ] {
        assert_eq!(ro.avail_features() & bit(absent), 0, "feature {absent}");
    }
}

#[test]
fn acked_features_are_limited_to_the_offered_ones() {
    let (mut block, _image) = block(false);
    block.set_acked_features(u64::MAX);
    // The device still activates and works: it only uses what it offered.
    let mut driver = Driver::activate(&mut block, Some(u64::MAX)).unwrap();
    let req = driver.read(0, &[S32]);
    block.process_queue();
    assert_eq!(driver.status(&req), OK);
}

fn config_u32(block: &Block, offset: usize) -> u32 {
    let mut bytes = [0xaa; 4];
    block.read_config(offset as u64, &mut bytes);
    u32::from_le_bytes(bytes)
}

#[test]
fn config_space_is_laid_out_as_virtio_blk_config() {
    // 64 whole sectors and a 100-byte tail, which the guest does not see.
    let (mut block, _image) = block_of_size(IMAGE_SIZE + 100, false);
    assert_eq!(block.capacity_sectors(), 64);

    let mut capacity = [0xaa; 8];
    block.read_config(
        offset_of!(virtio_blk_config, capacity) as u64,
        &mut capacity,
    );
    assert_eq!(u64::from_le_bytes(capacity), 64);
    assert_eq!(
        config_u32(&block, offset_of!(virtio_blk_config, size_max)),
        SIZE_MAX
    );
    assert_eq!(
        config_u32(&block, offset_of!(virtio_blk_config, seg_max)),
        254
    );
    assert_eq!(
        config_u32(&block, offset_of!(virtio_blk_config, geometry)),
        0
    );
    assert_eq!(
        config_u32(&block, offset_of!(virtio_blk_config, blk_size)),
        512
    );

    // Byte-wide reads, and reads straddling fields.
    let mut byte = [0xaa];
    block.read_config(0, &mut byte);
    assert_eq!(byte, [64]);
    let mut straddle = [0xaa; 4];
    block.read_config(6, &mut straddle);
    assert_eq!(straddle, [0, 0, 0x00, 0x00]);
    block.read_config(10, &mut straddle);
    assert_eq!(straddle, [0x10, 0x00, 254, 0]);

    // Fields of features not offered, and anything past the end, read as zero.
    let mut rest = [0xaa; 40];
    block.read_config(24, &mut rest);
    assert_eq!(rest, [0; 40]);
    let mut past = [0xaa; 8];
    block.read_config(u64::MAX - 2, &mut past);
    assert_eq!(past, [0; 8]);

    // Config space is the device's: writes change nothing.
    block.write_config(0, &[0xff; 8]);
    block.write_config(20, &4096u32.to_le_bytes());
    block.read_config(0, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), 64);
    assert_eq!(
        config_u32(&block, offset_of!(virtio_blk_config, blk_size)),
        512
    );
}

// --- reads, writes, flush, GET_ID ---

#[test]
fn a_read_returns_the_images_bytes() {
    let (mut block, mut driver, _image) = activated(false);
    let req = driver.read(3, &[S32, 2 * S32]);
    block.process_queue();

    assert_eq!(driver.status(&req), OK);
    assert_eq!(driver.data_bytes(&req), pattern(3 * S, 3 * S as usize));
    assert_eq!(driver.used_count(), 1);
    assert_eq!(driver.used(0), (u32::from(req.head), 3 * S32 + 1));
    assert!(driver.take_interrupt());

    let metrics = block.metrics().snapshot();
    assert_eq!(metrics.read_count, 1);
    assert_eq!(metrics.read_bytes, 3 * S);
    assert_eq!(metrics.invalid_requests, 0);
    assert_eq!(metrics.io_errors, 0);
}

#[test]
fn a_read_may_split_sectors_across_buffers() {
    let (mut block, mut driver, _image) = activated(false);
    // The whole request is whole sectors; its buffers need not be. Empty buffers are skipped.
    let req = driver.read(63, &[100, 0, 412]);
    block.process_queue();
    assert_eq!(driver.status(&req), OK);
    assert_eq!(driver.data_bytes(&req), pattern(63 * S, S as usize));
    assert_eq!(driver.used(0).1, S32 + 1);
}

#[test]
fn a_read_marks_the_guest_pages_it_wrote_dirty() {
    let (mut block, mut driver, _image) = activated(false);
    let req = driver.read(0, &[S32]);
    let region = driver.mem.find_region(GuestAddress(0)).unwrap();
    let data = req.data[0].0 as usize;
    // Setting up the request wrote guest memory too; start from a clean bitmap.
    std::ops::Deref::deref(region).bitmap().reset();
    assert!(!region.bitmap().dirty_at(data));
    block.process_queue();
    assert_eq!(driver.status(&req), OK);
    assert!(region.bitmap().dirty_at(data));
}

#[test]
fn a_write_lands_in_the_image() {
    let (mut block, mut driver, image) = activated(false);
    let first = vec![0x11; S as usize];
    let second = vec![0x22; 2 * S as usize];
    let req = driver.write(5, &[&first, &second]);
    block.process_queue();

    assert_eq!(driver.status(&req), OK);
    assert_eq!(driver.used(0), (u32::from(req.head), 1));
    let written = [first, second].concat();
    assert_eq!(
        file_bytes(image.as_path()),
        image_with(IMAGE_SIZE, 5 * S, &written)
    );
    let metrics = block.metrics().snapshot();
    assert_eq!(metrics.write_count, 1);
    assert_eq!(metrics.write_bytes, 3 * S);

    // And reads see it.
    let req = driver.read(5, &[3 * S32]);
    block.process_queue();
    assert_eq!(driver.data_bytes(&req), written);
}

#[test]
fn a_flush_syncs_the_image() {
    let (mut block, mut driver, _image) = activated(false);
    driver.write(0, &[&[0x33; 512]]);
    let req = driver.flush();
    block.process_queue();
    assert_eq!(driver.status(&req), OK);
    assert_eq!(driver.used(1), (u32::from(req.head), 1));
    assert_eq!(block.metrics().snapshot().flush_count, 1);
}

#[test]
fn get_id_returns_the_serial_from_the_images_device_and_inode() {
    let (mut block, mut driver, image) = activated(false);
    let metadata = std::fs::metadata(image.as_path()).unwrap();
    let expected = serial_for(metadata.dev(), metadata.ino());
    assert_eq!(
        block.serial(),
        format!("{:x}-{:x}", metadata.dev(), metadata.ino())
    );

    let req = driver.get_id(20);
    block.process_queue();
    assert_eq!(driver.status(&req), OK);
    assert_eq!(driver.data_bytes(&req), expected);
    assert_eq!(driver.used(0), (u32::from(req.head), 21));

    // A short buffer gets the start; a long one the 20 bytes and nothing more.
    let short = driver.get_id(8);
    let long = driver.get_id(32);
    block.process_queue();
    assert_eq!(driver.data_bytes(&short), expected[..8]);
    assert_eq!(driver.used(1).1, 9);
    let long_bytes = driver.data_bytes(&long);
    assert_eq!(long_bytes[..20], expected);
    assert_eq!(long_bytes[20..], [0xaa; 12]);
    assert_eq!(driver.used(2).1, 21);
    assert_eq!(block.metrics().snapshot().get_id_count, 3);
}

#[test]
fn serials_are_hex_device_and_inode_nul_padded_or_cut_to_20_bytes() {
    let mut expected = [0u8; 20];
    expected[..8].copy_from_slice(b"803-1a2b");
    assert_eq!(serial_for(0x803, 0x1a2b), expected);
    // "ffffffffffffffff-ffffffffffffffff" keeps its last 20 bytes.
    assert_eq!(&serial_for(u64::MAX, u64::MAX), b"fff-ffffffffffffffff");
}

#[test]
fn requests_through_an_indirect_table_work() {
    let (mut block, mut driver, _image) = activated(false);
    let header = driver.header(VIRTIO_BLK_T_IN, 10);
    let a = driver.buffer(512, 0xaa);
    let b = driver.buffer(1024, 0xaa);
    let status = driver.status_byte();
    let head = driver.add_indirect_chain(&[
        (header, 16, READ),
        (a, 512, WRITE),
        (b, 1024, WRITE),
        (status, 1, WRITE),
    ]);
    block.process_queue();
    let req = Req {
        head,
        data: vec![(a, 512), (b, 1024)],
        status,
    };
    assert_eq!(driver.status(&req), OK);
    assert_eq!(driver.data_bytes(&req), pattern(10 * S, 1536));
    assert_eq!(driver.used(0), (u32::from(head), 1537));
}

#[test]
fn a_request_may_use_seg_max_buffers_of_size_max() {
    let (mut block, _image) = block_of_size(2 * MIB, false);
    let mut driver = Driver::activate(&mut block, None).unwrap();
    // One buffer of exactly size_max.
    let req = driver.read(0, &[SIZE_MAX]);
    block.process_queue();
    assert_eq!(driver.status(&req), OK);
    assert_eq!(driver.data_bytes(&req), pattern(0, SIZE_MAX as usize));

    // SEG_MAX buffers, through an indirect table (a direct chain that long would fill the ring).
    let header = driver.header(VIRTIO_BLK_T_IN, 1);
    let mut descs = vec![(header, 16, READ)];
    let mut data = Vec::new();
    for _ in 0..SEG_MAX {
        let addr = driver.buffer(512, 0xaa);
        descs.push((addr, 512, WRITE));
        data.push((addr, 512));
    }
    let status = driver.status_byte();
    descs.push((status, 1, WRITE));
    let head = driver.add_indirect_chain(&descs);
    block.process_queue();
    let req = Req { head, data, status };
    assert_eq!(driver.status(&req), OK);
    assert_eq!(
        driver.data_bytes(&req),
        pattern(S, SEG_MAX as usize * S as usize)
    );
}

#[test]
fn several_requests_are_answered_with_one_interrupt() {
    let (mut block, mut driver, _image) = activated(false);
    let reqs = [
        driver.read(0, &[S32]),
        driver.write(1, &[&[0x44; 512]]),
        driver.flush(),
    ];
    block.process_queue();
    assert_eq!(driver.used_count(), 3);
    for (i, req) in reqs.iter().enumerate() {
        assert_eq!(driver.status(req), OK);
        assert_eq!(driver.used(i as u16).0, u32::from(req.head));
    }
    assert!(driver.take_interrupt());
    assert_eq!(block.metrics().snapshot().interrupts, 1);
}

// --- out of bounds ---

/// Processes the queue and checks that the one request on it was answered `status` (or, with
/// `None`, given back unanswered), that the image did not change, and which counter counted it.
fn assert_refused(
    block: &mut Block,
    driver: &Driver,
    image: &Path,
    req: &Req,
    status: Option<u8>,
    unsupported: bool,
) {
    let before = file_bytes(image);
    let used_before = driver.used_count();
    let metrics_before = block.metrics().snapshot();
    block.process_queue();

    assert_eq!(
        driver.used_count(),
        used_before + 1,
        "the chain is given back"
    );
    let (id, len) = driver.used(used_before);
    assert_eq!(id, u32::from(req.head));
    match status {
        Some(status) => {
            assert_eq!(driver.status(req), status);
            assert_eq!(len, 1, "only the status byte was written");
        }
        None => {
            assert_eq!(driver.status(req), UNANSWERED);
            assert_eq!(len, 0);
        }
    }
    for &(addr, len) in &req.data {
        if addr < RAM0_END
            && len <= 1 << 20
            && driver.mem.check_range(GuestAddress(addr), len as usize)
        {
            let bytes = driver.guest_bytes(addr, len);
            assert!(
                bytes.iter().all(|&b| b == 0xaa) || bytes.iter().all(|&b| b == 0x55),
                "a refused request's buffers are untouched"
            );
        }
    }
    assert_eq!(file_bytes(image), before, "the image is unchanged");

    let metrics = block.metrics().snapshot();
    let (invalid, unsupp) = if unsupported { (0, 1) } else { (1, 0) };
    assert_eq!(
        metrics.invalid_requests,
        metrics_before.invalid_requests + invalid
    );
    assert_eq!(metrics.unsupported, metrics_before.unsupported + unsupp);
    assert_eq!(metrics.read_count, metrics_before.read_count);
    assert_eq!(metrics.write_count, metrics_before.write_count);
    assert_eq!(metrics.io_errors, metrics_before.io_errors);
}

#[test]
fn requests_past_the_end_of_the_disk_are_refused() {
    let (mut block, mut driver, image) = activated(false);
    let path = image.as_path();
    for (sector, len) in [(64, S32), (63, 2 * S32), (0, 65 * S32), (60, 8 * S32)] {
        let req = driver.read(sector, &[len]);
        assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);
        let req = driver.write(sector, &[&vec![0x55; len as usize]]);
        assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);
    }
    // The last sector is still fine.
    let req = driver.read(63, &[S32]);
    block.process_queue();
    assert_eq!(driver.status(&req), OK);
    assert_eq!(std::fs::metadata(path).unwrap().len(), IMAGE_SIZE);
}

#[test]
fn sector_arithmetic_that_overflows_is_refused() {
    let (mut block, mut driver, image) = activated(false);
    let path = image.as_path();
    for sector in [
        u64::MAX,
        u64::MAX - 1,
        u64::MAX / S + 1,
        u64::MAX / S,
        1 << 55,
    ] {
        let req = driver.read(sector, &[2 * S32]);
        assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);
        let req = driver.write(sector, &[&[0x55; 1024]]);
        assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);
    }
    assert_eq!(std::fs::metadata(path).unwrap().len(), IMAGE_SIZE);
}

#[test]
fn lengths_that_are_not_whole_sectors_are_refused() {
    let (mut block, mut driver, image) = activated(false);
    let path = image.as_path();
    let req = driver.read(0, &[100]);
    assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);
    let req = driver.read(0, &[256, 300]);
    assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);
    let req = driver.write(0, &[&[0x55; 513]]);
    assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);
    let req = driver.write(0, &[&[0x55; 511]]);
    assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);
}

#[test]
fn a_write_to_a_read_only_disk_is_refused_and_the_image_is_unchanged() {
    let (mut block, mut driver, image) = activated(true);
    let path = image.as_path();
    let original = file_bytes(path);
    for (sector, chunks) in [(0u64, 1usize), (10, 3), (63, 1)] {
        let data = vec![0x55; chunks * S as usize];
        let req = driver.write(sector, &[&data]);
        assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);
    }
    assert_eq!(file_bytes(path), original);

    // Reads, flushes and GET_ID still work.
    let read = driver.read(2, &[S32]);
    let flush = driver.flush();
    let id = driver.get_id(20);
    block.process_queue();
    assert_eq!(driver.status(&read), OK);
    assert_eq!(driver.data_bytes(&read), pattern(2 * S, S as usize));
    assert_eq!(driver.status(&flush), OK);
    assert_eq!(driver.status(&id), OK);
    assert_eq!(file_bytes(path), original);
}

#[test]
fn unknown_request_types_are_unsupported() {
    let (mut block, mut driver, image) = activated(false);
    let path = image.as_path();
    for request_type in [
        VIRTIO_BLK_T_SCSI_CMD,
        VIRTIO_BLK_T_DISCARD,
        VIRTIO_BLK_T_WRITE_ZEROES,
        VIRTIO_BLK_T_SECURE_ERASE,
        VIRTIO_BLK_T_ZONE_REPORT,
        VIRTIO_BLK_T_BARRIER | VIRTIO_BLK_T_OUT,
        0xdead_beef,
    ] {
        let req = driver.data_request(request_type, 0, &[S32], READ, None);
        assert_refused(&mut block, &driver, path, &req, Some(UNSUPP), true);
    }
    assert_eq!(block.metrics().snapshot().unsupported, 7);
}

// --- malformed chains ---

#[test]
fn a_header_of_the_wrong_size_is_refused() {
    let (mut block, mut driver, image) = activated(false);
    let path = image.as_path();
    for header_len in [0, 8, 15, 17, 32, 528] {
        let req = driver.data_request(VIRTIO_BLK_T_IN, 0, &[S32], WRITE, Some(header_len));
        assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);
    }
}

#[test]
fn a_device_writable_header_is_refused() {
    let (mut block, mut driver, image) = activated(false);
    let header = driver.header(VIRTIO_BLK_T_IN, 0);
    let data = driver.buffer(512, 0xaa);
    let status = driver.status_byte();
    let head = driver.add_chain(&[(header, 16, WRITE), (data, 512, WRITE), (status, 1, WRITE)]);
    let req = Req {
        head,
        data: vec![(data, 512)],
        status,
    };
    assert_refused(
        &mut block,
        &driver,
        image.as_path(),
        &req,
        Some(IOERR),
        false,
    );
}

#[test]
fn a_header_outside_guest_memory_is_refused() {
    let (mut block, mut driver, image) = activated(false);
    // In the hole, straddling into it, past the end of RAM, wrapping around the address space.
    for header in [RAM0_END + 64, RAM0_END - 8, RAM_END - 8, u64::MAX - 7] {
        let data = driver.buffer(512, 0xaa);
        let status = driver.status_byte();
        let head = driver.add_chain(&[(header, 16, READ), (data, 512, WRITE), (status, 1, WRITE)]);
        let req = Req {
            head,
            data: vec![(data, 512)],
            status,
        };
        assert_refused(
            &mut block,
            &driver,
            image.as_path(),
            &req,
            Some(IOERR),
            false,
        );
    }
}

#[test]
fn data_buffers_of_the_wrong_direction_are_refused() {
    let (mut block, mut driver, image) = activated(false);
    let path = image.as_path();
    // A read into device-readable buffers.
    let req = driver.data_request(VIRTIO_BLK_T_IN, 0, &[S32], READ, None);
    assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);
    // A write from device-writable buffers.
    let req = driver.data_request(VIRTIO_BLK_T_OUT, 0, &[S32], WRITE, None);
    assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);
    // GET_ID into a device-readable buffer.
    let req = driver.data_request(VIRTIO_BLK_T_GET_ID, 0, &[20], READ, None);
    assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);

    // A read whose second buffer is device-readable: refused before anything is read, so the
    // first buffer is untouched too.
    let header = driver.header(VIRTIO_BLK_T_IN, 0);
    let a = driver.buffer(512, 0xaa);
    let b = driver.buffer(512, 0xaa);
    let status = driver.status_byte();
    let head = driver.add_chain(&[
        (header, 16, READ),
        (a, 512, WRITE),
        (b, 512, READ),
        (status, 1, WRITE),
    ]);
    let req = Req {
        head,
        data: vec![(a, 512), (b, 512)],
        status,
    };
    assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);

    // A write whose second buffer is device-writable: nothing is written.
    let header = driver.header(VIRTIO_BLK_T_OUT, 0);
    let a = driver.buffer(512, 0x55);
    let b = driver.buffer(512, 0x55);
    let status = driver.status_byte();
    let head = driver.add_chain(&[
        (header, 16, READ),
        (a, 512, READ),
        (b, 512, WRITE),
        (status, 1, WRITE),
    ]);
    let req = Req {
        head,
        data: vec![(a, 512), (b, 512)],
        status,
    };
    assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);
}

#[test]
fn a_chain_without_a_usable_status_byte_is_given_back_unanswered() {
    let (mut block, mut driver, image) = activated(false);
    let path = image.as_path();
    let cases: [(&str, u32, u16, Option<u64>); 4] = [
        ("device-readable", 1, READ, None),
        ("empty", 0, WRITE, None),
        ("in the hole", 1, WRITE, Some(RAM0_END + 100)),
        ("past the end of RAM", 1, WRITE, Some(RAM_END)),
    ];
    for (what, len, flags, addr) in cases {
        let header = driver.header(VIRTIO_BLK_T_IN, 0);
        let data = driver.buffer(512, 0xaa);
        let status = driver.status_byte();
        let head = driver.add_chain(&[
            (header, 16, READ),
            (data, 512, WRITE),
            (addr.unwrap_or(status), len, flags),
        ]);
        let req = Req {
            head,
            data: vec![(data, 512)],
            status,
        };
        eprintln!("status descriptor {what}");
        assert_refused(&mut block, &driver, path, &req, None, false);
    }
    // A header alone: its only descriptor is not a status byte either.
    let header = driver.header(VIRTIO_BLK_T_IN, 0);
    let head = driver.add_chain(&[(header, 16, READ)]);
    let req = Req {
        head,
        data: Vec::new(),
        status: header,
    };
    block.process_queue();
    assert_eq!(
        driver.used(driver.used_count() - 1),
        (u32::from(req.head), 0)
    );
}

#[test]
fn a_chain_too_short_for_a_request_is_refused() {
    let (mut block, mut driver, image) = activated(false);
    let path = image.as_path();
    // A single writable descriptor: a status byte, but no header.
    let status = driver.status_byte();
    let head = driver.add_chain(&[(status, 1, WRITE)]);
    let req = Req {
        head,
        data: Vec::new(),
        status,
    };
    assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);

    // A read, a write and a GET_ID with no data buffer.
    for request_type in [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_GET_ID] {
        let req = driver.data_request(request_type, 0, &[], WRITE, None);
        assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);
    }
}

#[test]
fn data_buffers_outside_guest_memory_are_refused() {
    let (mut block, mut driver, image) = activated(false);
    let path = image.as_path();
    for (addr, flags, request_type) in [
        (RAM0_END, WRITE, VIRTIO_BLK_T_IN),       // in the hole
        (RAM0_END - 256, WRITE, VIRTIO_BLK_T_IN), // straddling into it
        (RAM_END - 256, WRITE, VIRTIO_BLK_T_IN),  // past the end of RAM
        (u64::MAX - 255, WRITE, VIRTIO_BLK_T_IN), // wrapping around
        (RAM0_END, READ, VIRTIO_BLK_T_OUT),
        (RAM_END - 256, READ, VIRTIO_BLK_T_OUT),
        (RAM0_END, WRITE, VIRTIO_BLK_T_GET_ID),
    ] {
        let header = driver.header(request_type, 0);
        let status = driver.status_byte();
        let head = driver.add_chain(&[(header, 16, READ), (addr, 512, flags), (status, 1, WRITE)]);
        let req = Req {
            head,
            data: vec![(addr, 512)],
            status,
        };
        assert_refused(&mut block, &driver, path, &req, Some(IOERR), false);
    }
}

#[test]
fn a_buffer_larger_than_size_max_is_refused() {
    let (mut block, _image) = block_of_size(4 * MIB, false);
    let image_path = block.config().path.clone();
    let mut driver = Driver::activate(&mut block, None).unwrap();
    let req = driver.read(0, &[SIZE_MAX + S32]);
    assert_refused(&mut block, &driver, &image_path, &req, Some(IOERR), false);
}

#[test]
fn a_chain_longer_than_seg_max_allows_is_refused() {
    let (mut block, _image) = block_of_size(2 * MIB, false);
    let image_path = block.config().path.clone();
    let mut driver = Driver::activate(&mut block, None).unwrap();
    let header = driver.header(VIRTIO_BLK_T_IN, 0);
    let mut descs = vec![(header, 16, READ)];
    let mut data = Vec::new();
    for _ in 0..SEG_MAX + 1 {
        let addr = driver.buffer(512, 0xaa);
        descs.push((addr, 512, WRITE));
        data.push((addr, 512));
    }
    let status = driver.status_byte();
    descs.push((status, 1, WRITE));
    let head = driver.add_indirect_chain(&descs);
    let req = Req { head, data, status };
    assert_refused(&mut block, &driver, &image_path, &req, Some(IOERR), false);
}

#[test]
fn an_available_entry_naming_no_descriptor_is_skipped() {
    let (mut block, mut driver, _image) = activated(false);
    driver.push_avail_head(QUEUE_SIZE + 4);
    let req = driver.read(0, &[S32]);
    block.process_queue();
    // Nothing to give back for the bogus entry; the real request after it is served.
    assert_eq!(driver.used_count(), 1);
    assert_eq!(driver.used(0).0, u32::from(req.head));
    assert_eq!(driver.status(&req), OK);
    assert_eq!(block.metrics().snapshot().invalid_requests, 1);
    assert!(!block.needs_reset());
}

// --- host failures ---

#[test]
fn an_image_that_shrank_gives_io_errors_not_garbage() {
    let (mut block, mut driver, image) = activated(false);
    image.as_file().set_len(32 * S).unwrap();
    let req = driver.read(40, &[S32]);
    block.process_queue();
    assert_eq!(driver.status(&req), IOERR);
    assert_eq!(driver.used(0).1, 1);
    let metrics = block.metrics().snapshot();
    assert_eq!(metrics.io_errors, 1);
    assert_eq!(metrics.read_count, 0);
}

// --- notifications ---

#[test]
fn event_idx_interrupts_only_when_the_driver_asked() {
    let (mut block, mut driver, _image) = activated(false);
    // The driver wants an interrupt once the used index passes 3.
    driver.set_used_event(3);
    driver.read(0, &[S32]);
    block.process_queue();
    assert_eq!(driver.used_count(), 1);
    assert!(!driver.take_interrupt());
    // The device asks to be kicked for the next available entry.
    assert_eq!(driver.avail_event(), 1);

    driver.read(1, &[S32]);
    driver.read(2, &[S32]);
    block.process_queue();
    assert_eq!(driver.used_count(), 3);
    assert!(!driver.take_interrupt());

    driver.read(3, &[S32]);
    block.process_queue();
    assert_eq!(driver.used_count(), 4);
    assert!(driver.take_interrupt());
    assert_eq!(driver.avail_event(), 4);
}

#[test]
fn without_event_idx_every_batch_interrupts() {
    let (mut block, _image) = block(false);
    let acked = block.avail_features() & !bit(VIRTIO_RING_F_EVENT_IDX);
    let mut driver = Driver::activate(&mut block, Some(acked)).unwrap();
    driver.read(0, &[S32]);
    block.process_queue();
    assert!(driver.take_interrupt());
    // Kicks are wanted again once the device is idle.
    assert_eq!(driver.used_flags() & VRING_USED_F_NO_NOTIFY as u16, 0);
    driver.read(1, &[S32]);
    block.process_queue();
    assert!(driver.take_interrupt());
    assert_eq!(block.metrics().snapshot().interrupts, 2);
}

#[test]
fn a_broken_available_index_makes_the_device_need_a_reset() {
    let (mut block, driver, _image) = activated(false);
    driver.set_avail_idx(QUEUE_SIZE + 1);
    block.process_queue();
    assert!(block.needs_reset());
    assert_eq!(
        driver.interrupt.status() & VIRTIO_MMIO_INT_CONFIG,
        VIRTIO_MMIO_INT_CONFIG
    );
    assert_eq!(block.metrics().snapshot().queue_errors, 1);
    assert_eq!(driver.used_count(), 0);

    assert!(block.reset());
    assert!(!block.needs_reset());
    assert!(!block.is_activated());
    let mut driver = Driver::activate(&mut block, None).unwrap();
    let req = driver.read(0, &[S32]);
    block.process_queue();
    assert_eq!(driver.status(&req), OK);
}

// --- activation ---

#[test]
fn activation_needs_exactly_one_queue_and_no_active_one() {
    let (mut block, _image) = block(false);
    let mem = guest_memory();
    let interrupt = test_interrupt();
    let queue_event = |at: u64| DriverQueue::new(mem, at, QUEUE_SIZE).1;
    assert!(matches!(
        block.activate(mem.clone(), interrupt.clone(), Vec::new()),
        Err(ActivateError::QueueCount { want: 1, got: 0 })
    ));
    assert!(matches!(
        block.activate(
            mem.clone(),
            interrupt.clone(),
            vec![queue_event(0), queue_event(0x10000)]
        ),
        Err(ActivateError::QueueCount { want: 1, got: 2 })
    ));
    assert!(!block.is_activated());

    let _driver = Driver::activate(&mut block, None).unwrap();
    assert!(block.is_activated());
    assert!(matches!(
        block.activate(mem.clone(), interrupt, vec![queue_event(0x10000)]),
        Err(ActivateError::Backend(_))
    ));
}

// --- on the event loop ---

#[test]
fn the_event_loop_serves_the_queue_across_a_reset() {
    let (block, _image) = block(false);
    let block = Arc::new(Mutex::new(block));
    let mut manager = EventManager::<Arc<Mutex<Block>>>::new().unwrap();
    manager.add_subscriber(block.clone());

    // A request queued before the loop has seen the activation is served when it does.
    let mut driver = Driver::activate(&mut block.lock().unwrap(), None).unwrap();
    let early = driver.read(0, &[S32]);
    manager.run_with_timeout(0).unwrap();
    assert_eq!(driver.status(&early), OK);

    let req = driver.read(1, &[S32]);
    driver.kick.write(1).unwrap();
    assert!(run_until(&mut manager, Duration::from_secs(2), || {
        driver.used_count() == 2
    }));
    assert_eq!(driver.data_bytes(&req), pattern(S, S as usize));

    // Reset and activate again before the loop runs: the old eventfd goes, the new one comes.
    assert!(block.lock().unwrap().reset());
    let mut driver = Driver::activate(&mut block.lock().unwrap(), None).unwrap();
    manager.run_with_timeout(0).unwrap();
    let req = driver.read(2, &[S32]);
    driver.kick.write(1).unwrap();
    assert!(run_until(&mut manager, Duration::from_secs(2), || {
        driver.used_count() == 1
    }));
    assert_eq!(driver.status(&req), OK);
    assert_eq!(block.lock().unwrap().metrics().snapshot().event_errors, 0);
}

// --- opening images ---

#[test]
fn a_missing_image_is_reported_with_its_path() {
    let dir = TempDir::new_with_prefix("/tmp/ballast-block-test-").unwrap();
    let path = dir.as_path().join("nope.img");
    let err = Block::new(BlockConfig::new(&path)).err().unwrap();
    assert!(matches!(err, BlockError::NotFound { .. }));
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("build-disk-image.sh"), "{message}");
}

#[test]
fn a_directory_is_not_an_image() {
    let dir = TempDir::new_with_prefix("/tmp/ballast-block-test-").unwrap();
    for read_only in [false, true] {
        let config = BlockConfig {
            path: dir.as_path().to_path_buf(),
            read_only,
        };
        assert!(matches!(
            Block::new(config),
            Err(BlockError::NotAnImage { .. })
        ));
    }
}

#[test]
fn an_image_smaller_than_a_sector_is_refused() {
    for size in [0, 1, 511] {
        let file = image(size);
        let err = Block::new(BlockConfig::new(file.as_path())).err().unwrap();
        assert!(
            matches!(err, BlockError::TooSmall { size: s, .. } if s == size),
            "{err}"
        );
    }
}

#[test]
fn an_image_with_a_partial_last_sector_keeps_its_tail_untouched() {
    let (mut block, image) = block_of_size(IMAGE_SIZE + 100, false);
    let mut driver = Driver::activate(&mut block, None).unwrap();
    let req = driver.write(63, &[&[0x66; 512]]);
    block.process_queue();
    assert_eq!(driver.status(&req), OK);
    let req = driver.write(63, &[&[0x55; 1024]]);
    assert_refused(
        &mut block,
        &driver,
        image.as_path(),
        &req,
        Some(IOERR),
        false,
    );
    let bytes = file_bytes(image.as_path());
    assert_eq!(bytes.len() as u64, IMAGE_SIZE + 100);
    assert_eq!(bytes[IMAGE_SIZE as usize..], pattern(IMAGE_SIZE, 100));
}

#[test]
fn an_image_in_use_is_refused() {
    let file = image(IMAGE_SIZE);
    let rw = || BlockConfig::new(file.as_path());
    let ro = || BlockConfig {
        path: file.as_path().to_path_buf(),
        read_only: true,
    };
    {
        let _writer = Block::new(rw()).unwrap();
        assert!(matches!(
            Block::new(rw()),
            Err(BlockError::Locked {
                read_only: false,
                ..
            })
        ));
        assert!(matches!(
            Block::new(ro()),
            Err(BlockError::Locked {
                read_only: true,
                ..
            })
        ));
    }
    {
        // Readers share.
        let _a = Block::new(ro()).unwrap();
        let _b = Block::new(ro()).unwrap();
        assert!(matches!(Block::new(rw()), Err(BlockError::Locked { .. })));
    }
    // Closed images are free again.
    Block::new(rw()).unwrap();
}

#[test]
fn open_errors_say_what_to_do() {
    let path = Path::new("/images/root.img");
    let denied = || std::io::Error::from_raw_os_error(libc::EACCES);
    let err = open_error(path, false, denied());
    assert!(matches!(err, BlockError::NotWritable { .. }));
    assert!(err.to_string().contains("readonly=on"), "{err}");
    let err = open_error(path, false, std::io::Error::from_raw_os_error(libc::EROFS));
    assert!(matches!(err, BlockError::NotWritable { .. }));
    let err = open_error(path, true, denied());
    assert!(matches!(err, BlockError::Open { .. }));
    assert!(err.to_string().contains("/images/root.img"), "{err}");
    let err = open_error(path, false, std::io::Error::from_raw_os_error(libc::ENOENT));
    assert!(matches!(err, BlockError::NotFound { .. }));
}

#[test]
fn a_read_only_disk_opens_an_image_it_may_not_write() {
    let file: TempFile = image(IMAGE_SIZE);
    let mut permissions = std::fs::metadata(file.as_path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o444);
    std::fs::set_permissions(file.as_path(), permissions).unwrap();
    let config = BlockConfig {
        path: file.as_path().to_path_buf(),
        read_only: true,
    };
    let block = Block::new(config).unwrap();
    assert_eq!(block.capacity_sectors(), 64);
    // (Refusing the writable open needs a user that permissions apply to; root bypasses them,
    // so that side is covered by `open_errors_say_what_to_do`.)
}
