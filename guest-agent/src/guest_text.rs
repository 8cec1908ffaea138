//! Strings from the guest, made safe where the VMM takes them in: every string a reply carries
//! (versions, error messages, report notes) goes through [`clean`] in the reply decoder, before
//! anything logs it, shows it in `state_reason` or `ballast status`, or prints it to a terminal.
//!
//! The guest is untrusted: a reply line may be up to a MiB, and a string in it may hold newlines
//! (forged log lines), terminal escapes (a cleared screen, a moved cursor, a changed title) or
//! bidirectional overrides (text that reads differently than it is). [`clean`] escapes all of
//! these and cuts the result to [`MAX_GUEST_TEXT`] bytes.

use crate::protocol::{Outcome, Reply, Response};

/// The longest string kept from the guest, in bytes, before the mark of a cut.
pub const MAX_GUEST_TEXT: usize = 256;

/// Whether `c` must not reach a log or a terminal as it is.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with control characters and bidirectional marks escaped (`\x1b`, `\n`, `\u{202e}`)
/// and cut to at most [`MAX_GUEST_TEXT`] bytes, with `…` where it was cut.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_GUEST_TEXT + 4));
    for c in text.chars() {
        let piece = if !unsafe_char(c) {
            c.to_string()
        } else if let Ok(byte) = u8::try_from(u32::from(c)) {
            match byte {
                b'\n' => "\\n".to_string(),
                b'\r' => "\\r".to_string(),
                b'\t' => "\\t".to_string(),
                _ => format!("\\x{byte:02x}"),
            }
        } else {
            format!("\\u{{{:x}}}", u32::from(c))
        };
        if out.len() + piece.len() > MAX_GUEST_TEXT {
            out.push('…');
            return out;
        }
        out.push_str(&piece);
    }
    out
}

/// [`clean`] for raw bytes (not UTF-8 where the guest sent something else).
pub fn clean_bytes(bytes: &[u8]) -> String {
    clean(&String::from_utf8_lossy(
        &bytes[..bytes.len().min(4 * MAX_GUEST_TEXT)],
    ))
}

/// Cleans every string of a reply in place.
pub fn clean_reply(reply: &mut Reply) {
    let fix = |s: &mut String| *s = clean(s);
    match &mut reply.outcome {
        Outcome::Error(e) => fix(&mut e.message),
        Outcome::Result(Response::Hello(h)) => {
            fix(&mut h.agent_version);
            fix(&mut h.capabilities.kernel_version);
        }
        Outcome::Result(Response::DeactivateFile(r)) => {
            fix(&mut r.writeback.scope);
            if let Some(error) = r.fallback.as_mut().and_then(|f| f.error.as_mut()) {
                fix(error);
            }
        }
        Outcome::Result(Response::DeactivateAnon(r)) => {
            if let Some(skipped) = r.skipped.as_mut() {
                fix(skipped);
            }
        }
        Outcome::Result(Response::Stats(_)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_text_is_cut() {
        assert_eq!(clean("6.1.0-13-amd64"), "6.1.0-13-amd64");
        assert_eq!(
            clean("1.0\x1b[2J\nballast: INFO: forged\r\t\x07\u{7f}"),
            "1.0\\x1b[2J\\nballast: INFO: forged\\r\\t\\x07\\x7f"
        );
        assert_eq!(clean("abc\u{202e}fed\u{2066}"), "abc\\u{202e}fed\\u{2066}");
        assert_eq!(clean("ünïcödé ✓"), "ünïcödé ✓");
        let long = clean(&"é".repeat(1 << 20));
        assert!(long.len() <= MAX_GUEST_TEXT + '…'.len_utf8());
        assert!(long.ends_with('…'));
        // An escape is never cut in half.
        let escapes = clean(&"\x1b".repeat(100));
        assert!(
            escapes.trim_end_matches('…').len().is_multiple_of(4),
            "{escapes}"
        );
        assert_eq!(
            clean_bytes(b"bad \xff\xfe utf-8\n"),
            "bad \u{fffd}\u{fffd} utf-8\\n"
        );
    }
}
