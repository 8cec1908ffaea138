//! /proc/PID/maps and /proc/PID/smaps: a process's mappings.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::for_each_line;

/// Longest line read: a path (at most PATH_MAX) plus the fixed fields.
const MAX_LINE: usize = 8192;

/// One line of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub writable: bool,
    pub shared: bool,
    pub inode: u64,
    /// The path or pseudo-name (`[heap]`), raw bytes: file names need not be UTF-8.
    pub name: Option<Vec<u8>>,
}

impl Mapping {
    /// Private writable memory with no file behind it: the heap, stacks, anonymous `mmap`s.
    /// (Private file mappings also gain anon pages when written, but those mappings are mostly
    /// program data and relocations; they are left alone.)
    pub fn is_anon_private_writable(&self) -> bool {
        if !self.writable || self.shared || self.inode != 0 {
            return false;
        }
        match &self.name {
            None => true,
            Some(name) => {
                name == b"[heap]" || name.starts_with(b"[stack") || name.starts_with(b"[anon:")
            }
        }
    }

    /// The file behind the mapping, if it is a file that still has its name.
    pub fn file_path(&self) -> Option<&Path> {
        let name = self.name.as_deref()?;
        if self.inode == 0 || !name.starts_with(b"/") || name.ends_with(b" (deleted)") {
            return None;
        }
        Some(Path::new(OsStr::from_bytes(name)))
    }
}

/// Parses one maps line: `start-end perms offset dev inode [name]`.
pub fn parse_line(line: &[u8]) -> Option<Mapping> {
    let mut rest = line;
    let mut field = || -> Option<&[u8]> {
        let trimmed = trim_start(rest);
        let end = trimmed
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(trimmed.len());
        rest = &trimmed[end..];
        (end > 0).then_some(&trimmed[..end])
    };
    let range = field()?;
    let perms = field()?;
    let _offset = field()?;
    let _dev = field()?;
    let inode = field()?;
    let dash = range.iter().position(|&b| b == b'-')?;
    let start = hex(&range[..dash])?;
    let end = hex(&range[dash + 1..])?;
    if end < start || perms.len() < 4 {
        return None;
    }
    let inode = std::str::from_utf8(inode).ok()?.parse().ok()?;
    let name = trim_start(rest);
    Some(Mapping {
        start,
        end,
        writable: perms[1] == b'w',
        shared: perms[3] == b's',
        inode,
        name: (!name.is_empty()).then(|| name.to_vec()),
    })
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[skip..]
}

fn hex(bytes: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(bytes).ok()?, 16).ok()
}

/// The named files a process has mapped (each once).
pub fn mapped_files(pid: i32) -> io::Result<Vec<PathBuf>> {
    let file = File::open(format!("/proc/{pid}/maps"))?;
    let mut paths: Vec<PathBuf> = Vec::new();
    for_each_line(BufReader::new(file), MAX_LINE, |line| {
        if let Some(path) = parse_line(line).as_ref().and_then(Mapping::file_path) {
            // A file's mappings are adjacent (text, data, bss...): checking the last is enough
            // for most duplicates, the caller deduplicates the rest by inode.
            if paths.last().map(PathBuf::as_path) != Some(path) {
                paths.push(path.to_path_buf());
            }
        }
        true
    })?;
    Ok(paths)
}

/// An anonymous range worth advising, from /proc/PID/smaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnonRange {
    pub start: u64,
    pub end: u64,
    /// Its resident anon memory (`Anonymous:`), in KiB.
    pub anon_kib: u64,
}

/// The process's private writable anonymous ranges with resident anon pages, leaving out those
/// `MADV_COLD` would reject (locked, hugetlb, PFN or I/O mappings: `EINVAL` for the whole call).
pub fn anon_ranges(pid: i32) -> io::Result<Vec<AnonRange>> {
    let file = File::open(format!("/proc/{pid}/smaps"))?;
    parse_anon_ranges(BufReader::new(file))
}

/// [`anon_ranges`] over any smaps content.
pub fn parse_anon_ranges(reader: impl io::BufRead) -> io::Result<Vec<AnonRange>> {
    struct Current {
        range: AnonRange,
        eligible: bool,
    }
    fn flush(current: Option<Current>, out: &mut Vec<AnonRange>) {
        if let Some(c) = current {
            if c.eligible && c.range.anon_kib > 0 {
                out.push(c.range);
            }
        }
    }
    let mut out = Vec::new();
    let mut current: Option<Current> = None;
    for_each_line(reader, MAX_LINE, |line| {
        if let Some(mapping) = parse_line(line) {
            flush(current.take(), &mut out);
            current = Some(Current {
                range: AnonRange {
                    start: mapping.start,
                    end: mapping.end,
                    anon_kib: 0,
                },
                eligible: mapping.is_anon_private_writable(),
            });
        } else if let Some(c) = current.as_mut() {
            if let Some(rest) = line.strip_prefix(b"Anonymous:") {
                c.range.anon_kib = std::str::from_utf8(rest)
                    .ok()
                    .and_then(|r| r.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
            } else if let Some(flags) = line.strip_prefix(b"VmFlags:") {
                let rejected = flags
                    .split(|b| b.is_ascii_whitespace())
                    .any(|flag| matches!(flag, b"lo" | b"pf" | b"ht" | b"io"));
                if rejected {
                    c.eligible = false;
                }
            }
        }
        true
    })?;
    flush(current, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_lines() {
        let m = parse_line(
            b"55f0434c2000-55f0434c3000 rw-p 0000a000 fe:00 247030                     /usr/bin/cat",
        )
        .unwrap();
        assert_eq!((m.start, m.end), (0x55f0434c2000, 0x55f0434c3000));
        assert!(m.writable && !m.shared);
        assert_eq!(m.inode, 247030);
        assert_eq!(m.file_path(), Some(Path::new("/usr/bin/cat")));
        assert!(!m.is_anon_private_writable());

        let heap =
            parse_line(b"5568497a0000-5568497c1000 rw-p 00000000 00:00 0          [heap]").unwrap();
        assert!(heap.is_anon_private_writable());
        assert_eq!(heap.file_path(), None);

        let anon = parse_line(b"7f1c2e400000-7f1c2e600000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(anon.name, None);
        assert!(anon.is_anon_private_writable());

        let shared =
            parse_line(b"7f1c2e400000-7f1c2e600000 rw-s 00000000 00:01 1234  /memfd:x (deleted)")
                .unwrap();
        assert!(!shared.is_anon_private_writable());
        assert_eq!(shared.file_path(), None);

        let vdso = parse_line(b"7ffd4c5f0000-7ffd4c5f2000 r-xp 00000000 00:00 0  [vdso]").unwrap();
        assert!(!vdso.is_anon_private_writable());
    }

    #[test]
    fn paths_keep_spaces_and_odd_bytes() {
        let m = parse_line(b"1000-2000 r--p 00000000 fe:00 5   /data/my file \xff.db").unwrap();
        assert_eq!(m.name.as_deref(), Some(&b"/data/my file \xff.db"[..]));
        assert!(m.file_path().is_some());
    }

    #[test]
    fn garbage_does_not_panic() {
        for line in [
            &b""[..],
            b"-",
            b"zz-yy rw-p 0 0 0",
            b"2000-1000 rw-p 0 00:00 0",
            b"1000-2000 r 0 00:00 0",
            b"1000-2000 rw-p 0 00:00 notanumber",
            b"1000-2000 rw-p 0 00:00",
            b"ffffffffffffffffffff-1 rw-p 0 00:00 0",
            b"\xff\xff\xff",
            b"Anonymous:    4 kB",
            b"VmFlags: rd wr",
        ] {
            assert_eq!(parse_line(line), None, "{}", String::from_utf8_lossy(line));
        }
    }

    const SMAPS: &[u8] = b"5568497a0000-5568497c1000 rw-p 00000000 00:00 0          [heap]
Size:                132 kB
Rss:                  40 kB
Anonymous:            40 kB
Locked:                0 kB
VmFlags: rd wr mr mw me ac
55f0434c2000-55f0434c3000 rw-p 0000a000 fe:00 247030   /usr/bin/cat
Anonymous:             4 kB
VmFlags: rd wr mr mw me ac
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Anonymous:          1024 kB
VmFlags: rd wr mr mw me lo ac
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Anonymous:             0 kB
VmFlags: rd wr mr mw me ac
7f0000400000-7f0000500000 rw-p 00000000 00:00 0
Anonymous:           512 kB
VmFlags: rd wr mr mw me ac
7ffd4c5f0000-7ffd4c611000 rw-p 00000000 00:00 0          [stack]
Anonymous:            20 kB";

    #[test]
    fn anon_ranges_from_a_sample() {
        let ranges = parse_anon_ranges(SMAPS).unwrap();
        assert_eq!(
            ranges,
            vec![
                AnonRange {
                    start: 0x5568497a0000,
                    end: 0x5568497c1000,
                    anon_kib: 40
                },
                AnonRange {
                    start: 0x7f0000400000,
                    end: 0x7f0000500000,
                    anon_kib: 512
                },
                AnonRange {
                    start: 0x7ffd4c5f0000,
                    end: 0x7ffd4c611000,
                    anon_kib: 20
                },
            ]
        );
    }

    #[test]
    fn anon_ranges_of_garbage() {
        assert!(
            parse_anon_ranges(&b"Anonymous: 5 kB\nVmFlags: lo\n\xff\n"[..])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn reads_ourselves() {
        let me = std::process::id() as i32;
        assert!(!anon_ranges(me).unwrap().is_empty());
        assert!(!mapped_files(me).unwrap().is_empty());
    }
}
