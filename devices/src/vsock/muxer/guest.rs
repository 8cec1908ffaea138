//! Guest packets: routing each to its connection, or refusing it.

use std::time::Instant;

use log::debug;

use super::super::connection::{ConnKey, Connection, Outcome};
use super::super::host::{connect_port, port_path};
use super::super::metrics::{Counter, VsockMetrics};
use super::super::packet::{Header, OP_CREDIT_REQUEST, OP_REQUEST, OP_RST, OP_RW, TYPE_STREAM};
use super::super::HOST_CID;
use super::Muxer;

impl Muxer {
    /// A packet the guest sent, with its payload.
    // Long on purpose: a guest packet's checks in the order they must run (source, destination,
    // type, op, length) before it reaches a connection, each refusal next to its check.
    pub fn handle_tx(&mut self, hdr: &Header, data: &[u8], now: Instant) {
        if hdr.src_cid != self.guest_cid {
            // Not the guest's address: nothing to answer to.
            let cid = self.guest_cid;
            self.report(
                |m| &m.wrong_src_cid,
                format_args!(
                    "dropped a packet from CID {} (the guest is {cid}): {hdr:?}",
                    hdr.src_cid
                ),
            );
            return;
        }
        if hdr.dst_cid != HOST_CID {
            self.report(
                |m| &m.wrong_dst_cid,
                format_args!(
                    "the guest sent a packet to CID {}; only the host (2) is reachable, answered \
                     RST: {hdr:?}",
                    hdr.dst_cid
                ),
            );
            if hdr.op != OP_RST {
                self.queue_rst(Header {
                    src_cid: hdr.dst_cid,
                    ..self.rst_header(hdr.dst_port, hdr.src_port)
                });
            }
            return;
        }
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if hdr.type_ != TYPE_STREAM {
            self.refuse(
                key,
                hdr,
                |m| &m.bad_type,
                "a socket type other than stream (seqpacket is not offered)",
            );
            return;
        }
        if !(OP_REQUEST..=OP_CREDIT_REQUEST).contains(&hdr.op) {
            self.refuse(key, hdr, |m| &m.bad_op, "an op vsock does not define");
            return;
        }
        if hdr.op != OP_RW && hdr.len != 0 {
            self.refuse(
                key,
                hdr,
                |m| &m.protocol_errors,
                "a payload on a control packet",
            );
            return;
        }
        if !self.conns.contains_key(&key) {
            match hdr.op {
                OP_REQUEST => self.guest_connect(key, hdr, now),
                // Already gone: nothing to reset.
                OP_RST => {}
                _ => {
                    self.report(
                        |m| &m.unknown_connection,
                        format_args!("{hdr:?} is for no connection; answered RST"),
                    );
                    self.queue_rst(self.rst_header(key.local_port, key.peer_port));
                }
            }
            return;
        }
        self.touch(key, now);
        let Some(entry) = self.conns.get_mut(&key) else {
            return;
        };
        let before = entry.conn.backlog();
        let outcome = entry.conn.on_guest_packet(hdr, data, now);
        self.backlog = self.backlog - before + entry.conn.backlog();
        if hdr.op == OP_RW && matches!(outcome, Outcome::Keep) {
            self.metrics.tx_bytes.add(data.len() as u64);
        }
        self.apply(key, outcome);
    }

    /// A tx chain that could not be parsed. If its header could be read, the connection it names
    /// lost data and is reset (or the sender gets an RST if there is no such connection).
    pub fn refuse_malformed(&mut self, header: Option<Header>, why: &dyn std::fmt::Display) {
        self.report(
            |m| &m.malformed_tx,
            format_args!(
                "refused a malformed tx packet: {why}{}",
                header.map_or_else(String::new, |h| format!(" ({h:?})"))
            ),
        );
        let Some(hdr) = header else {
            return;
        };
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            return;
        }
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if self.conns.contains_key(&key) {
            self.metrics.resets.inc();
            self.end(key, true);
        } else if hdr.op != OP_RST {
            self.queue_rst(self.rst_header(key.local_port, key.peer_port));
        }
    }

    /// Refuses a packet: resets the connection it names, or answers RST if there is none.
    pub(super) fn refuse(
        &mut self,
        key: ConnKey,
        hdr: &Header,
        counter: fn(&VsockMetrics) -> &Counter,
        why: &str,
    ) {
        self.report(
            counter,
            format_args!("refused a packet with {why}; answered RST: {hdr:?}"),
        );
        if self.conns.contains_key(&key) {
            self.metrics.resets.inc();
            self.end(key, true);
        } else if hdr.op != OP_RST {
            self.queue_rst(self.rst_header(key.local_port, key.peer_port));
        }
    }

    /// A guest REQUEST to host port P: connect to `PATH_P`, or answer RST.
    pub(super) fn guest_connect(&mut self, key: ConnKey, hdr: &Header, now: Instant) {
        let full = if self.guest_conns >= self.limits.max_guest_connections {
            Some((self.limits.max_guest_connections, "guest-initiated "))
        } else if self.conns.len() >= self.limits.max_connections {
            Some((self.limits.max_connections, ""))
        } else {
            None
        };
        if let Some((max, which)) = full {
            self.report(
                |m| &m.too_many_connections,
                format_args!(
                    "refused the guest's connection to host port {}: {max} {which}connections \
                     are open",
                    key.local_port
                ),
            );
            self.queue_rst(self.rst_header(key.local_port, key.peer_port));
            return;
        }
        let path = port_path(&self.uds_path, key.local_port);
        match connect_port(&path) {
            Ok(stream) => {
                debug!(
                    "{}: guest port {} connected to {}",
                    self.label,
                    key.peer_port,
                    path.display()
                );
                let conn =
                    Connection::guest_initiated(stream, key, self.guest_cid, self.limits, hdr);
                self.metrics.guest_connections.inc();
                let idle = Some(now + self.limits.guest_idle_timeout);
                self.insert(key, conn, None, false, idle);
            }
            Err(e) => {
                self.report(
                    |m| &m.connect_failures,
                    format_args!(
                        "the guest's connection to host port {} was refused: cannot connect to \
                         {}: {e} (a host program must listen on that socket)",
                        key.local_port,
                        path.display()
                    ),
                );
                self.queue_rst(self.rst_header(key.local_port, key.peer_port));
            }
        }
    }
}
