//! Frames from the guest to the TAP: plain ones, offload headers, any descriptor layout, the
//! budget of one run.

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_HDR_GSO_TCPV6,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use super::super::header::{tso4_header, VnetHeader};
use super::super::queue::RUN_BUDGET;
use super::super::{MAX_FRAME_LEN, VNET_HDR_LEN};
use super::util::*;

#[test]
fn a_frame_reaches_the_tap_with_its_header_and_comes_back_used() {
    let (mut net, host, mut guest) = activated(None);
    let head = guest.send(VnetHeader::default(), &frame(60, 1));
    net.process_tx();
    let (header, bytes) = host.recv().expect("a frame on the TAP");
    assert_eq!(header, VnetHeader::default());
    assert_eq!(bytes, frame(60, 1));
    assert_eq!(guest.used(TX), [(head, 0)]);
    assert!(guest.interrupted());
    let m = net.metrics().snapshot();
    assert_eq!((m.tx_packets, m.tx_bytes), (1, 60));
    assert!(host.recv().is_none());
}

#[test]
fn offload_headers_pass_to_the_host_kernel_unchanged() {
    let (mut net, host, mut guest) = activated(None);
    let tso = tso4_header();
    let big = frame(MAX_FRAME_LEN, 2);
    guest.send(tso, &big);
    let tso6 = VnetHeader {
        gso_type: VIRTIO_NET_HDR_GSO_TCPV6 as u8,
        hdr_len: 86,
        csum_start: 54,
        ..tso
    };
    guest.send(tso6, &frame(9000, 3));
    let csum = VnetHeader {
        gso_type: 0,
        gso_size: 0,
        ..tso
    };
    guest.send(csum, &frame(1514, 4));
    net.process_tx();
    assert_eq!(host.recv().unwrap(), (tso, big));
    assert_eq!(host.recv().unwrap(), (tso6, frame(9000, 3)));
    assert_eq!(host.recv().unwrap(), (csum, frame(1514, 4)));
    assert_eq!(net.metrics().snapshot().tx_refused_chains, 0);
}

#[test]
fn any_descriptor_layout_makes_the_same_frame() {
    let (mut net, host, mut guest) = activated(None);
    let header = tso4_header();
    let bytes = frame(3000, 5);
    // The header split over three descriptors and run into the frame, which is cut up too;
    // a zero-length descriptor on the way.
    for cuts in [
        &[5, 9, 100, 100, 2000][..],
        &[12][..],
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13][..],
        &[VNET_HDR_LEN + 3000 - 1][..],
    ] {
        guest.send_cut(header, &bytes, cuts);
        net.process_tx();
        assert_eq!(host.recv().unwrap(), (header, bytes.clone()), "{cuts:?}");
    }
}

#[test]
fn offloads_the_driver_did_not_negotiate_are_refused() {
    let acked = offered_without(&[VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6]);
    let (mut net, host, mut guest) = activated(Some(acked));
    guest.send(tso4_header(), &frame(3000, 6));
    net.process_tx();
    assert!(host.recv().is_none());
    assert_eq!(net.metrics().snapshot().tx_refused_chains, 1);

    let acked = offered_without(&[VIRTIO_NET_F_CSUM]);
    let (mut net, host, mut guest) = activated(Some(acked));
    let csum = VnetHeader {
        gso_type: 0,
        gso_size: 0,
        ..tso4_header()
    };
    guest.send(csum, &frame(100, 7));
    guest.send(VnetHeader::default(), &frame(100, 8));
    net.process_tx();
    assert_eq!(
        host.recv().unwrap().1,
        frame(100, 8),
        "only the plain frame"
    );
    assert!(host.recv().is_none());
    assert_eq!(guest.used(TX).len(), 2, "both chains come back");
}

#[test]
fn one_run_stops_at_its_budget_and_comes_back() {
    let (mut net, host, mut guest) = activated(None);
    // The ring holds at most its size: fill it, let the device drain it, fill it again
    // before the device's next run, which a budget of one ring's worth ends early.
    assert_eq!(RUN_BUDGET, usize::from(super::super::QUEUE_SIZE));
    for i in 0..RUN_BUDGET {
        guest.send(VnetHeader::default(), &frame(60, i as u8));
    }
    net.process_tx();
    let m = net.metrics().snapshot();
    assert_eq!(m.tx_packets, RUN_BUDGET as u64);
    assert_eq!(m.budget_exhausted, 1);
    // The device kicked itself to come back.
    assert_eq!(guest.driver.queues[TX].kick.read().unwrap(), 1);
    let mut n = 0;
    while host.recv().is_some() {
        n += 1;
    }
    assert_eq!(n, RUN_BUDGET);
}

#[test]
fn with_event_idx_the_driver_gets_one_interrupt_when_it_asked() {
    let (mut net, host, mut guest) = activated(None);
    assert!(net.acked() & (1 << VIRTIO_RING_F_EVENT_IDX) != 0);
    // The driver wants an interrupt only after the 3rd used element.
    guest.driver.queues[TX].set_used_event(2);
    guest.send(VnetHeader::default(), &frame(60, 1));
    net.process_tx();
    assert!(!guest.interrupted());
    guest.send(VnetHeader::default(), &frame(60, 2));
    guest.send(VnetHeader::default(), &frame(60, 3));
    net.process_tx();
    assert!(guest.interrupted());
    // The device asks to be kicked at the next chain.
    assert_eq!(guest.driver.queues[TX].avail_event(), 3);
    while host.recv().is_some() {}
}
