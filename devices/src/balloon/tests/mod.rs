//! The balloon device against virtio-queue's mock driver queues.

pub(super) mod util;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_virtio::interrupt::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use ballast_virtio::{ActivateError, VirtioDevice};
use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::QueueT;

use super::queue::BalloonQueue::{Deflate, Inflate, Reporting, Stats};
use super::stats::*;
use super::*;
use util::*;

const WRITE: u16 = VRING_DESC_F_WRITE as u16;

fn config(deflate_on_oom: bool, free_page_reporting: bool, stats_s: u16) -> BalloonConfig {
    BalloonConfig {
        deflate_on_oom,
        free_page_reporting,
        stats_polling_interval_s: stats_s,
    }
}

fn bit(feature: u32) -> u64 {
    1 << feature
}

// --- features, queues, config space ---

#[test]
fn features_and_queues_follow_the_config() {
    let plain = Balloon::new(BalloonConfig::default()).unwrap();
    assert_eq!(plain.device_type(), 5);
    assert_eq!(plain.avail_features(), bit(VIRTIO_F_VERSION_1));
    assert_eq!(plain.queue_max_sizes(), &[256, 256]);

    let stats = Balloon::new(config(false, false, 1)).unwrap();
    assert_eq!(
        stats.avail_features(),
        bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_BALLOON_F_STATS_VQ)
    );
    assert_eq!(stats.queue_max_sizes().len(), 3);

    let all = Balloon::new(config(true, true, 5)).unwrap();
    assert_eq!(
        all.avail_features(),
        bit(VIRTIO_F_VERSION_1)
            | bit(VIRTIO_BALLOON_F_STATS_VQ)
            | bit(VIRTIO_BALLOON_F_DEFLATE_ON_OOM)
            | bit(VIRTIO_BALLOON_F_REPORTING)
    );
    assert_eq!(all.queue_max_sizes(), &[256; 4]);

    let reporting = Balloon::new(config(false, true, 0)).unwrap();
    assert_eq!(reporting.queue_max_sizes().len(), 3);
    assert_eq!(
        reporting.avail_features() & bit(VIRTIO_BALLOON_F_MUST_TELL_HOST),
        0
    );
}

#[test]
fn acked_features_are_limited_to_the_offered_ones() {
    let mut balloon = Balloon::new(config(false, false, 0)).unwrap();
    balloon.set_acked_features(u64::MAX);
    // With only inflate and deflate offered, the driver needs two queues whatever it acked.
    let mem = guest_memory();
    assert!(Driver::activate(&mut balloon, mem, Some(u64::MAX), 0).is_ok());
    assert_eq!(balloon.queue_max_sizes().len(), 2);
}

#[test]
fn config_space_reads_the_target_and_takes_actual_from_the_driver() {
    let mut balloon = Balloon::new(BalloonConfig::default()).unwrap();
    balloon.set_target_pages(0x1234_5678);

    let mut word = [0u8; 4];
    balloon.read_config(0, &mut word);
    assert_eq!(u32::from_le_bytes(word), 0x1234_5678);
    balloon.read_config(4, &mut word);
    assert_eq!(u32::from_le_bytes(word), 0);

    balloon.write_config(4, &100u32.to_le_bytes());
    assert_eq!(balloon.actual_pages(), 100);
    balloon.read_config(4, &mut word);
    assert_eq!(u32::from_le_bytes(word), 100);

    // num_pages is the host's: a driver write changes nothing.
    balloon.write_config(0, &7u32.to_le_bytes());
    assert_eq!(balloon.target_pages(), 0x1234_5678);

    // Byte-wide access, and a write straddling num_pages and actual.
    balloon.write_config(5, &[1]);
    assert_eq!(balloon.actual_pages(), 100 + 256);
    balloon.write_config(2, &[0xff, 0xff, 0x02, 0x00]);
    assert_eq!(balloon.target_pages(), 0x1234_5678);
    assert_eq!(balloon.actual_pages(), 2);

    let mut bytes = [0xaa; 4];
    balloon.read_config(6, &mut bytes);
    assert_eq!(bytes, [0, 0, 0, 0]);
    balloon.read_config(1, &mut bytes);
    assert_eq!(bytes, [0x56, 0x34, 0x12, 0x02]);
    let mut past_end = [0xaa; 8];
    balloon.read_config(100, &mut past_end);
    assert_eq!(past_end, [0; 8]);
    balloon.read_config(u64::MAX, &mut past_end[..2]);
    assert_eq!(past_end, [0; 8]);
}

#[test]
fn a_new_target_raises_a_config_interrupt_once_active() {
    let mut balloon = Balloon::new(BalloonConfig::default()).unwrap();
    // Before activation there is no one to tell: the driver reads the target at start.
    balloon.set_target_mib(64).unwrap();
    assert_eq!(balloon.target_pages(), 64 * 256);
    assert_eq!(balloon.metrics().config_changes.get(), 0);

    let driver = Driver::activate(&mut balloon, guest_memory(), None, 0).unwrap();
    assert_eq!(driver.interrupt.status(), 0);
    balloon.set_target_pages(1000);
    assert_eq!(balloon.target_pages(), 1000);
    assert_eq!(driver.interrupt.status(), VIRTIO_MMIO_INT_CONFIG);
    assert_eq!(driver.interrupt.irqfd().read().unwrap(), 1);
    assert_eq!(balloon.metrics().config_changes.get(), 1);

    assert!(matches!(
        balloon.set_target_mib(u32::MAX / 2),
        Err(BalloonError::TargetTooLarge { .. })
    ));
    assert_eq!(balloon.target_pages(), 1000);
}

// --- inflate ---

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
fn a_chain_longer_than_the_queue_is_cut() {
    let (mut balloon, mut driver) = activated(BalloonConfig::default());
    // Only an indirect table can make a chain this long: 300 one-PFN arrays.
    const LEN: u16 = 300;
    let arrays: Vec<u32> = (0..u32::from(LEN)).map(|i| FIRST_TEST_PFN + i).collect();
    let arrays_addr = driver.buffer(&encode_pfns(&arrays));
    let mut table = Vec::new();
    for i in 0..LEN {
        let last = i + 1 == LEN;
        let desc = virtio_queue::desc::split::Descriptor::new(
            arrays_addr + 4 * u64::from(i),
            4,
            if last { 0 } else { VRING_DESC_F_NEXT as u16 },
            if last { 0 } else { i + 1 },
        );
        table.extend_from_slice(vm_memory::ByteValued::as_slice(&desc));
    }
    let table_addr = driver.buffer(&table);
    driver.queue(Inflate).add_chain(&[(
        table_addr,
        table.len() as u32,
        VRING_DESC_F_INDIRECT as u16,
    )]);
    balloon.process_queue(Inflate);

    assert_eq!(balloon.ballooned_pages(), 256);
    assert!(!balloon.is_ballooned(u64::from(FIRST_TEST_PFN + 256)));
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

#[test]
fn activation_needs_a_queue_per_negotiated_feature() {
    let mut balloon = Balloon::new(config(true, true, 1)).unwrap();
    balloon.set_acked_features(balloon.avail_features());
    let mem = guest_memory();
    let err = Driver::activate(
        &mut balloon,
        mem,
        Some(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_BALLOON_F_STATS_VQ)),
        0,
    );
    assert!(err.is_ok(), "three queues for stats");
    assert!(balloon.reset());

    // The transport may pass the queues of every offered feature; extras are ignored.
    let mut driver = Driver::activate(&mut balloon, mem, Some(bit(VIRTIO_F_VERSION_1)), 2).unwrap();
    driver.send_pfns(Inflate, &[FIRST_TEST_PFN]);
    balloon.process_queue(Inflate);
    assert_eq!(balloon.ballooned_pages(), 1);
    assert!(balloon.reset());

    // Too few: refused.
    balloon.set_acked_features(balloon.avail_features());
    let events = (0..3)
        .map(|_| ballast_virtio::QueueEvent {
            queue: virtio_queue::Queue::new(256).unwrap(),
            event: vmm_sys_util::eventfd::EventFd::new(0).unwrap(),
        })
        .collect();
    let interrupt = Arc::new(ballast_virtio::VirtioInterrupt::new(
        vmm_sys_util::eventfd::EventFd::new(0).unwrap(),
    ));
    assert!(matches!(
        balloon.activate(mem.clone(), interrupt, events),
        Err(ActivateError::QueueCount { want: 4, got: 3 })
    ));
    assert!(!balloon.is_activated());
}

#[test]
fn a_queue_that_is_not_ready_fails_activation() {
    let mut balloon = Balloon::new(BalloonConfig::default()).unwrap();
    let events = (0..2)
        .map(|_| ballast_virtio::QueueEvent {
            queue: virtio_queue::Queue::new(256).unwrap(),
            event: vmm_sys_util::eventfd::EventFd::new(0).unwrap(),
        })
        .collect();
    let interrupt = Arc::new(ballast_virtio::VirtioInterrupt::new(
        vmm_sys_util::eventfd::EventFd::new(0).unwrap(),
    ));
    assert!(matches!(
        balloon.activate(guest_memory().clone(), interrupt, events),
        Err(ActivateError::Backend(_))
    ));
    assert!(!balloon.is_activated());
}

// --- broken queues and reset ---

#[test]
fn an_impossible_available_index_marks_the_device_for_reset() {
    let (mut balloon, mut driver) = activated(BalloonConfig::default());
    // More chains available than the ring holds: the driver is broken or hostile.
    driver.queue(Inflate).set_avail_idx(300);
    balloon.process_queue(Inflate);

    assert!(balloon.needs_reset());
    assert_eq!(balloon.metrics().queue_errors.get(), 1);
    assert_eq!(driver.interrupt.status(), VIRTIO_MMIO_INT_CONFIG);
    // No more queue processing until the driver resets the device.
    driver.queue(Deflate).add_chain(&[(0x10_0000, 4, 0)]);
    balloon.process_queue(Deflate);
    assert_eq!(driver.queue(Deflate).used_count(), 0);

    assert!(balloon.reset());
    assert!(!balloon.needs_reset());
    assert!(!balloon.is_activated());
}

#[test]
fn a_head_index_beyond_the_queue_is_skipped() {
    let (mut balloon, mut driver) = activated(BalloonConfig::default());
    driver.queue(Inflate).push_avail_head(300);
    driver.send_pfns(Inflate, &[FIRST_TEST_PFN]);
    balloon.process_queue(Inflate);
    assert!(!balloon.needs_reset());
    assert_eq!(balloon.metrics().invalid_descriptors.get(), 1);
    assert_eq!(balloon.ballooned_pages(), 1);
    assert_eq!(driver.queue(Inflate).used_count(), 1);
}

#[test]
fn reset_empties_the_balloon_and_a_new_activation_works() {
    let (mut balloon, mut driver) = activated(BalloonConfig::default());
    driver.send_pfns(Inflate, &[FIRST_TEST_PFN, FIRST_TEST_PFN + 1]);
    balloon.process_queue(Inflate);
    balloon.write_config(4, &2u32.to_le_bytes());
    balloon.set_target_pages(2);

    assert!(balloon.reset());
    assert!(!balloon.is_activated());
    assert_eq!(balloon.ballooned_pages(), 0);
    assert_eq!(balloon.actual_pages(), 0);
    assert_eq!(
        balloon.target_pages(),
        2,
        "the target is the host's and survives"
    );

    let mut driver = Driver::activate(&mut balloon, guest_memory(), None, 0).unwrap();
    driver.send_pfns(Inflate, &[FIRST_TEST_PFN + 7]);
    balloon.process_queue(Inflate);
    assert_eq!(balloon.ballooned_pages(), 1);
    assert!(balloon.is_ballooned(u64::from(FIRST_TEST_PFN + 7)));
}

#[test]
fn a_second_activation_without_reset_is_refused() {
    let (mut balloon, _driver) = activated(BalloonConfig::default());
    assert!(matches!(
        Driver::activate(&mut balloon, guest_memory(), None, 0),
        Err(ActivateError::Backend(_))
    ));
    assert!(balloon.is_activated());
}

// --- on the event loop ---

#[test]
fn the_event_loop_registers_queues_at_activation_and_after_a_reset() {
    let balloon = Arc::new(Mutex::new(Balloon::new(BalloonConfig::default()).unwrap()));
    let mut manager = EventManager::<Arc<Mutex<Balloon>>>::new().unwrap();
    manager.add_subscriber(balloon.clone());
    let mem = guest_memory();

    let mut driver = Driver::activate(&mut balloon.lock().unwrap(), mem, None, 0).unwrap();
    manager.run_with_timeout(0).unwrap();
    driver.send_pfns(Inflate, &[FIRST_TEST_PFN]);
    driver.queue(Inflate).kick.write(1).unwrap();
    assert!(run_until(&mut manager, Duration::from_secs(2), || {
        balloon.lock().unwrap().ballooned_pages() == 1
    }));

    // Reset and activate again before the loop runs: the old eventfds go, the new ones come.
    assert!(balloon.lock().unwrap().reset());
    let mut driver = Driver::activate(&mut balloon.lock().unwrap(), mem, None, 0).unwrap();
    manager.run_with_timeout(0).unwrap();
    driver.send_pfns(Inflate, &[FIRST_TEST_PFN + 1, FIRST_TEST_PFN + 2]);
    driver.queue(Inflate).kick.write(1).unwrap();
    driver.send_pfns(Deflate, &[FIRST_TEST_PFN + 1]);
    driver.queue(Deflate).kick.write(1).unwrap();
    assert!(run_until(&mut manager, Duration::from_secs(2), || {
        driver.queue(Deflate).used_count() == 1
    }));
    let balloon = balloon.lock().unwrap();
    assert_eq!(balloon.ballooned_pages(), 1);
    assert!(balloon.is_ballooned(u64::from(FIRST_TEST_PFN + 2)));
    assert_eq!(balloon.metrics().event_errors.get(), 0);
}

#[test]
fn the_stats_timer_gives_the_buffer_back() {
    let balloon = Arc::new(Mutex::new(Balloon::new(config(false, false, 1)).unwrap()));
    let mut manager = EventManager::<Arc<Mutex<Balloon>>>::new().unwrap();
    manager.add_subscriber(balloon.clone());

    let mut driver =
        Driver::activate(&mut balloon.lock().unwrap(), guest_memory(), None, 0).unwrap();
    // The driver posts its first statistics as soon as it starts, before any kick is seen.
    let stats = encode_stats(&[(VIRTIO_BALLOON_S_MEMFREE, 4096)]);
    let addr = driver.buffer(&stats);
    driver
        .queue(Stats)
        .add_chain(&[(addr, stats.len() as u32, 0)]);
    manager.run_with_timeout(0).unwrap();
    assert_eq!(
        balloon.lock().unwrap().latest_stats().unwrap().free_memory,
        Some(4096)
    );
    assert_eq!(driver.queue(Stats).used_count(), 0);

    // One polling interval later the buffer goes back: the request for fresh statistics.
    let start = Instant::now();
    assert!(run_until(&mut manager, Duration::from_secs(3), || {
        driver.queue(Stats).used_count() == 1
    }));
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert_eq!(balloon.lock().unwrap().metrics().event_errors.get(), 0);
}
