//! What the device holds for a guest or host that does not keep up is bounded.

use std::os::unix::net::UnixListener;

use super::super::packet::{OP_REQUEST, OP_RST, OP_RW};
use super::super::Limits;
use super::util::*;

#[test]
fn resets_for_a_guest_that_never_reads_stall_its_tx_queue_instead_of_piling_up() {
    let limits = Limits {
        max_queued_rst: 8,
        ..Limits::default()
    };
    let mut h = Harness::with(limits, None, 0);
    h.guest.auto_refill = false;
    for port in 0..50 {
        h.guest.send(hdr(OP_RW, 7000 + port, 1234), b"for nobody");
    }
    h.settle();
    // Eight resets wait; the other packets wait in the tx ring.
    assert_eq!(h.guest.tx_used, 8);
    assert!(h.metrics().tx_stalls >= 1);
    assert_eq!(h.metrics().rst_dropped, 0);

    // Once the guest reads, everything goes through, in order.
    h.guest.auto_refill = true;
    for _ in 0..16 {
        h.guest.add_rx(4096);
    }
    h.guest.kick_rx();
    h.wait("every RST", |g| g.inbox.len() == 50 && g.tx_used == 50);
    let ports: Vec<u32> = h.guest.inbox.iter().map(|p| p.hdr.dst_port).collect();
    assert_eq!(ports, (7000..7050).collect::<Vec<_>>());
    assert!(h.guest.inbox.iter().all(|p| p.hdr.op == OP_RST));
    assert_eq!(h.metrics().unknown_connection, 50);
}

#[test]
fn the_global_backlog_cap_resets_the_connection_that_exceeds_it() {
    let limits = Limits {
        total_backlog: 64 * 1024,
        ..Limits::default()
    };
    let mut h = Harness::with(limits, None, 32);
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    // Within the connection's credit, but the device holds at most 64 KiB across connections.
    let mut reset = false;
    for i in 0..64u8 {
        h.guest_write(52, local, &pattern(32 * 1024, i));
        h.step();
        if h.guest.inbox.iter().any(|p| p.hdr.op == OP_RST) {
            reset = true;
            break;
        }
    }
    assert!(reset);
    let m = h.metrics();
    assert_eq!(m.backlog_overflows, 1);
    assert_eq!(m.credit_overruns, 0);
    host.poll();
    assert_eq!(h.vsock.lock().unwrap().muxer().backlog(), 0);
}

#[test]
fn host_connections_waiting_for_their_line_are_bounded() {
    let limits = Limits {
        max_handshakes: 2,
        ..Limits::default()
    };
    let mut h = Harness::with(limits, None, 32);
    let mut quiet: Vec<Host> = (0..3).map(|_| Host::connect_raw(&h.path)).collect();
    h.wait("the third to be closed", |_| {
        quiet.iter_mut().for_each(Host::poll);
        quiet.iter().filter(|host| host.eof).count() == 1
    });
    assert_eq!(h.metrics().host_refused, 1);
    assert_eq!(h.vsock.lock().unwrap().muxer().handshake_count(), 2);
    // Once one sends its line, there is room again.
    quiet[0].write(b"CONNECT 52\n");
    quiet[1].write(b"CONNECT 52\n");
    h.wait("two REQUESTs", |g| g.inbox.len() == 2);
    assert_eq!(h.vsock.lock().unwrap().muxer().handshake_count(), 0);
}

#[test]
fn host_connections_beyond_the_connection_limit_read_eof() {
    let limits = Limits {
        max_connections: 1,
        reserved_local: 0,
        ..Limits::default()
    };
    let mut h = Harness::with(limits, None, 32);
    let _first = h.host_connect(52);
    assert_eq!(h.next_packet("the REQUEST").hdr.op, OP_REQUEST);
    let mut second = h.host_connect(52);
    h.wait("EOF", |_| {
        second.poll();
        second.eof
    });
    assert_eq!(h.metrics().host_refused, 1);
    // Nor can the guest open one.
    let _listener = UnixListener::bind(h.port_path(1234)).unwrap();
    h.guest.send(hdr(OP_REQUEST, 7000, 1234), &[]);
    assert_eq!(h.next_packet("the RST").hdr.op, OP_RST);
    assert_eq!(h.connections(), 1);
}

#[test]
fn a_buffer_grown_for_a_slow_host_program_is_given_back_once_it_caught_up() {
    let mut h = Harness::new();
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    // The host program does not read: what its socket cannot take (about 200 KiB here) waits in
    // the device, within the 256 KiB of credit.
    for i in 0..12u8 {
        h.guest_write(52, local, &pattern(32 * 1024, i));
        h.step();
    }
    h.settle();
    let held = h.vsock.lock().unwrap().muxer().backlog_capacity();
    assert!(held > super::super::MAX_PKT_LEN, "{held}");
    // It reads everything: the device keeps at most one packet's worth of room.
    h.wait("the host program to read it all", |_| {
        host.poll();
        host.got.len() >= 12 * 32 * 1024
    });
    h.settle();
    let held = h.vsock.lock().unwrap().muxer().backlog_capacity();
    assert!(held <= super::super::MAX_PKT_LEN, "{held}");
}
