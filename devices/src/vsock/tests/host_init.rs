//! Connections a host program (or the VMM itself, in process) opens to a guest listener.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use super::super::packet::{OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, TYPE_STREAM};
use super::super::{Limits, HOST_CID};
use super::util::*;

fn short(limits: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = Limits::default();
    limits(&mut l);
    l
}

#[test]
fn a_host_program_reaches_a_guest_listener() {
    let mut h = Harness::new();
    let mut host = h.host_connect(52);
    let request = h.next_packet("the REQUEST");
    assert_eq!(request.hdr.op, OP_REQUEST);
    assert_eq!(request.hdr.type_, TYPE_STREAM);
    assert_eq!(request.hdr.src_cid, HOST_CID);
    assert_eq!(request.hdr.dst_cid, GUEST_CID);
    assert_eq!(request.hdr.dst_port, 52);
    assert!(request.hdr.src_port >= 1 << 30 && request.hdr.src_port < 1 << 31);
    assert_eq!(request.hdr.len, 0);
    assert_eq!(request.hdr.buf_alloc, 256 * 1024);
    assert_eq!(request.hdr.fwd_cnt, 0);
    assert_eq!(request.used_len, 44);
    let local = request.hdr.src_port;

    // No OK before the guest accepts.
    h.settle();
    host.poll();
    assert!(host.got.is_empty() && !host.eof);

    h.guest.send(hdr(OP_RESPONSE, 52, local), &[]);
    h.wait("the OK line", |_| {
        host.poll();
        host.got.ends_with(b"\n")
    });
    assert_eq!(host.take(), format!("OK {local}\n").as_bytes());

    host.write(b"hello guest");
    let pkt = h.next_packet("host data");
    assert_eq!(pkt.hdr.op, OP_RW);
    assert_eq!((pkt.hdr.src_port, pkt.hdr.dst_port), (local, 52));
    assert_eq!(pkt.data, b"hello guest");
    assert_eq!(pkt.used_len, 44 + 11);

    h.guest_write(52, local, b"hello host");
    h.wait("guest data", |_| {
        host.poll();
        host.got.len() == 10
    });
    assert_eq!(host.take(), b"hello host");

    let m = h.metrics();
    assert_eq!(m.host_connections, 1);
    assert_eq!(m.rx_bytes, 11);
    assert_eq!(m.tx_bytes, 10);
    assert_eq!(h.connections(), 1);
}

#[test]
fn the_connect_line_may_come_in_pieces_and_data_may_follow_it_at_once() {
    let mut h = Harness::new();
    let mut host = Host::connect_raw(&h.path);
    host.write(b"conn");
    h.settle();
    assert!(h.guest.inbox.is_empty());
    host.write(b"ect 52\r\nearly bytes");
    let request = h.next_packet("the REQUEST");
    assert_eq!(request.hdr.op, OP_REQUEST);
    assert_eq!(request.hdr.dst_port, 52);
    // The early bytes wait for the guest to accept, and come after the OK line.
    h.guest
        .send(hdr(OP_RESPONSE, 52, request.hdr.src_port), &[]);
    let pkt = h.next_packet("the early bytes");
    assert_eq!(pkt.data, b"early bytes");
    h.wait("the OK line", |_| {
        host.poll();
        !host.got.is_empty()
    });
    assert_eq!(
        host.take(),
        format!("OK {}\n", request.hdr.src_port).as_bytes()
    );
}

#[test]
fn a_bad_connect_line_closes_the_host_connection() {
    let mut h = Harness::new();
    let lines: [&[u8]; 6] = [
        b"HELLO 52\n",
        b"CONNECT\n",
        b"CONNECT 1 2\n",
        b"CONNECT 99999999999\n",
        b"CONNECT -1\n",
        b"CONNECT 5555555555555555555555555555555555555555",
    ];
    let mut hosts: Vec<Host> = lines
        .iter()
        .map(|line| {
            let mut host = Host::connect_raw(&h.path);
            host.write(line);
            host
        })
        .collect();
    h.wait("every bad host connection to be closed", |_| {
        hosts.iter_mut().all(|host| {
            host.poll();
            host.eof
        })
    });
    assert!(hosts.iter().all(|host| host.got.is_empty()));
    assert_eq!(h.metrics().host_refused, lines.len() as u64);
    assert!(h.guest.inbox.is_empty());
    assert_eq!(h.connections(), 0);
}

#[test]
fn a_guest_that_refuses_gives_the_host_program_eof() {
    let mut h = Harness::new();
    let mut host = h.host_connect(52);
    let request = h.next_packet("the REQUEST");
    h.guest.send(hdr(OP_RST, 52, request.hdr.src_port), &[]);
    h.wait("EOF", |_| {
        host.poll();
        host.eof
    });
    assert!(host.got.is_empty());
    assert_eq!(h.connections(), 0);
    assert_eq!(h.metrics().host_refused, 1);
    // No reset goes back for a reset.
    h.assert_quiet();
}

#[test]
fn a_guest_that_does_not_answer_times_out() {
    let limits = short(|l| l.request_timeout = Duration::from_millis(100));
    let mut h = Harness::with(limits, None, 32);
    let mut host = h.host_connect(52);
    let request = h.next_packet("the REQUEST");
    let rst = h.next_packet("the RST after the timeout");
    assert_eq!(rst.hdr.op, OP_RST);
    assert_eq!(
        (rst.hdr.src_port, rst.hdr.dst_port),
        (request.hdr.src_port, 52)
    );
    h.wait("EOF", |_| {
        host.poll();
        host.eof
    });
    assert!(host.got.is_empty());
    let m = h.metrics();
    assert_eq!(m.timeouts, 1);
    assert_eq!(m.host_refused, 1);
    assert_eq!(h.connections(), 0);
}

#[test]
fn a_request_the_guest_never_took_times_out_without_a_reset() {
    // No rx buffers: the REQUEST never reaches the guest, so nothing needs resetting there.
    let limits = short(|l| l.request_timeout = Duration::from_millis(100));
    let mut h = Harness::with(limits, None, 0);
    h.guest.auto_refill = false;
    let mut host = h.host_connect(52);
    h.wait("EOF", |_| {
        host.poll();
        host.eof
    });
    h.guest.add_rx(4096);
    h.guest.kick_rx();
    h.assert_quiet();
    assert_eq!(h.metrics().timeouts, 1);
}

#[test]
fn a_host_program_hanging_up_before_the_answer_resets_the_request() {
    let mut h = Harness::new();
    let host = h.host_connect(52);
    let request = h.next_packet("the REQUEST");
    drop(host);
    let rst = h.next_packet("the RST");
    assert_eq!(rst.hdr.op, OP_RST);
    assert_eq!(rst.hdr.src_port, request.hdr.src_port);
    assert_eq!(h.connections(), 0);
    // A late RESPONSE is for no connection: answered with an RST.
    h.guest
        .send(hdr(OP_RESPONSE, 52, request.hdr.src_port), &[]);
    assert_eq!(h.next_packet("the RST").hdr.op, OP_RST);
}

#[test]
fn a_host_connection_before_the_driver_is_up_reads_eof() {
    let (vsock, mut manager, path, _dir) = device(Limits::default());
    let mut host = Host::connect_raw(&path);
    host.write(b"CONNECT 52\n");
    let mut local = vsock.lock().unwrap().connect_local(52).unwrap();
    local
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for _ in 0..50 {
        manager.run_with_timeout(5).unwrap();
        host.poll();
        if host.eof {
            break;
        }
    }
    assert!(host.eof && host.got.is_empty());
    let mut buf = [0u8; 8];
    assert_eq!(local.read(&mut buf).unwrap(), 0);
    assert_eq!(vsock.lock().unwrap().metrics().snapshot().host_refused, 2);
}

#[test]
fn a_host_connection_that_never_sends_its_line_is_closed() {
    let limits = short(|l| l.handshake_timeout = Duration::from_millis(100));
    let mut h = Harness::with(limits, None, 32);
    let mut host = Host::connect_raw(&h.path);
    host.write(b"CONNE");
    h.wait("EOF", |_| {
        host.poll();
        host.eof
    });
    let m = h.metrics();
    assert_eq!(m.timeouts, 1);
    assert_eq!(m.host_refused, 1);
    assert_eq!(h.vsock.lock().unwrap().muxer().handshake_count(), 0);
}

#[test]
fn host_connections_get_distinct_high_ports() {
    let mut h = Harness::new();
    let (_a, port_a) = h.established_host(52, GUEST_BUF_ALLOC);
    let (_b, port_b) = h.established_host(52, GUEST_BUF_ALLOC);
    assert_ne!(port_a, port_b);
    for port in [port_a, port_b] {
        assert!((1 << 30..1 << 31).contains(&port), "{port}");
    }
    assert_eq!(h.connections(), 2);
}

#[test]
fn connect_local_behaves_like_a_host_program_that_sent_connect() {
    let mut h = Harness::new();
    let stream = h.vsock.lock().unwrap().connect_local(52).unwrap();
    let mut local = Host::from_stream(stream);
    let request = h.next_packet("the REQUEST");
    assert_eq!(request.hdr.op, OP_REQUEST);
    assert_eq!(request.hdr.dst_port, 52);
    h.guest
        .send(hdr(OP_RESPONSE, 52, request.hdr.src_port), &[]);
    h.wait("the OK line", |_| {
        local.poll();
        local.got.ends_with(b"\n")
    });
    assert_eq!(
        local.take(),
        format!("OK {}\n", request.hdr.src_port).as_bytes()
    );
    local.write(b"{\"id\":1}\n");
    assert_eq!(h.next_packet("the request line").data, b"{\"id\":1}\n");
    h.guest_write(52, request.hdr.src_port, b"{\"id\":1,\"ok\":true}\n");
    h.wait("the reply line", |_| {
        local.poll();
        local.got.ends_with(b"\n")
    });
    assert_eq!(local.take(), b"{\"id\":1,\"ok\":true}\n");
    assert_eq!(h.metrics().host_connections, 1);
}

#[test]
fn a_local_connector_works_from_another_thread_without_the_device_lock() {
    let mut h = Harness::new();
    let connector = h.vsock.lock().unwrap().local_connector();
    let client = std::thread::spawn(move || {
        let mut stream = connector.connect(52).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\n") {
            assert_eq!(stream.read(&mut byte).unwrap(), 1);
            line.push(byte[0]);
        }
        stream.write_all(b"ready").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        String::from_utf8(line).unwrap()
    });
    let request = h.next_packet("the REQUEST");
    h.guest
        .send(hdr(OP_RESPONSE, 52, request.hdr.src_port), &[]);
    let data = h.next_packet("the client's data");
    assert_eq!(data.data, b"ready");
    let line = client.join().unwrap();
    assert_eq!(line, format!("OK {}\n", request.hdr.src_port));
}
