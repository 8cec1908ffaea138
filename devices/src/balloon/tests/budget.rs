//! One wake-up of the event loop does a bounded amount of balloon work, whatever the guest
//! puts on a ring: the rest waits for the next run (the queue kicks itself).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT;

use super::super::queue::BalloonQueue::Inflate;
use super::super::queue::PAGES_PER_RUN;
use super::super::*;
use super::util::*;

/// The most PFNs one chain can carry: 32 arrays of 256.
const MAX_PFNS_PER_CHAIN: u64 = 32 * 256;

type Loop = EventManager<Arc<Mutex<Balloon>>>;

fn on_a_loop() -> (Arc<Mutex<Balloon>>, Loop, Driver) {
    let balloon = Arc::new(Mutex::new(Balloon::new(BalloonConfig::default()).unwrap()));
    let mut manager = EventManager::<Arc<Mutex<Balloon>>>::new().unwrap();
    manager.add_subscriber(balloon.clone());
    let driver = Driver::activate(&mut balloon.lock().unwrap(), guest_memory(), None, 0).unwrap();
    manager.run_with_timeout(0).unwrap();
    (balloon, manager, driver)
}

fn inflated(balloon: &Mutex<Balloon>) -> u64 {
    balloon.lock().unwrap().metrics().inflate_pfns.get()
}

#[test]
fn a_full_ring_of_inflate_arrays_is_cut_into_budgeted_runs() {
    let (balloon, mut manager, mut driver) = on_a_loop();
    // 256 chains of one 256-PFN array: 64 Ki PFNs in one kick, the same pages over and over.
    let pfns: Vec<u32> = (FIRST_TEST_PFN..FIRST_TEST_PFN + 256).collect();
    let array = driver.buffer(&encode_pfns(&pfns));
    for _ in 0..256 {
        driver.queue(Inflate).add_chain(&[(array, 1024, 0)]);
    }
    driver.queue(Inflate).kick.write(1).unwrap();
    manager.run_with_timeout(0).unwrap();
    let first_run = inflated(&balloon);
    assert!(
        (PAGES_PER_RUN..PAGES_PER_RUN + MAX_PFNS_PER_CHAIN).contains(&first_run),
        "one run inflated {first_run} PFNs"
    );
    // The queue kicked itself: the rest follows without the guest kicking again.
    assert!(run_until(&mut manager, Duration::from_secs(10), || {
        inflated(&balloon) == 256 * 256
    }));
    assert_eq!(driver.queue(Inflate).used_count(), 256);
    assert_eq!(balloon.lock().unwrap().ballooned_pages(), 256);
}

/// 16.7 M PFNs in one kick, as in issue 15: 256 chains, each an indirect table of 256 arrays of
/// 256 PFNs. Indirect tables are not offered, so each chain is refused unread.
#[test]
fn a_16_million_pfn_kick_through_indirect_tables_is_refused_in_one_short_run() {
    let (balloon, mut manager, mut driver) = on_a_loop();
    let pfns: Vec<u32> = (FIRST_TEST_PFN..FIRST_TEST_PFN + 256).collect();
    let array = driver.buffer(&encode_pfns(&pfns));
    let table = descriptor_table(&vec![(array, 1024, 0); 256]);
    let table_addr = driver.buffer(&table);
    for _ in 0..256 {
        driver.queue(Inflate).add_chain(&[(
            table_addr,
            table.len() as u32,
            VRING_DESC_F_INDIRECT as u16,
        )]);
    }
    driver.queue(Inflate).kick.write(1).unwrap();
    manager.run_with_timeout(0).unwrap();
    let first_run = inflated(&balloon);
    assert!(
        first_run <= PAGES_PER_RUN + MAX_PFNS_PER_CHAIN,
        "one run inflated {first_run} PFNs"
    );
    assert!(run_until(&mut manager, Duration::from_secs(10), || {
        driver.queue(Inflate).used_count() == 256
    }));
    let m = balloon.lock().unwrap().metrics().snapshot();
    assert_eq!(m.inflate_pfns, 0);
    assert_eq!(m.invalid_descriptors, 256);
    assert_eq!(m.queue_errors, 0);
}
