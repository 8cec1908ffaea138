//! The statistics queue and free page reporting.

use super::*;

#[test]
fn stats_are_parsed_and_the_buffer_is_held_until_requested() {
    let (mut balloon, mut driver) = activated(config(false, false, 1));
    let first = encode_stats(&[
        (VIRTIO_BALLOON_S_MEMFREE, 100 << 20),
        (VIRTIO_BALLOON_S_MEMTOT, 512 << 20),
        (42, 1), // unknown to this device
        (VIRTIO_BALLOON_S_DIRECT_RECLAIM, 9),
        (0x8000, 2), // unknown
    ]);
    let addr = driver.buffer(&first);
    let head = driver
        .queue(Stats)
        .add_chain(&[(addr, first.len() as u32, 0)]);
    balloon.process_queue(Stats);

    let stats = balloon.latest_stats().unwrap();
    assert_eq!(stats.free_memory, Some(100 << 20));
    assert_eq!(stats.total_memory, Some(512 << 20));
    assert_eq!(stats.direct_reclaims, Some(9));
    assert_eq!(stats.swap_in, None);
    let m = balloon.metrics().snapshot();
    assert_eq!(m.stats_updates, 1);
    assert_eq!(m.stats_unknown_tags, 2);
    // Held: the driver does not get it back until the device wants new numbers.
    assert_eq!(driver.queue(Stats).used_count(), 0);
    assert_eq!(driver.interrupt.status(), 0);

    balloon.request_stats();
    assert_eq!(driver.queue(Stats).used_count(), 1);
    assert_eq!(driver.queue(Stats).used(0), (u32::from(head), 0));
    assert_eq!(driver.interrupt.status(), VIRTIO_MMIO_INT_VRING);
    // Nothing held any more: a second request has nothing to give back.
    balloon.request_stats();
    assert_eq!(driver.queue(Stats).used_count(), 1);

    // The driver refreshes: the last set replaces the previous one whole.
    let second = encode_stats(&[(VIRTIO_BALLOON_S_MEMTOT, 256 << 20)]);
    let addr = driver.buffer(&second);
    driver
        .queue(Stats)
        .add_chain(&[(addr, second.len() as u32, 0)]);
    balloon.process_queue(Stats);
    let stats = balloon.latest_stats().unwrap();
    assert_eq!(stats.total_memory, Some(256 << 20));
    assert_eq!(stats.free_memory, None);
}

#[test]
fn malformed_stats_buffers_are_counted_but_still_held() {
    let (mut balloon, mut driver) = activated(config(false, false, 1));
    let good = encode_stats(&[(VIRTIO_BALLOON_S_AVAIL, 1)]);
    let addr = driver.buffer(&good);
    let odd = driver.queue(Stats).add_chain(&[(addr, 15, 0)]);
    balloon.process_queue(Stats);
    assert_eq!(balloon.metrics().invalid_descriptors.get(), 1);
    assert!(balloon.latest_stats().is_none());
    assert_eq!(driver.queue(Stats).used_count(), 0);

    // A second buffer while one is held: the older one goes back at once.
    let writable = driver.queue(Stats).add_chain(&[(addr, 10, WRITE)]);
    balloon.process_queue(Stats);
    assert_eq!(balloon.metrics().invalid_descriptors.get(), 2);
    assert_eq!(driver.queue(Stats).used_count(), 1);
    assert_eq!(driver.queue(Stats).used(0), (u32::from(odd), 0));

    let huge = vec![0u8; 10 * (MAX_STATS_PER_DESCRIPTOR + 1)];
    let huge_addr = driver.buffer(&huge);
    driver
        .queue(Stats)
        .add_chain(&[(huge_addr, huge.len() as u32, 0)]);
    balloon.process_queue(Stats);
    assert_eq!(balloon.metrics().invalid_descriptors.get(), 3);
    assert_eq!(driver.queue(Stats).used(1), (u32::from(writable), 0));
    assert_eq!(balloon.metrics().stats_updates.get(), 0);
}

#[test]
fn the_stats_interval_can_change_only_with_a_stats_queue() {
    let mut without = Balloon::new(BalloonConfig::default()).unwrap();
    assert!(matches!(
        without.set_stats_interval(5),
        Err(BalloonError::StatsDisabled)
    ));
    let mut with = Balloon::new(config(false, false, 1)).unwrap();
    with.set_stats_interval(0).unwrap();
    with.set_stats_interval(10).unwrap();
    assert_eq!(with.stats_interval(), 10);
}

// --- free page reporting ---

#[test]
fn reported_ranges_are_released_but_stay_the_guests() {
    let (mut balloon, mut driver) = activated(config(false, true, 0));
    let mem = driver.mem;
    let start = pfn_addr(FIRST_TEST_PFN);
    fill(mem, start, 514, 0xa5);
    fill(mem, pfn_addr(RAM1_FIRST_PFN), 16, 0xa5);
    // Linux sends reports as device-writable buffers, several ranges per chain.
    let head = driver.queue(Reporting).add_chain(&[
        (start + PAGE, 2 * MIB as u32, WRITE),
        (pfn_addr(RAM1_FIRST_PFN), 16 * PAGE as u32, WRITE),
    ]);
    balloon.process_queue(Reporting);

    assert!(all_resident(mem, start, 1));
    assert!(none_resident(mem, start + PAGE, 512));
    assert!(all_resident(mem, start + PAGE + 2 * MIB, 1));
    assert!(none_resident(mem, pfn_addr(RAM1_FIRST_PFN), 16));
    assert_eq!(balloon.ballooned_pages(), 0);
    let m = balloon.metrics().snapshot();
    assert_eq!(m.reported_bytes, 2 * MIB + 16 * PAGE);
    assert_eq!(m.released_bytes, 0);
    let reporting = driver.queue(Reporting);
    assert_eq!(reporting.used_count(), 1);
    assert_eq!(
        reporting.used(0),
        (u32::from(head), (2 * MIB + 16 * PAGE) as u32)
    );
    assert_eq!(driver.interrupt.status(), VIRTIO_MMIO_INT_VRING);
}

#[test]
fn bad_reported_ranges_are_skipped() {
    let (mut balloon, mut driver) = activated(config(false, true, 0));
    let mem = driver.mem;
    fill(mem, pfn_addr(FIRST_TEST_PFN), 1, 0xa5);
    fill(mem, RAM0_END - MIB, 256, 0xa5);
    let start = pfn_addr(FIRST_TEST_PFN);
    let q = driver.queue(Reporting);
    q.add_chain(&[(start + 512, PAGE as u32, WRITE)]); // not page aligned
    q.add_chain(&[(start, 100, WRITE)]); // not whole pages
    q.add_chain(&[(start, 0, WRITE)]); // empty
    q.add_chain(&[(RAM0_END - MIB, 2 * MIB as u32, WRITE)]); // reaches into the hole
    q.add_chain(&[(RAM_END, PAGE as u32, WRITE)]); // beyond RAM
    q.add_chain(&[(u64::MAX - 4095, PAGE as u32, WRITE)]); // wraps around
    balloon.process_queue(Reporting);

    let m = balloon.metrics().snapshot();
    assert_eq!(m.invalid_descriptors, 6);
    assert_eq!(m.reported_bytes, 0);
    assert_eq!(m.release_calls, 0);
    assert!(all_resident(mem, start, 1));
    // Refused whole: the part that is RAM was not released either.
    assert!(all_resident(mem, RAM0_END - MIB, 256));
    assert_eq!(driver.queue(Reporting).used_count(), 6);
}

// --- queue indices follow the negotiated features ---

#[test]
fn the_reporting_queue_moves_down_without_stats() {
    let mut balloon = Balloon::new(config(false, true, 1)).unwrap();
    assert_eq!(balloon.queue_max_sizes().len(), 4);
    let acked = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_BALLOON_F_REPORTING);
    let mut driver = Driver::activate(&mut balloon, guest_memory(), Some(acked), 0).unwrap();
    assert_eq!(driver.queues.len(), 3);

    let mem = driver.mem;
    fill(mem, pfn_addr(FIRST_TEST_PFN), 4, 0xa5);
    // Queue 2 is the reporting queue.
    driver.queues[2].add_chain(&[(pfn_addr(FIRST_TEST_PFN), 4 * PAGE as u32, WRITE)]);
    balloon.process_queue(Reporting);
    assert!(none_resident(mem, pfn_addr(FIRST_TEST_PFN), 4));
    assert_eq!(balloon.metrics().reported_bytes.get(), 4 * PAGE);
    assert!(balloon.latest_stats().is_none());
}
