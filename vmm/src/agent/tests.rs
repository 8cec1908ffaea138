//! The service against the real agent's request handler, served over a Unix socket pair, and
//! against peers that misbehave.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_agent::agent::{Agent, AgentConfig};
use ballast_agent::protocol::{AnonReport, ErrorBody, Request, Response};
use ballast_agent::server::{serve_connection, Handler};

use super::*;

/// Hands out connections to a peer made by `serve` on a thread per connection.
struct PairDialer<F: Fn(UnixStream) + Send + Sync + 'static> {
    serve: Arc<F>,
    dials: Arc<AtomicUsize>,
}

impl<F: Fn(UnixStream) + Send + Sync + 'static> AgentDialer for PairDialer<F> {
    fn dial(&mut self, _timeout: Duration) -> Result<UnixStream, AgentError> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        let (ours, theirs) = UnixStream::pair().map_err(AgentError::Connect)?;
        let serve = self.serve.clone();
        std::thread::spawn(move || serve(theirs));
        Ok(ours)
    }
}

struct NoAgent;
impl AgentDialer for NoAgent {
    fn dial(&mut self, _timeout: Duration) -> Result<UnixStream, AgentError> {
        Err(AgentError::NotListening)
    }
}

/// The service's timings for a test: stats every `interval`, requests within `timeout`.
fn timings(interval: Duration, timeout: Duration, grace: Duration) -> AgentTimings {
    AgentTimings {
        stats_interval: interval,
        request_timeout: timeout,
        deactivate_timeout: timeout,
        boot_grace: grace,
    }
}

fn wait_for(link: &AgentService, what: &str, pred: impl Fn(&AgentStatus) -> bool) -> AgentStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = link.status();
        if pred(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn real_agent(stream: UnixStream) {
    let agent = Agent::new(AgentConfig::default());
    let mut stream = stream;
    let _ = serve_connection(&mut stream, &agent);
}

const FAST: Duration = Duration::from_millis(50);
const TIMEOUT: Duration = Duration::from_millis(300);

#[test]
fn the_real_agent_answers_and_its_stats_arrive() {
    let dials = Arc::new(AtomicUsize::new(0));
    let dialer = PairDialer {
        serve: Arc::new(real_agent),
        dials: dials.clone(),
    };
    let link = AgentService::start(
        dialer,
        timings(FAST, Duration::from_secs(2), Duration::ZERO),
    )
    .unwrap();
    let status = wait_for(&link, "stats", |s| s.stats.is_some());
    assert_eq!(status.state, AgentState::Ready);
    let stats = status.stats.unwrap();
    assert!(stats.meminfo.mem_total_kib.unwrap() > 0);
    assert_eq!(
        status.hello.unwrap().protocol_version,
        ballast_agent::PROTOCOL_VERSION
    );
    // Stats keep coming on the same connection.
    let first = status.stats_at.unwrap();
    wait_for(&link, "fresher stats", |s| s.stats_at.unwrap() > first);
    assert_eq!(dials.load(Ordering::SeqCst), 1);
}

#[test]
fn an_absent_agent_is_connecting_during_boot_then_unresponsive() {
    let booting =
        AgentService::start(NoAgent, timings(FAST, TIMEOUT, Duration::from_secs(3600))).unwrap();
    let s = wait_for(&booting, "a failed dial", |s| s.failures > 0);
    assert_eq!(s.state, AgentState::Connecting);
    drop(booting);

    let link = AgentService::start(NoAgent, timings(FAST, TIMEOUT, Duration::ZERO)).unwrap();
    let s = wait_for(&link, "unresponsive", |s| {
        s.state == AgentState::Unresponsive
    });
    assert!(s.reason.unwrap().contains("no agent listening"));
}

#[test]
fn nonsense_and_silence_mark_it_unresponsive_without_blocking() {
    let nonsense = PairDialer {
        serve: Arc::new(|mut s: UnixStream| {
            let _ = s.write_all(b"this is not json\n{\"id\": \"x\"}\n");
            std::thread::sleep(Duration::from_secs(1));
        }),
        dials: Arc::new(AtomicUsize::new(0)),
    };
    let link = AgentService::start(nonsense, timings(FAST, TIMEOUT, Duration::ZERO)).unwrap();
    let s = wait_for(&link, "unresponsive", |s| {
        s.state == AgentState::Unresponsive
    });
    assert!(s.hello.is_none());

    // A peer that accepts and never answers: the request times out.
    let silent = PairDialer {
        serve: Arc::new(|s: UnixStream| {
            std::thread::sleep(Duration::from_secs(2));
            drop(s);
        }),
        dials: Arc::new(AtomicUsize::new(0)),
    };
    let started = Instant::now();
    let link = AgentService::start(silent, timings(FAST, TIMEOUT, Duration::ZERO)).unwrap();
    let s = wait_for(&link, "unresponsive", |s| {
        s.state == AgentState::Unresponsive
    });
    assert!(s.reason.unwrap().contains("did not answer"));
    // Reading the status never waited for the guest.
    assert!(started.elapsed() < Duration::from_secs(10));
    // Stopping the link does not wait for the silent peer either.
    let stop = Instant::now();
    drop(link);
    assert!(stop.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_restarted_agent_is_reached_again() {
    let dials = Arc::new(AtomicUsize::new(0));
    let seen = dials.clone();
    // The first agent answers hello and one stats, then goes away (a guest reboot).
    let serve = move |stream: UnixStream| {
        if seen.load(Ordering::SeqCst) == 1 {
            let agent = Agent::new(AgentConfig::default());
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut stream = stream;
            for _ in 0..2 {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
                let reply = ballast_agent::server::reply_to(
                    ballast_agent::line::Line::Complete(line.trim_end().as_bytes().to_vec()),
                    &agent,
                )
                .unwrap();
                stream
                    .write_all(&ballast_agent::protocol::encode_reply(&reply))
                    .unwrap();
            }
        } else {
            real_agent(stream)
        }
    };
    let link = AgentService::start(
        PairDialer {
            serve: Arc::new(serve),
            dials: dials.clone(),
        },
        timings(FAST, TIMEOUT, Duration::ZERO),
    )
    .unwrap();
    let s = wait_for(&link, "the second connection", |s| {
        s.connects >= 2 && s.state == AgentState::Ready
    });
    assert!(s.failures >= 1);
    assert!(dials.load(Ordering::SeqCst) >= 2);
}

#[test]
fn the_vsock_handshake_line_is_checked() {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"OK 1073741824\n").unwrap();
    assert!(worker::read_ok_line(&mut a, 52, TIMEOUT).is_ok());
    b.write_all(b"NO\n").unwrap();
    assert!(worker::read_ok_line(&mut a, 52, TIMEOUT).is_err());
    drop(b);
    let err = worker::read_ok_line(&mut a, 52, TIMEOUT).unwrap_err();
    assert!(err.to_string().contains("no agent listening"), "{err}");
}

/// The real agent for `hello` and `stats`; `deactivate_anon` answered as if it had deactivated
/// everything asked (the real one would act on this host's processes).
struct Canned(Agent);

impl Handler for Canned {
    fn handle(&self, request: Request) -> Result<Response, ErrorBody> {
        match request {
            Request::DeactivateAnon(params) => Ok(Response::DeactivateAnon(AnonReport {
                target_pages: params.target_pages,
                urgent: params.urgent,
                deactivated_pages: params.target_pages,
                ..Default::default()
            })),
            other => self.0.handle(other),
        }
    }
}

#[test]
fn the_managers_requests_share_the_stats_connection() {
    let dials = Arc::new(AtomicUsize::new(0));
    let dialer = PairDialer {
        serve: Arc::new(|mut stream: UnixStream| {
            let _ = serve_connection(&mut stream, &Canned(Agent::new(AgentConfig::default())));
        }),
        dials: dials.clone(),
    };
    let service = AgentService::start(
        dialer,
        timings(FAST, Duration::from_secs(2), Duration::ZERO),
    )
    .unwrap();
    wait_for(&service, "stats", |s| s.stats.is_some());
    let mut handle = service.handle();
    assert!(handle.latest_stats().is_some());
    let reply = handle.start(AgentRequest::Anon {
        pages: 3000,
        urgent: true,
    });
    assert_eq!(answer(&reply).unwrap().claimed_pages, 3000);
    let first = service.status().stats_at.unwrap();
    wait_for(&service, "stats after the request", |s| {
        s.stats_at.unwrap() > first
    });
    assert_eq!(dials.load(Ordering::SeqCst), 1, "one connection for both");
}

#[test]
fn a_request_without_an_agent_fails_with_the_reason() {
    let service =
        AgentService::start(NoAgent, timings(FAST, TIMEOUT, Duration::from_secs(3600))).unwrap();
    let mut handle = service.handle();
    let err = answer(&handle.start(AgentRequest::File { pages: 1000 })).unwrap_err();
    assert!(matches!(err, AgentError::NotListening), "{err}");
    assert!(handle.latest_stats().is_none());
    drop(service);
    let err = answer(&handle.start(AgentRequest::File { pages: 1000 })).unwrap_err();
    assert!(matches!(err, AgentError::Stopped), "{err}");
}

#[test]
fn a_request_does_not_wait_for_the_agent() {
    // An agent that takes a second to answer: starting a request returns at once, the answer
    // comes later on its reply.
    let dialer = PairDialer {
        serve: Arc::new(|mut stream: UnixStream| {
            std::thread::sleep(Duration::from_secs(1));
            let _ = serve_connection(&mut stream, &Canned(Agent::new(AgentConfig::default())));
        }),
        dials: Arc::new(AtomicUsize::new(0)),
    };
    let service = AgentService::start(
        dialer,
        timings(
            Duration::from_secs(3600),
            Duration::from_secs(5),
            Duration::ZERO,
        ),
    )
    .unwrap();
    let mut handle = service.handle();
    let started = Instant::now();
    let reply = handle.start(AgentRequest::Anon {
        pages: 1000,
        urgent: false,
    });
    assert!(reply.poll().is_none(), "no answer yet");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(answer(&reply).unwrap().claimed_pages, 1000);
}

/// Polls `reply` until it answers (its own deadline bounds the wait).
fn answer(reply: &AgentReply) -> Result<AgentAnswer, AgentError> {
    loop {
        if let Some(result) = reply.poll() {
            return result;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
