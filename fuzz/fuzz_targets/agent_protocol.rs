//! The guest agent's protocol, on both sides: the byte stream cut into bounded lines (in
//! chunks the input picks), each line as the agent parses a request from the VMM and as the
//! VMM parses a reply from a guest that may lie. Nothing panics, no line passes the bound, and
//! what parses encodes to a line that parses again (requests to the same value).
#![no_main]

use ballast_agent::line::{Line, LineBuffer};
use ballast_agent::protocol::{encode_reply, encode_request, parse_reply, parse_request};
use libfuzzer_sys::fuzz_target;

const MAX_LINE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut lines = LineBuffer::new(MAX_LINE);
    for piece in stream.chunks(chunk) {
        lines.push(piece);
        while let Some(line) = lines.next_line() {
            if let Line::Complete(line) = line {
                assert!(line.len() <= MAX_LINE);
                check(&line);
            }
        }
        assert!(lines.pending() <= MAX_LINE + chunk);
    }
    check(stream);
});

fn check(line: &[u8]) {
    if let Ok((id, request)) = parse_request(line) {
        let encoded = encode_request(id, &request);
        let (again_id, again) = parse_request(&encoded).expect("an encoded request parses");
        assert_eq!((again_id, again), (id, request));
    }
    if let Ok(reply) = parse_reply(line) {
        // Floats may move by a last digit through JSON, so only the parse is checked.
        parse_reply(&encode_reply(&reply)).expect("an encoded reply parses");
    }
}
