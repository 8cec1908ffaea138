//! Data both ways, and credit: the device never sends more than the guest has room for, and
//! keeps the guest informed of its own room.

use std::num::Wrapping;
use std::time::{Duration, Instant};

use super::super::packet::{OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_RW};
use super::util::*;

#[test]
fn host_data_never_exceeds_the_guests_credit() {
    let mut h = Harness::new();
    let (mut host, local) = h.established_host(52, 100);
    let sent = pattern(1000, 1);
    host.write(&sent);
    let mut got = Vec::new();
    loop {
        let pkt = h.next_packet("data or a credit request");
        if pkt.hdr.op == OP_CREDIT_REQUEST {
            break;
        }
        assert_eq!(pkt.hdr.op, OP_RW);
        got.extend_from_slice(&pkt.data);
    }
    assert_eq!(got, &sent[..100]);
    // Asked once; nothing more until the guest has room.
    h.assert_quiet();

    let mut update = hdr(OP_CREDIT_UPDATE, 52, local);
    update.buf_alloc = 100;
    update.fwd_cnt = 100;
    h.guest.send(update, &[]);
    loop {
        let pkt = h.next_packet("more data");
        if pkt.hdr.op == OP_CREDIT_REQUEST {
            break;
        }
        got.extend_from_slice(&pkt.data);
    }
    assert_eq!(got, &sent[..200]);

    // A bigger buffer lets the rest through.
    update.buf_alloc = 10_000;
    update.fwd_cnt = 200;
    h.guest.send(update, &[]);
    h.wait("the rest", |g| {
        while let Some(pkt) = g.inbox.pop_front() {
            got.extend_from_slice(&pkt.data);
        }
        got.len() == 1000
    });
    assert_eq!(got, sent);
}

#[test]
fn host_data_is_cut_to_the_guests_rx_buffers() {
    let mut h = Harness::new();
    h.guest.rx_size = 64;
    let (mut host, _local) = h.established_host(52, GUEST_BUF_ALLOC);
    let sent = pattern(4096 * 40 + 1000, 2);
    let mut written = 0;
    let mut got = Vec::new();
    let mut biggest = 0;
    let mut small = 0;
    h.wait("all data", |g| {
        written += host.try_write(&sent[written..]);
        while let Some(pkt) = g.inbox.pop_front() {
            biggest = biggest.max(pkt.data.len());
            if pkt.data.len() <= 64 {
                small += 1;
            }
            got.extend_from_slice(&pkt.data);
        }
        got.len() == sent.len()
    });
    assert_eq!(got, sent);
    // The first buffers hold 4 KiB, the refills 64 bytes.
    assert!(biggest <= 4096);
    assert!(small > 100, "{small}");
}

#[test]
fn a_megabyte_each_way_arrives_intact_under_credit_flow() {
    let mut h = Harness::new();
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);

    // Host to guest: the guest reads as data comes and tells the device every 64 KiB, or when
    // asked.
    let down = pattern(1 << 20, 3);
    let mut written = 0;
    let mut got: Vec<u8> = Vec::new();
    let mut told = 0usize;
    let mut asked = false;
    let start = Instant::now();
    while got.len() < down.len() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "stalled at {}",
            got.len()
        );
        written += host.try_write(&down[written..]);
        h.step();
        while let Some(pkt) = h.guest.inbox.pop_front() {
            match pkt.hdr.op {
                OP_RW => got.extend_from_slice(&pkt.data),
                OP_CREDIT_REQUEST => asked = true,
                op => panic!("unexpected op {op}"),
            }
            // Never more than the room the guest last told of.
            assert!(got.len() - told <= GUEST_BUF_ALLOC as usize);
        }
        if asked || got.len() - told >= 64 * 1024 {
            let mut update = hdr(OP_CREDIT_UPDATE, 52, local);
            update.fwd_cnt = got.len() as u32;
            h.guest.send(update, &[]);
            told = got.len();
            asked = false;
        }
    }
    assert_eq!(got, down);

    // Guest to host: the guest sends only what the device's credit allows.
    let up = pattern(1 << 20, 4);
    let mut sent = 0usize;
    let mut peer_buf_alloc = 256 * 1024u32;
    let mut peer_fwd_cnt = Wrapping(0u32);
    let start = Instant::now();
    while host.got.len() < up.len() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "stalled at {}",
            host.got.len()
        );
        let in_flight = (Wrapping(sent as u32) - peer_fwd_cnt).0;
        let credit = peer_buf_alloc.saturating_sub(in_flight) as usize;
        let chunk = credit.min(32 * 1024).min(up.len() - sent);
        if chunk > 0 {
            h.guest_write(52, local, &up[sent..sent + chunk]);
            sent += chunk;
        }
        h.step();
        host.poll();
        while let Some(pkt) = h.guest.inbox.pop_front() {
            peer_buf_alloc = pkt.hdr.buf_alloc;
            peer_fwd_cnt = Wrapping(pkt.hdr.fwd_cnt);
        }
    }
    assert_eq!(host.got, up);
    let m = h.metrics();
    assert_eq!(m.credit_overruns, 0);
    assert_eq!(m.resets, 0);
    assert_eq!(m.tx_bytes, 1 << 20);
    assert_eq!(m.rx_bytes, 1 << 20);
}

#[test]
fn the_device_tells_the_guest_when_its_buffer_frees_up() {
    let mut h = Harness::new();
    let (mut host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    // 200 KiB leaves the guest believing it has 56 KiB of room, under the 64 KiB threshold.
    for i in 0..4 {
        h.guest_write(52, local, &pattern(50 * 1024, i));
    }
    let mut update = None;
    h.wait("a credit update", |g| {
        host.poll();
        while let Some(pkt) = g.inbox.pop_front() {
            if pkt.hdr.op == OP_CREDIT_UPDATE {
                update = Some(pkt.hdr);
            }
        }
        update.is_some()
    });
    let update = update.unwrap();
    assert_eq!(update.buf_alloc, 256 * 1024);
    assert!(update.fwd_cnt > 0);
    assert_eq!(update.src_port, local);
    h.wait("the host to read everything", |_| {
        host.poll();
        host.got.len() == 200 * 1024
    });
}

#[test]
fn a_credit_request_gets_a_credit_update() {
    let mut h = Harness::new();
    let (_host, local) = h.established_host(52, GUEST_BUF_ALLOC);
    h.guest.send(hdr(OP_CREDIT_REQUEST, 52, local), &[]);
    let pkt = h.next_packet("the update");
    assert_eq!(pkt.hdr.op, OP_CREDIT_UPDATE);
    assert_eq!(pkt.hdr.buf_alloc, 256 * 1024);
    assert_eq!(pkt.hdr.fwd_cnt, 0);
    h.assert_quiet();
}

#[test]
fn a_guest_that_does_not_read_blocks_the_host_program_not_the_device() {
    let mut h = Harness::new();
    let (mut host, _local) = h.established_host(52, GUEST_BUF_ALLOC);
    h.guest.auto_refill = false;
    // Use up the posted buffers.
    let chunk = pattern(64 * 1024, 5);
    h.wait("the guest's buffers to run out", |g| {
        host.try_write(&chunk);
        g.rx_outstanding == 0
    });
    // Now the host program's socket fills up, and the device holds none of it.
    let mut blocked = false;
    for _ in 0..200 {
        if host.try_write(&chunk) == 0 {
            blocked = true;
            break;
        }
        h.step();
    }
    assert!(blocked, "the host program could write without end");
    h.settle();
    assert_eq!(h.vsock.lock().unwrap().muxer().backlog(), 0);
    assert_eq!(h.connections(), 1);
    assert_eq!(h.metrics().resets, 0);

    // Buffers again: data flows again.
    h.guest.auto_refill = true;
    h.guest.inbox.clear();
    for _ in 0..8 {
        h.guest.add_rx(4096);
    }
    h.guest.kick_rx();
    h.wait("data to flow again", |g| {
        g.inbox.iter().any(|p| p.hdr.op == OP_RW)
    });
}

#[test]
fn the_guest_view_of_credit_survives_hostile_counters() {
    let mut h = Harness::new();
    let (mut host, local) = h.established_host(52, 0);
    host.write(b"data");
    // No room at all: a credit request, no data.
    assert_eq!(h.next_packet("a credit request").hdr.op, OP_CREDIT_REQUEST);
    h.assert_quiet();
    // A forwarded count beyond what was sent does not turn into a huge credit.
    let mut update = hdr(OP_CREDIT_UPDATE, 52, local);
    update.buf_alloc = 16;
    update.fwd_cnt = 0xffff_0000;
    h.guest.send(update, &[]);
    h.assert_quiet();
    // A sane one does.
    update.fwd_cnt = 0;
    h.guest.send(update, &[]);
    let pkt = h.next_packet("data");
    assert_eq!(pkt.data, b"data");
    assert_eq!(h.metrics().resets, 0);
}
