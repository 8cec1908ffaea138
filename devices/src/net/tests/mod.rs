//! The network device against virtio-queue's mock driver queues, a socket pair standing in
//! for the TAP (`util.rs`), and a real TAP where the host allows one (`tap.rs`).

mod hostile;
mod rx;
mod tap;
mod tx;
mod util;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use ballast_virtio::test_utils::{test_interrupt, DriverQueue, QUEUE_STRIDE};
use ballast_virtio::{ActivateError, Activation, VirtioDevice};

use super::header::VnetHeader;
use super::QUEUE_SIZE;
use util::*;

fn bit(feature: u32) -> u64 {
    1 << feature
}

#[test]
fn it_is_a_network_device_with_the_offloads_linux_uses() {
    let (net, _host) = device();
    assert_eq!(net.device_type(), 1);
    assert_eq!(net.queue_max_sizes(), &[256, 256]);
    let offered = [
        VIRTIO_F_VERSION_1,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_RING_F_INDIRECT_DESC,
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_MRG_RXBUF,
    ];
    assert_eq!(
        net.avail_features(),
        offered.iter().fold(0, |f, &b| f | bit(b))
    );
    // No control queue, no UDP offloads, no ECN, no status field, no multiqueue.
    for absent in [
        VIRTIO_NET_F_CTRL_VQ,
        VIRTIO_NET_F_GUEST_UFO,
        VIRTIO_NET_F_HOST_UFO,
        VIRTIO_NET_F_GUEST_ECN,
        VIRTIO_NET_F_HOST_ECN,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_MQ,
    ] {
        assert_eq!(net.avail_features() & bit(absent), 0, "bit {absent}");
    }
}

#[test]
fn the_config_space_holds_the_mac_and_ignores_writes() {
    let (mut net, _host) = device();
    let mut mac = [0u8; 8];
    net.read_config(0, &mut mac);
    assert_eq!(mac, [0x06, 0, 0xac, 0x10, 0, 2, 0, 0]);
    net.write_config(0, &[0xff; 6]);
    net.read_config(0, &mut mac[..6]);
    assert_eq!(&mac[..6], &MAC.0);
    let info = net.info();
    assert_eq!(
        (info.tap.as_str(), info.mac, info.active),
        ("test0", MAC, false)
    );
}

#[test]
fn activation_needs_both_queues_and_happens_once_until_reset() {
    let (mut net, _host) = device();
    let mem = guest_memory();
    let one_queue = vec![DriverQueue::new(mem, 0, QUEUE_SIZE).1];
    let err = net
        .activate(Activation::new(mem.clone(), test_interrupt(), one_queue))
        .unwrap_err();
    assert!(matches!(err, ActivateError::QueueCount { want: 2, got: 1 }));

    let _guest = Guest::activate(&mut net, None).unwrap();
    assert!(net.is_activated() && net.info().active);
    let queues = (0..2)
        .map(|i| DriverQueue::new(mem, (4 + i) * QUEUE_STRIDE, QUEUE_SIZE).1)
        .collect();
    let again = net.activate(Activation::new(mem.clone(), test_interrupt(), queues));
    assert!(again.is_err(), "a second activation without a reset");
    assert!(net.reset());
    assert!(!net.is_activated());
    Guest::activate(&mut net, None).unwrap();
}

#[test]
fn offloads_follow_the_drivers_features() {
    // What the TAP is told is checked on a real TAP (tap.rs); here, that rx waits for it.
    let (mut net, host, mut guest) = {
        let (mut net, host) = device();
        let guest = Guest::activate(&mut net, None).unwrap();
        (net, host, guest)
    };
    guest.post_rx(2048);
    host.send(VnetHeader::default(), &frame(100, 1));
    net.process_rx();
    assert!(
        guest.received().is_empty(),
        "no frame before the offloads are set"
    );
    net.apply_offloads();
    net.process_rx();
    assert_eq!(guest.received().len(), 1);
}

#[test]
fn a_reset_drops_the_waiting_frame_and_the_held_buffers() {
    let (mut net, host, mut guest) = activated(None);
    // 3000 bytes with two 1500-byte buffers: one short, so the frame waits with them.
    guest.post_rx(1500);
    guest.post_rx(1500);
    host.send(VnetHeader::default(), &frame(3000, 2));
    net.process_rx();
    assert!(guest.received().is_empty());
    assert_eq!(net.metrics().snapshot().rx_waits_for_buffers, 1);
    assert!(net.reset());
    assert_eq!(net.metrics().snapshot().rx_dropped, 1);

    // A new activation starts clean: the old buffers are not used.
    let mut guest = Guest::activate(&mut net, None).unwrap();
    net.apply_offloads();
    guest.post_rx(4096);
    host.send(VnetHeader::default(), &frame(200, 3));
    net.process_rx();
    let got = guest.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].frame, frame(200, 3));
}
