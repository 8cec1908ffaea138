//! The VMM's link to `ballast-agent` in the guest, over the guest's vsock device.
//!
//! The link runs on a thread of its own, not on the event loop: an agent request (a file-cache
//! deactivation) may take up to its 2 s timeout, and devices must not wait behind it. The event
//! loop and the API only read the shared [`AgentStatus`], which never blocks on the guest.

mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ballast_agent::protocol::{Hello, Stats};

use crate::devices::vsock::LocalConnector;

/// The vsock port `ballast-agent` listens on by default.
pub const AGENT_PORT: u32 = 52;
/// How long a request to the agent may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the link asks for `stats`.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// A guest gets this long to boot and start its agent before it counts as unresponsive.
pub const BOOT_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// Not answered yet, within the boot grace period.
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

/// What the VMM knows of the agent: shared between the link's thread and its readers.
#[derive(Debug, Clone)]
pub struct AgentStatus {
    pub state: AgentState,
    /// Why the agent is not ready, when it is not.
    pub reason: Option<String>,
    pub hello: Option<Hello>,
    pub stats: Option<Stats>,
    pub stats_at: Option<Instant>,
    /// Connections made, and requests that failed (timeouts, bad replies, closed connections).
    pub connects: u64,
    pub failures: u64,
}

impl AgentStatus {
    fn new() -> Self {
        Self {
            state: AgentState::Connecting,
            reason: None,
            hello: None,
            stats: None,
            stats_at: None,
            connects: 0,
            failures: 0,
        }
    }
}

/// How the link reaches the agent; tests give their own.
pub trait AgentDialer: Send + 'static {
    /// A connection on which the agent's lines can be exchanged (the `OK` line of the hybrid
    /// vsock handshake already consumed), or why there is none.
    fn dial(&mut self, timeout: Duration) -> Result<std::os::unix::net::UnixStream, String>;
}

/// Dials the agent through the VMM's own end of the vsock device.
pub struct VsockDialer {
    pub connector: LocalConnector,
    pub port: u32,
}

impl AgentDialer for VsockDialer {
    fn dial(&mut self, timeout: Duration) -> Result<std::os::unix::net::UnixStream, String> {
        let mut stream = self
            .connector
            .connect(self.port)
            .map_err(|e| format!("cannot open a vsock connection: {e}"))?;
        worker::read_ok_line(&mut stream, self.port, timeout)?;
        Ok(stream)
    }
}

/// The running link.
pub struct AgentLink {
    status: Arc<Mutex<AgentStatus>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AgentLink {
    pub fn start(
        dialer: impl AgentDialer,
        interval: Duration,
        timeout: Duration,
        grace: Duration,
    ) -> std::io::Result<Self> {
        let status = Arc::new(Mutex::new(AgentStatus::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = worker::Worker {
            dialer: Box::new(dialer),
            status: status.clone(),
            stop: stop.clone(),
            interval,
            timeout,
            grace,
            started: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("agent".into())
            .spawn(move || worker.run())?;
        Ok(Self {
            status,
            stop,
            thread: Some(thread),
        })
    }

    /// A copy of what is known now.
    pub fn status(&self) -> AgentStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A handle readers keep (the API handler).
    pub fn shared_status(&self) -> Arc<Mutex<AgentStatus>> {
        self.status.clone()
    }
}

impl Drop for AgentLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // The worker checks the flag at least every 100 ms and its I/O has a timeout.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
