//! Connections a guest can open are capped well below the process's descriptors, idle ones are
//! reset, and the VMM's own agent link always gets a slot.

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::super::packet::{OP_REQUEST, OP_RESPONSE, OP_RST};
use super::super::Limits;
use super::util::*;

/// A host program that accepts every connection on `PATH_port` and keeps it open.
fn accepting(listener: UnixListener) -> (Arc<AtomicBool>, JoinHandle<Vec<UnixStream>>) {
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut kept = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => kept.push(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        kept
    });
    (stop, thread)
}

/// The in-process link (what the agent service uses) goes through the handshake.
fn local_link_works(h: &mut Harness) {
    h.guest.auto_refill = true;
    h.guest.add_rx(4096);
    h.guest.kick_rx();
    let stream = h.vsock.lock().unwrap().connect_local(52).unwrap();
    let mut local = Host::from_stream(stream);
    let request = h.next_packet("the REQUEST of the local link");
    assert_eq!(request.hdr.op, OP_REQUEST);
    h.guest
        .send(hdr(OP_RESPONSE, 52, request.hdr.src_port), &[]);
    h.wait("the OK line", |_| {
        local.poll();
        local.got.ends_with(b"\n") || local.eof
    });
    assert_eq!(
        local.take(),
        format!("OK {}\n", request.hdr.src_port).as_bytes(),
        "the VMM's own link was refused"
    );
}

#[test]
fn a_thousand_guest_connections_leave_the_agent_link_working() {
    let mut h = Harness::with(Limits::default(), None, 0);
    // Each batch gets exactly its rx buffers, all used before the next batch posts more.
    h.guest.auto_refill = false;
    let (stop, host) = accepting(UnixListener::bind(h.port_path(1234)).unwrap());
    let max = Limits::default().max_guest_connections;
    let (mut responses, mut resets) = (0, 0);
    for batch in 0..8u32 {
        for _ in 0..128 {
            h.guest.add_rx(64);
        }
        h.guest.kick_rx();
        for i in 0..128 {
            h.guest
                .send(hdr(OP_REQUEST, 10_000 + batch * 128 + i, 1234), &[]);
        }
        h.wait("answers to the batch", |g| g.inbox.len() >= 128);
        for pkt in h.guest.inbox.drain(..) {
            match pkt.hdr.op {
                OP_RESPONSE => responses += 1,
                OP_RST => resets += 1,
                other => panic!("unexpected op {other}"),
            }
        }
    }
    assert_eq!((responses, resets), (max, 1024 - max));
    assert_eq!(h.vsock.lock().unwrap().guest_connection_count(), max);
    assert_eq!(h.metrics().too_many_connections, (1024 - max) as u64);
    local_link_works(&mut h);
    stop.store(true, Ordering::Relaxed);
    assert_eq!(host.join().unwrap().len(), max);
}

#[test]
fn an_idle_guest_connection_is_reset_and_traffic_keeps_one_open() {
    let limits = Limits {
        guest_idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let mut h = Harness::with(limits, None, 32);
    let (_quiet_listener, mut quiet) = h.established_guest(7000, 1234);
    let (_busy_listener, mut busy) = h.established_guest(7001, 1235);
    // The busy one talks every 100 ms for a second.
    for _ in 0..10 {
        h.guest_write(7001, 1235, b"tick");
        let until = std::time::Instant::now() + Duration::from_millis(100);
        while std::time::Instant::now() < until {
            h.step();
        }
        busy.poll();
    }
    let rst = h
        .guest
        .inbox
        .iter()
        .find(|p| p.hdr.op == OP_RST)
        .expect("the idle connection's RST")
        .hdr;
    assert_eq!((rst.src_port, rst.dst_port), (1234, 7000));
    quiet.poll();
    assert!(
        quiet.eof,
        "the host program of the idle connection reads EOF"
    );
    assert!(!busy.eof);
    assert_eq!(busy.got.len(), 40);
    assert_eq!(h.connections(), 1);
    assert_eq!(h.metrics().timeouts, 1);
}

#[test]
fn host_programs_leave_the_last_slots_to_the_vmm() {
    let limits = Limits {
        max_connections: 4,
        reserved_local: 2,
        ..Limits::default()
    };
    let mut h = Harness::with(limits, None, 32);
    let _a = h.established_host(52, GUEST_BUF_ALLOC);
    let _b = h.established_host(52, GUEST_BUF_ALLOC);
    let mut third = h.host_connect(52);
    h.wait("the third host program to be refused", |_| {
        third.poll();
        third.eof
    });
    assert!(third.got.is_empty());
    local_link_works(&mut h);
    assert_eq!(h.connections(), 3);
}
