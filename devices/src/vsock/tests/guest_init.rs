//! Connections the guest opens to the host: `PATH_P`.

use std::os::unix::net::UnixListener;

use super::super::packet::{OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, TYPE_STREAM};
use super::super::{Limits, HOST_CID};
use super::util::*;

#[test]
fn a_guest_connection_reaches_the_host_listener_at_path_port() {
    let mut h = Harness::new();
    let listener = UnixListener::bind(h.port_path(1234)).unwrap();
    h.guest.send(hdr(OP_REQUEST, 7000, 1234), &[]);
    let response = h.next_packet("the RESPONSE");
    assert_eq!(response.hdr.op, OP_RESPONSE);
    assert_eq!(response.hdr.type_, TYPE_STREAM);
    assert_eq!(
        (response.hdr.src_cid, response.hdr.src_port),
        (HOST_CID, 1234)
    );
    assert_eq!(
        (response.hdr.dst_cid, response.hdr.dst_port),
        (GUEST_CID, 7000)
    );
    assert_eq!(response.hdr.buf_alloc, 256 * 1024);
    let (stream, _) = listener.accept().unwrap();
    let mut peer = Host::from_stream(stream);

    h.guest_write(7000, 1234, b"from the guest");
    h.wait("the host to read", |_| {
        peer.poll();
        peer.got.len() == 14
    });
    assert_eq!(peer.take(), b"from the guest");

    peer.write(b"from the host");
    let pkt = h.next_packet("host data");
    assert_eq!(pkt.hdr.op, OP_RW);
    assert_eq!((pkt.hdr.src_port, pkt.hdr.dst_port), (1234, 7000));
    assert_eq!(pkt.data, b"from the host");
    assert_eq!(h.metrics().guest_connections, 1);
}

#[test]
fn a_guest_connection_without_a_listener_is_reset() {
    let mut h = Harness::new();
    h.guest.send(hdr(OP_REQUEST, 7000, 1234), &[]);
    let rst = h.next_packet("the RST");
    assert_eq!(rst.hdr.op, OP_RST);
    assert_eq!((rst.hdr.src_port, rst.hdr.dst_port), (1234, 7000));
    assert_eq!(rst.hdr.dst_cid, GUEST_CID);
    // A socket file whose listener is gone refuses too.
    drop(UnixListener::bind(h.port_path(1235)).unwrap());
    h.guest.send(hdr(OP_REQUEST, 7001, 1235), &[]);
    assert_eq!(h.next_packet("the RST").hdr.op, OP_RST);
    let m = h.metrics();
    assert_eq!(m.connect_failures, 2);
    assert_eq!(m.guest_connections, 0);
    assert_eq!(h.connections(), 0);
}

#[test]
fn guest_connections_beyond_the_limit_are_reset() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let mut h = Harness::with(limits, None, 32);
    let _listener = UnixListener::bind(h.port_path(1234)).unwrap();
    for port in [7000, 7001, 7002] {
        h.guest.send(hdr(OP_REQUEST, port, 1234), &[]);
    }
    let ops: Vec<u16> = (0..3).map(|_| h.next_packet("an answer").hdr.op).collect();
    assert_eq!(ops, [OP_RESPONSE, OP_RESPONSE, OP_RST]);
    assert_eq!(h.metrics().too_many_connections, 1);
    assert_eq!(h.connections(), 2);
}

#[test]
fn single_descriptor_packets_and_split_rx_buffers_both_work() {
    let mut h = Harness::with(Limits::default(), None, 0);
    h.guest.auto_refill = false;
    for _ in 0..4 {
        h.guest.add_rx_split(4096);
    }
    h.guest.kick_rx();
    let listener = UnixListener::bind(h.port_path(1234)).unwrap();
    h.guest.send_single(hdr(OP_REQUEST, 7000, 1234), &[]);
    assert_eq!(h.next_packet("the RESPONSE").hdr.op, OP_RESPONSE);
    let (stream, _) = listener.accept().unwrap();
    let mut peer = Host::from_stream(stream);
    h.guest
        .send_single(hdr(OP_RW, 7000, 1234), b"one descriptor");
    h.wait("the host to read", |_| {
        peer.poll();
        peer.got.len() == 14
    });
    assert_eq!(peer.take(), b"one descriptor");
    peer.write(b"into a split buffer");
    let pkt = h.next_packet("host data");
    assert_eq!(pkt.data, b"into a split buffer");
    assert_eq!(pkt.used_len, 44 + 19);
}
