//! Writing dirty file pages back before the passes, so that they can be dropped: invalidation
//! skips dirty pages.
//!
//! The sync runs on its own thread and the request waits for it only so long; a sync stuck on
//! a slow disk must not hold the reply past the host's timeout. At most one sync thread exists.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::micros_since;
use crate::protocol::WritebackReport;

static SYNC_RUNNING: AtomicBool = AtomicBool::new(false);

/// A sync under way.
pub struct Writeback {
    start: Instant,
    scope: &'static str,
    /// Receives how long the sync took.
    done: Option<mpsc::Receiver<u64>>,
}

impl Writeback {
    /// Starts `sync()` for the whole guest, or `syncfs()` on each scan root's filesystem.
    pub fn start(scan_roots: &[PathBuf]) -> Writeback {
        let start = Instant::now();
        let scope = if scan_roots.is_empty() {
            "sync"
        } else {
            "syncfs"
        };
        if SYNC_RUNNING.swap(true, Ordering::AcqRel) {
            debug!("a previous sync is still running; not starting another");
            return Writeback {
                start,
                scope: "previous sync still running",
                done: None,
            };
        }
        let roots = scan_roots.to_vec();
        let (done_tx, done) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("writeback".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                sync(&roots);
                SYNC_RUNNING.store(false, Ordering::Release);
                let _ = done_tx.send(micros_since(start));
            });
        match spawned {
            Ok(_) => Writeback {
                start,
                scope,
                done: Some(done),
            },
            Err(e) => {
                warn!("cannot start the writeback thread: {e}; dropping only clean pages");
                SYNC_RUNNING.store(false, Ordering::Release);
                Writeback {
                    start,
                    scope,
                    done: None,
                }
            }
        }
    }

    /// Waits up to `max` for the sync to finish. The report's time is the sync's own when it
    /// finished, else the time waited.
    pub fn wait(self, max: Duration) -> WritebackReport {
        let synced_in = self
            .done
            .as_ref()
            .and_then(|done| done.recv_timeout(max).ok());
        WritebackReport {
            synced: synced_in.is_some(),
            scope: self.scope.to_string(),
            elapsed_us: synced_in.unwrap_or_else(|| micros_since(self.start)),
        }
    }
}

fn sync(roots: &[PathBuf]) {
    if roots.is_empty() {
        // SAFETY: sync has no arguments and no memory-safety preconditions.
        unsafe { libc::sync() };
        return;
    }
    for root in roots {
        match File::open(root) {
            Ok(dir) => {
                // SAFETY: the descriptor is open for the life of `dir`.
                if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
                    debug!(
                        "syncfs {}: {}",
                        root.display(),
                        std::io::Error::last_os_error()
                    );
                }
            }
            Err(e) => debug!("cannot open {} to sync it: {e}", root.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_a_root() {
        let root = std::env::current_dir().unwrap();
        // Another test may hold the sync thread for a moment: wait for our own turn.
        let mut report =
            Writeback::start(std::slice::from_ref(&root)).wait(Duration::from_secs(10));
        for _ in 0..100 {
            if report.scope == "syncfs" {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            report = Writeback::start(std::slice::from_ref(&root)).wait(Duration::from_secs(10));
        }
        assert_eq!(report.scope, "syncfs");
        assert!(report.synced);
    }
}
