//! `deactivate_file`: drop clean page cache in the container patch's order.
//!
//! 1. Write back dirty pages (invalidation skips them).
//! 2. First pass: files with at least 50 cached pages; second pass: the smaller ones. Within a
//!    pass, files no process has open or mapped go first (nothing is using that cache now),
//!    then by cached pages, most first.
//! 3. Per file, windows of about 1000 pages (`DEACTIVATE_COUNT`; 1024, to stay aligned with
//!    the kernel's large folios): count, `posix_fadvise(DONTNEED)`, count again. The target is
//!    checked after every window, and the last one is cut to the pages still wanted, so the
//!    request stops at its target (give or take one large folio: the kernel drops a folio
//!    whole or not at all).
//! 4. Still short after a complete search: a whole-guest file reclaim, if the request allows
//!    it (`memory.reclaim`, in LRU order and never more than asked, before `drop_caches`).
//!
//! Pages mapped by a process are not dropped by `DONTNEED` (the kernel skips them); they are
//! measured as not freed and the passes go on.

use std::cmp::Reverse;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use log::{debug, info};

use super::candidates::{self, open_regular, Candidate, CandidateConfig, Purpose, SearchState};
use super::fallback::{self, FallbackTargets};
use super::writeback::Writeback;
use super::{micros_since, Deadline};
use crate::cache::CacheCounter;
use crate::page_size;
use crate::proc::meminfo;
use crate::protocol::{DeactivateFile, FileReport, PassReport, BATCH_PAGES};

/// How `deactivate_file` works on this guest.
#[derive(Debug, Clone)]
pub struct FileReclaimConfig {
    pub candidates: CandidateConfig,
    pub counter: CacheCounter,
    pub fallback: FallbackTargets,
    /// Longest wait for the write-back before the passes start without it.
    pub writeback_wait: Duration,
}

impl FileReclaimConfig {
    /// The defaults for this guest.
    pub fn detect() -> Self {
        FileReclaimConfig {
            candidates: CandidateConfig::default(),
            counter: CacheCounter::detect(),
            fallback: FallbackTargets::detect(),
            writeback_wait: Duration::from_millis(500),
        }
    }
}

/// `deactivate_file` with the search's memory across requests (see [`SearchState`]).
#[derive(Debug)]
pub struct FileReclaim {
    pub config: FileReclaimConfig,
    search: SearchState,
}

impl FileReclaim {
    pub fn new(config: FileReclaimConfig) -> Self {
        FileReclaim {
            config,
            search: SearchState::default(),
        }
    }

    /// Takes the search one budget further while no request waits, and remembers what it found
    /// (with the files already remembered): a request that comes then starts from a ready list
    /// instead of spending its own budget looking.
    pub fn refresh_inventory(&mut self) {
        let config = &self.config;
        let found = candidates::gather(
            &config.candidates,
            config.counter,
            &mut self.search,
            Purpose::Inventory,
        );
        self.search.remember(found.files);
    }

    /// Runs `deactivate_file`, taking at most about `budget` (a sync or a `memory.reclaim`
    /// write in progress cannot be cut short; the waits for them are bounded).
    pub fn deactivate(&mut self, request: &DeactivateFile, budget: Duration) -> FileReport {
        let start = Instant::now();
        let deadline = Deadline::after(budget);
        let target = request.target_pages;
        let config = &self.config;

        // The sync runs while the candidates are searched: neither needs the other.
        let writeback = Writeback::start(&config.candidates.scan_roots);
        let mut candidates = if target > 0 {
            candidates::gather(
                &config.candidates,
                config.counter,
                &mut self.search,
                Purpose::Request,
            )
        } else {
            candidates::Candidates::default()
        };
        let writeback = writeback.wait(deadline.remaining().min(config.writeback_wait));

        let (mut big, mut small): (Vec<_>, Vec<_>) =
            candidates.files.drain(..).partition(Candidate::is_big);
        for pass in [&mut big, &mut small] {
            pass.sort_by_key(|c| (c.in_use, Reverse(c.cached_pages)));
        }

        let mut remaining = target;
        let big_report = run_pass(&big, config.counter, &mut remaining, deadline);
        let small_report = run_pass(&small, config.counter, &mut remaining, deadline);

        // The whole-guest reclaim only when a complete search fell short: an incomplete one
        // leaves files unlooked-at, which the next request looks at first.
        let searched_all = candidates.report.complete;
        let fallback = (remaining > 0 && request.allow_fallback && searched_all).then(|| {
            let swap = meminfo::read()
                .ok()
                .and_then(|m| m.swap_total_kib)
                .is_some_and(|kib| kib > 0);
            let report = fallback::reclaim_file_cache(remaining, swap, &config.fallback);
            remaining = remaining.saturating_sub(report.freed_pages);
            report
        });
        // Whatever still holds cache is where the next request looks first.
        if target > 0 {
            self.search.remember(big.into_iter().chain(small));
        }

        let freed_pages = big_report.freed_pages
            + small_report.freed_pages
            + fallback.as_ref().map_or(0, |f| f.freed_pages);
        let report = FileReport {
            target_pages: target,
            freed_pages,
            reached_target: remaining == 0,
            cache_counter: config.counter.kind(),
            writeback,
            candidates: candidates.report,
            big: big_report,
            small: small_report,
            fallback,
            elapsed_us: micros_since(start),
        };
        info!(
            "deactivate_file: target {target} pages, freed {} (big files {}, small files {}, fallback {}) in {} µs",
            report.freed_pages,
            report.big.freed_pages,
            report.small.freed_pages,
            report.fallback.as_ref().map_or(0, |f| f.freed_pages),
            report.elapsed_us
        );
        report
    }
}

/// One `deactivate_file` with no memory of earlier requests.
pub fn deactivate_file(
    request: &DeactivateFile,
    config: &FileReclaimConfig,
    budget: Duration,
) -> FileReport {
    FileReclaim::new(config.clone()).deactivate(request, budget)
}

/// One pass over `files`, in order, until `remaining` reaches 0 or time runs out.
pub fn run_pass(
    files: &[Candidate],
    counter: CacheCounter,
    remaining: &mut u64,
    deadline: Deadline,
) -> PassReport {
    let start = Instant::now();
    let mut report = PassReport::default();
    for candidate in files {
        if *remaining == 0 || deadline.passed() {
            break;
        }
        if let Err(e) = drop_file_cache(candidate, counter, remaining, deadline, &mut report) {
            debug!("skipping {}: {e}", candidate.path.display());
        }
    }
    report.elapsed_us = micros_since(start);
    report
}

/// The largest folio the page cache uses (a PMD: 2 MiB with 4 KiB pages). The kernel drops a
/// folio only when the advised range covers all of it, so windows start on this alignment.
const MAX_FOLIO_BYTES: u64 = 2 << 20;

/// Bytes per window: [`BATCH_PAGES`] rounded up to whole 2 MiB units (1024 pages of 4 KiB).
fn window_bytes() -> u64 {
    (BATCH_PAGES * page_size()).div_ceil(MAX_FOLIO_BYTES) * MAX_FOLIO_BYTES
}

fn drop_file_cache(
    candidate: &Candidate,
    counter: CacheCounter,
    remaining: &mut u64,
    deadline: Deadline,
    report: &mut PassReport,
) -> std::io::Result<()> {
    // Reopened by name: it must still be the file that was counted.
    let (file, meta) = open_regular(&candidate.path, candidate.path.starts_with("/proc"))?;
    if (meta.dev(), meta.ino()) != (candidate.dev, candidate.ino) {
        return Ok(());
    }
    let window = window_bytes();
    let size = meta.len();
    let mut offset = 0;
    let mut touched = false;
    while offset < size && *remaining > 0 && !deadline.passed() {
        let len = window.min(size - offset);
        let to_eof = offset + len >= size;
        let before = counter.count(&file, offset, len)?;
        if before == 0 {
            offset += len;
            continue;
        }
        let freed = if before > *remaining {
            drop_prefix(&file, counter, offset, len, to_eof, before, *remaining)?
        } else {
            fadvise_dontneed(&file, offset, if to_eof { 0 } else { len })?;
            before.saturating_sub(counter.count(&file, offset, len)?)
        };
        report.batches += 1;
        report.freed_pages += freed;
        *remaining = remaining.saturating_sub(freed);
        touched = true;
        offset += len;
    }
    if touched {
        report.files_touched += 1;
    }
    Ok(())
}

/// Drops about `want` of the `before` cached pages of the window at `offset`: the shortest
/// prefix that holds them, widened to the next power-of-two boundary as long as that frees too
/// little (the cut went through a large folio, which the kernel then keeps whole). Overshoot
/// is at most one folio.
fn drop_prefix(
    file: &File,
    counter: CacheCounter,
    offset: u64,
    len: u64,
    to_eof: bool,
    before: u64,
    want: u64,
) -> std::io::Result<u64> {
    let page = page_size();
    let prefix = counter.prefix_holding(file, offset, len, want)?;
    let mut align = page;
    let mut advised = 0;
    let mut freed = 0;
    loop {
        let end = prefix.div_ceil(align) * align;
        let advise_len = end.min(len);
        if advise_len > advised {
            let whole_tail = to_eof && advise_len == len;
            fadvise_dontneed(file, offset, if whole_tail { 0 } else { advise_len })?;
            advised = advise_len;
            freed = before.saturating_sub(counter.count(file, offset, len)?);
        }
        if freed >= want || advised >= len || align >= MAX_FOLIO_BYTES {
            return Ok(freed);
        }
        align *= 2;
    }
}

fn fadvise_dontneed(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    let offset = libc::off_t::try_from(offset).unwrap_or(libc::off_t::MAX);
    let len = libc::off_t::try_from(len).unwrap_or(libc::off_t::MAX);
    // SAFETY: the descriptor is open for the life of `file`; fadvise touches no user memory.
    let err =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
    if err != 0 {
        return Err(std::io::Error::from_raw_os_error(err));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::io::{Read, Write};
    use std::path::Path;

    fn write_cached(path: &Path, pages: u64) {
        let mut f = File::create(path).unwrap();
        f.write_all(&vec![3u8; (pages * page_size()) as usize])
            .unwrap();
        f.sync_all().unwrap();
        let mut sink = Vec::new();
        File::open(path).unwrap().read_to_end(&mut sink).unwrap();
    }

    fn cached(path: &Path) -> u64 {
        CacheCounter::Mincore
            .count_file(&File::open(path).unwrap())
            .unwrap()
    }

    fn config(root: &Path, counter: CacheCounter) -> FileReclaimConfig {
        FileReclaimConfig {
            candidates: CandidateConfig {
                scan_roots: vec![root.canonicalize().unwrap()],
                ..CandidateConfig::default()
            },
            counter,
            fallback: FallbackTargets {
                memory_reclaim: None,
                drop_caches: root.join("no-drop-caches"),
            },
            writeback_wait: Duration::from_secs(5),
        }
    }

    fn no_fallback(target_pages: u64) -> DeactivateFile {
        DeactivateFile {
            target_pages,
            budget_ms: None,
            allow_fallback: false,
        }
    }

    /// Makes the file's cache out of single pages: dropped, then read a page at a time with
    /// readahead off (a fresh write leaves large folios of up to 2 MiB instead).
    fn recache_in_single_pages(path: &Path) {
        use std::os::unix::fs::FileExt;
        let f = File::open(path).unwrap();
        fadvise_dontneed(&f, 0, 0).unwrap();
        // SAFETY: the descriptor is open for the life of `f`.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        let mut page = vec![0u8; page_size() as usize];
        for i in 0..f.metadata().unwrap().len() / page_size() {
            f.read_exact_at(&mut page, i * page_size()).unwrap();
        }
    }

    #[test]
    fn a_pass_stops_at_its_target_inside_a_window() {
        for counter in [CacheCounter::Mincore, CacheCounter::detect()] {
            for single_pages in [true, false] {
                let dir = TempDir::new("file-exact");
                if !dir.disk_backed() {
                    return;
                }
                let path = dir.path().join("f");
                write_cached(&path, 300);
                if single_pages {
                    recache_in_single_pages(&path);
                }
                if cached(&path) < 300 {
                    return; // host memory pressure: nothing to measure
                }
                let report = deactivate_file(
                    &no_fallback(120),
                    &config(dir.path(), counter),
                    Duration::from_secs(10),
                );
                let freed = report.big.freed_pages;
                let what = format!("{counter:?}, single pages {single_pages}: {report:?}");
                if single_pages {
                    assert_eq!(freed, 120, "{what}");
                } else {
                    // At most one large folio more.
                    assert!((120..120 + 512).contains(&freed), "{what}");
                }
                assert!(report.reached_target, "{what}");
                assert_eq!(cached(&path), 300 - freed, "{what}");
            }
        }
    }

    #[test]
    fn large_folios_are_dropped_whole() {
        // 2048 pages written at once: large folios. Dropping it all must leave nothing.
        let dir = TempDir::new("file-folios");
        if !dir.disk_backed() {
            return;
        }
        let path = dir.path().join("f");
        write_cached(&path, 2048 + 7);
        let report = deactivate_file(
            &no_fallback(5000),
            &config(dir.path(), CacheCounter::detect()),
            Duration::from_secs(10),
        );
        assert_eq!(cached(&path), 0, "{report:?}");
        assert_eq!(report.big.batches, 3);
    }

    #[test]
    fn dirty_pages_are_written_back_then_dropped() {
        let dir = TempDir::new("file-dirty");
        if !dir.disk_backed() {
            return;
        }
        let path = dir.path().join("dirty");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![9u8; (200 * page_size()) as usize])
            .unwrap();
        drop(f); // no fsync: the pages are dirty
        let report = deactivate_file(
            &no_fallback(200),
            &config(dir.path(), CacheCounter::detect()),
            Duration::from_secs(10),
        );
        assert!(report.writeback.synced || report.writeback.scope.contains("previous"));
        if report.writeback.synced {
            assert_eq!(report.big.freed_pages, 200, "{report:?}");
        }
    }

    #[test]
    fn zero_target_does_nothing() {
        let dir = TempDir::new("file-zero");
        if !dir.disk_backed() {
            return;
        }
        write_cached(&dir.path().join("f"), 60);
        let report = deactivate_file(
            &DeactivateFile::new(0),
            &config(dir.path(), CacheCounter::detect()),
            Duration::from_secs(10),
        );
        assert_eq!(report.freed_pages, 0);
        assert!(report.reached_target);
        assert!(report.fallback.is_none());
        assert!(cached(&dir.path().join("f")) >= 60);
    }

    #[test]
    fn fallback_runs_when_the_files_fall_short() {
        let dir = TempDir::new("file-fallback");
        if !dir.disk_backed() {
            return;
        }
        write_cached(&dir.path().join("f"), 10);
        // A stand-in for /proc/sys/vm/drop_caches: this test must not drop the host's cache.
        let drop_caches = dir.path().join("no-drop-caches");
        std::fs::write(&drop_caches, "").unwrap();
        let report = deactivate_file(
            &DeactivateFile::new(1_000_000),
            &config(dir.path(), CacheCounter::detect()),
            Duration::from_secs(10),
        );
        assert!(report.small.freed_pages >= 9, "{report:?}");
        let fallback = report.fallback.unwrap();
        assert_eq!(fallback.asked_pages, 1_000_000 - report.small.freed_pages);
        assert_eq!(std::fs::read_to_string(&drop_caches).unwrap(), "1");
    }
}
