//! hyper answers a request it cannot parse (400 for a bad request line or header, 414 for a URI
//! too long, 431 for headers too large) by itself, with an empty body, before any route sees it.
//! `FaultBodies` wraps each connection's stream and gives those answers the same
//! `{"fault_message": "..."}` body as every other error.
//!
//! It recognises them by their head: one of those statuses with `content-length: 0`, which no
//! route of ours writes (every error of ours has a body). The server runs hyper with `writev`
//! off, so a response head reaches `poll_write` whole, at the start of a buffer.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream whose hyper-made error answers get a JSON body.
pub struct FaultBodies<S> {
    inner: S,
    /// A rewritten answer still to be written, and how much of it is.
    pending: Vec<u8>,
    written: usize,
}

impl<S> FaultBodies<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

/// The fault message for a status hyper answers by itself.
fn message(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "the request is not valid HTTP/1.1: its request line or a header cannot be parsed",
        414 => "the request's URI is too long",
        431 => "the request's headers are too many or too large: at most 100 headers, of about 64 KiB in all",
        _ => return None,
    })
}

/// The whole answer to write instead of `buf`, when `buf` starts with one of hyper's own empty
/// error answers.
pub fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let message = message(status)?;
    let headers: Vec<&str> = lines.collect();
    let empty = headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"));
    if !empty {
        return None;
    }
    let body = serde_json::json!({ "fault_message": message }).to_string();
    let mut out = format!("{status_line}\r\n");
    // hyper's other headers (the date) stay; the connection closes after this answer anyway.
    let replaced = |h: &&&str| {
        let h = h.to_ascii_lowercase();
        h.starts_with("content-length:") || h.starts_with("connection:")
    };
    for h in headers.iter().filter(|h| !replaced(h)) {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(&buf[head_end + 4..]);
    Some(out)
}

impl<S: AsyncWrite + Unpin> FaultBodies<S> {
    /// Writes what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FaultBodies<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FaultBodies<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(answer) = rewrite(buf) {
            // Taken whole: what is not written yet goes out on the next write, flush or shutdown.
            self.pending = answer;
            self.written = 0;
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_error_answers_get_a_fault_body() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 11:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(hyper).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\ndate: Thu, 03 Dec 2026 11:00:00 GMT"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let fault: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(fault["fault_message"]
            .as_str()
            .unwrap()
            .contains("too large"));
    }

    #[test]
    fn answers_with_bodies_and_other_statuses_pass_untouched() {
        for untouched in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{\"fault_message\":\"\"}"[..],
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Req",
        ] {
            assert_eq!(rewrite(untouched), None);
        }
    }
}
