//! Readers of the /proc files the agent needs.
//!
//! Every parser takes the file's bytes and never panics: unknown lines are skipped, fields
//! that do not parse read as absent. The kernel's format is stable, but the agent must survive
//! an odd kernel, and process-controlled text (file names in `maps`) is attacker-chosen.

pub mod maps;
pub mod meminfo;
pub mod mounts;
pub mod psi;
pub mod status;
pub mod vmstat;

use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::Path;

/// Reads at most `limit` bytes of a /proc file: these files are small, and the bound keeps a
/// surprise from costing the agent memory.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut content = Vec::new();
    File::open(path)?.take(limit).read_to_end(&mut content)?;
    Ok(content)
}

/// Calls `each` on every line of `reader` (newline removed), reading at most `max_line` bytes
/// of any one line (the rest of a longer line is skipped) and stopping early when `each`
/// returns false. For files that can be large, like /proc/PID/smaps.
pub fn for_each_line<R: BufRead>(
    mut reader: R,
    max_line: usize,
    mut each: impl FnMut(&[u8]) -> bool,
) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .by_ref()
            .take(max_line as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if n == max_line {
            // Skip the rest of an over-long line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let m = reader
                    .by_ref()
                    .take(max_line as u64)
                    .read_until(b'\n', &mut rest)?;
                if m == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
            }
        }
        if !each(&line) {
            return Ok(());
        }
    }
}

/// `Key:   123 kB` (or `Key 123`) → (`Key`, 123). The unit is ignored: the callers know it.
pub(crate) fn key_number(line: &[u8]) -> Option<(&[u8], u64)> {
    let line = std::str::from_utf8(line).ok()?;
    let (key, rest) = match line.split_once(':') {
        Some((key, rest)) => (key, rest),
        None => line.split_once(char::is_whitespace)?,
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((key.trim().as_bytes(), value))
}

/// The numeric entries of /proc, i.e. the processes (thread-group leaders).
pub fn pids() -> io::Result<Vec<i32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        {
            if pid > 0 {
                pids.push(pid);
            }
        }
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_number_reads_both_layouts() {
        assert_eq!(
            key_number(b"MemTotal:       16318452 kB"),
            Some((&b"MemTotal"[..], 16318452))
        );
        assert_eq!(key_number(b"pswpin 12"), Some((&b"pswpin"[..], 12)));
        assert_eq!(key_number(b"Anonymous:  -3 kB"), None);
        assert_eq!(key_number(b"Key:"), None);
        assert_eq!(key_number(b""), None);
        assert_eq!(key_number(b"\xff\xff: 1"), None);
        assert_eq!(key_number(b"big 99999999999999999999999"), None);
    }

    #[test]
    fn for_each_line_bounds_lines() {
        let text = b"short\nthis line is far too long for the bound\nnext\nlast";
        let mut lines = Vec::new();
        for_each_line(&text[..], 10, |line| {
            lines.push(line.to_vec());
            true
        })
        .unwrap();
        assert_eq!(
            lines,
            vec![
                b"short".to_vec(),
                b"this line ".to_vec(),
                b"next".to_vec(),
                b"last".to_vec()
            ]
        );
    }

    #[test]
    fn for_each_line_stops_when_told() {
        let mut seen = 0;
        for_each_line(&b"a\nb\nc\n"[..], 10, |_| {
            seen += 1;
            seen < 2
        })
        .unwrap();
        assert_eq!(seen, 2);
    }

    /// Random bytes drawn from the characters these files are made of, fed to every parser:
    /// none may panic.
    #[test]
    fn parsers_survive_random_input() {
        const ALPHABET: &[u8] = b"0123456789abcdef-: \n\t()=kB[]/.\\\xff";
        let mut rng = crate::testutil::Rng::new(0x9e3779b97f4a7c15);
        for _ in 0..3000 {
            let len = rng.below(300) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
                .collect();
            let _ = meminfo::parse(&bytes);
            let _ = vmstat::parse(&bytes);
            let _ = psi::parse(&bytes);
            let _ = mounts::parse(&bytes);
            let _ = status::rss_anon_kib(&bytes);
            let _ = status::is_kernel_thread(&bytes);
            let _ = maps::parse_anon_ranges(&bytes[..]).unwrap();
            for line in bytes.split(|&b| b == b'\n') {
                let _ = maps::parse_line(line)
                    .map(|m| (m.is_anon_private_writable(), m.file_path().is_some()));
                let _ = key_number(line);
            }
        }
    }

    #[test]
    fn our_own_pid_is_listed() {
        assert!(pids().unwrap().contains(&(std::process::id() as i32)));
    }
}
