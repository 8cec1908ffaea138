//! Packets for the guest: which connection gets the next rx buffer, and stand-alone resets.

use std::time::Instant;

use super::super::connection::ConnKey;
use super::super::packet::{Header, OP_RST, OP_RW, TYPE_STREAM};
use super::super::HOST_CID;
use super::{Muxer, RxItem};

/// Resets queued beyond `max_queued_rst` (from timeouts and host events, which do not wait
/// for the tx queue) before new ones are dropped.
const RST_HARD_FACTOR: usize = 4;

impl Muxer {
    pub fn has_rx(&self) -> bool {
        !self.rxq.is_empty()
    }

    /// Whether so many resets wait for rx buffers that the tx queue should wait too (each tx
    /// packet may add one).
    pub fn rst_backlog_full(&self) -> bool {
        self.queued_rst >= self.limits.max_queued_rst
    }

    /// The next packet for the guest, its payload in `buf[..header.len]`, for an rx buffer with
    /// room for `capacity` payload bytes. `None` when nothing is left, or when what comes next
    /// does not fit this buffer.
    pub fn next_rx(&mut self, capacity: usize, buf: &mut [u8], now: Instant) -> Option<Header> {
        while let Some(item) = self.rxq.pop_front() {
            let key = match item {
                RxItem::Rst(hdr) => {
                    self.queued_rst -= 1;
                    return Some(hdr);
                }
                RxItem::Conn(key) => key,
            };
            let Some(entry) = self.conns.get_mut(&key) else {
                // Ended since it was queued.
                continue;
            };
            entry.queued = false;
            match entry.conn.next_packet(capacity, buf, now) {
                Ok(Some(hdr)) => {
                    if hdr.op == OP_RW {
                        self.metrics.rx_bytes.add(u64::from(hdr.len));
                    }
                    self.requeue(key);
                    return Some(hdr);
                }
                Ok(None) if entry.conn.has_pending_rx() => {
                    // What is next needs a bigger buffer; it keeps its turn.
                    entry.queued = true;
                    self.rxq.push_front(RxItem::Conn(key));
                    return None;
                }
                Ok(None) => {}
                Err(why) => {
                    let guest_knows = entry.conn.guest_knows();
                    self.account(key, &why);
                    self.end(key, false);
                    if guest_knows {
                        // The reset goes in this very buffer.
                        return Some(self.rst_header(key.local_port, key.peer_port));
                    }
                }
            }
        }
        None
    }

    /// The device could not give the guest `hdr` (its rx buffer failed after the data was read
    /// from the host): the connection lost data, so it is reset.
    pub fn lost_rx(&mut self, hdr: &Header) {
        let key = ConnKey {
            local_port: hdr.src_port,
            peer_port: hdr.dst_port,
        };
        if self.conns.contains_key(&key) {
            self.metrics.resets.inc();
            self.end(key, true);
        }
    }

    pub(super) fn rst_header(&self, local_port: u32, peer_port: u32) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: local_port,
            dst_port: peer_port,
            type_: TYPE_STREAM,
            op: OP_RST,
            ..Header::default()
        }
    }

    pub(super) fn queue_rst(&mut self, hdr: Header) {
        if self.queued_rst >= self.limits.max_queued_rst * RST_HARD_FACTOR {
            self.report(
                |m| &m.rst_dropped,
                format_args!("the guest takes no rx buffers; dropped {hdr:?}"),
            );
            return;
        }
        self.queued_rst += 1;
        self.rxq.push_back(RxItem::Rst(hdr));
    }

    pub(super) fn requeue(&mut self, key: ConnKey) {
        if let Some(entry) = self.conns.get_mut(&key) {
            if !entry.queued && entry.conn.has_pending_rx() {
                entry.queued = true;
                self.rxq.push_back(RxItem::Conn(key));
            }
        }
    }
}
