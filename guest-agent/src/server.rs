//! The agent's server: accepts host connections (vsock, or a Unix socket for tests), reads
//! request lines, answers each with one reply line.
//!
//! A thread per connection, few connections: when a new one arrives at the limit, the oldest
//! is shut down (a host that reconnects after losing its connection must get in, and the
//! newest connection is the live one).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{debug, info, warn};

use crate::line::{Line, LineBuffer};
use crate::protocol::{
    encode_reply, parse_request, ErrorBody, ErrorKind, Outcome, Reply, Request, Response,
    MAX_REQUEST_LINE,
};
use crate::vsock;

/// Answers requests.
pub trait Handler: Send + Sync {
    fn handle(&self, request: Request) -> Result<Response, ErrorBody>;
}

/// The reply to one line; `None` for a blank line (a keep-alive, or a human's stray Enter).
pub fn reply_to(line: Line, handler: &impl Handler) -> Option<Reply> {
    let line = match line {
        Line::TooLong => {
            return Some(Reply {
                id: None,
                outcome: Outcome::Error(ErrorBody::new(
                    ErrorKind::LineTooLong,
                    format!("request lines are at most {MAX_REQUEST_LINE} bytes; the rest of this line is ignored"),
                )),
            })
        }
        Line::Complete(line) => line,
    };
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(match parse_request(&line) {
        Ok((id, request)) => Reply {
            id: Some(id),
            outcome: match handler.handle(request) {
                Ok(response) => Outcome::Result(response),
                Err(error) => Outcome::Error(error),
            },
        },
        Err(error) => {
            debug!("bad request: {}", error.error.message);
            error.into_reply()
        }
    })
}

/// Serves one connection until the host closes it.
pub fn serve_connection<S: Read + Write>(stream: &mut S, handler: &impl Handler) -> io::Result<()> {
    let mut lines = LineBuffer::new(MAX_REQUEST_LINE);
    let mut chunk = [0u8; 8192];
    loop {
        while let Some(line) = lines.next_line() {
            if let Some(reply) = reply_to(line, handler) {
                stream.write_all(&encode_reply(&reply))?;
            }
        }
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        lines.push(&chunk[..n]);
    }
}

/// Where the agent listens.
pub enum Listener {
    Vsock(OwnedFd),
    Unix(UnixListener),
}

impl Listener {
    pub fn vsock(port: u32) -> io::Result<Listener> {
        vsock::listen(port).map(Listener::Vsock)
    }

    /// Listens on a Unix socket at `path`, replacing a stale socket left there.
    pub fn unix(path: &Path) -> io::Result<Listener> {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(path)?;
            }
        }
        UnixListener::bind(path).map(Listener::Unix).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", path.display()),
            )
        })
    }

    fn accept(&self) -> io::Result<OwnedFd> {
        match self {
            Listener::Vsock(fd) => vsock::accept(fd),
            Listener::Unix(listener) => listener.accept().map(|(stream, _)| stream.into()),
        }
    }
}

/// The open connections, oldest first, each with a duplicate descriptor to shut it down.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: VecDeque<(u64, OwnedFd)>,
}

/// Serves connections forever (until accepting fails for good).
pub fn run<H: Handler + 'static>(
    listener: Listener,
    handler: Arc<H>,
    max_connections: usize,
) -> io::Result<()> {
    let connections = Arc::new(Mutex::new(Connections::default()));
    let max_connections = max_connections.max(1);
    loop {
        let socket = match listener.accept() {
            Ok(socket) => socket,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ECONNABORTED)) => {
                continue
            }
            // A peer other than the host: closed already.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                warn!("{e}");
                continue;
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
                ) =>
            {
                // Out of resources: wait for some to come back rather than spin or exit.
                warn!("cannot accept a connection: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => return Err(e),
        };
        let Ok(shutdown_handle) = socket.try_clone() else {
            warn!("cannot track a new connection; closing it");
            continue;
        };
        let id = {
            let mut open = lock(&connections);
            while open.open.len() >= max_connections {
                if let Some((old, fd)) = open.open.pop_front() {
                    info!("connection {old} closed to make room for a new one");
                    vsock::shutdown(&fd);
                }
            }
            let id = open.next_id;
            open.next_id += 1;
            open.open.push_back((id, shutdown_handle));
            id
        };
        info!("connection {id} open");
        let handler = Arc::clone(&handler);
        let registry = Arc::clone(&connections);
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{id}"))
            .stack_size(512 * 1024)
            .spawn(move || {
                let mut stream = File::from(socket);
                match serve_connection(&mut stream, handler.as_ref()) {
                    Ok(()) => info!("connection {id} closed by the host"),
                    Err(e) => info!("connection {id} ended: {e}"),
                }
                lock(&registry).open.retain(|(open, _)| *open != id);
            });
        if let Err(e) = spawned {
            warn!("cannot start a thread for connection {id}: {e}");
            lock(&connections).open.retain(|(open, _)| *open != id);
        }
    }
}

fn lock(connections: &Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
    connections.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_request, parse_reply, Hello, Stats};
    use crate::testutil::Rng;

    /// Answers without touching the system.
    struct Fake;
    impl Handler for Fake {
        fn handle(&self, request: Request) -> Result<Response, ErrorBody> {
            match request {
                Request::Hello { .. } => Ok(Response::Hello(Hello {
                    protocol_version: 1,
                    agent_version: "test".into(),
                    page_size: 4096,
                    capabilities: Default::default(),
                })),
                Request::Stats => Ok(Response::Stats(Stats::default())),
                _ => Err(ErrorBody::new(ErrorKind::Failed, "not in tests")),
            }
        }
    }

    /// An in-memory connection: reads from `input`, collects what is written.
    struct Pipe {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
        max_read: usize,
    }
    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.max_read);
            self.input.read(&mut buf[..n])
        }
    }
    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn exchange(input: Vec<u8>, max_read: usize) -> Vec<Reply> {
        let mut pipe = Pipe {
            input: io::Cursor::new(input),
            output: Vec::new(),
            max_read,
        };
        serve_connection(&mut pipe, &Fake).unwrap();
        pipe.output
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse_reply(l).expect("every reply line is a valid reply"))
            .collect()
    }

    #[test]
    fn a_session_with_good_and_bad_lines() {
        let mut input = encode_request(
            1,
            &Request::Hello {
                protocol_version: 1,
            },
        );
        input.extend_from_slice(b"not json\n\n   \n");
        input.extend_from_slice(br#"{"id":2,"type":"teleport"}"#);
        input.push(b'\n');
        input.extend(std::iter::repeat_n(b'x', 70 * 1024));
        input.push(b'\n');
        input.extend(encode_request(3, &Request::Stats));
        input.extend_from_slice(br#"{"id":4,"type":"stats"}"#); // no newline: never answered
        let replies = exchange(input, 4096);
        let summary: Vec<_> = replies
            .iter()
            .map(|r| match &r.outcome {
                Outcome::Result(response) => (r.id, response.type_name().to_string()),
                Outcome::Error(e) => (r.id, format!("{:?}", e.kind)),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some(1), "hello".to_string()),
                (None, "Malformed".to_string()),
                (Some(2), "UnknownRequest".to_string()),
                (None, "LineTooLong".to_string()),
                (Some(3), "stats".to_string()),
            ]
        );
    }

    #[test]
    fn random_bytes_never_break_the_server() {
        let mut rng = Rng::new(0xba11a57);
        for round in 0..300 {
            let len = rng.below(4000) as usize;
            let mut input: Vec<u8> = (0..len)
                .map(|_| match rng.below(20) {
                    0 => b'\n',
                    1 => b'{',
                    2 => b'"',
                    _ => rng.next() as u8,
                })
                .collect();
            // Sometimes a valid request among the noise, which must still be answered.
            let valid = rng.below(2) == 0;
            if valid {
                input.push(b'\n');
                input.extend(encode_request(77, &Request::Stats));
            }
            let max_read = 1 + rng.below(100) as usize;
            let replies = exchange(input.clone(), max_read);
            let expected = input
                .split(|&b| b == b'\n')
                .rev()
                .skip(1) // the unterminated tail
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .count();
            assert_eq!(replies.len(), expected, "round {round}");
            if valid {
                assert_eq!(replies.last().unwrap().id, Some(77), "round {round}");
            }
        }
    }
}
