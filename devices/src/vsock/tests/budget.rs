//! Every chain the device takes off a ring counts against its run's budget, good or bad: a
//! guest cannot keep the event loop in the device by handing it bad chains.

use std::time::{Duration, Instant};

use ballast_virtio::test_utils::Recycler;

use super::super::packet::{HEADER_SIZE, OP_RST, OP_RW};
use super::super::Limits;
use super::util::*;

/// A small budget, so one run is easy to see.
fn small_budget() -> Limits {
    Limits {
        chains_per_run: 8,
        ..Limits::default()
    }
}

#[test]
fn tx_heads_naming_no_descriptor_count_against_the_budget() {
    let mut h = Harness::with(small_budget(), None, 32);
    for _ in 0..32 {
        h.guest.push_tx_head(QUEUE_SIZE_U16 + 7);
    }
    // One wake-up of the loop takes one budget's worth, then the device kicks itself.
    h.manager.run_with_timeout(0).unwrap();
    assert_eq!(h.metrics().malformed_tx, 8);
    h.settle();
    assert_eq!(h.metrics().malformed_tx, 32);
    assert_eq!(h.metrics().queue_errors, 0);
}

#[test]
fn unusable_rx_buffers_count_against_the_budget() {
    let mut h = Harness::with(small_budget(), None, 0);
    h.guest.auto_refill = false;
    // Device-readable rx buffers: the device cannot write a packet into them.
    for _ in 0..32 {
        let addr = h.guest.alloc(64);
        h.guest.add_rx_raw(&[(addr, 64, READ)]);
    }
    // A packet for no connection: its reset waits for an rx buffer.
    h.guest.send(hdr(OP_RW, 7000, 1234), b"lost");
    h.manager.run_with_timeout(0).unwrap();
    assert_eq!(h.metrics().bad_rx_buffers, 8);
    h.settle();
    assert_eq!(h.metrics().bad_rx_buffers, 32);
    // The reset is still there for the first good buffer.
    h.guest.inbox.clear();
    h.guest.auto_refill = true;
    h.guest.add_rx(4096);
    h.guest.kick_rx();
    let rst = h.next_packet("the RST");
    assert_eq!((rst.hdr.op, rst.used_len), (OP_RST, HEADER_SIZE as u32));
}

/// The livelock of issue 15: a guest queues one reset, then hands the device the same unusable
/// rx buffer again as soon as it comes back, from another thread (a vCPU), keeping the ring
/// full. One wake-up of the loop must return on its own, before the hostile thread gives up,
/// having taken at most a budget's worth per round.
#[test]
fn a_recycled_bad_rx_buffer_does_not_keep_the_loop_in_the_device() {
    let mut h = Harness::with(small_budget(), None, 0);
    h.guest.auto_refill = false;
    let addr = h.guest.alloc(64);
    let head = h.guest.add_rx_raw(&[(addr, 64, READ)]);
    h.settle();
    h.guest.collect();
    let before = h.metrics().bad_rx_buffers;

    let recycler = Recycler::start(
        h.guest.mem,
        h.guest.rx_layout(),
        head,
        QUEUE_SIZE_U16,
        Duration::from_secs(5),
    );
    // Let the hostile thread fill the ring first.
    std::thread::sleep(Duration::from_millis(50));
    h.guest.send(hdr(OP_RW, 7000, 1234), b"lost");
    let started = Instant::now();
    h.manager.run_with_timeout(1000).unwrap();
    let took = started.elapsed();
    let taken = h.metrics().bad_rx_buffers - before;
    let end = recycler.stop();
    // The hostile thread's buffers, for the test driver's bookkeeping.
    h.guest.rx_outstanding += end.pushed as usize;
    assert!(
        !end.gave_up,
        "the loop stayed in the device for {took:?} ({taken} bad buffers)"
    );
    // pump() goes round up to four times when a stalled tx queue moves again; never more.
    assert!(
        (1..=4 * 8).contains(&taken),
        "one wake-up took {taken} bad rx buffers"
    );
    // The device goes on: the reset reaches the guest through a good buffer.
    h.settle();
    h.guest.auto_refill = true;
    h.guest.add_rx(4096);
    h.guest.kick_rx();
    h.wait("the RST", |g| g.inbox.iter().any(|p| p.hdr.op == OP_RST));
    assert_eq!(h.metrics().queue_errors, 0);
}

const QUEUE_SIZE_U16: u16 = super::super::QUEUE_SIZE;
