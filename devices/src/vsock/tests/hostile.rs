//! A guest that gets everything wrong: each case is refused, counted, and the device goes on.

use std::os::unix::net::UnixListener;

use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;

use super::super::packet::{
    Header, HEADER_SIZE, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST,
    OP_RW, OP_SHUTDOWN, TYPE_SEQPACKET,
};
use super::super::MAX_PKT_LEN;
use super::util::*;

/// Waits until the host program reads EOF.
fn wait_eof(h: &mut Harness, host: &mut Host) {
    h.wait("the host program to read EOF", |_| {
        host.poll();
        host.eof
    });
}

/// The device stays usable: a fresh host connection goes through.
fn still_works(h: &mut Harness) {
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    host.write(b"fine");
    let pkt = h.next_packet("data on a fresh connection");
    assert_eq!(
        (pkt.hdr.src_port, pkt.data.as_slice()),
        (local, &b"fine"[..])
    );
}

#[test]
fn a_packet_from_another_source_cid_is_dropped_without_a_reply() {
    let mut h = Harness::new();
    let _listener = UnixListener::bind(h.port_path(1234)).unwrap();
    let mut forged = hdr(OP_REQUEST, 7000, 1234);
    forged.src_cid = 99;
    h.guest.send(forged, &[]);
    h.assert_quiet();
    assert_eq!(h.guest.tx_used, 1);
    assert_eq!(h.connections(), 0);
    assert_eq!(h.metrics().wrong_src_cid, 1);
    still_works(&mut h);
}

#[test]
fn a_packet_for_another_cid_is_answered_with_a_reset_from_that_cid() {
    let mut h = Harness::new();
    let mut other = hdr(OP_REQUEST, 7000, 80);
    other.dst_cid = 5;
    h.guest.send(other, &[]);
    let rst = h.next_packet("the RST");
    assert_eq!(rst.hdr.op, OP_RST);
    assert_eq!((rst.hdr.src_cid, rst.hdr.src_port), (5, 80));
    assert_eq!((rst.hdr.dst_cid, rst.hdr.dst_port), (GUEST_CID, 7000));
    // A reset is never answered.
    other.op = OP_RST;
    h.guest.send(other, &[]);
    h.assert_quiet();
    assert_eq!(h.metrics().wrong_dst_cid, 2);
}

#[test]
fn a_seqpacket_packet_is_refused_and_resets_its_connection() {
    let mut h = Harness::new();
    let _listener = UnixListener::bind(h.port_path(1234)).unwrap();
    let mut seqpacket = hdr(OP_REQUEST, 7000, 1234);
    seqpacket.type_ = TYPE_SEQPACKET;
    h.guest.send(seqpacket, &[]);
    assert_eq!(h.next_packet("the RST").hdr.op, OP_RST);
    assert_eq!(h.connections(), 0);

    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    let mut data = hdr(OP_RW, 52, local);
    data.type_ = 99;
    h.guest.send(data, b"x");
    assert_eq!(h.next_packet("the RST").hdr.op, OP_RST);
    wait_eof(&mut h, &mut host);
    assert!(host.got.is_empty());
    assert_eq!(h.metrics().bad_type, 2);
}

#[test]
fn an_unknown_op_is_refused_and_resets_its_connection() {
    let mut h = Harness::new();
    h.guest.send(hdr(0, 7000, 1234), &[]);
    h.guest.send(hdr(99, 7000, 1234), &[]);
    assert_eq!(h.next_packet("an RST").hdr.op, OP_RST);
    assert_eq!(h.next_packet("an RST").hdr.op, OP_RST);
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    h.guest.send(hdr(8, 52, local), &[]);
    assert_eq!(h.next_packet("the RST").hdr.op, OP_RST);
    wait_eof(&mut h, &mut host);
    assert_eq!(h.metrics().bad_op, 3);
    assert_eq!(h.connections(), 0);
}

#[test]
fn packets_for_no_connection_get_a_reset_but_a_reset_gets_nothing() {
    let mut h = Harness::new();
    for op in [
        OP_RW,
        OP_SHUTDOWN,
        OP_CREDIT_UPDATE,
        OP_CREDIT_REQUEST,
        OP_RESPONSE,
    ] {
        let data: &[u8] = if op == OP_RW { b"lost" } else { b"" };
        h.guest.send(hdr(op, 7000, 1234), data);
        let rst = h.next_packet("the RST");
        assert_eq!(rst.hdr.op, OP_RST);
        assert_eq!((rst.hdr.src_port, rst.hdr.dst_port), (1234, 7000));
        assert_eq!(rst.used_len, HEADER_SIZE as u32);
    }
    h.guest.send(hdr(OP_RST, 7000, 1234), &[]);
    h.assert_quiet();
    assert_eq!(h.metrics().unknown_connection, 5);
}

#[test]
fn a_len_beyond_the_data_descriptor_resets_the_connection() {
    let mut h = Harness::new();
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    let mut header = hdr(OP_RW, 52, local);
    header.len = 100;
    let head = h.guest.buffer_with(&header.to_bytes());
    let data = h.guest.buffer_with(&[7; 50]);
    h.guest
        .send_raw(&[(head, HEADER_SIZE as u32, READ), (data, 50, READ)]);
    assert_eq!(h.next_packet("the RST").hdr.op, OP_RST);
    wait_eof(&mut h, &mut host);
    assert!(host.got.is_empty());
    let m = h.metrics();
    assert_eq!(m.malformed_tx, 1);
    assert_eq!(m.resets, 1);
    still_works(&mut h);
}

#[test]
fn a_len_over_64_kib_is_refused() {
    let mut h = Harness::new();
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    let big = vec![1u8; MAX_PKT_LEN + 1];
    h.guest.send(hdr(OP_RW, 52, local), &big);
    assert_eq!(h.next_packet("the RST").hdr.op, OP_RST);
    wait_eof(&mut h, &mut host);
    assert!(host.got.is_empty());
    assert_eq!(h.metrics().malformed_tx, 1);
    // Exactly 64 KiB is fine.
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    h.guest.send(hdr(OP_RW, 52, local), &big[..MAX_PKT_LEN]);
    h.wait("64 KiB at the host", |_| {
        host.poll();
        host.got.len() == MAX_PKT_LEN
    });
}

#[test]
fn tx_descriptors_the_device_cannot_read_are_refused_without_a_reply() {
    let mut h = Harness::new();
    let header = hdr(OP_REQUEST, 7000, 1234).to_bytes();
    // Device-writable.
    let a = h.guest.buffer_with(&header);
    h.guest
        .send_raw(&[(a, HEADER_SIZE as u32, VRING_DESC_F_WRITE as u16)]);
    // Too short for a header.
    let b = h.guest.buffer_with(&header[..20]);
    h.guest.send_raw(&[(b, 20, READ)]);
    // In the hole between the RAM regions.
    h.guest
        .send_raw(&[(HOLE_START + 4096, HEADER_SIZE as u32, READ)]);
    // Straddling the end of the first region.
    h.guest
        .send_raw(&[(HOLE_START - 20, HEADER_SIZE as u32, READ)]);
    h.assert_quiet();
    assert_eq!(h.guest.tx_used, 4);
    assert_eq!(h.metrics().malformed_tx, 4);
    still_works(&mut h);
}

#[test]
fn a_data_descriptor_the_device_cannot_read_resets_the_connection() {
    let mut h = Harness::new();
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    let mut header = hdr(OP_RW, 52, local);
    header.len = 10;
    let head = h.guest.buffer_with(&header.to_bytes());
    let data = h.guest.buffer_with(&[1; 10]);
    h.guest.send_raw(&[
        (head, HEADER_SIZE as u32, READ),
        (data, 10, VRING_DESC_F_WRITE as u16),
    ]);
    assert_eq!(h.next_packet("the RST").hdr.op, OP_RST);
    wait_eof(&mut h, &mut host);
    assert_eq!(h.metrics().malformed_tx, 1);
}

#[test]
fn rx_buffers_the_device_cannot_write_are_given_back_empty() {
    let mut h = Harness::with(Default::default(), None, 0);
    h.guest.auto_refill = false;
    let read_only = h.guest.alloc(4096);
    h.guest.add_rx_raw(&[(read_only, 4096, READ)]);
    h.guest
        .add_rx_raw(&[(HOLE_START + 4096, 4096, VRING_DESC_F_WRITE as u16)]);
    let tiny = h.guest.alloc(20);
    h.guest.add_rx_raw(&[(tiny, 20, VRING_DESC_F_WRITE as u16)]);
    h.guest.add_rx(4096);
    h.guest.kick_rx();
    let _host = h.host_connect(52);
    let mut request = None;
    h.wait("the REQUEST in the good buffer", |g| {
        request = g.inbox.iter().find(|p| p.hdr.op == OP_REQUEST).cloned();
        request.is_some()
    });
    let empty: Vec<u32> = h
        .guest
        .inbox
        .iter()
        .filter(|p| p.hdr.op != OP_REQUEST)
        .map(|p| p.used_len)
        .collect();
    assert_eq!(empty, [0, 0, 0]);
    assert_eq!(h.metrics().bad_rx_buffers, 3);
}

#[test]
fn a_payload_on_a_control_packet_is_refused() {
    let mut h = Harness::new();
    let _listener = UnixListener::bind(h.port_path(1234)).unwrap();
    h.guest.send(hdr(OP_REQUEST, 7000, 1234), b"surprise");
    assert_eq!(h.next_packet("the RST").hdr.op, OP_RST);
    assert_eq!(h.connections(), 0);
    assert_eq!(h.metrics().protocol_errors, 1);
}

#[test]
fn data_before_the_handshake_resets_the_connection() {
    let mut h = Harness::new();
    let mut host = h.host_connect(52);
    let request = h.next_packet("the REQUEST");
    h.guest_write(52, request.hdr.src_port, b"too early");
    assert_eq!(h.next_packet("the RST").hdr.op, OP_RST);
    wait_eof(&mut h, &mut host);
    assert!(host.got.is_empty());
    assert_eq!(h.metrics().protocol_errors, 1);
}

#[test]
fn a_second_request_or_a_stray_response_resets_the_connection() {
    let mut h = Harness::new();
    let (_listener, mut peer) = h.established_guest(7000, 1234);
    h.guest.send(hdr(OP_REQUEST, 7000, 1234), &[]);
    assert_eq!(h.next_packet("the RST").hdr.op, OP_RST);
    wait_eof(&mut h, &mut peer);

    let (_listener2, mut peer) = h.established_guest(7001, 1235);
    h.guest.send(hdr(OP_RESPONSE, 7001, 1235), &[]);
    assert_eq!(h.next_packet("the RST").hdr.op, OP_RST);
    wait_eof(&mut h, &mut peer);
    assert_eq!(h.metrics().protocol_errors, 2);
}

#[test]
fn a_guest_sending_past_its_credit_is_reset() {
    let mut h = Harness::new();
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    // The host program does not read; the guest ignores the device's credit.
    let mut sent = Vec::new();
    let mut reset = false;
    for i in 0..128u8 {
        let chunk = pattern(64 * 1024, i);
        h.guest_write(52, local, &chunk);
        sent.extend_from_slice(&chunk);
        h.step();
        if h.guest.inbox.iter().any(|p| p.hdr.op == OP_RST) {
            reset = true;
            break;
        }
    }
    assert!(reset, "never reset after {} bytes", sent.len());
    // At least the advertised 256 KiB was taken beyond what the host socket held.
    assert!(sent.len() > 256 * 1024);
    assert_eq!(h.metrics().credit_overruns, 1);
    wait_eof(&mut h, &mut host);
    // What the host got is what the guest sent, up to where the device stopped.
    assert!(!host.got.is_empty());
    assert_eq!(host.got, sent[..host.got.len()]);
    assert_eq!(h.vsock.lock().unwrap().muxer().backlog(), 0);
}

#[test]
fn a_tx_ring_naming_a_missing_descriptor_is_skipped() {
    let mut h = Harness::new();
    h.guest.push_tx_head(300);
    h.settle();
    assert!(!ballast_virtio::VirtioDevice::needs_reset(
        &*h.vsock.lock().unwrap()
    ));
    assert_eq!(h.metrics().malformed_tx, 1);
    still_works(&mut h);
}

#[test]
fn header_round_trips_through_bytes() {
    let header = Header {
        src_cid: 0x0102_0304_0506_0708,
        dst_cid: 2,
        src_port: 0xdead_beef,
        dst_port: 52,
        len: 4096,
        type_: 1,
        op: OP_RW,
        flags: 3,
        buf_alloc: 262_144,
        fwd_cnt: 0xffff_ffff,
    };
    assert_eq!(Header::from_bytes(&header.to_bytes()), header);
    assert_eq!(
        &header.to_bytes()[..8],
        &0x0102_0304_0506_0708u64.to_le_bytes()
    );
}
