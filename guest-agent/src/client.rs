//! The VMM's side: talking to `ballast-agent`.
//!
//! Two layers:
//! - [`ReplyDecoder`] and [`crate::protocol::encode_request`] do no I/O: an event loop with a
//!   non-blocking socket writes the encoded request, pushes whatever bytes arrive into the
//!   decoder, takes replies out, and keeps its own timer per request. Nothing there blocks.
//! - [`AgentClient`] is the synchronous client built on them, for threads that may block:
//!   one request at a time, a deadline per request (2 s by default), replies matched by id.
//!   A reply that comes after its request timed out is recognised by its id and dropped.
//!
//! The guest is untrusted: a reply line longer than [`MAX_REPLY_LINE`], or one that is not a
//! reply, is an error ([`ClientError::Protocol`]), never a panic or an unbounded buffer; every
//! string a reply carries is escaped and cut by the decoder ([`crate::guest_text`]).
//! Reconnecting (after a guest reboot or an agent restart) is the caller's: make a new client
//! on a new stream.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::guest_text;
use crate::line::{Line, LineBuffer};
use crate::protocol::{
    encode_request, parse_reply, AnonReport, DeactivateAnon, DeactivateFile, ErrorKind, FileReport,
    Hello, Outcome, Reply, Request, Response, Stats, MAX_REPLY_LINE, PROTOCOL_VERSION,
};

/// How long a request may take unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// What can go wrong talking to the agent.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("talking to the guest agent: {0}")]
    Io(#[from] io::Error),
    #[error("the guest agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the guest agent closed the connection")]
    Closed,
    #[error("the guest agent refused the request ({kind:?}): {message}")]
    Agent { kind: ErrorKind, message: String },
    #[error("the guest agent sent something that is not a valid reply: {0}")]
    Protocol(String),
}

/// Why the VMM could not have a request carried out by the agent: there is no way to reach it,
/// no connection could be made, or the request on the connection failed.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error("the VM has no vsock device, so no guest agent")]
    NoVsock,
    #[error("cannot open a vsock connection: {0}")]
    Connect(#[source] io::Error),
    #[error("no agent listening in the guest (connection refused)")]
    NotListening,
    #[error("cannot set up the agent connection: {0}")]
    Setup(#[source] io::Error),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the VMM's guest agent service has stopped")]
    Stopped,
    #[error("the VMM's guest agent service did not answer within {0:?}")]
    ServiceTimeout(Duration),
}

/// Turns received bytes into replies, with no I/O of its own.
#[derive(Debug)]
pub struct ReplyDecoder {
    lines: LineBuffer,
}

impl Default for ReplyDecoder {
    fn default() -> Self {
        ReplyDecoder {
            lines: LineBuffer::new(MAX_REPLY_LINE),
        }
    }
}

impl ReplyDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.lines.push(bytes);
    }

    /// The next complete reply, if any. An `Err` is a line that is not a reply; the decoder
    /// goes on with the next line.
    pub fn next_reply(&mut self) -> Option<Result<Reply, ClientError>> {
        loop {
            return match self.lines.next_line()? {
                Line::TooLong => Some(Err(ClientError::Protocol(format!(
                    "a reply line longer than {MAX_REPLY_LINE} bytes"
                )))),
                Line::Complete(line) if line.iter().all(u8::is_ascii_whitespace) => continue,
                Line::Complete(line) => Some(
                    parse_reply(&line)
                        .map(|mut reply| {
                            guest_text::clean_reply(&mut reply);
                            reply
                        })
                        .map_err(|e| {
                            ClientError::Protocol(format!(
                                "{} in \"{}\"",
                                guest_text::clean(&e.to_string()),
                                guest_text::clean_bytes(&line[..line.len().min(200)])
                            ))
                        }),
                ),
            };
        }
    }
}

/// A stream the client can put a deadline on.
///
/// Any `Read + Write` can be one: the provided method does nothing, and then the client checks
/// its deadline only when a read returns (`WouldBlock` or `TimedOut` included), so a plain
/// blocking stream without its own timeout can block past it. `UnixStream` and `TcpStream` set
/// the socket's timeouts, which bounds every read and write.
pub trait AgentStream: Read + Write {
    /// Bounds how long the next reads and writes may block.
    fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let _ = timeout;
        Ok(())
    }
}

impl AgentStream for UnixStream {
    fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }
}

impl AgentStream for std::net::TcpStream {
    fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }
}

/// A synchronous client over one connection.
#[derive(Debug)]
pub struct AgentClient<S> {
    stream: S,
    decoder: ReplyDecoder,
    next_id: u64,
    timeout: Duration,
}

impl AgentClient<UnixStream> {
    /// Connects to an agent listening on a Unix socket (`ballast-agent --listen-unix`).
    pub fn connect_unix(path: &Path) -> Result<Self, ClientError> {
        Ok(AgentClient::new(UnixStream::connect(path)?))
    }

    /// Connects through a VMM's hybrid vsock socket (Firecracker's convention): connect to
    /// the Unix socket, send `CONNECT <port>`, expect `OK <host port>`.
    pub fn connect_hybrid_vsock(
        path: &Path,
        port: u32,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let mut stream = UnixStream::connect(path)?;
        stream.set_timeout(Some(timeout))?;
        stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
        read_hybrid_ack(&mut stream, port, timeout)?;
        Ok(AgentClient::new(stream))
    }
}

/// Reads the `OK <host port>` line that answers `CONNECT <port>` on a hybrid vsock socket (or
/// on the VMM's own end of its vsock device). EOF instead means nothing listens on the port in
/// the guest. Reads byte by byte: nothing after the acknowledgement may be consumed here.
pub fn read_hybrid_ack(
    stream: &mut UnixStream,
    port: u32,
    timeout: Duration,
) -> Result<(), ClientError> {
    let mut ack = Vec::new();
    let mut byte = [0u8; 1];
    while ack.len() < 64 {
        match stream.read(&mut byte) {
            Ok(0) => return Err(ClientError::Closed),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => ack.push(byte[0]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ClientError::Timeout(timeout))
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !ack.starts_with(b"OK ") {
        return Err(ClientError::Protocol(format!(
            "the vsock socket answered {:?} to CONNECT {port} (is the agent listening on that port?)",
            String::from_utf8_lossy(&ack)
        )));
    }
    Ok(())
}

impl<S: AgentStream> AgentClient<S> {
    pub fn new(stream: S) -> Self {
        AgentClient {
            stream,
            decoder: ReplyDecoder::new(),
            next_id: 1,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Changes the per-request timeout of the next requests.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    pub fn into_inner(self) -> S {
        self.stream
    }

    /// Versions and capabilities. Fails if the agent speaks another protocol version.
    pub fn hello(&mut self) -> Result<Hello, ClientError> {
        match self.request(&Request::Hello {
            protocol_version: PROTOCOL_VERSION,
        })? {
            Response::Hello(hello) if hello.protocol_version == PROTOCOL_VERSION => Ok(hello),
            Response::Hello(hello) => Err(ClientError::Protocol(format!(
                "the agent speaks protocol {}, this VMM {PROTOCOL_VERSION}; use an agent of the same ballast release",
                hello.protocol_version
            ))),
            other => Err(unexpected("hello", &other)),
        }
    }

    pub fn stats(&mut self) -> Result<Stats, ClientError> {
        match self.request(&Request::Stats)? {
            Response::Stats(stats) => Ok(stats),
            other => Err(unexpected("stats", &other)),
        }
    }

    pub fn deactivate_file(&mut self, params: DeactivateFile) -> Result<FileReport, ClientError> {
        match self.request(&Request::DeactivateFile(params))? {
            Response::DeactivateFile(report) => Ok(report),
            other => Err(unexpected("deactivate_file", &other)),
        }
    }

    pub fn deactivate_anon(&mut self, params: DeactivateAnon) -> Result<AnonReport, ClientError> {
        match self.request(&Request::DeactivateAnon(params))? {
            Response::DeactivateAnon(report) => Ok(report),
            other => Err(unexpected("deactivate_anon", &other)),
        }
    }

    /// Sends one request and waits for its reply, within the client's timeout.
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let deadline = Instant::now() + self.timeout;
        self.stream.set_timeout(Some(self.timeout))?;
        self.stream
            .write_all(&encode_request(id, request))
            .map_err(|e| self.timed_out(e))?;
        let mut chunk = [0u8; 8192];
        loop {
            while let Some(reply) = self.decoder.next_reply() {
                let reply = reply?;
                match reply.id {
                    Some(reply_id) if reply_id == id => {
                        return match reply.outcome {
                            Outcome::Result(response) => Ok(response),
                            Outcome::Error(e) => Err(ClientError::Agent {
                                kind: e.kind,
                                message: e.message,
                            }),
                        }
                    }
                    // The late reply to a request that timed out.
                    Some(_) => continue,
                    None => {
                        let message = match reply.outcome {
                            Outcome::Error(e) => e.message,
                            Outcome::Result(_) => "a result without an id".into(),
                        };
                        return Err(ClientError::Protocol(format!(
                            "the agent could not read our request: {message}"
                        )));
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout(self.timeout));
            }
            self.stream.set_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self.decoder.push(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn timed_out(&self, e: io::Error) -> ClientError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                ClientError::Timeout(self.timeout)
            }
            _ => ClientError::Io(e),
        }
    }
}

fn unexpected(asked: &str, got: &Response) -> ClientError {
    ClientError::Protocol(format!(
        "asked for {asked}, got a {} reply",
        got.type_name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_reply, ErrorBody};
    use std::collections::VecDeque;

    /// A scripted agent: each read returns the next chunk, or WouldBlock when out of them.
    #[derive(Default)]
    struct Scripted {
        chunks: VecDeque<Vec<u8>>,
        written: Vec<u8>,
        closed: bool,
    }
    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.chunks.pop_front() {
                Some(chunk) => {
                    let n = chunk.len().min(buf.len());
                    buf[..n].copy_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        self.chunks.push_front(chunk[n..].to_vec());
                    }
                    Ok(n)
                }
                None if self.closed => Ok(0),
                None => {
                    std::thread::sleep(Duration::from_millis(5));
                    Err(io::ErrorKind::WouldBlock.into())
                }
            }
        }
    }
    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl AgentStream for Scripted {}

    fn stats_reply(id: Option<u64>) -> Vec<u8> {
        encode_reply(&Reply {
            id,
            outcome: Outcome::Result(Response::Stats(Stats::default())),
        })
    }

    fn client(chunks: Vec<Vec<u8>>, closed: bool) -> AgentClient<Scripted> {
        AgentClient::new(Scripted {
            chunks: chunks.into(),
            closed,
            ..Scripted::default()
        })
        .with_timeout(Duration::from_millis(100))
    }

    #[test]
    fn matches_ids_and_drops_late_replies() {
        let mut late_then_ours = stats_reply(Some(99));
        late_then_ours.extend(stats_reply(Some(1)));
        // Split mid-line, to exercise reassembly.
        let (a, b) = late_then_ours.split_at(10);
        let mut c = client(vec![a.to_vec(), b.to_vec()], false);
        assert_eq!(c.stats().unwrap(), Stats::default());
        assert_eq!(
            c.get_ref().written,
            b"{\"id\":1,\"type\":\"stats\"}\n".to_vec()
        );
    }

    #[test]
    fn times_out() {
        let mut c = client(vec![], false);
        let start = Instant::now();
        assert!(matches!(c.stats(), Err(ClientError::Timeout(_))));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_late_reply_does_not_confuse_the_next_request() {
        let mut c = client(vec![], false);
        assert!(matches!(c.stats(), Err(ClientError::Timeout(_))));
        // Request 1's reply arrives late, then request 2's.
        let mut replies = stats_reply(Some(1));
        replies.extend(encode_reply(&Reply {
            id: Some(2),
            outcome: Outcome::Error(ErrorBody::new(ErrorKind::Failed, "no /proc")),
        }));
        c.stream.chunks.push_back(replies);
        match c.stats() {
            Err(ClientError::Agent { kind, message }) => {
                assert_eq!(kind, ErrorKind::Failed);
                assert_eq!(message, "no /proc");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nonsense_and_closing_are_errors() {
        let mut c = client(vec![b"garbage\n".to_vec()], false);
        assert!(matches!(c.stats(), Err(ClientError::Protocol(_))));
        let mut c = client(vec![], true);
        assert!(matches!(c.stats(), Err(ClientError::Closed)));
        let mut c = client(vec![stats_reply(Some(1))], false);
        assert!(matches!(c.hello(), Err(ClientError::Protocol(_))));
        // The bound is checked as the bytes arrive, not at a timeout: a generous one keeps a
        // loaded machine (a debug build scanning a MiB) from turning it into a timeout.
        let mut c = client(vec![vec![b'x'; MAX_REPLY_LINE + 1]], false)
            .with_timeout(Duration::from_secs(10));
        assert!(matches!(c.stats(), Err(ClientError::Protocol(_))));
    }

    #[test]
    fn hostile_strings_come_out_escaped_and_cut() {
        let forged = format!(
            "9.9\x1b]0;pwned\x07\nballast: INFO: all is well\r\n{}",
            "A".repeat(100_000)
        );
        let hello = encode_reply(&Reply {
            id: Some(1),
            outcome: Outcome::Result(Response::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_version: forged.clone(),
                page_size: 4096,
                capabilities: crate::protocol::Capabilities {
                    kernel_version: forged.clone(),
                    ..Default::default()
                },
            })),
        });
        let refused = encode_reply(&Reply {
            id: Some(2),
            outcome: Outcome::Error(crate::protocol::ErrorBody::new(ErrorKind::Failed, forged)),
        });
        let mut c = client(vec![hello, refused, b"\x1b[2J not json\n".to_vec()], false);
        let hello = c.hello().unwrap();
        for text in [&hello.agent_version, &hello.capabilities.kernel_version] {
            assert!(
                text.len() <= crate::guest_text::MAX_GUEST_TEXT + 3,
                "{}",
                text.len()
            );
            assert!(
                text.starts_with("9.9\\x1b]0;pwned\\x07\\nballast: INFO"),
                "{text}"
            );
            assert!(!text.chars().any(char::is_control), "{text}");
        }
        let Err(ClientError::Agent { message, .. }) = c.stats() else {
            panic!("the refusal is an agent error");
        };
        assert!(!message.chars().any(char::is_control) && message.len() < 300);
        let Err(ClientError::Protocol(text)) = c.stats() else {
            panic!("not json is a protocol error");
        };
        assert!(!text.chars().any(char::is_control), "{text}");
    }

    /// A VMM's hybrid vsock socket in miniature: `CONNECT <port>` then the agent protocol.
    fn hybrid_socket(answer: &'static str) -> (crate::testutil::TempDir, std::path::PathBuf) {
        use crate::protocol::ErrorBody;
        use crate::server::{serve_connection, Handler};
        struct StatsOnly;
        impl Handler for StatsOnly {
            fn handle(&self, _: Request) -> Result<Response, ErrorBody> {
                Ok(Response::Stats(Stats::default()))
            }
        }
        let dir = crate::testutil::TempDir::new("hybrid");
        let path = dir.path().join("vsock.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut line = Vec::new();
            let mut byte = [0u8];
            while stream.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
                line.push(byte[0]);
            }
            assert_eq!(line, b"CONNECT 52");
            stream.write_all(answer.as_bytes()).unwrap();
            let _ = serve_connection(&mut stream, &StatsOnly);
        });
        (dir, path)
    }

    #[test]
    fn connects_through_a_hybrid_vsock_socket() {
        let (_dir, path) = hybrid_socket("OK 1073741824\n");
        let mut c = AgentClient::connect_hybrid_vsock(&path, 52, Duration::from_secs(5)).unwrap();
        assert_eq!(c.stats().unwrap(), Stats::default());
        let (_dir, path) = hybrid_socket("NO\n");
        assert!(matches!(
            AgentClient::connect_hybrid_vsock(&path, 52, Duration::from_secs(5)),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn decoder_skips_blank_lines() {
        let mut d = ReplyDecoder::new();
        d.push(b"\n\r\n");
        d.push(&stats_reply(Some(4)));
        assert_eq!(d.next_reply().unwrap().unwrap().id, Some(4));
        assert!(d.next_reply().is_none());
    }
}
