//! The balloon device against virtio-queue's mock driver queues.

mod budget;
mod inflate;
mod statistics;

pub(super) mod util;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_virtio::interrupt::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use ballast_virtio::{ActivateError, Activation, VirtioDevice};
use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_WRITE};
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

/// `count` queues as a transport would hand them over before the driver set them up, and an
/// interrupt.
fn unready_queues(
    count: usize,
) -> (
    Vec<ballast_virtio::QueueEvent>,
    Arc<ballast_virtio::VirtioInterrupt>,
) {
    let events = (0..count)
        .map(|_| ballast_virtio::QueueEvent {
            queue: virtio_queue::Queue::new(256).unwrap(),
            event: vmm_sys_util::eventfd::EventFd::new(0).unwrap(),
        })
        .collect();
    (events, test_interrupt())
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
    let (events, interrupt) = unready_queues(3);
    assert!(matches!(
        balloon.activate(Activation::new(mem.clone(), interrupt, events)),
        Err(ActivateError::QueueCount { want: 4, got: 3 })
    ));
    assert!(!balloon.is_activated());
}

#[test]
fn a_queue_that_is_not_ready_fails_activation() {
    let mut balloon = Balloon::new(BalloonConfig::default()).unwrap();
    let (events, interrupt) = unready_queues(2);
    assert!(matches!(
        balloon.activate(Activation::new(guest_memory().clone(), interrupt, events)),
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

#[test]
fn writes_to_the_hosts_config_bytes_are_counted_and_change_nothing() {
    let (mut balloon, _driver) = activated(BalloonConfig::default());
    balloon.set_target_pages(7);
    for _ in 0..100 {
        balloon.write_config(0, &[0xff; 4]);
    }
    assert_eq!(balloon.target_pages(), 7);
    assert_eq!(balloon.core().refused_config_writes(), 100);
    // `actual` is the driver's: not refused.
    balloon.write_config(4, &9u32.to_le_bytes());
    assert_eq!(balloon.actual_pages(), 9);
    assert_eq!(balloon.core().refused_config_writes(), 100);
}

#[test]
fn a_stats_interval_the_timer_cannot_take_changes_nothing() {
    use std::os::fd::AsRawFd;
    let mut balloon = Balloon::new(config(false, false, 1)).unwrap();
    balloon.timer_registered = true;
    let fd = balloon.stats_timer.as_ref().unwrap().as_raw_fd();
    // The timer breaks: its descriptor now names /dev/null, which no timer call takes.
    let null = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: dup2 replaces the descriptor the timer owns with another open one; the timer
    // closes it when dropped, as it would have closed its own.
    assert_eq!(unsafe { libc::dup2(null.as_raw_fd(), fd) }, fd);
    assert!(balloon.set_stats_interval(5).is_err());
    assert_eq!(
        balloon.stats_interval(),
        1,
        "the failed update left the interval as it was"
    );
}
