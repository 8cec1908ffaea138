//! Frames from the TAP to the guest: merged buffers, big-packet buffers, waiting for buffers,
//! headers checked against what the driver negotiated, the run budget, the event loop.

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM,
};

use super::super::header::tso4_header;
use super::super::header::VnetHeader;
use super::super::queue::RUN_BUDGET;
use super::super::{MAX_FRAME_LEN, MAX_PACKET_LEN, VNET_HDR_LEN};
use super::util::*;

#[test]
fn merged_buffers_take_a_big_frame_in_as_many_buffers_as_it_needs() {
    let (mut net, host, mut guest) = activated(None);
    for _ in 0..60 {
        guest.post_rx(1526);
    }
    let tso = VnetHeader {
        flags: VIRTIO_NET_HDR_F_DATA_VALID as u8 | VIRTIO_NET_HDR_F_NEEDS_CSUM as u8,
        ..tso4_header()
    };
    host.send(tso, &frame(MAX_FRAME_LEN, 1));
    host.send(VnetHeader::default(), &frame(60, 2));
    net.process_rx();
    let got = guest.received();
    assert_eq!(got.len(), 2);
    let buffers = (VNET_HDR_LEN + MAX_FRAME_LEN).div_ceil(1526);
    assert_eq!(got[0].header.num_buffers as usize, buffers);
    assert_eq!(
        VnetHeader {
            num_buffers: 0,
            ..got[0].header
        },
        tso
    );
    assert_eq!(got[0].frame, frame(MAX_FRAME_LEN, 1));
    assert!(got[0].used[..buffers - 1].iter().all(|&len| len == 1526));
    assert_eq!(
        got[0].used.iter().sum::<u32>() as usize,
        VNET_HDR_LEN + MAX_FRAME_LEN
    );
    assert_eq!(
        (got[1].header.num_buffers, got[1].used.as_slice()),
        (1, &[72][..])
    );
    assert!(guest.interrupted());
    let m = net.metrics().snapshot();
    assert_eq!((m.rx_packets, m.rx_bytes), (2, (MAX_FRAME_LEN + 60) as u64));
}

#[test]
fn without_merging_a_frame_fills_one_buffer_of_any_layout() {
    let acked = offered_without(&[VIRTIO_NET_F_MRG_RXBUF]);
    let (mut net, host, mut guest) = activated(Some(acked));
    // Linux's big-packet buffers: the header alone, then pages.
    let header = guest.buffer_with(&[0; VNET_HDR_LEN]);
    let mut chain = vec![(header, VNET_HDR_LEN as u32, WRITE)];
    for _ in 0..17 {
        chain.push((guest.buffer_with(&[0; 4096]), 4096, WRITE));
    }
    guest.post_rx_chain(&chain);
    host.send(tso4_header(), &frame(60_000, 3));
    net.process_rx();
    let got = guest.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header.num_buffers, 1);
    assert_eq!(got[0].frame, frame(60_000, 3));
    assert_eq!(got[0].used, [(VNET_HDR_LEN + 60_000) as u32]);
}

#[test]
fn without_merging_a_frame_too_big_for_the_buffer_is_dropped_and_the_buffer_kept() {
    let acked = offered_without(&[VIRTIO_NET_F_MRG_RXBUF]);
    let (mut net, host, mut guest) = activated(Some(acked));
    guest.post_rx(1526);
    host.send(VnetHeader::default(), &frame(3000, 4));
    host.send(VnetHeader::default(), &frame(1514, 5));
    net.process_rx();
    let got = guest.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].frame, frame(1514, 5));
    assert_eq!(net.metrics().snapshot().rx_dropped, 1);
}

#[test]
fn a_frame_waits_for_buffers_and_comes_when_they_do() {
    let (mut net, host, mut guest) = activated(None);
    host.send(VnetHeader::default(), &frame(4000, 6));
    host.send(VnetHeader::default(), &frame(100, 7));
    net.process_rx();
    assert!(guest.received().is_empty());
    // Not enough yet: the frame waits with the buffer it has.
    guest.post_rx(1526);
    net.process_rx();
    assert!(guest.received().is_empty());
    // The device asked to be kicked when the next buffer comes (EVENT_IDX).
    assert_eq!(guest.driver.queues[RX].avail_event(), 1);
    guest.post_rx(1526);
    guest.post_rx(1526);
    guest.post_rx(1526);
    net.process_rx();
    let got = guest.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].frame, frame(4000, 6));
    assert_eq!(got[0].header.num_buffers, 3);
    assert_eq!(got[1].frame, frame(100, 7));
    assert_eq!(net.metrics().snapshot().rx_waits_for_buffers, 2);
}

#[test]
fn offloads_the_driver_did_not_negotiate_never_reach_it() {
    let acked = offered_without(&[
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
    ]);
    let (mut net, host, mut guest) = activated(Some(acked));
    for _ in 0..50 {
        guest.post_rx(1526);
    }
    // Left in the TAP from before a reset that took the offloads away.
    host.send(tso4_header(), &frame(5000, 8));
    // DATA_VALID is cleared, not refused: the guest must see no checksum flags at all.
    let valid = VnetHeader {
        flags: VIRTIO_NET_HDR_F_DATA_VALID as u8,
        ..VnetHeader::default()
    };
    host.send(valid, &frame(100, 9));
    net.process_rx();
    let got = guest.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header.flags, 0);
    assert_eq!(got[0].frame, frame(100, 9));
    assert_eq!(net.metrics().snapshot().rx_dropped, 1);
}

#[test]
fn a_frame_bigger_than_the_buffers_the_device_may_hold_is_dropped() {
    let (mut net, host, mut guest) = activated(None);
    // 256 buffers of 16 bytes hold 4096 bytes at most.
    for _ in 0..256 {
        guest.post_rx(16);
    }
    host.send(VnetHeader::default(), &frame(5000, 10));
    host.send(VnetHeader::default(), &frame(20, 11));
    net.process_rx();
    let got = guest.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].frame, frame(20, 11));
    assert_eq!(got[0].header.num_buffers, 2);
    assert_eq!(net.metrics().snapshot().rx_dropped, 1);
}

#[test]
fn one_run_delivers_at_most_its_budget_and_comes_back() {
    let (mut net, host, mut guest) = activated(None);
    for i in 0..RUN_BUDGET + 10 {
        host.send(VnetHeader::default(), &frame(60, i as u8));
    }
    for _ in 0..RUN_BUDGET {
        guest.post_rx(128);
    }
    net.process_rx();
    assert_eq!(guest.received().len(), RUN_BUDGET);
    assert_eq!(net.metrics().snapshot().budget_exhausted, 1);
    assert_eq!(guest.driver.queues[RX].kick.read().unwrap(), 1);
    for _ in 0..10 {
        guest.post_rx(128);
    }
    net.process_rx();
    let got = guest.received();
    assert_eq!(got.len(), 10);
    assert_eq!(got[9].frame, frame(60, (RUN_BUDGET + 9) as u8));
}

#[test]
fn a_buffer_bigger_than_any_frame_is_used_only_as_far_as_a_frame_goes() {
    let (mut net, host, mut guest) = activated(None);
    guest.post_rx((MAX_PACKET_LEN + 4096) as u32);
    host.send(VnetHeader::default(), &frame(1000, 12));
    net.process_rx();
    let got = guest.received();
    assert_eq!(got[0].used, [1012]);
}

#[test]
fn on_the_event_loop_frames_flow_both_ways() {
    let (mut net, host) = device();
    let mut guest = Guest::activate(&mut net, None).unwrap();
    let mut looped = Looped::new(net);
    // The activation event sets the offloads; frames sent before are read after it.
    host.send(VnetHeader::default(), &frame(100, 13));
    looped.settle();
    for _ in 0..8 {
        guest.post_rx(1526);
    }
    guest.kick(RX);
    looped.until("the first frame", |n| {
        n.metrics().snapshot().rx_packets == 1
    });
    // A frame arriving on the TAP wakes the loop by itself (edge-triggered).
    host.send(VnetHeader::default(), &frame(200, 14));
    looped.until("the second frame", |n| {
        n.metrics().snapshot().rx_packets == 2
    });
    let got = guest.received();
    assert_eq!(got[1].frame, frame(200, 14));
    guest.send(VnetHeader::default(), &frame(300, 15));
    guest.kick(TX);
    looped.until("a guest frame", |n| n.metrics().snapshot().tx_packets == 1);
    assert_eq!(host.recv().unwrap().1, frame(300, 15));
}

#[test]
fn a_full_tap_holds_the_guests_frame_until_it_has_room() {
    let (net, host) = device();
    // The smallest send buffer the kernel allows: a few frames fill it.
    host.shrink_peer_send_buffer(&net);
    let mut net = net;
    let mut guest = Guest::activate(&mut net, None).unwrap();
    let mut looped = Looped::new(net);
    looped.settle();
    for i in 0..40u8 {
        guest.send(VnetHeader::default(), &frame(1400, i));
    }
    guest.kick(TX);
    looped.settle();
    let sent = looped.lock().metrics().snapshot().tx_packets;
    assert!(sent < 40, "the TAP took all {sent} frames");
    assert!(looped.lock().tx.blocked);
    // Reading on the host side makes room; the loop hears it and sends the rest.
    let mut received = Vec::new();
    for _ in 0..200 {
        while let Some((_, bytes)) = host.recv() {
            received.push(bytes);
        }
        if received.len() == 40 {
            break;
        }
        looped.manager.run_with_timeout(20).unwrap();
    }
    assert_eq!(received.len(), 40);
    for (i, bytes) in received.iter().enumerate() {
        assert_eq!(*bytes, frame(1400, i as u8));
    }
    let m = looped.lock().metrics().snapshot();
    assert_eq!(
        (m.tx_packets, m.tx_dropped, m.tx_refused_chains),
        (40, 0, 0)
    );
    assert_eq!(guest.used(TX).len(), 40);
}
