//! Counting a file's pages in the page cache: `cachestat(2)` where the kernel has it (6.5+),
//! `mmap` + `mincore(2)` otherwise. Neither reads the file or faults a page in.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use crate::page_size;
use crate::protocol::CacheCounterKind;

/// `cachestat` has the same number on every architecture (it came after the syscall tables
/// were unified); libc does not name it yet.
const SYS_CACHESTAT: libc::c_long = 451;

/// The largest window `mincore` maps at once: 64 MiB of address space, a 16 KiB vector. Keeps
/// the agent far below its address-space limit whatever the file size.
const MINCORE_WINDOW: u64 = 64 << 20;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// How cached pages are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheCounter {
    Cachestat,
    Mincore,
}

impl CacheCounter {
    /// `Cachestat` if this kernel has it.
    pub fn detect() -> CacheCounter {
        // An invalid descriptor: EBADF if the syscall exists, ENOSYS if it does not.
        let mut range = CachestatRange { off: 0, len: 0 };
        let mut stat = Cachestat::default();
        // SAFETY: both pointers are to live, properly laid out structs owned by this frame;
        // the kernel rejects the descriptor before writing anything.
        let ret = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                -1 as libc::c_int,
                &mut range as *mut CachestatRange,
                &mut stat as *mut Cachestat,
                0 as libc::c_uint,
            )
        };
        if ret == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            CacheCounter::Mincore
        } else {
            CacheCounter::Cachestat
        }
    }

    pub fn kind(self) -> CacheCounterKind {
        match self {
            CacheCounter::Cachestat => CacheCounterKind::Cachestat,
            CacheCounter::Mincore => CacheCounterKind::Mincore,
        }
    }

    /// Cached pages of `file` in `[offset, offset + len)`; `offset` is page-aligned.
    pub fn count(self, file: &File, offset: u64, len: u64) -> io::Result<u64> {
        if len == 0 {
            return Ok(0);
        }
        match self {
            CacheCounter::Cachestat => cachestat(file, offset, len),
            CacheCounter::Mincore => {
                let mut total = 0;
                let mut at = offset;
                let end = offset.saturating_add(len);
                while at < end {
                    let window = (end - at).min(MINCORE_WINDOW);
                    total += mincore(file, at, window)?;
                    at += window;
                }
                Ok(total)
            }
        }
    }

    /// Cached pages of the whole file.
    pub fn count_file(self, file: &File) -> io::Result<u64> {
        let size = file.metadata()?.len();
        self.count(file, 0, size)
    }

    /// The shortest page-aligned length from `offset` (at most `len`) that holds `want` cached
    /// pages, found by bisection: lets the last batch stop at the target instead of dropping a
    /// whole window.
    pub fn prefix_holding(self, file: &File, offset: u64, len: u64, want: u64) -> io::Result<u64> {
        let page = page_size();
        let pages = len.div_ceil(page);
        let (mut low, mut high) = (0u64, pages);
        while low < high {
            let mid = low + (high - low) / 2;
            if self.count(file, offset, (mid + 1) * page)? >= want {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        Ok(((low + 1) * page).min(len))
    }
}

fn cachestat(file: &File, offset: u64, len: u64) -> io::Result<u64> {
    let mut range = CachestatRange { off: offset, len };
    let mut stat = Cachestat::default();
    // SAFETY: the descriptor is open for the life of `file`; both pointers are to live,
    // properly laid out structs owned by this frame, which the kernel reads and writes only
    // during the call.
    let ret = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &mut range as *mut CachestatRange,
            &mut stat as *mut Cachestat,
            0 as libc::c_uint,
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.nr_cache)
}

/// Cached pages in one window, through a temporary read-only shared mapping that is never
/// touched (so it faults nothing in, and a concurrent truncate cannot SIGBUS us).
fn mincore(file: &File, offset: u64, len: u64) -> io::Result<u64> {
    let page = page_size();
    let pages = len.div_ceil(page) as usize;
    let map_len = pages * page as usize;
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    // SAFETY: a fresh mapping chosen by the kernel (null hint), so no existing memory is
    // affected; it is only passed to mincore and unmapped below, never dereferenced.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mut vector = vec![0u8; pages];
    // SAFETY: `addr..addr+map_len` is the mapping made above; `vector` has one byte per page
    // of it, as mincore requires.
    let ret = unsafe { libc::mincore(addr, map_len, vector.as_mut_ptr()) };
    let result = if ret == 0 {
        Ok(vector.iter().filter(|&&v| v & 1 != 0).count() as u64)
    } else {
        Err(io::Error::last_os_error())
    };
    // SAFETY: unmaps exactly the mapping made above, which nothing else refers to.
    unsafe { libc::munmap(addr, map_len) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::io::{Read, Write};

    fn cached_file(pages: u64) -> (TempDir, File) {
        let dir = TempDir::new("cache");
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; (pages * page_size()) as usize])
            .unwrap();
        f.sync_all().unwrap();
        drop(f);
        let mut f = File::open(&path).unwrap();
        let mut sink = Vec::new();
        f.read_to_end(&mut sink).unwrap();
        (dir, f)
    }

    #[test]
    fn both_counters_agree_on_a_cached_file() {
        let (_dir, f) = cached_file(64);
        let mincore = CacheCounter::Mincore.count_file(&f).unwrap();
        assert!(mincore >= 60, "{mincore} of 64 pages cached");
        if CacheCounter::detect() == CacheCounter::Cachestat {
            assert_eq!(CacheCounter::Cachestat.count_file(&f).unwrap(), mincore);
        }
    }

    #[test]
    fn prefix_holding_finds_the_shortest_prefix() {
        let (_dir, f) = cached_file(100);
        let page = page_size();
        for counter in [CacheCounter::Mincore, CacheCounter::detect()] {
            if counter.count_file(&f).unwrap() < 100 {
                return; // memory pressure on the host: nothing to check
            }
            assert_eq!(counter.prefix_holding(&f, 0, 100 * page, 1).unwrap(), page);
            assert_eq!(
                counter.prefix_holding(&f, 0, 100 * page, 37).unwrap(),
                37 * page
            );
            assert_eq!(
                counter
                    .prefix_holding(&f, 10 * page, 90 * page, 90)
                    .unwrap(),
                90 * page
            );
            // More than there is: the whole range.
            assert_eq!(
                counter.prefix_holding(&f, 0, 100 * page, 500).unwrap(),
                100 * page
            );
        }
    }

    #[test]
    fn empty_ranges_count_nothing() {
        let (_dir, f) = cached_file(1);
        assert_eq!(CacheCounter::Mincore.count(&f, 0, 0).unwrap(), 0);
        assert_eq!(CacheCounter::detect().count(&f, 0, 0).unwrap(), 0);
    }
}
