//! Requests the device carries out: reads, writes, flushes, GET_ID, indirect tables, batches.

use super::*;

#[test]
fn a_read_returns_the_images_bytes() {
    let (mut block, mut driver, _image) = activated(false);
    let req = driver.read(3, &[S32, 2 * S32]);
    block.run_queue();

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
    block.run_queue();
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
    block.run_queue();
    assert_eq!(driver.status(&req), OK);
    assert!(region.bitmap().dirty_at(data));
}

#[test]
fn a_write_lands_in_the_image() {
    let (mut block, mut driver, image) = activated(false);
    let first = vec![0x11; S as usize];
    let second = vec![0x22; 2 * S as usize];
    let req = driver.write(5, &[&first, &second]);
    block.run_queue();

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
    block.run_queue();
    assert_eq!(driver.data_bytes(&req), written);
}

#[test]
fn a_flush_syncs_the_image() {
    let (mut block, mut driver, _image) = activated(false);
    driver.write(0, &[&[0x33; 512]]);
    let req = driver.flush();
    block.run_queue();
    assert_eq!(driver.status(&req), OK);
    assert_eq!(driver.used(1), (u32::from(req.head), 1));
    assert_eq!(block.metrics().snapshot().flush_count, 1);
}

#[test]
fn get_id_returns_the_serial_made_from_the_images_device_and_inode() {
    let (mut block, mut driver, image) = activated(false);
    let metadata = std::fs::metadata(image.as_path()).unwrap();
    let expected = serial_for(metadata.dev(), metadata.ino());
    assert_eq!(block.serial().as_bytes(), expected);

    let req = driver.get_id(20);
    block.run_queue();
    assert_eq!(driver.status(&req), OK);
    assert_eq!(driver.data_bytes(&req), expected);
    assert_eq!(driver.used(0), (u32::from(req.head), 21));

    // A short buffer gets the start; a long one the 20 bytes and nothing more.
    let short = driver.get_id(8);
    let long = driver.get_id(32);
    block.run_queue();
    assert_eq!(driver.data_bytes(&short), expected[..8]);
    assert_eq!(driver.used(1).1, 9);
    let long_bytes = driver.data_bytes(&long);
    assert_eq!(long_bytes[..20], expected);
    assert_eq!(long_bytes[20..], [0xaa; 12]);
    assert_eq!(driver.used(2).1, 21);
    assert_eq!(block.metrics().snapshot().get_id_count, 3);
}

#[test]
fn serials_are_stable_and_do_not_show_the_hosts_device_and_inode() {
    let serial = serial_for(0x803, 0x1a2b);
    assert_eq!(serial, serial_for(0x803, 0x1a2b));
    assert_ne!(serial, serial_for(0x803, 0x1a2c));
    let text = std::str::from_utf8(&serial).unwrap();
    assert!(text.starts_with("blk-") && text.len() == 20, "{text}");
    assert!(!text.contains("803") && !text.contains("1a2b"), "{text}");
    // Whatever the numbers, the ID is all 20 bytes, no NUL.
    assert!(serial_for(u64::MAX, 0).iter().all(|&b| b != 0));
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
    block.run_queue();
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
    block.run_queue();
    assert_eq!(driver.status(&req), OK);
    assert_eq!(driver.data_bytes(&req), pattern(0, SIZE_MAX as usize));

    // SEG_MAX buffers, through an indirect table (a direct chain that long would fill the ring).
    let req = driver.indirect_read(1, SEG_MAX);
    block.run_queue();
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
    block.run_queue();
    assert_eq!(driver.used_count(), 3);
    for (i, req) in reqs.iter().enumerate() {
        assert_eq!(driver.status(req), OK);
        assert_eq!(driver.used(i as u16).0, u32::from(req.head));
    }
    assert!(driver.take_interrupt());
    assert_eq!(block.metrics().snapshot().interrupts, 1);
}

// --- out of bounds ---
