//! Features, config space, construction errors, activation and reset.

use std::os::unix::net::UnixListener;
use std::time::Duration;

use ballast_virtio::interrupt::VIRTIO_MMIO_INT_CONFIG;
use ballast_virtio::test_utils::{test_interrupt, DriverQueue};
use ballast_virtio::{ActivateError, Activation, QueueEvent, VirtioDevice};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vmm_sys_util::tempdir::TempDir;

use super::super::packet::{OP_REQUEST, OP_RESPONSE};
use super::super::{Limits, Vsock, VsockConfig, VsockError};
use super::util::*;

fn config(dir: &TempDir, cid: u64) -> VsockConfig {
    VsockConfig {
        guest_cid: cid,
        uds_path: dir.as_path().join("v.sock"),
    }
}

fn tempdir() -> TempDir {
    TempDir::new_with_prefix("/tmp/ballast-vsock-").unwrap()
}

#[test]
fn offers_version_1_event_idx_and_three_queues_but_not_seqpacket() {
    let (vsock, _manager, _path, _dir) = device(Limits::default());
    let vsock = vsock.lock().unwrap();
    assert_eq!(vsock.device_type(), 19);
    assert_eq!(vsock.queue_max_sizes(), &[256, 256, 256]);
    assert_eq!(
        vsock.avail_features(),
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX)
    );
    // VIRTIO_VSOCK_F_STREAM (0) and VIRTIO_VSOCK_F_SEQPACKET (1) are not offered: without
    // either, a driver assumes stream only.
    assert_eq!(vsock.avail_features() & 0b11, 0);
}

#[test]
fn config_space_holds_the_guest_cid_and_ignores_writes() {
    let dir = tempdir();
    let mut vsock = Vsock::new(config(&dir, 0x1234_5678)).unwrap();
    let mut cid = [0xaa; 8];
    vsock.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), 0x1234_5678);
    // Linux reads it as two 32-bit halves.
    let mut low = [0xaa; 4];
    let mut high = [0xaa; 4];
    vsock.read_config(0, &mut low);
    vsock.read_config(4, &mut high);
    assert_eq!(u32::from_le_bytes(low), 0x1234_5678);
    assert_eq!(u32::from_le_bytes(high), 0);
    let mut past = [0xaa; 8];
    vsock.read_config(6, &mut past);
    assert_eq!(past, [0; 8]);
    vsock.read_config(u64::MAX - 1, &mut past);
    assert_eq!(past, [0; 8]);

    vsock.write_config(0, &[0xff; 8]);
    vsock.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), 0x1234_5678);
    assert_eq!(vsock.guest_cid(), 0x1234_5678);
}

#[test]
fn the_guest_cid_must_be_3_or_more_and_fit_32_bits() {
    let dir = tempdir();
    for cid in [0, 1, 2] {
        let err = Vsock::new(config(&dir, cid)).err().unwrap();
        assert!(matches!(err, VsockError::ReservedCid(c) if c == cid));
        assert!(err.to_string().contains("3 or more"), "{err}");
    }
    for cid in [u64::from(u32::MAX), u64::MAX] {
        let err = Vsock::new(config(&dir, cid)).err().unwrap();
        assert!(matches!(err, VsockError::CidTooLarge(_)), "{err}");
        assert!(err.to_string().contains("4294967294"), "{err}");
    }
    drop(Vsock::new(config(&dir, 3)).unwrap());
    drop(Vsock::new(config(&dir, u64::from(u32::MAX) - 1)).unwrap());
}

#[test]
fn a_stale_socket_is_replaced_a_live_one_or_a_file_refused_and_ours_removed_on_drop() {
    let dir = tempdir();
    let cfg = config(&dir, 3);
    let first = Vsock::new(cfg.clone()).unwrap();
    assert!(cfg.uds_path.exists());
    let err = Vsock::new(cfg.clone()).err().unwrap();
    assert!(matches!(err, VsockError::SocketLive(_)), "{err}");
    assert!(err.to_string().contains("--vsock-sock"), "{err}");
    drop(first);
    // Removed with the device that made it.
    assert!(!cfg.uds_path.exists());

    // A stale socket (its listener gone, the file left behind) is replaced.
    drop(UnixListener::bind(&cfg.uds_path).unwrap());
    assert!(cfg.uds_path.exists());
    drop(Vsock::new(cfg.clone()).unwrap());

    std::fs::write(&cfg.uds_path, b"not a socket").unwrap();
    let err = Vsock::new(cfg.clone()).err().unwrap();
    assert!(matches!(err, VsockError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read(&cfg.uds_path).unwrap(), b"not a socket");

    let missing = VsockConfig {
        guest_cid: 3,
        uds_path: dir.as_path().join("no/such/dir/v.sock"),
    };
    let err = Vsock::new(missing).err().unwrap();
    assert!(matches!(err, VsockError::Bind { .. }), "{err}");
    assert!(err.to_string().contains("directory"), "{err}");
}

#[test]
fn a_socket_path_too_long_for_a_unix_address_is_refused() {
    let dir = tempdir();
    let long = VsockConfig {
        guest_cid: 3,
        uds_path: dir.as_path().join("x".repeat(120)),
    };
    let err = Vsock::new(long).err().unwrap();
    assert!(matches!(err, VsockError::PathTooLong { .. }), "{err}");
    assert!(err.to_string().contains("shorter"), "{err}");
}

#[test]
fn activation_needs_all_three_queues_once() {
    let (vsock, _manager, _path, _dir) = device(Limits::default());
    let mut vsock = vsock.lock().unwrap();
    let mem = guest_memory();
    let interrupt = test_interrupt();
    let two: Vec<QueueEvent> = (0..2)
        .map(|i| DriverQueue::new(mem, i * 0x1_0000, 256).1)
        .collect();
    let err = vsock
        .activate(Activation::new(mem.clone(), interrupt, two))
        .unwrap_err();
    assert!(matches!(err, ActivateError::QueueCount { want: 3, got: 2 }));
    assert!(!vsock.is_activated());

    let _guest = Guest::activate(&mut vsock, None, 0).unwrap();
    assert!(vsock.is_activated());
    let again = Guest::activate(&mut vsock, None, 0);
    assert!(matches!(again, Err(ActivateError::Backend(_))));
}

#[test]
fn a_driver_reset_drops_every_connection_and_a_new_activation_works() {
    let mut h = Harness::new();
    let (mut host, _) = h.established_host(52, GUEST_BUF_ALLOC);
    let (_listener, mut peer) = h.established_guest(7000, 1234);
    assert_eq!(h.connections(), 2);

    assert!(h.vsock.lock().unwrap().reset());
    assert!(!h.vsock.lock().unwrap().is_activated());
    h.wait("both host programs to read EOF", |_| {
        host.poll();
        peer.poll();
        host.eof && peer.eof
    });
    assert_eq!(h.connections(), 0);
    assert_eq!(h.metrics().dropped_by_reset, 2);
    assert_eq!(h.vsock.lock().unwrap().muxer().retired_count(), 0);

    // Between reset and the next activation, host connections are turned away.
    let mut early = h.host_connect(52);
    h.wait("the early host program to read EOF", |_| {
        early.poll();
        early.eof
    });
    assert!(early.got.is_empty());
    assert_eq!(h.metrics().host_refused, 1);

    h.guest = Guest::activate(&mut h.vsock.lock().unwrap(), None, 32).unwrap();
    h.settle();
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    host.write(b"after the reset");
    let pkt = h.next_packet("data after the reset");
    assert_eq!(pkt.data, b"after the reset");
    assert_eq!(pkt.hdr.src_port, local);
}

#[test]
fn a_broken_tx_ring_marks_the_device_as_needing_a_reset() {
    let mut h = Harness::new();
    assert!(!h.vsock.lock().unwrap().needs_reset());
    // An available index 1000 ahead of the device: more chains than the ring holds.
    h.guest.set_tx_avail_idx(1000);
    h.settle();
    let vsock = h.vsock.lock().unwrap();
    assert!(vsock.needs_reset());
    assert_eq!(vsock.metrics().snapshot().queue_errors, 1);
    assert_ne!(h.guest.interrupt.status() & VIRTIO_MMIO_INT_CONFIG, 0);
    drop(vsock);
    // A reset clears it.
    assert!(h.vsock.lock().unwrap().reset());
    assert!(!h.vsock.lock().unwrap().needs_reset());
}

#[test]
fn without_event_idx_the_device_still_works() {
    let mut h = Harness::with(Limits::default(), Some(1 << VIRTIO_F_VERSION_1), 32);
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    host.write(b"ping");
    let pkt = h.next_packet("data");
    assert_eq!(pkt.data, b"ping");
    h.guest_write(52, local, b"pong");
    h.wait("the host to read pong", |_| {
        host.poll();
        host.got == b"pong"
    });
    // Interrupts were raised for both queues.
    assert!(h.metrics().interrupts >= 2);
}

#[test]
fn with_event_idx_a_device_out_of_rx_buffers_asks_for_a_kick() {
    let mut h = Harness::with(Limits::default(), None, 0);
    h.guest.auto_refill = false;
    let mut host = h.host_connect(52);
    h.settle();
    // No buffer for the REQUEST: the device published the index it wants a kick at.
    assert!(h.guest.inbox.is_empty());
    h.guest.add_rx(4096);
    h.guest.kick_rx();
    let pkt = h.next_packet("the REQUEST");
    assert_eq!(pkt.hdr.op, OP_REQUEST);
    h.guest.send(hdr(OP_RESPONSE, 52, pkt.hdr.src_port), &[]);
    h.wait("the OK line", |_| {
        host.poll();
        !host.got.is_empty()
    });
    std::thread::sleep(Duration::from_millis(1));
}
