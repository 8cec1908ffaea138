//! One stream connection between a guest socket and a host Unix stream: its handshake state, the
//! credit both ways, shutdown, and the packets it still owes the guest.
//!
//! Credit (virtio 1.2, 5.10.6.3): each side tells the other, in every packet, how much buffer it
//! has for the connection (`buf_alloc`) and how many bytes it has passed on so far (`fwd_cnt`).
//! - Guest to host: the device advertises `conn_buf_alloc` and counts in `fwd_cnt` the bytes it
//!   wrote to the host stream; what the host program has not read yet waits in `tx_buf`, which
//!   the guest's credit bounds. A guest sending past it is reset. When the free space the guest
//!   knows of gets low and the host has read more since, a CREDIT_UPDATE goes out.
//! - Host to guest: the device reads from the host stream only as much as the guest's free space
//!   (`peer_buf_alloc - (rx_cnt - peer_fwd_cnt)`) and its rx buffer allow, so host data waits in
//!   the host socket, never in the device. Out of credit with data waiting, it asks for an update
//!   once (CREDIT_REQUEST).
//!
//! Shutdown: a guest SHUTDOWN is passed on to the host stream (`shutdown(2)`: receive at once, send
//! once the buffered data is written); with both directions shut the device writes what is left,
//! then resets the connection (the guest expects that RST), or resets it anyway after the
//! shutdown timeout. A host EOF becomes a SHUTDOWN(SEND) to the guest, a host hang-up adds RCV;
//! once both are sent the guest has the shutdown timeout to answer with its RST.
//!
//! Nothing here touches guest memory or the event loop: the muxer hands in parsed packets and
//! host events, and asks for the next packet to give the guest.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use event_manager::EventSet;

use super::packet::{
    Header, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW,
    OP_SHUTDOWN, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use super::{Limits, HOST_CID, MAX_PKT_LEN};

/// A connection's identity: the host-side port and the guest-side port (the CIDs are fixed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct ConnKey {
    pub local_port: u32,
    pub peer_port: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Opened by the host: a REQUEST is owed to or was sent to the guest, no answer yet.
    LocalInit,
    /// Opened by the guest: the RESPONSE is owed to the guest.
    PeerInit,
    Established,
}

/// Why a connection ends with an RST to the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Reset {
    /// The orderly end: the guest shut both directions and what it sent reached the host.
    Closed,
    /// Reading or writing the host stream failed.
    HostIo(String),
    /// The host program hung up before the connection was established.
    HostGone,
    /// The guest broke the protocol.
    Protocol(&'static str),
    /// The guest sent more than the credit it was given.
    CreditOverrun { buffered: usize, len: usize },
    /// Something the connection waited for did not happen in time.
    Timeout(&'static str),
    /// All connections' buffered guest data reached the global cap.
    Backlog { total: usize },
    /// The event loop cannot watch the host stream.
    Event(String),
}

impl fmt::Display for Reset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reset::Closed => write!(f, "closed"),
            Reset::HostIo(e) => write!(f, "the host stream failed: {e}"),
            Reset::HostGone => write!(f, "the host program hung up before the guest answered"),
            Reset::Protocol(what) => write!(f, "the guest broke the protocol: {what}"),
            Reset::CreditOverrun { buffered, len } => write!(
                f,
                "the guest sent {len} bytes with {buffered} already buffered, past the credit \
                 it was given"
            ),
            Reset::Timeout(what) => write!(f, "timed out: {what}"),
            Reset::Backlog { total } => write!(
                f,
                "the guest data buffered for host programs that do not read reached {total} \
                 bytes across all connections"
            ),
            Reset::Event(e) => write!(f, "the event loop cannot watch the host stream: {e}"),
        }
    }
}

/// What the muxer does with a connection after a guest packet or a host event.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Keep,
    /// End it and tell the guest (if it knows of the connection) with an RST.
    Reset(Reset),
    /// The guest reset it: end it without a reply.
    Remove,
}

// Control packets the connection owes the guest; data and SHUTDOWN are derived from state.
const OWE_REQUEST: u8 = 1;
const OWE_RESPONSE: u8 = 1 << 1;
const OWE_CREDIT_UPDATE: u8 = 1 << 2;

/// An empty `tx_buf` with more room than this is freed (one packet's worth is kept).
const TX_BUF_KEEP: usize = super::MAX_PKT_LEN;

pub(super) struct Connection {
    key: ConnKey,
    guest_cid: u64,
    stream: UnixStream,
    state: State,
    limits: Limits,
    /// The guest has heard of the connection (so ending it needs an RST).
    guest_knows: bool,
    /// When the connection is reset unless something happens first.
    deadline: Option<Instant>,
    owed: u8,

    // Guest to host.
    /// `OK <port>\n`, not yet fully written; goes before any guest data.
    preamble: Vec<u8>,
    /// Guest data the host program has not read yet.
    tx_buf: VecDeque<u8>,
    /// Guest data received (the guest's `tx_cnt`).
    recv_cnt: Wrapping<u32>,
    /// Guest data written to the host stream.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as the guest last heard it.
    last_fwd_cnt_sent: Wrapping<u32>,
    peer_shut_rcv: bool,
    peer_shut_send: bool,
    host_write_shut: bool,
    /// Both directions are shut: reset once `tx_buf` is written.
    close_when_flushed: bool,

    // Host to guest.
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Host data given to the guest.
    rx_cnt: Wrapping<u32>,
    credit_requested: bool,
    /// The host stream has data (or EOF) the guest has not been given yet.
    host_readable: bool,
    /// The host stream reached EOF: the host program will send nothing more.
    host_eof: bool,
    /// The host program closed its end entirely: it will read nothing more either.
    host_hup: bool,
    /// SHUTDOWN flags already sent to the guest.
    shutdown_sent: u32,
}

impl Connection {
    /// A connection a host program asked for with `CONNECT <port>`: a REQUEST is owed.
    pub fn host_initiated(
        stream: UnixStream,
        key: ConnKey,
        guest_cid: u64,
        limits: Limits,
        now: Instant,
    ) -> Self {
        let mut conn = Self::new(stream, key, guest_cid, limits, State::LocalInit);
        conn.owed = OWE_REQUEST;
        // Counted from now, not from when the REQUEST goes out: a guest that never takes rx
        // buffers must not keep host connections forever.
        conn.deadline = Some(now + limits.request_timeout);
        conn
    }

    /// A connection the guest asked for with `request`, now connected on the host: a RESPONSE
    /// is owed.
    pub fn guest_initiated(
        stream: UnixStream,
        key: ConnKey,
        guest_cid: u64,
        limits: Limits,
        request: &Header,
    ) -> Self {
        let mut conn = Self::new(stream, key, guest_cid, limits, State::PeerInit);
        conn.owed = OWE_RESPONSE;
        conn.guest_knows = true;
        conn.peer_buf_alloc = request.buf_alloc;
        conn.peer_fwd_cnt = Wrapping(request.fwd_cnt);
        conn
    }

    fn new(stream: UnixStream, key: ConnKey, guest_cid: u64, limits: Limits, state: State) -> Self {
        Connection {
            key,
            guest_cid,
            stream,
            state,
            limits,
            guest_knows: false,
            deadline: None,
            owed: 0,
            preamble: Vec::new(),
            tx_buf: VecDeque::new(),
            recv_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            peer_shut_rcv: false,
            peer_shut_send: false,
            host_write_shut: false,
            close_when_flushed: false,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            credit_requested: false,
            host_readable: false,
            host_eof: false,
            host_hup: false,
            shutdown_sent: 0,
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn guest_knows(&self) -> bool {
        self.guest_knows
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Guest data held for the host program (bounded by the advertised credit).
    pub fn backlog(&self) -> usize {
        self.tx_buf.len()
    }

    /// Memory held for guest data, used or not.
    #[cfg(test)]
    pub fn backlog_capacity(&self) -> usize {
        self.tx_buf.capacity()
    }

    /// The timeout that ran out, if one did.
    pub fn expired(&self, now: Instant) -> Option<Reset> {
        match self.deadline {
            Some(at) if at <= now => Some(Reset::Timeout(match self.state {
                State::LocalInit => "the guest did not answer the connection request",
                _ => "the shutdown did not finish",
            })),
            _ => None,
        }
    }

    /// A packet from the guest for this connection (CIDs, type and op already checked).
    pub fn on_guest_packet(&mut self, hdr: &Header, data: &[u8], now: Instant) -> Outcome {
        // Every packet carries the guest's credit.
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
        let established = self.state == State::Established;
        let result = match hdr.op {
            OP_RST => return Outcome::Remove,
            OP_RESPONSE if self.state == State::LocalInit && self.guest_knows => {
                self.state = State::Established;
                self.deadline = None;
                self.preamble = format!("OK {}\n", self.key.local_port).into_bytes();
                self.flush()
            }
            OP_RESPONSE => Err(Reset::Protocol("RESPONSE to a request that was never sent")),
            OP_REQUEST => Err(Reset::Protocol("REQUEST for a connection that exists")),
            OP_RW if established => self.on_guest_data(data),
            OP_RW => Err(Reset::Protocol(
                "data before the connection was established",
            )),
            OP_SHUTDOWN if established => self.on_guest_shutdown(hdr.flags, now),
            OP_SHUTDOWN => Err(Reset::Protocol(
                "SHUTDOWN before the connection was established",
            )),
            OP_CREDIT_UPDATE | OP_CREDIT_REQUEST if self.state == State::LocalInit => Err(
                Reset::Protocol("credit packet before the connection was established"),
            ),
            // The credit was taken above.
            OP_CREDIT_UPDATE => Ok(()),
            OP_CREDIT_REQUEST => {
                self.owed |= OWE_CREDIT_UPDATE;
                Ok(())
            }
            _ => Err(Reset::Protocol("unknown op")),
        };
        match result {
            Ok(()) => Outcome::Keep,
            Err(reset) => Outcome::Reset(reset),
        }
    }

    fn on_guest_data(&mut self, data: &[u8]) -> Result<(), Reset> {
        if self.peer_shut_send {
            return Err(Reset::Protocol("data after the guest shut down sending"));
        }
        if data.is_empty() {
            return Ok(());
        }
        let buffered = self.tx_buf.len();
        if buffered + data.len() > self.limits.conn_buf_alloc as usize {
            return Err(Reset::CreditOverrun {
                buffered,
                len: data.len(),
            });
        }
        self.recv_cnt += Wrapping(data.len() as u32);
        let mut written = 0;
        if self.preamble.is_empty() && self.tx_buf.is_empty() {
            written = match write_host(&self.stream, data) {
                Ok(n) => n,
                Err(e) if would_block(&e) => 0,
                Err(e) => return Err(Reset::HostIo(e.to_string())),
            };
            self.fwd_cnt += Wrapping(written as u32);
        }
        self.tx_buf.extend(&data[written..]);
        self.check_credit_update();
        Ok(())
    }

    fn on_guest_shutdown(&mut self, flags: u32, now: Instant) -> Result<(), Reset> {
        if flags & SHUTDOWN_RCV != 0 && !self.peer_shut_rcv {
            self.peer_shut_rcv = true;
            // The host program's further writes fail (EPIPE) instead of piling up unread.
            let _ = self.stream.shutdown(Shutdown::Read);
        }
        if flags & SHUTDOWN_SEND != 0 {
            self.peer_shut_send = true;
        }
        if self.peer_shut_rcv && self.peer_shut_send {
            self.close_when_flushed = true;
            self.deadline
                .get_or_insert(now + self.limits.shutdown_timeout);
        }
        // Passes the SEND shutdown on (or ends the connection) if nothing is left to write.
        self.flush()
    }

    /// An event on the host stream.
    pub fn on_host_event(&mut self, events: EventSet) -> Outcome {
        if events.contains(EventSet::ERROR) {
            let error = self
                .stream
                .take_error()
                .ok()
                .flatten()
                .map_or_else(|| "socket error".to_string(), |e| e.to_string());
            return Outcome::Reset(Reset::HostIo(error));
        }
        if events.contains(EventSet::HANG_UP) {
            if self.state != State::Established {
                return Outcome::Reset(Reset::HostGone);
            }
            // What it wrote before closing can still be read, then EOF.
            self.host_hup = true;
            self.host_readable = true;
            if !self.preamble.is_empty() || !self.tx_buf.is_empty() {
                // Nobody will read it: the write fails and says why.
                if let Err(reset) = self.flush() {
                    return Outcome::Reset(reset);
                }
            }
        }
        if events.contains(EventSet::IN) {
            self.host_readable = true;
        }
        if events.contains(EventSet::OUT) {
            if let Err(reset) = self.flush() {
                return Outcome::Reset(reset);
            }
        }
        Outcome::Keep
    }

    /// Writes what waits for the host stream, as far as it takes it.
    fn flush(&mut self) -> Result<(), Reset> {
        while !self.preamble.is_empty() {
            match write_host(&self.stream, &self.preamble) {
                // A stream socket takes at least a byte or says it would block; be safe anyway.
                Ok(0) => return Ok(()),
                Ok(n) => drop(self.preamble.drain(..n)),
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) => return Err(Reset::HostIo(e.to_string())),
            }
        }
        while !self.tx_buf.is_empty() {
            let (chunk, _) = self.tx_buf.as_slices();
            match write_host(&self.stream, chunk) {
                Ok(0) => break,
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(Reset::HostIo(e.to_string())),
            }
        }
        if self.tx_buf.is_empty() {
            // A host program that caught up gives back what a burst made the buffer grow to.
            if self.tx_buf.capacity() > TX_BUF_KEEP {
                self.tx_buf = VecDeque::new();
            }
            if self.close_when_flushed {
                return Err(Reset::Closed);
            }
            if self.peer_shut_send && !self.host_write_shut {
                self.host_write_shut = true;
                // The host program reads EOF. Failing means it is gone, which a write will show.
                let _ = self.stream.shutdown(Shutdown::Write);
            }
        }
        self.check_credit_update();
        Ok(())
    }

    /// Owes the guest a CREDIT_UPDATE if the free space it knows of is low and there is news.
    fn check_credit_update(&mut self) {
        if self.state != State::Established || self.peer_shut_send {
            return;
        }
        let known_in_flight = (self.recv_cnt - self.last_fwd_cnt_sent).0;
        let known_free = self.limits.conn_buf_alloc.saturating_sub(known_in_flight);
        if known_free < self.limits.credit_update_threshold
            && self.fwd_cnt != self.last_fwd_cnt_sent
        {
            self.owed |= OWE_CREDIT_UPDATE;
        }
    }

    /// How much more the guest can take. A guest reporting more forwarded than it was sent, or
    /// shrinking its buffer below what is in flight, gets nothing rather than a wrapped figure.
    fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn can_send_data(&self) -> bool {
        self.state == State::Established
            && self.host_readable
            && !self.host_eof
            && !self.peer_shut_rcv
    }

    /// The SHUTDOWN flags the guest should know of by now.
    fn shutdown_flags(&self) -> u32 {
        let mut flags = 0;
        if self.host_eof {
            flags |= SHUTDOWN_SEND;
        }
        if self.host_hup {
            flags |= SHUTDOWN_RCV;
        }
        flags
    }

    /// Whether the connection has a packet for the guest.
    pub fn has_pending_rx(&self) -> bool {
        self.owed != 0
            || (self.can_send_data() && (self.peer_credit() > 0 || !self.credit_requested))
            || (self.state == State::Established
                && self.shutdown_flags() & !self.shutdown_sent != 0)
    }

    /// The next packet for the guest, with its payload (at most `capacity` bytes, the guest
    /// buffer's size) in `buf[..header.len]`. `None` if there is nothing to send after all (the
    /// host stream had no data) or the buffer cannot hold what is next.
    pub fn next_packet(
        &mut self,
        capacity: usize,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<Option<Header>, Reset> {
        if self.owed & OWE_REQUEST != 0 {
            self.owed &= !OWE_REQUEST;
            self.guest_knows = true;
            return Ok(Some(self.header(OP_REQUEST, 0, 0)));
        }
        if self.owed & OWE_RESPONSE != 0 {
            self.owed &= !OWE_RESPONSE;
            self.state = State::Established;
            return Ok(Some(self.header(OP_RESPONSE, 0, 0)));
        }
        if self.can_send_data() {
            let credit = self.peer_credit() as usize;
            if credit == 0 {
                if !self.credit_requested {
                    self.credit_requested = true;
                    return Ok(Some(self.header(OP_CREDIT_REQUEST, 0, 0)));
                }
            } else if capacity > 0 {
                let max = capacity.min(credit).min(MAX_PKT_LEN).min(buf.len());
                match (&self.stream).read(&mut buf[..max]) {
                    Ok(0) => {
                        self.host_eof = true;
                        self.host_readable = false;
                    }
                    Ok(n) => {
                        self.rx_cnt += Wrapping(n as u32);
                        return Ok(Some(self.header(OP_RW, n as u32, 0)));
                    }
                    Err(e) if would_block(&e) => self.host_readable = false,
                    Err(e) => return Err(Reset::HostIo(e.to_string())),
                }
            } else {
                // Data waits, and this buffer has no room for any.
                return Ok(None);
            }
        }
        let flags = self.shutdown_flags();
        if self.state == State::Established && flags & !self.shutdown_sent != 0 {
            self.shutdown_sent = flags;
            if flags == SHUTDOWN_RCV | SHUTDOWN_SEND {
                self.deadline
                    .get_or_insert(now + self.limits.shutdown_timeout);
            }
            return Ok(Some(self.header(OP_SHUTDOWN, 0, flags)));
        }
        if self.owed & OWE_CREDIT_UPDATE != 0 {
            return Ok(Some(self.header(OP_CREDIT_UPDATE, 0, 0)));
        }
        Ok(None)
    }

    /// A header from this connection's host end. Every packet carries the device's credit, so a
    /// pending CREDIT_UPDATE is no longer needed.
    fn header(&mut self, op: u16, len: u32, flags: u32) -> Header {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.owed &= !OWE_CREDIT_UPDATE;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.key.local_port,
            dst_port: self.key.peer_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: self.limits.conn_buf_alloc,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// The host stream events the connection waits for; `None` once the host program has hung
    /// up, because epoll would then report the hang-up on every wait (it cannot be masked) while
    /// the rest is driven by the guest.
    pub fn interest(&self) -> Option<EventSet> {
        if self.host_hup {
            return None;
        }
        let mut events = EventSet::empty();
        // Not while data is known to wait: level-triggered IN would fire on every loop until the
        // guest has a buffer and credit for it. Reads resume when the host stream runs dry.
        if self.state == State::Established
            && !self.host_readable
            && !self.host_eof
            && !self.peer_shut_rcv
        {
            events |= EventSet::IN;
        }
        if !self.preamble.is_empty() || !self.tx_buf.is_empty() {
            events |= EventSet::OUT;
        }
        Some(events)
    }
}

/// Writes to the host stream without raising SIGPIPE if the host program is gone (the write
/// fails with EPIPE instead).
fn write_host(stream: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(stream).send_with_flags(buf, libc::MSG_NOSIGNAL)
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}
