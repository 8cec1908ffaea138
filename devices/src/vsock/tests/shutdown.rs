//! Shutdown and reset, both ways.

use std::net::Shutdown;
use std::time::Duration;

use super::super::packet::{OP_RST, OP_RW, OP_SHUTDOWN, SHUTDOWN_RCV, SHUTDOWN_SEND};
use super::super::Limits;
use super::util::*;

fn shutdown(h: &mut Harness, src: u32, dst: u32, flags: u32) {
    let mut packet = hdr(OP_SHUTDOWN, src, dst);
    packet.flags = flags;
    h.guest.send(packet, &[]);
}

#[test]
fn a_guest_shutdown_send_gives_the_host_eof_after_the_data() {
    let mut h = Harness::new();
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    h.guest_write(52, local, b"last words");
    shutdown(&mut h, 52, local, SHUTDOWN_SEND);
    h.wait("EOF", |_| {
        host.poll();
        host.eof
    });
    assert_eq!(host.take(), b"last words");
    // The other direction still works.
    host.write(b"still here");
    let pkt = h.next_packet("host data");
    assert_eq!(
        (pkt.hdr.op, pkt.data.as_slice()),
        (OP_RW, &b"still here"[..])
    );
    // Data after promising not to send breaks the protocol.
    h.guest_write(52, local, b"more");
    let rst = h.next_packet("the RST");
    assert_eq!(rst.hdr.op, OP_RST);
    assert_eq!(h.metrics().protocol_errors, 1);
}

#[test]
fn a_guest_shutdown_rcv_makes_the_host_programs_writes_fail() {
    let mut h = Harness::new();
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    shutdown(&mut h, 52, local, SHUTDOWN_RCV);
    h.settle();
    let err = std::io::Write::write(&mut host.stream, b"nobody reads this").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    h.assert_quiet();
}

#[test]
fn a_guest_full_shutdown_is_answered_with_rst_once_the_host_has_the_data() {
    let mut h = Harness::new();
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    h.guest_write(52, local, b"bye");
    shutdown(&mut h, 52, local, SHUTDOWN_RCV | SHUTDOWN_SEND);
    let rst = h.next_packet("the RST");
    assert_eq!(rst.hdr.op, OP_RST);
    assert_eq!((rst.hdr.src_port, rst.hdr.dst_port), (local, 52));
    h.wait("EOF", |_| {
        host.poll();
        host.eof
    });
    assert_eq!(host.got, b"bye");
    assert_eq!(h.connections(), 0);
    let m = h.metrics();
    assert_eq!(m.closed, 1);
    assert_eq!(m.resets, 0);
}

#[test]
fn a_full_shutdown_waiting_for_a_host_that_does_not_read_times_out() {
    let limits = Limits {
        shutdown_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let mut h = Harness::with(limits, None, 32);
    let (_host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    // More than the host socket takes, within the credit: some stays in the device.
    let mut sent = 0;
    while sent < 256 * 1024 {
        h.guest_write(52, local, &pattern(64 * 1024, sent as u8));
        sent += 64 * 1024;
        h.step();
    }
    h.settle();
    assert!(h.vsock.lock().unwrap().muxer().backlog() > 0);
    // Credit updates for the data so far.
    h.guest.inbox.clear();
    shutdown(&mut h, 52, local, SHUTDOWN_RCV | SHUTDOWN_SEND);
    let rst = h.next_packet("the RST after the timeout");
    assert_eq!(rst.hdr.op, OP_RST);
    let m = h.metrics();
    assert_eq!(m.timeouts, 1);
    assert_eq!(h.vsock.lock().unwrap().muxer().backlog(), 0);
}

#[test]
fn a_host_eof_becomes_shutdown_send_and_the_guest_may_still_write() {
    let mut h = Harness::new();
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    host.write(b"request");
    host.stream.shutdown(Shutdown::Write).unwrap();
    let data = h.next_packet("the data");
    assert_eq!(data.data, b"request");
    let shut = h.next_packet("the SHUTDOWN");
    assert_eq!(shut.hdr.op, OP_SHUTDOWN);
    assert_eq!(shut.hdr.flags, SHUTDOWN_SEND);
    // No timer for a half close: the reply comes when the guest is ready.
    h.guest_write(52, local, b"reply");
    h.wait("the reply", |_| {
        host.poll();
        host.got == b"reply"
    });
    assert_eq!(h.connections(), 1);
    // The guest closes: the device answers with the RST it expects.
    shutdown(&mut h, 52, local, SHUTDOWN_RCV | SHUTDOWN_SEND);
    assert_eq!(h.next_packet("the RST").hdr.op, OP_RST);
    assert_eq!(h.connections(), 0);
}

#[test]
fn a_host_hangup_becomes_a_full_shutdown_and_the_guests_rst_ends_it() {
    let mut h = Harness::new();
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    host.write(b"goodbye");
    drop(host);
    let data = h.next_packet("the data");
    assert_eq!(data.data, b"goodbye");
    let shut = h.next_packet("the SHUTDOWN");
    assert_eq!(shut.hdr.op, OP_SHUTDOWN);
    assert_eq!(shut.hdr.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    h.guest.send(hdr(OP_RST, 52, local), &[]);
    h.settle();
    assert_eq!(h.connections(), 0);
    assert_eq!(h.metrics().closed, 1);
    h.assert_quiet();
}

#[test]
fn a_full_shutdown_the_guest_does_not_answer_times_out_with_rst() {
    let limits = Limits {
        shutdown_timeout: Duration::from_millis(100),
        ..Limits::default()
    };
    let mut h = Harness::with(limits, None, 32);
    let (host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    drop(host);
    let shut = h.next_packet("the SHUTDOWN");
    assert_eq!(shut.hdr.op, OP_SHUTDOWN);
    let rst = h.next_packet("the RST");
    assert_eq!(rst.hdr.op, OP_RST);
    assert_eq!(rst.hdr.src_port, local);
    assert_eq!(h.metrics().timeouts, 1);
    assert_eq!(h.connections(), 0);
}

#[test]
fn a_guest_rst_ends_the_connection_and_the_host_reads_eof() {
    let mut h = Harness::new();
    let (_listener, mut peer) = h.established_guest(7000, 1234);
    h.guest.send(hdr(OP_RST, 7000, 1234), &[]);
    h.wait("EOF", |_| {
        peer.poll();
        peer.eof
    });
    assert_eq!(h.connections(), 0);
    assert_eq!(h.metrics().closed, 1);
    h.assert_quiet();
    // Anything further on it is for no connection.
    h.guest_write(7000, 1234, b"late");
    assert_eq!(h.next_packet("the RST").hdr.op, OP_RST);
    assert_eq!(h.metrics().unknown_connection, 1);
}
