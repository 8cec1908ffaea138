//! The VMM's agent service: its one link to `ballast-agent` in the guest, over the guest's vsock
//! device. One thread owns one connection: it asks for `stats` every interval (what the API
//! shows and the memory manager reads), and carries out the memory manager's deactivation
//! requests on the same connection, in between.
//!
//! The service runs on a thread of its own, not on the event loop: an agent request may take up
//! to its timeout, and devices must not wait behind it. The event loop and the API only read the
//! shared [`AgentStatus`], which never blocks on the guest; the manager's requests come back on
//! their own reply channel, which the manager polls without waiting.
//!
//! Everything the guest says is untrusted: its strings (versions, error messages) are cut and
//! escaped by the agent client as they arrive (`ballast_agent::protocol::guest_text`).
//!
//! | file | job |
//! | --- | --- |
//! | `mod.rs` | the status, the dialer, the service and the handle (the manager's guest agent port) |
//! | `worker.rs` | the thread: connect, `hello`, `stats` every interval, requests in between |
//! | `tests.rs` | the service against the real agent's request handler and misbehaving peers |

mod worker;

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ballast_agent::protocol::{Hello, Stats};
use ballast_agent::AgentError;
use ballast_devices::vsock::LocalConnector;
use ballast_manager::driver::ports::{AgentAnswer, AgentReply, AgentRequest, GuestAgent};

/// The vsock port `ballast-agent` listens on by default.
pub const AGENT_PORT: u32 = 52;
/// How long connecting and a `hello` or `stats` request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one deactivation request may take: the agent's own budget is 1.5 s.
pub const DEACTIVATE_TIMEOUT: Duration = Duration::from_secs(4);
/// How often the service asks for `stats`.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// A guest gets this long to boot and start its agent before it counts as unresponsive.
pub const BOOT_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AgentState {
    /// Not answered yet, within the boot grace period.
    #[default]
    Connecting,
    /// The last request was answered.
    Ready,
    /// Absent, slow, or replying nonsense.
    Unresponsive,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Connecting => "connecting",
            AgentState::Ready => "ready",
            AgentState::Unresponsive => "unresponsive",
        }
    }
}

/// What the VMM knows of the agent: written by the service's thread, read by everyone else.
#[derive(Debug, Clone, Default)]
pub struct AgentStatus {
    pub state: AgentState,
    /// Why the agent is not ready, when it is not.
    pub reason: Option<String>,
    pub hello: Option<Hello>,
    pub stats: Option<Stats>,
    pub stats_at: Option<Instant>,
    /// Connections made, and `stats` polls that failed (timeouts, bad replies, closed
    /// connections).
    pub connects: u64,
    pub failures: u64,
}

/// How the service reaches the agent; tests give their own.
pub trait AgentDialer: Send + 'static {
    /// A connection on which the agent's lines can be exchanged (the `OK` line of the hybrid
    /// vsock handshake already consumed), or why there is none.
    fn dial(&mut self, timeout: Duration) -> Result<UnixStream, AgentError>;
}

/// Dials the agent through the VMM's own end of the vsock device.
pub struct VsockDialer {
    pub connector: LocalConnector,
    pub port: u32,
}

impl AgentDialer for VsockDialer {
    fn dial(&mut self, timeout: Duration) -> Result<UnixStream, AgentError> {
        let mut stream = self
            .connector
            .connect(self.port)
            .map_err(AgentError::Connect)?;
        worker::read_ok_line(&mut stream, self.port, timeout)?;
        Ok(stream)
    }
}

/// A deactivation the memory manager asked for, with the channel its answer goes back on.
enum Request {
    File {
        pages: u64,
        reply: mpsc::Sender<Result<AgentAnswer, AgentError>>,
    },
    Anon {
        pages: u64,
        urgent: bool,
        reply: mpsc::Sender<Result<AgentAnswer, AgentError>>,
    },
}

/// How often and how patiently the service talks to the agent.
#[derive(Debug, Clone, Copy)]
pub struct AgentTimings {
    pub stats_interval: Duration,
    pub request_timeout: Duration,
    pub deactivate_timeout: Duration,
    pub boot_grace: Duration,
}

impl Default for AgentTimings {
    fn default() -> Self {
        Self {
            stats_interval: STATS_INTERVAL,
            request_timeout: REQUEST_TIMEOUT,
            deactivate_timeout: DEACTIVATE_TIMEOUT,
            boot_grace: BOOT_GRACE,
        }
    }
}

/// The running service.
pub struct AgentService {
    handle: AgentHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AgentService {
    pub fn start(dialer: impl AgentDialer, timings: AgentTimings) -> std::io::Result<Self> {
        let status = Arc::new(Mutex::new(AgentStatus::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (requests, inbox) = mpsc::channel();
        let worker = worker::Worker::new(
            Box::new(dialer),
            status.clone(),
            inbox,
            stop.clone(),
            timings,
        );
        let thread = std::thread::Builder::new()
            .name("agent".into())
            .spawn(move || {
                crate::seccomp::apply_or_exit(crate::seccomp::ThreadKind::Agent);
                worker.run()
            })?;
        Ok(Self {
            handle: AgentHandle {
                status,
                requests,
                reply_timeout: timings.deactivate_timeout + timings.request_timeout * 2,
            },
            stop,
            thread: Some(thread),
        })
    }

    /// What the API and the memory manager keep.
    pub fn handle(&self) -> AgentHandle {
        self.handle.clone()
    }

    /// A copy of what is known now.
    pub fn status(&self) -> AgentStatus {
        self.handle.status()
    }
}

impl Drop for AgentService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // The worker checks the flag at least every 100 ms and its I/O has a timeout.
            let _ = thread.join();
        }
    }
}

/// A reader of the agent's status, and the memory manager's way to the agent.
#[derive(Clone)]
pub struct AgentHandle {
    status: Arc<Mutex<AgentStatus>>,
    requests: mpsc::Sender<Request>,
    /// How long a requester waits for the service's answer: the request's own timeout, plus
    /// a connection and a `stats` poll that may come first.
    reply_timeout: Duration,
}

impl AgentHandle {
    /// A copy of what is known now.
    pub fn status(&self) -> AgentStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Hands `request` to the service's thread; the answer comes on the reply, within the
    /// request's own timeout plus a connection and a `stats` poll that may come first.
    fn ask(&self, request: AgentRequest) -> AgentReply {
        let (reply, answer) = AgentReply::channel(self.reply_timeout);
        let request = match request {
            AgentRequest::File { pages } => Request::File { pages, reply },
            AgentRequest::Anon { pages, urgent } => Request::Anon {
                pages,
                urgent,
                reply,
            },
        };
        if let Err(mpsc::SendError(request)) = self.requests.send(request) {
            let (Request::File { reply, .. } | Request::Anon { reply, .. }) = request;
            let _ = reply.send(Err(AgentError::Stopped));
        }
        answer
    }
}

impl GuestAgent for AgentHandle {
    fn latest_stats(&self) -> Option<(Stats, Instant)> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.state != AgentState::Ready {
            return None;
        }
        Some((status.stats.clone()?, status.stats_at?))
    }

    fn start(&mut self, request: AgentRequest) -> AgentReply {
        self.ask(request)
    }
}

#[cfg(test)]
mod tests;
