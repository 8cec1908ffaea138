//! Inflate and deflate: PFN arrays, what the host releases, and what the device refuses.

use super::*;

#[test]
fn inflating_contiguous_pfns_releases_their_host_pages_in_one_call() {
    let (mut balloon, mut driver) = activated(BalloonConfig::default());
    let mem = driver.mem;
    // The 256 pages plus one neighbour on each side.
    fill(mem, pfn_addr(FIRST_TEST_PFN - 1), 258, 0xa5);
    assert!(all_resident(mem, pfn_addr(FIRST_TEST_PFN - 1), 258));

    let pfns: Vec<u32> = (FIRST_TEST_PFN..FIRST_TEST_PFN + 256).collect();
    let head = driver.send_pfns(Inflate, &pfns);
    balloon.process_queue(Inflate);

    assert!(none_resident(mem, pfn_addr(FIRST_TEST_PFN), 256));
    assert!(all_resident(mem, pfn_addr(FIRST_TEST_PFN - 1), 1));
    assert!(all_resident(mem, pfn_addr(FIRST_TEST_PFN + 256), 1));
    assert_eq!(balloon.ballooned_pages(), 256);
    assert!(balloon.is_ballooned(u64::from(FIRST_TEST_PFN)));
    assert!(balloon.is_ballooned(u64::from(FIRST_TEST_PFN + 255)));
    assert!(!balloon.is_ballooned(u64::from(FIRST_TEST_PFN + 256)));

    let m = balloon.metrics().snapshot();
    assert_eq!(m.inflate_pfns, 256);
    assert_eq!(m.release_calls, 1);
    assert_eq!(m.released_bytes, MIB);
    assert_eq!(m.madvise_errors, 0);
    assert_eq!(m.invalid_descriptors, 0);

    let inflate = driver.queue(Inflate);
    assert_eq!(inflate.used_count(), 1);
    assert_eq!(inflate.used(0), (u32::from(head), 0));
    assert_eq!(driver.interrupt.status(), VIRTIO_MMIO_INT_VRING);
}

#[test]
fn inflating_scattered_pfns_releases_each_run() {
    let (mut balloon, mut driver) = activated(BalloonConfig::default());
    let mem = driver.mem;
    let base = FIRST_TEST_PFN;
    fill(mem, pfn_addr(base), 128, 0xa5);
    fill(mem, pfn_addr(RAM1_FIRST_PFN), 8, 0xa5);
    fill(mem, pfn_addr(HOLE_FIRST_PFN - 2), 2, 0xa5);
    fill(mem, pfn_addr(RAM_END_PFN - 2), 2, 0xa5);

    // Out of order, as a driver may send them: runs {base+5..=base+8}, {base+100},
    // {HOLE_FIRST_PFN-1}, {RAM1_FIRST_PFN, +1} and {RAM_END_PFN-1}.
    let pfns = [
        HOLE_FIRST_PFN - 1,
        base + 6,
        base + 7,
        base + 8,
        RAM1_FIRST_PFN + 1,
        RAM1_FIRST_PFN,
        base + 100,
        RAM_END_PFN - 1,
        base + 5,
    ];
    driver.send_pfns(Inflate, &pfns);
    balloon.process_queue(Inflate);

    for &pfn in &pfns {
        assert!(none_resident(mem, pfn_addr(pfn), 1), "pfn {pfn}");
        assert!(balloon.is_ballooned(u64::from(pfn)));
    }
    for pfn in [
        base + 4,
        base + 9,
        base + 99,
        base + 101,
        RAM1_FIRST_PFN + 2,
    ] {
        assert!(all_resident(mem, pfn_addr(pfn), 1), "pfn {pfn}");
        assert!(!balloon.is_ballooned(u64::from(pfn)));
    }
    assert!(all_resident(mem, pfn_addr(HOLE_FIRST_PFN - 2), 1));
    assert!(all_resident(mem, pfn_addr(RAM_END_PFN - 2), 1));
    let m = balloon.metrics().snapshot();
    assert_eq!(m.release_calls, 5);
    assert_eq!(m.inflate_pfns, 9);
    assert_eq!(m.released_bytes, 9 * PAGE);
    assert_eq!(balloon.ballooned_pages(), 9);
    assert_eq!(
        balloon.ballooned().runs(),
        vec![
            (u64::from(base + 5), 4),
            (u64::from(base + 100), 1),
            (u64::from(HOLE_FIRST_PFN - 1), 1),
            (u64::from(RAM1_FIRST_PFN), 2),
            (u64::from(RAM_END_PFN - 1), 1),
        ]
    );
}

#[test]
fn inflating_a_page_twice_is_idempotent() {
    let (mut balloon, mut driver) = activated(BalloonConfig::default());
    let pfns: Vec<u32> = (FIRST_TEST_PFN..FIRST_TEST_PFN + 16).collect();
    driver.send_pfns(Inflate, &pfns);
    driver.send_pfns(Inflate, &pfns);
    // Duplicates inside one array, too.
    driver.send_pfns(
        Inflate,
        &[FIRST_TEST_PFN, FIRST_TEST_PFN, FIRST_TEST_PFN + 16],
    );
    balloon.process_queue(Inflate);

    assert_eq!(balloon.ballooned_pages(), 17);
    let m = balloon.metrics().snapshot();
    assert_eq!(m.inflate_pfns, 16 + 16 + 2);
    assert_eq!(m.inflate_repeat_pfns, 16 + 1);
    assert_eq!(driver.queue(Inflate).used_count(), 3);
}

#[test]
fn invalid_pfns_are_counted_and_memory_around_them_is_untouched() {
    let (mut balloon, mut driver) = activated(BalloonConfig::default());
    let mem = driver.mem;
    fill(mem, pfn_addr(HOLE_FIRST_PFN - 4), 4, 0xa5);
    fill(mem, pfn_addr(RAM1_FIRST_PFN), 1, 0xa5);
    fill(mem, pfn_addr(RAM_END_PFN - 1), 1, 0xa5);
    fill(mem, pfn_addr(FIRST_TEST_PFN), 1, 0xa5);

    driver.send_pfns(
        Inflate,
        &[
            HOLE_FIRST_PFN,
            HOLE_LAST_PFN,
            RAM_END_PFN,
            u32::MAX,
            FIRST_TEST_PFN,
        ],
    );
    // A run that walks off the end of the first region into the hole.
    driver.send_pfns(
        Inflate,
        &[
            HOLE_FIRST_PFN - 2,
            HOLE_FIRST_PFN - 1,
            HOLE_FIRST_PFN,
            HOLE_FIRST_PFN + 1,
        ],
    );
    balloon.process_queue(Inflate);

    let m = balloon.metrics().snapshot();
    assert_eq!(m.invalid_pfns, 4 + 2);
    assert_eq!(m.inflate_pfns, 3);
    assert_eq!(m.release_calls, 2);
    assert_eq!(m.madvise_errors, 0);
    assert_eq!(balloon.ballooned_pages(), 3);
    assert!(none_resident(mem, pfn_addr(FIRST_TEST_PFN), 1));
    assert!(none_resident(mem, pfn_addr(HOLE_FIRST_PFN - 2), 2));
    assert!(all_resident(mem, pfn_addr(HOLE_FIRST_PFN - 4), 2));
    assert!(all_resident(mem, pfn_addr(RAM1_FIRST_PFN), 1));
    assert!(all_resident(mem, pfn_addr(RAM_END_PFN - 1), 1));
    assert!(!balloon.is_ballooned(u64::from(HOLE_FIRST_PFN)));
    assert_eq!(driver.queue(Inflate).used_count(), 2);
}

#[test]
fn a_device_writable_pfn_array_is_skipped() {
    let (mut balloon, mut driver) = activated(BalloonConfig::default());
    let mem = driver.mem;
    fill(mem, pfn_addr(FIRST_TEST_PFN), 2, 0xa5);
    let bad = driver.buffer(&encode_pfns(&[FIRST_TEST_PFN]));
    let good = driver.buffer(&encode_pfns(&[FIRST_TEST_PFN + 1]));
    let lone = driver.queue(Inflate).add_chain(&[(bad, 4, WRITE)]);
    // In a chain the readable array is still used.
    driver
        .queue(Inflate)
        .add_chain(&[(bad, 4, WRITE), (good, 4, 0)]);
    balloon.process_queue(Inflate);

    assert_eq!(balloon.metrics().invalid_descriptors.get(), 2);
    assert!(all_resident(mem, pfn_addr(FIRST_TEST_PFN), 1));
    assert!(none_resident(mem, pfn_addr(FIRST_TEST_PFN + 1), 1));
    assert_eq!(balloon.ballooned_pages(), 1);
    // Skipped or not, every chain goes back to the driver.
    let inflate = driver.queue(Inflate);
    assert_eq!(inflate.used_count(), 2);
    assert_eq!(inflate.used(0), (u32::from(lone), 0));
}

#[test]
fn pfn_arrays_of_bad_length_are_skipped() {
    let (mut balloon, mut driver) = activated(BalloonConfig::default());
    let mem = driver.mem;
    fill(mem, pfn_addr(FIRST_TEST_PFN), 257, 0xa5);
    let pfns: Vec<u32> = (FIRST_TEST_PFN..FIRST_TEST_PFN + 257).collect();
    let array = driver.buffer(&encode_pfns(&pfns));
    let q = driver.queue(Inflate);
    q.add_chain(&[(array, 6, 0)]); // not whole PFNs
    q.add_chain(&[(array, 0, 0)]); // empty
    q.add_chain(&[(array, 257 * 4, 0)]); // more than Linux's 256
    q.add_chain(&[(pfn_addr(HOLE_FIRST_PFN), 8, 0)]); // not in guest RAM
    q.add_chain(&[(RAM_END - 4, 8, 0)]); // runs off the end of RAM
    balloon.process_queue(Inflate);

    let m = balloon.metrics().snapshot();
    assert_eq!(m.invalid_descriptors, 5);
    assert_eq!(m.inflate_pfns, 0);
    assert_eq!(m.release_calls, 0);
    assert_eq!(balloon.ballooned_pages(), 0);
    assert!(all_resident(mem, pfn_addr(FIRST_TEST_PFN), 257));
    assert_eq!(driver.queue(Inflate).used_count(), 5);

    // Exactly 256 PFNs is fine.
    driver.send_pfns(Inflate, &pfns[..256]);
    balloon.process_queue(Inflate);
    assert_eq!(balloon.ballooned_pages(), 256);
}

#[test]
fn an_indirect_chain_is_refused_unread() {
    let (mut balloon, mut driver) = activated(BalloonConfig::default());
    // 300 one-PFN arrays in an indirect table: INDIRECT_DESC is not offered, so none is read.
    const LEN: u16 = 300;
    let arrays: Vec<u32> = (0..u32::from(LEN)).map(|i| FIRST_TEST_PFN + i).collect();
    let arrays_addr = driver.buffer(&encode_pfns(&arrays));
    let table: Vec<(u64, u32, u16)> = (0..LEN)
        .map(|i| (arrays_addr + 4 * u64::from(i), 4, 0))
        .collect();
    let table_addr = driver.buffer(&descriptor_table(&table));
    driver.queue(Inflate).add_chain(&[(
        table_addr,
        u32::from(LEN) * 16,
        VRING_DESC_F_INDIRECT as u16,
    )]);
    balloon.process_queue(Inflate);

    assert_eq!(balloon.ballooned_pages(), 0);
    assert_eq!(balloon.metrics().invalid_descriptors.get(), 1);
    assert_eq!(driver.queue(Inflate).used_count(), 1);
}

#[test]
fn a_chain_of_more_than_32_arrays_is_cut() {
    let (mut balloon, mut driver) = activated(BalloonConfig::default());
    let arrays: Vec<u32> = (0..40).map(|i| FIRST_TEST_PFN + i).collect();
    let arrays_addr = driver.buffer(&encode_pfns(&arrays));
    let chain: Vec<(u64, u32, u16)> = (0..40).map(|i| (arrays_addr + 4 * i, 4, 0)).collect();
    driver.queue(Inflate).add_chain(&chain);
    balloon.process_queue(Inflate);

    assert_eq!(balloon.ballooned_pages(), 32);
    assert!(!balloon.is_ballooned(u64::from(FIRST_TEST_PFN + 32)));
    assert_eq!(balloon.metrics().invalid_descriptors.get(), 1);
    assert_eq!(driver.queue(Inflate).used_count(), 1);
}

// --- deflate ---

#[test]
fn deflating_takes_pages_out_of_the_balloon() {
    let (mut balloon, mut driver) = activated(BalloonConfig::default());
    let mem = driver.mem;
    fill(mem, pfn_addr(FIRST_TEST_PFN), 10, 0x5a);
    let pfns: Vec<u32> = (FIRST_TEST_PFN..FIRST_TEST_PFN + 10).collect();
    driver.send_pfns(Inflate, &pfns);
    balloon.process_queue(Inflate);
    assert_eq!(balloon.ballooned_pages(), 10);

    let head = driver.send_pfns(
        Deflate,
        &[
            FIRST_TEST_PFN,
            FIRST_TEST_PFN + 1,
            FIRST_TEST_PFN + 50, // never inflated
            HOLE_FIRST_PFN + 3,  // not guest RAM
        ],
    );
    balloon.process_queue(Deflate);

    assert_eq!(balloon.ballooned_pages(), 8);
    assert!(!balloon.is_ballooned(u64::from(FIRST_TEST_PFN)));
    assert!(balloon.is_ballooned(u64::from(FIRST_TEST_PFN + 2)));
    let m = balloon.metrics().snapshot();
    assert_eq!(m.deflate_pfns, 3);
    assert_eq!(m.deflate_absent_pfns, 1);
    assert_eq!(m.invalid_pfns, 1);
    let deflate = driver.queue(Deflate);
    assert_eq!(deflate.used_count(), 1);
    assert_eq!(deflate.used(0), (u32::from(head), 0));

    // Scrubbed: the guest's old data is gone, the page reads as zeros.
    assert!(reads_as(mem, pfn_addr(FIRST_TEST_PFN), PAGE, 0));
}

#[test]
fn a_device_writable_deflate_array_is_skipped() {
    let (mut balloon, mut driver) = activated(BalloonConfig::default());
    driver.send_pfns(Inflate, &[FIRST_TEST_PFN]);
    balloon.process_queue(Inflate);
    let array = driver.buffer(&encode_pfns(&[FIRST_TEST_PFN]));
    driver.queue(Deflate).add_chain(&[(array, 4, WRITE)]);
    driver.queue(Deflate).add_chain(&[(array, 3, 0)]);
    balloon.process_queue(Deflate);
    assert!(balloon.is_ballooned(u64::from(FIRST_TEST_PFN)));
    assert_eq!(balloon.metrics().invalid_descriptors.get(), 2);
    assert_eq!(driver.queue(Deflate).used_count(), 2);
}

// --- statistics ---
