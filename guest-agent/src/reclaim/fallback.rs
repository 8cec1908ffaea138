//! The whole-guest file reclaim, for when the per-file passes cannot reach the target (the
//! cache sits in files the search did not find, or in deleted files no one has open).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Instant;

use log::{debug, warn};

use super::micros_since;
use crate::proc::{meminfo, mounts};
use crate::protocol::{FallbackMethod, FallbackReport};
use crate::{kib_to_pages, page_size};

/// Where the fallback writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackTargets {
    /// The cgroup v2 root's `memory.reclaim` (Linux 5.19+), when there is one: it reclaims
    /// the amount asked for.
    pub memory_reclaim: Option<PathBuf>,
    /// /proc/sys/vm/drop_caches: drops all clean page cache, the only choice without it.
    pub drop_caches: PathBuf,
}

impl FallbackTargets {
    /// This guest's targets.
    pub fn detect() -> FallbackTargets {
        let memory_reclaim = mounts::read().ok().and_then(|mounts| {
            let path = mounts::cgroup2_root(&mounts)?.join("memory.reclaim");
            path.exists().then_some(path)
        });
        FallbackTargets {
            memory_reclaim,
            drop_caches: PathBuf::from("/proc/sys/vm/drop_caches"),
        }
    }
}

/// Reclaims about `pages` pages of file cache from the whole guest, in the kernel's LRU order.
/// `swap`: the guest has swap, so `memory.reclaim` is told `swappiness=0` to leave anon pages
/// alone (Linux 6.9+); a kernel that refuses that gets plain `memory.reclaim` (still LRU order
/// and no more than asked, though its LRU may then take some cold anon memory to swap).
/// `drop_caches`, which drops every clean page whatever was asked, only without
/// `memory.reclaim` at all.
pub fn reclaim_file_cache(pages: u64, swap: bool, targets: &FallbackTargets) -> FallbackReport {
    let start = Instant::now();
    let before = file_pages();
    let mut error = None;
    let mut method = FallbackMethod::DropCaches;
    if let Some(path) = &targets.memory_reclaim {
        let bytes = pages.saturating_mul(page_size());
        let request = if swap {
            format!("{bytes} swappiness=0")
        } else {
            bytes.to_string()
        };
        let mut result = write_control(path, &request);
        if swap
            && result
                .as_ref()
                .is_err_and(|e| e.raw_os_error() == Some(libc::EINVAL))
        {
            debug!("memory.reclaim takes no swappiness= here: asking without it");
            result = write_control(path, &bytes.to_string());
        }
        match result {
            Ok(()) => method = FallbackMethod::MemoryReclaim,
            // EAGAIN: the kernel reclaimed less than asked. Not an error: the measurement
            // below says how much.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                method = FallbackMethod::MemoryReclaim
            }
            Err(e) => {
                warn!(
                    "writing {request:?} to {} failed ({e}); dropping all clean page cache instead",
                    path.display()
                );
            }
        }
    }
    if method == FallbackMethod::DropCaches {
        // "1": page cache only; "2" and "3" would also drop dentries and inodes.
        if let Err(e) = write_control(&targets.drop_caches, "1") {
            warn!("writing 1 to {} failed: {e}", targets.drop_caches.display());
            error = Some(format!(
                "cannot write {}: {e} (the agent needs root)",
                targets.drop_caches.display()
            ));
        }
    }
    let after = file_pages();
    let freed_pages = match (before, after) {
        (Some(before), Some(after)) => before.saturating_sub(after),
        _ => 0,
    };
    debug!("fallback {method:?}: asked {pages} pages, file LRU shrank by {freed_pages}");
    FallbackReport {
        method,
        asked_pages: pages,
        freed_pages,
        error,
        elapsed_us: micros_since(start),
    }
}

fn write_control(path: &PathBuf, value: &str) -> io::Result<()> {
    // One write call: cgroup and sysctl files take a value per write.
    let mut file = OpenOptions::new().write(true).open(path)?;
    file.write_all(value.as_bytes())
}

/// Pages on the file LRU lists, guest-wide.
fn file_pages() -> Option<u64> {
    meminfo::read().ok()?.file_kib().map(kib_to_pages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::fs;

    #[test]
    fn memory_reclaim_gets_bytes_and_stays_file_only_with_swap() {
        let dir = TempDir::new("fallback");
        let reclaim = dir.path().join("memory.reclaim");
        let drop = dir.path().join("drop_caches");
        fs::write(&reclaim, "").unwrap();
        fs::write(&drop, "").unwrap();
        let targets = FallbackTargets {
            memory_reclaim: Some(reclaim.clone()),
            drop_caches: drop.clone(),
        };
        let report = reclaim_file_cache(10, false, &targets);
        assert_eq!(report.method, FallbackMethod::MemoryReclaim);
        assert_eq!(report.asked_pages, 10);
        assert_eq!(
            fs::read_to_string(&reclaim).unwrap(),
            (10 * page_size()).to_string()
        );
        let report = reclaim_file_cache(1, true, &targets);
        assert_eq!(report.method, FallbackMethod::MemoryReclaim);
        assert_eq!(
            fs::read_to_string(&reclaim).unwrap(),
            format!("{} swappiness=0", page_size())
        );
        assert_eq!(fs::read_to_string(&drop).unwrap(), "");
    }

    #[test]
    fn without_memory_reclaim_drop_caches_gets_1() {
        let dir = TempDir::new("fallback-drop");
        let drop = dir.path().join("drop_caches");
        fs::write(&drop, "").unwrap();
        let targets = FallbackTargets {
            memory_reclaim: Some(dir.path().join("missing/memory.reclaim")),
            drop_caches: drop.clone(),
        };
        let report = reclaim_file_cache(5, false, &targets);
        assert_eq!(report.method, FallbackMethod::DropCaches);
        assert_eq!(report.error, None);
        assert_eq!(fs::read_to_string(&drop).unwrap(), "1");
    }

    #[test]
    fn a_failing_fallback_says_so() {
        let targets = FallbackTargets {
            memory_reclaim: None,
            drop_caches: PathBuf::from("/nonexistent/drop_caches"),
        };
        let report = reclaim_file_cache(5, false, &targets);
        assert_eq!(report.method, FallbackMethod::DropCaches);
        assert!(report.error.unwrap().contains("/nonexistent/drop_caches"));
    }
}
