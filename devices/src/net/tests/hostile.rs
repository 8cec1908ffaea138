//! A hostile driver: every class of bad chain on both queues is refused, counted and given
//! back, the device goes on serving good chains, and a broken ring ends in NEEDS_RESET, never
//! in a panic or a stalled event loop.

use ballast_virtio::interrupt::VIRTIO_MMIO_INT_CONFIG;
use ballast_virtio::VirtioDevice;

use super::super::header::tso4_header;
use super::super::header::VnetHeader;
use super::super::{MAX_FRAME_LEN, QUEUE_SIZE, VNET_HDR_LEN};
use super::util::*;

/// Makes every class of bad tx chain available, in turn; returns how many there are and the
/// heads that name real descriptors (which must come back used).
fn bad_tx_chains(guest: &mut Guest) -> (usize, Vec<u16>) {
    let header = guest.buffer_with(&VnetHeader::default().to_bytes());
    let data = guest.buffer_with(&frame(100, 1));
    let mut heads = Vec::new();
    let mut tx = |g: &mut Guest, descs: &[(u64, u32, u16)]| {
        heads.push(g.driver.queues[TX].add_chain(descs));
    };
    // A device-writable descriptor.
    tx(guest, &[(header, 12, READ), (data, 100, WRITE)]);
    // Shorter than a header and an Ethernet header.
    tx(guest, &[(header, 12, READ), (data, 13, READ)]);
    // No header at all.
    tx(guest, &[(header, 7, READ)]);
    // Longer than the longest frame, and lengths that would overflow a 32-bit sum.
    let big = (MAX_FRAME_LEN + 1) as u32;
    tx(guest, &[(header, 12, READ), (data, big, READ)]);
    tx(guest, &[(data, u32::MAX, READ), (data, u32::MAX, READ)]);
    // In the MMIO hole, and running off the end of RAM.
    tx(guest, &[(header, 12, READ), (HOLE_START, 100, READ)]);
    tx(guest, &[(header, 12, READ), (16 * MIB - 50, 100, READ)]);
    // The header itself in the hole.
    tx(guest, &[(HOLE_START, 112, READ)]);
    // Offloads nobody negotiated (UDP fragmentation), unknown flags, a checksum past the end.
    for bad in [
        VnetHeader {
            gso_type: 3,
            ..tso4_header()
        },
        VnetHeader {
            flags: 0x40,
            ..VnetHeader::default()
        },
        VnetHeader {
            csum_start: 90,
            csum_offset: 10,
            gso_type: 0,
            gso_size: 0,
            ..tso4_header()
        },
    ] {
        let h = g_header(guest, bad);
        tx(guest, &[(h, 12, READ), (data, 100, READ)]);
    }
    // More descriptors than a chain may have (through an indirect table).
    let many: Vec<_> = std::iter::once((header, 12, READ))
        .chain((0..QUEUE_SIZE).map(|_| (data, 1, READ)))
        .collect();
    heads.push(guest.add_indirect(TX, &many));
    let mut count = heads.len();
    // An available ring entry naming no descriptor: skipped, never on the used ring.
    guest.driver.queues[TX].push_avail_head(QUEUE_SIZE + 7);
    count += 1;
    (count, heads)
}

fn g_header(guest: &mut Guest, header: VnetHeader) -> u64 {
    guest.buffer_with(&header.to_bytes())
}

#[test]
fn every_bad_tx_chain_is_refused_counted_and_given_back() {
    let (mut net, host, mut guest) = activated(None);
    let (count, heads) = bad_tx_chains(&mut guest);
    guest.send(VnetHeader::default(), &frame(60, 2));
    net.process_tx();
    assert_eq!(host.recv().unwrap().1, frame(60, 2), "only the good frame");
    assert!(host.recv().is_none());
    let used = guest.used(TX);
    let used_heads: Vec<u16> = used.iter().map(|&(h, _)| h).collect();
    assert_eq!(&used_heads[..heads.len()], &heads[..]);
    assert!(used.iter().all(|&(_, len)| len == 0));
    assert_eq!(used.len(), heads.len() + 1);
    let m = net.metrics().snapshot();
    assert_eq!(m.tx_refused_chains, count as u64);
    assert_eq!((m.tx_packets, m.queue_errors), (1, 0));
    assert!(!net.needs_reset());
}

#[test]
fn every_bad_rx_buffer_is_given_back_empty_and_the_frame_takes_the_next_good_one() {
    let (mut net, host, mut guest) = activated(None);
    let buffer = guest.buffer_with(&[0; 2048]);
    let mut refused = Vec::new();
    // A device-readable descriptor; in the hole; off the end of RAM; room for less than the
    // header; more descriptors than a chain may have.
    for descs in [
        vec![(buffer, 2048, READ)],
        vec![(buffer, 1024, WRITE), (buffer + 1024, 1024, READ)],
        vec![(HOLE_START, 2048, WRITE)],
        vec![(16 * MIB - 1024, 2048, WRITE)],
        vec![(buffer, 11, WRITE)],
        vec![(buffer, 0, WRITE)],
    ] {
        refused.push(guest.post_rx_chain(&descs));
    }
    let many: Vec<_> = (0..=QUEUE_SIZE)
        .map(|i| (buffer + u64::from(i), 1, WRITE))
        .collect();
    refused.push(guest.add_indirect(RX, &many));
    guest.driver.queues[RX].push_avail_head(QUEUE_SIZE + 1);
    let good = guest.post_rx(1526);
    host.send(VnetHeader::default(), &frame(500, 3));
    net.process_rx();
    let used = guest.used(RX);
    let mut expected: Vec<(u16, u32)> = refused.iter().map(|&h| (h, 0)).collect();
    expected.push((good, (VNET_HDR_LEN + 500) as u32));
    assert_eq!(used, expected);
    let m = net.metrics().snapshot();
    assert_eq!(m.rx_refused_chains, refused.len() as u64 + 1);
    assert_eq!(m.rx_packets, 1);
    assert!(!net.needs_reset());
}

#[test]
fn a_broken_ring_asks_for_a_reset_instead_of_stopping_the_vmm() {
    for queue in [RX, TX] {
        let (mut net, host, mut guest) = activated(None);
        // An available index the ring cannot hold (more entries than its size).
        guest.driver.queues[queue].set_avail_idx(QUEUE_SIZE + 3);
        host.send(VnetHeader::default(), &frame(60, 4));
        net.process_tx();
        net.process_rx();
        assert!(net.needs_reset(), "queue {queue}");
        assert_eq!(
            guest.interrupt.status() & VIRTIO_MMIO_INT_CONFIG,
            VIRTIO_MMIO_INT_CONFIG
        );
        assert_eq!(net.metrics().snapshot().queue_errors, 1);
        // Until the driver resets it, the device does nothing more.
        net.process_tx();
        net.process_rx();
        assert_eq!(net.metrics().snapshot().queue_errors, 1);
        assert!(net.reset());
        assert!(!net.needs_reset());
        let _ = guest.used(queue);
    }
}

#[test]
fn a_guest_that_floods_bad_rx_buffers_is_served_a_budget_at_a_time() {
    let (mut net, host, mut guest) = activated(None);
    let buffer = guest.buffer_with(&[0; 64]);
    for _ in 0..QUEUE_SIZE {
        guest.post_rx_chain(&[(buffer, 64, READ)]);
    }
    host.send(VnetHeader::default(), &frame(60, 5));
    net.process_rx();
    let m = net.metrics().snapshot();
    assert_eq!(m.rx_refused_chains, u64::from(QUEUE_SIZE));
    assert_eq!(m.budget_exhausted, 1);
    assert_eq!(guest.used(RX).len(), usize::from(QUEUE_SIZE));
    // The frame waits for a good buffer.
    guest.post_rx(1526);
    net.process_rx();
    assert_eq!(guest.received().len(), 1);
}
