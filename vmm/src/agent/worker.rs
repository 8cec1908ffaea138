//! The service's thread: connect and `hello`, then `stats` every interval, and the memory
//! manager's requests in between, all on one connection. When `stats` fails the agent is marked
//! unresponsive and the thread reconnects with a backoff; a request that arrives while there is
//! no connection gets one made at once.

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_agent::protocol::{DeactivateAnon, DeactivateFile};
use ballast_agent::{read_hybrid_ack, AgentClient, AgentError, ClientError};
use ballast_manager::driver::ports::{AgentAnswer, FilePasses};

use super::{AgentDialer, AgentState, AgentStatus, AgentTimings, Request};

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The longest the thread waits without looking at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

pub(super) struct Worker {
    dialer: Box<dyn AgentDialer>,
    status: Arc<Mutex<AgentStatus>>,
    inbox: mpsc::Receiver<Request>,
    stop: Arc<AtomicBool>,
    timings: AgentTimings,
    started: Instant,
    client: Option<AgentClient<UnixStream>>,
    /// When to poll `stats` next (with a connection) or reconnect (without).
    due: Instant,
    backoff: Duration,
}

impl Worker {
    pub fn new(
        dialer: Box<dyn AgentDialer>,
        status: Arc<Mutex<AgentStatus>>,
        inbox: mpsc::Receiver<Request>,
        stop: Arc<AtomicBool>,
        timings: AgentTimings,
    ) -> Self {
        let now = Instant::now();
        Self {
            dialer,
            status,
            inbox,
            stop,
            timings,
            started: now,
            client: None,
            due: now,
            backoff: FIRST_BACKOFF,
        }
    }

    pub fn run(mut self) {
        while !self.stopping() {
            if Instant::now() >= self.due {
                self.poll();
            }
            let wait = self
                .due
                .saturating_duration_since(Instant::now())
                .min(STOP_CHECK);
            match self.inbox.recv_timeout(wait) {
                Ok(request) => self.serve(request),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Every handle is gone: nobody will ask again, but the API still reads stats.
                Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
            }
        }
    }

    /// Connects if needed, then `stats`; a failure marks the agent and schedules a retry.
    fn poll(&mut self) {
        let result = match self.client.as_mut() {
            Some(client) => client.stats().map_err(AgentError::from),
            None => self.connect().and_then(|()| {
                let client = self.client.as_mut().expect("connected above");
                client.stats().map_err(AgentError::from)
            }),
        };
        match result {
            Ok(stats) => {
                self.update(|s| {
                    s.state = AgentState::Ready;
                    s.reason = None;
                    s.stats = Some(stats);
                    s.stats_at = Some(Instant::now());
                });
                self.due = Instant::now() + self.timings.stats_interval;
            }
            Err(e) => {
                self.client = None;
                self.failed(e.to_string());
                self.due = Instant::now() + self.backoff;
                // Not reset on success, as before the service was one thread: a guest whose
                // agent keeps dying is retried at most every 5 s.
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Dials and says `hello` on a new connection.
    fn connect(&mut self) -> Result<(), AgentError> {
        let stream = self.dialer.dial(self.timings.request_timeout)?;
        stream.set_nonblocking(false).map_err(AgentError::Setup)?;
        let mut client = AgentClient::new(stream).with_timeout(self.timings.request_timeout);
        let hello = client.hello()?;
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
        self.client = Some(client);
        Ok(())
    }

    /// One of the memory manager's requests, on the service's connection (made now if there is
    /// none). A request that fails on the connection drops it; the next poll reconnects at once.
    fn serve(&mut self, request: Request) {
        let (reply, result) = match request {
            Request::File { pages, reply } => {
                let result = self.deactivate(|c| {
                    c.deactivate_file(DeactivateFile::new(pages))
                        .map(|r| AgentAnswer {
                            claimed_pages: r.freed_pages,
                            file_passes: Some(FilePasses {
                                big_pages: r.big.freed_pages,
                                small_pages: r.small.freed_pages,
                                fallback_pages: r.fallback.as_ref().map_or(0, |f| f.freed_pages),
                                fallback_ran: r.fallback.is_some(),
                            }),
                        })
                });
                (reply, result)
            }
            Request::Anon {
                pages,
                urgent,
                reply,
            } => {
                let result = self.deactivate(|c| {
                    c.deactivate_anon(DeactivateAnon::new(pages, urgent))
                        .map(|r| AgentAnswer::claimed(r.deactivated_pages))
                });
                (reply, result)
            }
        };
        // The manager may have given up waiting; its answer is then dropped.
        let _ = reply.send(result);
    }

    fn deactivate(
        &mut self,
        request: impl FnOnce(&mut AgentClient<UnixStream>) -> Result<AgentAnswer, ClientError>,
    ) -> Result<AgentAnswer, AgentError> {
        if self.client.is_none() {
            self.connect()?;
        }
        let client = self.client.as_mut().expect("connected above");
        client.set_timeout(self.timings.deactivate_timeout);
        let result = request(client);
        client.set_timeout(self.timings.request_timeout);
        match result {
            // The agent answered with an error: the connection itself is fine.
            Err(e @ ClientError::Agent { .. }) => Err(e.into()),
            Err(e) => {
                self.client = None;
                self.due = Instant::now();
                Err(e.into())
            }
            Ok(pages) => Ok(pages),
        }
    }

    fn failed(&self, reason: String) {
        let in_grace = self.started.elapsed() < self.timings.boot_grace;
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
}

/// Consumes the `OK <port>\n` line of the hybrid vsock handshake. EOF instead means nothing
/// listens on the port in the guest (or the driver is not up yet).
pub(super) fn read_ok_line(
    stream: &mut UnixStream,
    port: u32,
    timeout: Duration,
) -> Result<(), AgentError> {
    stream
        .set_nonblocking(false)
        .and_then(|_| stream.set_read_timeout(Some(timeout)))
        .map_err(AgentError::Setup)?;
    read_hybrid_ack(stream, port, timeout).map_err(|e| match e {
        ClientError::Closed => AgentError::NotListening,
        e => e.into(),
    })
}
