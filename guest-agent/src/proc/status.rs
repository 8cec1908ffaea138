//! /proc/PID/status and /proc/PID/stat: who a process is, and how much anon memory it has.

use std::io;
use std::path::PathBuf;

use super::{key_number, read_bounded};

/// `PF_KTHREAD` in the flags field of /proc/PID/stat.
const PF_KTHREAD: u64 = 0x0020_0000;

/// What the anon passes need to know about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessMemory {
    pub pid: i32,
    /// `RssAnon`, in KiB.
    pub anon_kib: u64,
}

/// Reads a process's anon memory; `None` for kernel threads, zombies and processes that are
/// gone (none of them has an address space to advise).
pub fn read(pid: i32) -> io::Result<Option<ProcessMemory>> {
    let stat = read_bounded(&PathBuf::from(format!("/proc/{pid}/stat")), 4096)?;
    if is_kernel_thread(&stat) != Some(false) {
        return Ok(None);
    }
    let status = read_bounded(&PathBuf::from(format!("/proc/{pid}/status")), 16 * 1024)?;
    Ok(rss_anon_kib(&status).map(|anon_kib| ProcessMemory { pid, anon_kib }))
}

/// `RssAnon` from /proc/PID/status; `None` when absent (no address space).
pub fn rss_anon_kib(status: &[u8]) -> Option<u64> {
    status
        .split(|&b| b == b'\n')
        .filter_map(key_number)
        .find(|(key, _)| *key == b"RssAnon")
        .map(|(_, kib)| kib)
}

/// Whether /proc/PID/stat describes a kernel thread; `None` if it cannot be parsed.
///
/// The command name (field 2) is in parentheses and may itself contain spaces and `)`, so the
/// fields are counted from the last `)`.
pub fn is_kernel_thread(stat: &[u8]) -> Option<bool> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After the name: state (3), ppid, pgrp, session, tty_nr, tpgid, flags (9).
    let flags: u64 = rest.split_whitespace().nth(6)?.parse().ok()?;
    Some(flags & PF_KTHREAD != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_anon_from_a_real_status() {
        let status = b"Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t20177\n\
            VmRSS:\t    1712 kB\nRssAnon:\t     116 kB\nRssFile:\t    1596 kB\n";
        assert_eq!(rss_anon_kib(status), Some(116));
        assert_eq!(
            rss_anon_kib(b"Name:\tkthreadd\nState:\tS (sleeping)\nThreads:\t1\n"),
            None
        );
    }

    #[test]
    fn kernel_threads_are_recognised() {
        assert_eq!(
            is_kernel_thread(b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0"),
            Some(true)
        );
        assert_eq!(
            is_kernel_thread(b"20179 (cat) R 20171 20171 16494 0 -1 4194304 101 0 0 0"),
            Some(false)
        );
        // A name with spaces and parentheses, chosen by the process itself.
        assert_eq!(
            is_kernel_thread(b"7 (a) b) c 2129984) R 1 1 1 0 -1 4194304 0"),
            Some(false)
        );
    }

    #[test]
    fn garbage_does_not_panic() {
        for stat in [
            &b""[..],
            b")",
            b"1 (x)",
            b"1 (x) R 1 1 1 0 -1 notanumber",
            b"\xff(\xff)\xff",
        ] {
            assert_eq!(is_kernel_thread(stat), None);
        }
        assert_eq!(rss_anon_kib(b"RssAnon:"), None);
        assert_eq!(rss_anon_kib(b"RssAnon: x kB"), None);
    }

    #[test]
    fn reads_ourselves_and_skips_kthreadd() {
        let me = read(std::process::id() as i32).unwrap().unwrap();
        assert!(me.anon_kib > 0);
        // PID 2 is kthreadd on a normal system; in a PID namespace it may be anything or absent.
        if let Ok(stat) = std::fs::read("/proc/2/stat") {
            if stat.windows(10).any(|w| w == b"(kthreadd)") {
                assert_eq!(read(2).unwrap(), None);
            }
        }
    }
}
