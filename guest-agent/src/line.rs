//! Splitting a byte stream into bounded lines, without I/O (so a blocking server, a
//! synchronous client and a non-blocking event loop can all use it).

/// What [`LineBuffer::next_line`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line without its `\n` (and without a trailing `\r`).
    Complete(Vec<u8>),
    /// A line grew past the bound. Yielded once, as soon as the bound is passed; the rest of
    /// that line is then discarded up to its newline, so the buffer never holds more than the
    /// bound plus one pushed chunk.
    TooLong,
}

/// Accumulates pushed bytes and hands out complete lines.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
    max: usize,
    /// Inside a too-long line, waiting for its end.
    discarding: bool,
}

impl LineBuffer {
    /// A buffer that accepts lines of at most `max` bytes (newline excluded).
    pub fn new(max: usize) -> Self {
        LineBuffer {
            buf: Vec::new(),
            scanned: 0,
            max,
            discarding: false,
        }
    }

    /// Appends received bytes. Callers push bounded chunks (one `read`), and should take every
    /// line out with [`next_line`](Self::next_line) before the next push.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that are not yet part of a complete line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next line, if one is complete (or has grown too long).
    pub fn next_line(&mut self) -> Option<Line> {
        loop {
            let newline = self.buf[self.scanned..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|p| p + self.scanned);
            match newline {
                Some(end) => {
                    let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                    self.scanned = 0;
                    line.pop();
                    if self.discarding {
                        // The tail of a line already reported as too long.
                        self.discarding = false;
                        continue;
                    }
                    if line.len() > self.max {
                        return Some(Line::TooLong);
                    }
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    return Some(Line::Complete(line));
                }
                None if self.discarding => {
                    self.buf.clear();
                    self.scanned = 0;
                    return None;
                }
                None if self.buf.len() > self.max => {
                    self.buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Some(Line::TooLong);
                }
                None => {
                    self.scanned = self.buf.len();
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn lines_of(buffer: &mut LineBuffer) -> Vec<Line> {
        std::iter::from_fn(|| buffer.next_line()).collect()
    }

    #[test]
    fn splits_lines_across_pushes() {
        let mut b = LineBuffer::new(100);
        b.push(b"ab");
        assert_eq!(b.next_line(), None);
        b.push(b"c\r\nd\n\nef");
        assert_eq!(
            lines_of(&mut b),
            vec![
                Line::Complete(b"abc".to_vec()),
                Line::Complete(b"d".to_vec()),
                Line::Complete(b"".to_vec())
            ]
        );
        assert_eq!(b.pending(), 2);
    }

    #[test]
    fn a_line_at_the_bound_passes_one_over_does_not() {
        let mut b = LineBuffer::new(4);
        b.push(b"1234\n12345\n");
        assert_eq!(
            lines_of(&mut b),
            vec![Line::Complete(b"1234".to_vec()), Line::TooLong]
        );
    }

    #[test]
    fn too_long_is_reported_early_and_the_rest_discarded() {
        let mut b = LineBuffer::new(10);
        b.push(&[b'x'; 8]);
        assert_eq!(b.next_line(), None);
        b.push(&[b'x'; 8]);
        assert_eq!(b.next_line(), Some(Line::TooLong));
        for _ in 0..100 {
            b.push(&[b'y'; 64]);
            assert_eq!(b.next_line(), None);
            assert!(b.pending() <= 64);
        }
        b.push(b"yy\nok\n");
        assert_eq!(lines_of(&mut b), vec![Line::Complete(b"ok".to_vec())]);
    }

    /// The reference: split the whole stream at once.
    fn reference(stream: &[u8], max: usize) -> Vec<Line> {
        let mut out = Vec::new();
        let mut parts: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
        let tail = parts.pop().unwrap_or_default();
        for part in parts {
            if part.len() > max {
                out.push(Line::TooLong);
            } else {
                out.push(Line::Complete(
                    part.strip_suffix(b"\r").unwrap_or(part).to_vec(),
                ));
            }
        }
        if tail.len() > max {
            out.push(Line::TooLong);
        }
        out
    }

    #[test]
    fn random_streams_in_random_chunks_match_the_reference() {
        let mut rng = Rng::new(0x5eed);
        for round in 0..2000 {
            let max = 1 + rng.below(40) as usize;
            let len = rng.below(400) as usize;
            // Mostly random bytes, with enough newlines to make lines of every length.
            let stream: Vec<u8> = (0..len)
                .map(|_| match rng.below(10) {
                    0 => b'\n',
                    1 => b'\r',
                    _ => rng.next() as u8,
                })
                .collect();
            let mut b = LineBuffer::new(max);
            let mut got = Vec::new();
            let mut at = 0;
            while at < stream.len() {
                let n = (1 + rng.below(50) as usize).min(stream.len() - at);
                b.push(&stream[at..at + n]);
                at += n;
                got.extend(lines_of(&mut b));
                assert!(b.pending() <= max + 50, "round {round}: buffer grew");
            }
            assert_eq!(got, reference(&stream, max), "round {round}");
        }
    }
}
