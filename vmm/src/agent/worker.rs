//! The link's thread: connect, `hello`, then `stats` every interval; on any failure mark the
//! agent unresponsive and reconnect with a backoff.

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_agent::{read_hybrid_ack, AgentClient, ClientError};

use super::{AgentDialer, AgentState, AgentStatus};

const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) struct Worker {
    pub dialer: Box<dyn AgentDialer>,
    pub status: Arc<Mutex<AgentStatus>>,
    pub stop: Arc<AtomicBool>,
    pub interval: Duration,
    pub timeout: Duration,
    pub grace: Duration,
    pub started: Instant,
}

impl Worker {
    pub fn run(mut self) {
        let mut backoff = Duration::from_millis(200);
        while !self.stopping() {
            match self.session() {
                Ok(()) => return,
                Err(reason) => {
                    self.failed(reason);
                    self.sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One connection's life; returns only on stop (Ok) or failure (Err).
    fn session(&mut self) -> Result<(), String> {
        let stream = self.dialer.dial(self.timeout)?;
        stream
            .set_nonblocking(false)
            .map_err(|e| format!("cannot set up the agent connection: {e}"))?;
        let mut client = AgentClient::new(stream).with_timeout(self.timeout);
        let hello = client.hello().map_err(|e| e.to_string())?;
        log::info!(
            "guest agent {} answered (protocol {}, swap {}, kernel {})",
            hello.agent_version,
            hello.protocol_version,
            hello.capabilities.swap,
            hello.capabilities.kernel_version
        );
        self.update(|s| {
            s.connects += 1;
            s.hello = Some(hello);
        });
        while !self.stopping() {
            let stats = client.stats().map_err(|e| e.to_string())?;
            self.update(|s| {
                s.state = AgentState::Ready;
                s.reason = None;
                s.stats = Some(stats);
                s.stats_at = Some(Instant::now());
            });
            self.sleep(self.interval);
        }
        Ok(())
    }

    fn failed(&self, reason: String) {
        let in_grace = self.started.elapsed() < self.grace;
        self.update(|s| {
            s.failures += 1;
            // Before the agent ever answered, a guest still booting is not yet unresponsive.
            let booting = in_grace && s.hello.is_none();
            if !booting && s.state != AgentState::Unresponsive {
                log::warn!("guest agent unresponsive: {reason}");
            }
            s.state = if booting {
                AgentState::Connecting
            } else {
                AgentState::Unresponsive
            };
            s.reason = Some(reason);
        });
    }

    fn update(&self, f: impl FnOnce(&mut AgentStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps in short steps so a stop is seen quickly.
    fn sleep(&self, total: Duration) {
        let end = Instant::now() + total;
        while !self.stopping() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

/// Consumes the `OK <port>\n` line of the hybrid vsock handshake. EOF instead means nothing
/// listens on the port in the guest (or the driver is not up yet).
pub(super) fn read_ok_line(
    stream: &mut UnixStream,
    port: u32,
    timeout: Duration,
) -> Result<(), String> {
    stream
        .set_nonblocking(false)
        .and_then(|_| stream.set_read_timeout(Some(timeout)))
        .map_err(|e| format!("cannot set up the agent connection: {e}"))?;
    read_hybrid_ack(stream, port, timeout).map_err(|e| match e {
        ClientError::Closed => "no agent listening in the guest (connection refused)".into(),
        e => e.to_string(),
    })
}
