//! The connection multiplexer: the connection table, routing each guest packet to its connection
//! (or answering it with a reset), the order in which connections get the guest's rx buffers,
//! host connections arriving, timeouts, and keeping the event loop's epoll set in line with what
//! each host stream waits for.
//!
//! A connection is keyed by (host port, guest port). Host-initiated connections get a host port
//! from `[2^30, 2^31)`, round robin, as Firecracker does; guest-initiated ones keep the port the
//! guest connected to.
//!
//! Streams leave the epoll set only through `sync`, which runs on the event loop after every
//! event: a stream that is dropped while still registered would leave event-manager dispatching a
//! closed (and possibly reused) fd. So an ended connection's stream waits in `retired` until then.

mod accept;
mod epoll;
mod guest;
mod rx;

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use event_manager::EventSet;
use log::{debug, info};

use super::connection::{ConnKey, Connection, Outcome, Reset, State};
use super::host::{Handshake, LocalQueue};
use super::metrics::{report, Counter, VsockMetrics};
use super::packet::Header;
use super::Limits;
use crate::unix_socket::{BoundSocket, SocketFile};

/// The host ports given to host-initiated connections: `[FIRST_LOCAL_PORT, 2^31)`.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

struct Entry {
    conn: Connection,
    /// What the stream is registered for in the epoll set, if it is.
    registered: Option<EventSet>,
    /// Whether the connection is in `rxq`.
    queued: bool,
    /// The host port came from `allocate_local_port` (host-initiated).
    allocated_port: bool,
    /// Guest-initiated connections only: reset once this passes with no traffic either way.
    idle_deadline: Option<Instant>,
}

/// Where a host-initiated connection came from: a host program on the socket, or the VMM's
/// own in-process connector (which may use the slots kept for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HostOrigin {
    Socket,
    Local,
}

/// A stream whose connection ended, waiting for `sync` to take it out of the epoll set.
struct Retired {
    stream: UnixStream,
    registered: bool,
}

enum RxItem {
    /// The connection has something for the guest.
    Conn(ConnKey),
    /// A reset for a connection that does not exist (any more).
    Rst(Header),
}

pub(super) struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    /// Whether the listener is in the epoll set.
    listener_registered: bool,
    /// Accepting failed; the listener is not watched until then.
    accept_paused_until: Option<Instant>,
    /// The socket file, removed on drop only if it is still ours.
    socket_file: SocketFile,
    limits: Limits,
    label: String,
    metrics: Arc<VsockMetrics>,
    /// The driver has activated the device (its queues exist).
    active: bool,
    conns: HashMap<ConnKey, Entry>,
    by_fd: HashMap<RawFd, ConnKey>,
    handshakes: HashMap<RawFd, Handshake>,
    rxq: VecDeque<RxItem>,
    /// Open guest-initiated connections (those with an idle deadline).
    guest_conns: usize,
    queued_rst: usize,
    local_ports: HashSet<u32>,
    next_local_port: u32,
    /// Guest data buffered for host programs, across all connections.
    backlog: usize,
    retired: Vec<Retired>,
    local: Arc<LocalQueue>,
}

impl Muxer {
    pub fn new(
        guest_cid: u64,
        uds_path: PathBuf,
        socket: BoundSocket,
        limits: Limits,
        metrics: Arc<VsockMetrics>,
        local: Arc<LocalQueue>,
    ) -> Self {
        Muxer {
            label: format!("virtio-vsock {}", uds_path.display()),
            guest_cid,
            uds_path,
            listener: socket.listener,
            listener_registered: false,
            accept_paused_until: None,
            socket_file: socket.file,
            limits,
            metrics,
            active: false,
            conns: HashMap::new(),
            by_fd: HashMap::new(),
            handshakes: HashMap::new(),
            rxq: VecDeque::new(),
            guest_conns: 0,
            queued_rst: 0,
            local_ports: HashSet::new(),
            next_local_port: FIRST_LOCAL_PORT,
            backlog: 0,
            retired: Vec::new(),
            local,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn set_active(&mut self, active: bool) {
        self.active = active;
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    #[cfg(test)]
    pub fn handshake_count(&self) -> usize {
        self.handshakes.len()
    }

    #[cfg(test)]
    pub fn backlog(&self) -> usize {
        self.backlog
    }

    /// Memory the connections hold for guest data, used or not.
    #[cfg(test)]
    pub fn backlog_capacity(&self) -> usize {
        self.conns.values().map(|e| e.conn.backlog_capacity()).sum()
    }

    // --- connection lifetime ---

    fn insert(
        &mut self,
        key: ConnKey,
        conn: Connection,
        registered: Option<EventSet>,
        allocated_port: bool,
        idle_deadline: Option<Instant>,
    ) {
        self.by_fd.insert(conn.stream().as_raw_fd(), key);
        if idle_deadline.is_some() {
            self.guest_conns += 1;
        }
        self.conns.insert(
            key,
            Entry {
                conn,
                registered,
                queued: false,
                allocated_port,
                idle_deadline,
            },
        );
        self.requeue(key);
    }

    fn apply(&mut self, key: ConnKey, outcome: Outcome) {
        match outcome {
            Outcome::Keep if self.backlog > self.limits.total_backlog => {
                let total = self.backlog;
                self.account(key, &Reset::Backlog { total });
                self.end(key, true);
            }
            Outcome::Keep => self.requeue(key),
            Outcome::Reset(why) => {
                self.account(key, &why);
                self.end(key, true);
            }
            Outcome::Remove => {
                let state = self.conns.get(&key).map(|e| e.conn.state());
                if state == Some(State::LocalInit) {
                    self.metrics.host_refused.inc();
                    info!(
                        "{}: the guest refused a host connection to its port {} (is anything \
                         listening there?)",
                        self.label, key.peer_port
                    );
                } else {
                    self.metrics.closed.inc();
                }
                self.end(key, false);
            }
        }
    }

    /// Counts and logs why a connection is reset.
    fn account(&self, key: ConnKey, why: &Reset) {
        let what = format!(
            "connection host port {} <-> guest port {} reset: {why}",
            key.local_port, key.peer_port
        );
        let counter: Option<fn(&VsockMetrics) -> &Counter> = match why {
            Reset::Closed => {
                self.metrics.closed.inc();
                debug!("{}: connection {key:?} closed", self.label);
                return;
            }
            Reset::HostGone => None,
            Reset::HostIo(_) => Some(|m| &m.host_io_errors),
            Reset::Protocol(_) => Some(|m| &m.protocol_errors),
            Reset::CreditOverrun { .. } => Some(|m| &m.credit_overruns),
            Reset::Timeout(_) => Some(|m| &m.timeouts),
            Reset::Backlog { .. } => Some(|m| &m.backlog_overflows),
            Reset::Event(_) => Some(|m| &m.event_errors),
        };
        self.metrics.resets.inc();
        if matches!(why, Reset::Timeout(_))
            && self.conns.get(&key).map(|e| e.conn.state()) == Some(State::LocalInit)
        {
            self.metrics.host_refused.inc();
        }
        match counter {
            Some(counter) => self.report(counter, format_args!("{what}")),
            None => debug!("{}: {what}", self.label),
        }
    }

    /// Ends a connection: closes the host stream (once `sync` unregistered it) and, with `rst`,
    /// resets the guest's socket if the guest knows of the connection.
    fn end(&mut self, key: ConnKey, rst: bool) {
        let Some(entry) = self.conns.remove(&key) else {
            return;
        };
        self.backlog -= entry.conn.backlog();
        if entry.idle_deadline.is_some() {
            self.guest_conns -= 1;
        }
        if entry.allocated_port {
            self.local_ports.remove(&key.local_port);
        }
        self.by_fd.remove(&entry.conn.stream().as_raw_fd());
        let guest_knows = entry.conn.guest_knows();
        self.retire(entry.conn.into_stream(), entry.registered.is_some());
        if rst && guest_knows {
            self.queue_rst(self.rst_header(key.local_port, key.peer_port));
        }
    }

    fn retire(&mut self, stream: UnixStream, registered: bool) {
        self.retired.push(Retired { stream, registered });
    }

    /// Traffic on a connection: a guest-initiated one is not idle.
    fn touch(&mut self, key: ConnKey, now: Instant) {
        let idle = self.limits.guest_idle_timeout;
        if let Some(entry) = self.conns.get_mut(&key) {
            if let Some(deadline) = entry.idle_deadline.as_mut() {
                *deadline = now + idle;
            }
        }
    }

    /// Open guest-initiated connections.
    pub fn guest_connection_count(&self) -> usize {
        self.guest_conns
    }

    /// Resets what has run out of time; host connections that never sent their line are
    /// closed.
    pub fn sweep(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|until| until <= now) {
            self.accept_paused_until = None;
        }
        let expired: Vec<(ConnKey, Reset)> = self
            .conns
            .iter()
            .filter_map(|(key, entry)| {
                let idle = entry.idle_deadline.is_some_and(|at| at <= now);
                let why = entry.conn.expired(now).or(idle.then_some(Reset::Timeout(
                    "the guest's connection carried no traffic for the idle timeout",
                )));
                why.map(|why| (*key, why))
            })
            .collect();
        for (key, why) in expired {
            self.account(key, &why);
            self.end(key, true);
        }
        let late: Vec<RawFd> = self
            .handshakes
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in late {
            if let Some(handshake) = self.handshakes.remove(&fd) {
                let timeout = self.limits.handshake_timeout;
                self.metrics.host_refused.inc();
                self.report(
                    |m| &m.timeouts,
                    format_args!(
                        "a host connection sent no CONNECT <port> line within {timeout:?}; \
                         closed it"
                    ),
                );
                self.retire(handshake.stream, handshake.registered);
            }
        }
    }

    /// When `sweep` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let conns = self
            .conns
            .values()
            .flat_map(|e| [e.conn.deadline(), e.idle_deadline])
            .flatten();
        let handshakes = self.handshakes.values().map(|h| h.deadline);
        conns
            .chain(handshakes)
            .chain(self.accept_paused_until)
            .min()
    }

    /// The driver reset the device: every connection ends (host programs read EOF; the guest's
    /// sockets are gone with its driver), and nothing more goes to the old queues.
    pub fn drop_all(&mut self) {
        let dropped = self.conns.len();
        for (_, entry) in self.conns.drain() {
            self.retired.push(Retired {
                stream: entry.conn.into_stream(),
                registered: entry.registered.is_some(),
            });
        }
        if dropped > 0 {
            info!(
                "{}: the driver reset the device; dropped {dropped} connections",
                self.label
            );
        }
        self.metrics.dropped_by_reset.add(dropped as u64);
        self.by_fd.clear();
        self.local_ports.clear();
        self.rxq.clear();
        self.queued_rst = 0;
        self.backlog = 0;
        self.active = false;
    }

    /// The fds `sync` has yet to unregister: nothing may close them before it does.
    #[cfg(test)]
    pub fn retired_count(&self) -> usize {
        self.retired.len()
    }

    fn report(&self, counter: fn(&VsockMetrics) -> &Counter, message: std::fmt::Arguments<'_>) {
        report(counter(&self.metrics), &self.label, message);
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        // Remove the socket file, unless another process has replaced it since.
        self.socket_file.remove_if_ours();
    }
}
