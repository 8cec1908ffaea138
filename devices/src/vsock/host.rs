//! The host side of the device: the `CONNECT <port>` line a host program sends first, connecting
//! guest requests to `PATH_P`, and in-process connections for the VMM's own client.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use socket2::{Domain, SockAddr, Socket, Type};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The longest `CONNECT` line accepted ("CONNECT 4294967295\n" is 19 bytes).
pub(super) const MAX_CONNECT_LINE: usize = 32;
/// In-process connections waiting for the event loop to pick them up.
const MAX_LOCAL_PENDING: usize = 64;

/// A host connection that has not finished its `CONNECT` line.
pub(super) struct Handshake {
    pub stream: UnixStream,
    line: Vec<u8>,
    pub deadline: Instant,
    /// Whether the stream is in the event loop's epoll set.
    pub registered: bool,
}

pub(super) enum LineProgress {
    /// The line is not complete yet.
    Waiting,
    /// `CONNECT <port>`.
    Connect(u32),
    /// Anything else; the reason is for the log.
    Failed(String),
}

impl Handshake {
    pub fn new(stream: UnixStream, deadline: Instant) -> Self {
        Handshake {
            stream,
            line: Vec::new(),
            deadline,
            registered: false,
        }
    }

    /// Reads what the host program has sent so far. One byte at a time, because whatever follows
    /// the line is already the guest's data and must stay in the socket (the line is short, and
    /// read once per connection).
    pub fn read_line(&mut self) -> LineProgress {
        let mut byte = [0u8; 1];
        loop {
            match (&self.stream).read(&mut byte) {
                Ok(0) => {
                    return LineProgress::Failed(
                        "the host program closed the connection before sending CONNECT <port>"
                            .to_string(),
                    )
                }
                Ok(_) if byte[0] == b'\n' => {
                    return match parse_connect(&self.line) {
                        Some(port) => LineProgress::Connect(port),
                        None => LineProgress::Failed(format!(
                            "the host program sent {:?} instead of CONNECT <port>",
                            String::from_utf8_lossy(&self.line)
                        )),
                    };
                }
                Ok(_) => {
                    self.line.push(byte[0]);
                    if self.line.len() >= MAX_CONNECT_LINE {
                        return LineProgress::Failed(format!(
                            "the host program sent {:?}... without a newline; expected \
                             CONNECT <port>",
                            String::from_utf8_lossy(&self.line)
                        ));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    return LineProgress::Waiting
                }
                Err(e) => {
                    return LineProgress::Failed(format!(
                        "cannot read the host program's CONNECT line: {e}"
                    ))
                }
            }
        }
    }
}

/// `CONNECT <port>` (the keyword in any case, as Firecracker accepts it; a trailing CR is
/// tolerated for programs that send CRLF).
pub(super) fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_ascii_whitespace();
    let keyword = words.next()?;
    let port = words.next()?;
    if !keyword.eq_ignore_ascii_case("connect") || words.next().is_some() {
        return None;
    }
    port.parse().ok()
}

/// Where a guest connection to host port `port` goes: `PATH_port`.
pub(super) fn port_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut path = OsString::from(uds_path.as_os_str());
    path.push(format!("_{port}"));
    PathBuf::from(path)
}

/// Connects to the host program listening at `path` without blocking: a listener whose backlog
/// is full would otherwise stall the event loop in `connect(2)`; it is refused instead.
pub(super) fn connect_port(path: &Path) -> io::Result<UnixStream> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    // A Unix stream connect completes at once or fails (EAGAIN when the backlog is full); it
    // never goes on in the background the way a TCP one does.
    socket.connect(&SockAddr::unix(path)?)?;
    Ok(UnixStream::from(socket))
}

/// Opens vsock connections from inside the VMM, without a socket file: what the agent client
/// uses. Cheap to clone, usable from any thread, without the device's lock.
///
/// `connect(port)` returns one end of a Unix stream pair; the device treats the other end exactly
/// like a host program that connected to `--vsock-sock` and wrote `CONNECT <port>\n`. So the
/// caller reads `OK <local port>\n` once the guest's listener on `port` accepted, or EOF if the
/// guest refused, did not answer within 2 s, or its driver is not up yet; then the stream carries
/// the connection's data both ways, and EOF or a reset ends it. The returned stream is blocking;
/// the caller may make it non-blocking or set timeouts.
#[derive(Clone)]
pub struct LocalConnector {
    queue: Arc<LocalQueue>,
}

impl LocalConnector {
    pub(super) fn new(queue: Arc<LocalQueue>) -> Self {
        LocalConnector { queue }
    }

    /// Asks for a connection to the guest's listener on `port` (see the type's documentation).
    /// Fails only if the stream pair cannot be created, the event loop cannot be woken, or 64
    /// requests are already waiting for the event loop.
    pub fn connect(&self, port: u32) -> io::Result<UnixStream> {
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        {
            let mut pending = self
                .queue
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if pending.len() >= MAX_LOCAL_PENDING {
                return Err(io::Error::other(format!(
                    "{MAX_LOCAL_PENDING} in-process vsock connections are already waiting for \
                     the event loop; is it running?"
                )));
            }
            pending.push_back((ours, port));
        }
        self.queue.event.write(1)?;
        Ok(theirs)
    }
}

/// In-process connection requests on their way to the event loop.
pub(super) struct LocalQueue {
    pending: Mutex<VecDeque<(UnixStream, u32)>>,
    /// Wakes the event loop when a request is queued.
    pub event: EventFd,
}

impl LocalQueue {
    pub fn new() -> io::Result<Self> {
        Ok(LocalQueue {
            pending: Mutex::new(VecDeque::new()),
            event: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Every request queued so far.
    pub fn take(&self) -> Vec<(UnixStream, u32)> {
        let _ = self.event.read();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect()
    }
}
