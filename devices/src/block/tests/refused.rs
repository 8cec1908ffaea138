//! Requests and chains the device refuses, each answered and counted, nothing outside the image touched.

use super::*;

/// `assert_refused` for the common case: answered IOERR, counted as invalid.
pub(super) fn assert_io_error(block: &mut Block, driver: &Driver, image: &Path, req: &Req) {
    assert_refused(block, driver, image, req, Some(IOERR), false);
}

/// Processes the queue and checks that the one request on it was answered `status` (or, with
/// `None`, given back unanswered), that the image did not change, and which counter counted it.
pub(super) fn assert_refused(
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
    block.run_queue();

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
        assert_io_error(&mut block, &driver, path, &req);
        let req = driver.write(sector, &[&vec![0x55; len as usize]]);
        assert_io_error(&mut block, &driver, path, &req);
    }
    // The last sector is still fine.
    let req = driver.read(63, &[S32]);
    block.run_queue();
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
        assert_io_error(&mut block, &driver, path, &req);
        let req = driver.write(sector, &[&[0x55; 1024]]);
        assert_io_error(&mut block, &driver, path, &req);
    }
    assert_eq!(std::fs::metadata(path).unwrap().len(), IMAGE_SIZE);
}

#[test]
fn lengths_that_are_not_whole_sectors_are_refused() {
    let (mut block, mut driver, image) = activated(false);
    let path = image.as_path();
    let req = driver.read(0, &[100]);
    assert_io_error(&mut block, &driver, path, &req);
    let req = driver.read(0, &[256, 300]);
    assert_io_error(&mut block, &driver, path, &req);
    let req = driver.write(0, &[&[0x55; 513]]);
    assert_io_error(&mut block, &driver, path, &req);
    let req = driver.write(0, &[&[0x55; 511]]);
    assert_io_error(&mut block, &driver, path, &req);
}

#[test]
fn a_write_to_a_read_only_disk_is_refused_and_the_image_is_unchanged() {
    let (mut block, mut driver, image) = activated(true);
    let path = image.as_path();
    let original = file_bytes(path);
    for (sector, chunks) in [(0u64, 1usize), (10, 3), (63, 1)] {
        let data = vec![0x55; chunks * S as usize];
        let req = driver.write(sector, &[&data]);
        assert_io_error(&mut block, &driver, path, &req);
    }
    assert_eq!(file_bytes(path), original);

    // Reads, flushes and GET_ID still work.
    let read = driver.read(2, &[S32]);
    let flush = driver.flush();
    let id = driver.get_id(20);
    block.run_queue();
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
        assert_io_error(&mut block, &driver, path, &req);
    }
}

#[test]
fn a_device_writable_header_is_refused() {
    let (mut block, mut driver, image) = activated(false);
    let header = driver.header(VIRTIO_BLK_T_IN, 0);
    let req = driver.request_with_header(header, WRITE);
    assert_io_error(&mut block, &driver, image.as_path(), &req);
}

#[test]
fn a_header_outside_guest_memory_is_refused() {
    let (mut block, mut driver, image) = activated(false);
    // In the hole, straddling into it, past the end of RAM, wrapping around the address space.
    for header in [RAM0_END + 64, RAM0_END - 8, RAM_END - 8, u64::MAX - 7] {
        let req = driver.request_with_header(header, READ);
        assert_io_error(&mut block, &driver, image.as_path(), &req);
    }
}

#[test]
fn data_buffers_of_the_wrong_direction_are_refused() {
    let (mut block, mut driver, image) = activated(false);
    let path = image.as_path();
    // A read into device-readable buffers.
    let req = driver.data_request(VIRTIO_BLK_T_IN, 0, &[S32], READ, None);
    assert_io_error(&mut block, &driver, path, &req);
    // A write from device-writable buffers.
    let req = driver.data_request(VIRTIO_BLK_T_OUT, 0, &[S32], WRITE, None);
    assert_io_error(&mut block, &driver, path, &req);
    // GET_ID into a device-readable buffer.
    let req = driver.data_request(VIRTIO_BLK_T_GET_ID, 0, &[20], READ, None);
    assert_io_error(&mut block, &driver, path, &req);

    // A read whose second buffer is device-readable: refused before anything is read, so the
    // first buffer is untouched too.
    let req = driver.request_with(VIRTIO_BLK_T_IN, 0, &[(512, WRITE), (512, READ)], 0xaa, None);
    assert_io_error(&mut block, &driver, path, &req);

    // A write whose second buffer is device-writable: nothing is written.
    let req = driver.request_with(
        VIRTIO_BLK_T_OUT,
        0,
        &[(512, READ), (512, WRITE)],
        0x55,
        None,
    );
    assert_io_error(&mut block, &driver, path, &req);
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
    block.run_queue();
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
    assert_io_error(&mut block, &driver, path, &req);

    // A read, a write and a GET_ID with no data buffer.
    for request_type in [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_GET_ID] {
        let req = driver.data_request(request_type, 0, &[], WRITE, None);
        assert_io_error(&mut block, &driver, path, &req);
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
        assert_io_error(&mut block, &driver, path, &req);
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
    let req = driver.indirect_read(0, SEG_MAX + 1);
    assert_refused(&mut block, &driver, &image_path, &req, Some(IOERR), false);
}

#[test]
fn an_available_entry_naming_no_descriptor_is_skipped() {
    let (mut block, mut driver, _image) = activated(false);
    driver.push_avail_head(QUEUE_SIZE + 4);
    let req = driver.read(0, &[S32]);
    block.run_queue();
    // Nothing to give back for the bogus entry; the real request after it is served.
    assert_eq!(driver.used_count(), 1);
    assert_eq!(driver.used(0).0, u32::from(req.head));
    assert_eq!(driver.status(&req), OK);
    assert_eq!(block.metrics().snapshot().invalid_requests, 1);
    assert!(!block.needs_reset());
}

// --- host failures ---
