//! The host side of the muxer: accepting host programs' connections and reading their `CONNECT`
//! lines, in-process connections, host ports for them, and events on host streams.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use event_manager::EventSet;
use log::{debug, info};

use super::super::connection::{ConnKey, Connection};
use super::super::host::{Handshake, LineProgress};
use super::{HostOrigin, Muxer, FIRST_LOCAL_PORT};

/// The last host port given to host-initiated connections (see `FIRST_LOCAL_PORT`).
const LAST_LOCAL_PORT: u32 = (1 << 31) - 1;
/// Host connections accepted per listener event; the rest wait for the next loop.
const MAX_ACCEPTS: usize = 16;
/// How long the host socket is not watched after accepting failed (out of fds, say): it stays
/// readable, so watching it would spin the event loop.
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

impl Muxer {
    /// Accepts host programs' connections on `--vsock-sock`; each must send `CONNECT <port>`.
    pub fn accept(&mut self, now: Instant) {
        for _ in 0..MAX_ACCEPTS {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let path = self.uds_path.display().to_string();
                    self.report(
                        |m| &m.event_errors,
                        format_args!(
                            "cannot accept a host connection on {path}: {e}; trying again in \
                             {ACCEPT_PAUSE:?}"
                        ),
                    );
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
            };
            if let Err(e) = stream.set_nonblocking(true) {
                self.report(
                    |m| &m.event_errors,
                    format_args!("cannot make a host connection non-blocking: {e}"),
                );
                continue;
            }
            if self.handshakes.len() >= self.limits.max_handshakes {
                let max = self.limits.max_handshakes;
                self.report(
                    |m| &m.host_refused,
                    format_args!(
                        "refused a host connection: {max} are already waiting to send \
                         CONNECT <port>"
                    ),
                );
                continue;
            }
            let fd = stream.as_raw_fd();
            self.handshakes.insert(
                fd,
                Handshake::new(stream, now + self.limits.handshake_timeout),
            );
            // The line may be there already.
            self.read_handshake(fd, now);
        }
    }

    /// An event on a host stream: a connection's, or one still sending its `CONNECT` line.
    pub fn on_stream_event(&mut self, fd: RawFd, events: EventSet, now: Instant) {
        if let Some(&key) = self.by_fd.get(&fd) {
            let Some(entry) = self.conns.get_mut(&key) else {
                return;
            };
            let before = entry.conn.backlog();
            let outcome = entry.conn.on_host_event(events);
            self.backlog = self.backlog - before + entry.conn.backlog();
            self.touch(key, now);
            self.apply(key, outcome);
        } else if self.handshakes.contains_key(&fd) {
            self.read_handshake(fd, now);
        }
        // Otherwise a stream that ended during this loop; `sync` unregisters it.
    }

    pub(super) fn read_handshake(&mut self, fd: RawFd, now: Instant) {
        let Some(handshake) = self.handshakes.get_mut(&fd) else {
            return;
        };
        match handshake.read_line() {
            LineProgress::Waiting => {}
            LineProgress::Connect(port) => {
                if let Some(handshake) = self.handshakes.remove(&fd) {
                    let registered = handshake.registered;
                    self.start_host(handshake.stream, port, registered, HostOrigin::Socket, now);
                }
            }
            LineProgress::Failed(why) => {
                self.report(|m| &m.host_refused, format_args!("{why}; closed it"));
                if let Some(handshake) = self.handshakes.remove(&fd) {
                    self.retire(handshake.stream, handshake.registered);
                }
            }
        }
    }

    /// In-process connections (`LocalConnector::connect`) queued since the last look.
    pub fn take_local(&mut self, now: Instant) {
        for (stream, port) in self.local.take() {
            self.start_host(stream, port, false, HostOrigin::Local, now);
        }
    }

    /// A host connection that asked for guest port `peer_port`: a REQUEST goes to the guest.
    pub(super) fn start_host(
        &mut self,
        stream: UnixStream,
        peer_port: u32,
        registered: bool,
        origin: HostOrigin,
        now: Instant,
    ) {
        // Host programs leave the last few slots to the VMM's own connections.
        let max = match origin {
            HostOrigin::Local => self.limits.max_connections,
            HostOrigin::Socket => self
                .limits
                .max_connections
                .saturating_sub(self.limits.reserved_local),
        };
        let refusal = if !self.active {
            Some("the guest's vsock driver is not up".to_string())
        } else if self.conns.len() >= max {
            Some(format!("{} connections are open", self.conns.len()))
        } else {
            None
        };
        if let Some(why) = refusal {
            self.metrics.host_refused.inc();
            info!(
                "{}: refused a host connection to guest port {peer_port}: {why}",
                self.label
            );
            self.retire(stream, registered);
            return;
        }
        let local_port = self.allocate_local_port(peer_port);
        let key = ConnKey {
            local_port,
            peer_port,
        };
        debug!(
            "{}: host connection to guest port {peer_port} (host port {local_port})",
            self.label
        );
        let conn = Connection::host_initiated(stream, key, self.guest_cid, self.limits, now);
        self.metrics.host_connections.inc();
        self.insert(key, conn, registered.then_some(EventSet::IN), true, None);
    }

    pub(super) fn allocate_local_port(&mut self, peer_port: u32) -> u32 {
        // At most `max_connections` of 2^30 ports are taken, so this ends quickly.
        loop {
            let port = self.next_local_port;
            self.next_local_port = if port >= LAST_LOCAL_PORT {
                FIRST_LOCAL_PORT
            } else {
                port + 1
            };
            let key = ConnKey {
                local_port: port,
                peer_port,
            };
            if !self.local_ports.contains(&port) && !self.conns.contains_key(&key) {
                self.local_ports.insert(port);
                return port;
            }
        }
    }
}
