//! Finding the files whose page cache `deactivate_file` may drop.
//!
//! The kernel has no list of cached files for user space, so the agent looks where cache is:
//! files processes have open or mapped (/proc/PID/fd, /proc/PID/maps), then a walk of the
//! disk-backed filesystems. Both are bounded in time and in files examined; files with no
//! cached pages are forgotten at once, so memory grows only with files that hold cache.
//! A walk may pause and resume; one that paused while something came into the page cache has
//! passed files that may hold cache now, so a request walks afresh instead of resuming it.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::debug;

use super::{micros_since, Deadline};
use crate::cache::CacheCounter;
use crate::proc::vmstat::{self, CacheInflow};
use crate::proc::{self, maps, mounts};
use crate::protocol::{CandidateReport, BIG_THRESHOLD_PAGES};

/// Where and how long to look.
#[derive(Debug, Clone)]
pub struct CandidateConfig {
    /// When not empty, only files under these directories are candidates, whether found open,
    /// mapped or by the walk, and only these are walked. Canonical paths.
    pub scan_roots: Vec<PathBuf>,
    /// Time for the whole search per request, counting included.
    pub budget: Duration,
    /// Files and directories looked at, at most.
    pub max_examined: u64,
}

impl Default for CandidateConfig {
    fn default() -> Self {
        CandidateConfig {
            scan_roots: Vec::new(),
            budget: Duration::from_millis(200),
            max_examined: 100_000,
        }
    }
}

/// A file holding page cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// A path that reopens it: its name, or /proc/PID/fd/N for an open file that was deleted.
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub cached_pages: u64,
    /// Some process has it open or mapped.
    pub in_use: bool,
}

impl Candidate {
    pub fn is_big(&self) -> bool {
        self.cached_pages >= BIG_THRESHOLD_PAGES
    }
}

/// The result of a search.
#[derive(Debug, Default)]
pub struct Candidates {
    pub files: Vec<Candidate>,
    pub report: CandidateReport,
}

/// Opens a regular file without side effects: `O_PATH` first (opening a device node or a FIFO
/// could do something, e.g. a watchdog device reboots on close), checks what it is, then
/// reopens that same inode for real through /proc/self/fd. `follow` allows a symlink as the
/// last component (needed for /proc/PID/fd/N).
pub fn open_regular(path: &Path, follow: bool) -> io::Result<(File, fs::Metadata)> {
    let mut flags = libc::O_PATH;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    let meta = handle.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&handle)
        ))?;
    Ok((file, meta))
}

/// Whether the file lives in memory (tmpfs, ramfs, hugetlbfs): nothing to drop there.
fn is_memory_backed(file: &File) -> bool {
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: the descriptor is open for the life of `file`; `stat` is writable memory of the
    // right type, filled by the kernel on success and read only then.
    let ret = unsafe { libc::fstatfs(std::os::fd::AsRawFd::as_raw_fd(file), stat.as_mut_ptr()) };
    if ret != 0 {
        return false;
    }
    // SAFETY: fstatfs succeeded, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    mounts::is_memory_backed_magic(stat.f_type as u32)
}

/// Whether `path` is a directory on a disk-backed filesystem.
fn is_disk_backed_dir(path: &Path) -> bool {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
    {
        Ok(dir) => !is_memory_backed(&dir),
        Err(_) => false,
    }
}

struct Search<'a> {
    config: &'a CandidateConfig,
    counter: CacheCounter,
    deadline: Deadline,
    /// (dev, ino) → index in `files`, so a file found twice counts once.
    known: HashMap<(u64, u64), usize>,
    files: Vec<Candidate>,
    examined: u64,
    complete: bool,
}

impl Search<'_> {
    /// Checks the bounds; once one is hit the search is incomplete and stops.
    fn exhausted(&mut self) -> bool {
        if self.examined >= self.config.max_examined || self.deadline.passed() {
            self.complete = false;
        }
        !self.complete
    }

    fn under_roots(&self, path: &Path) -> bool {
        self.config.scan_roots.is_empty()
            || self
                .config
                .scan_roots
                .iter()
                .any(|root| path.starts_with(root))
    }

    /// Looks at one file; `from_process` for files found through /proc (open or mapped),
    /// which may live anywhere, so their filesystem is checked.
    fn consider(&mut self, path: PathBuf, follow: bool, from_process: bool) {
        self.examined += 1;
        let Ok((file, meta)) = open_regular(&path, follow) else {
            return;
        };
        let key = (meta.dev(), meta.ino());
        if let Some(&index) = self.known.get(&key) {
            self.files[index].in_use |= from_process;
            return;
        }
        if from_process && is_memory_backed(&file) {
            return;
        }
        let cached_pages = match self.counter.count(&file, 0, meta.len()) {
            Ok(pages) => pages,
            Err(e) => {
                debug!("cannot count cached pages of {}: {e}", path.display());
                return;
            }
        };
        if cached_pages == 0 {
            return;
        }
        self.known.insert(key, self.files.len());
        self.files.push(Candidate {
            path,
            dev: key.0,
            ino: key.1,
            cached_pages,
            in_use: from_process,
        });
    }

    /// Files the processes have open or mapped.
    fn processes(&mut self) {
        let own = std::process::id() as i32;
        let Ok(pids) = proc::pids() else { return };
        for pid in pids {
            if pid == own {
                continue;
            }
            if let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) {
                for fd in fds.flatten() {
                    if self.exhausted() {
                        return;
                    }
                    let Ok(target) = fs::read_link(fd.path()) else {
                        continue;
                    };
                    // Sockets, pipes and anon inodes read as "socket:[123]" and the like.
                    if !target.is_absolute() {
                        continue;
                    }
                    let deleted = target
                        .as_os_str()
                        .as_encoded_bytes()
                        .ends_with(b" (deleted)");
                    if deleted {
                        // Only its open descriptor reaches it; it has no place under a root.
                        if self.config.scan_roots.is_empty() {
                            self.consider(fd.path(), true, true);
                        }
                    } else if self.under_roots(&target) {
                        self.consider(target, false, true);
                    }
                }
            }
            if let Ok(paths) = maps::mapped_files(pid) {
                for path in paths {
                    if self.exhausted() {
                        return;
                    }
                    if self.under_roots(&path) {
                        self.consider(path, false, true);
                    }
                }
            }
        }
    }

    /// Goes on with the walk in `slot` (a new one when empty): depth first, staying on each
    /// root's filesystem (the others are roots of their own when they qualify), never
    /// following symlinks. Stops at the search's bounds with its place kept in `slot`; a walk
    /// that reaches its end leaves `slot` empty, to start over next time. True when it reached
    /// its end and every file it passed was looked at with no pause across new cache since.
    fn walk(&mut self, slot: &mut Option<Walk>) -> bool {
        let walk = slot.get_or_insert_with(|| Walk::new(self.config));
        walk.resume();
        let finished = loop {
            if self.exhausted() {
                break false;
            }
            let Some(mut dir) = walk.pending.pop() else {
                let Some(root) = walk.roots.get(walk.next_root).cloned() else {
                    break true;
                };
                walk.next_root += 1;
                if !is_disk_backed_dir(&root) {
                    debug!("not walking {}: not a directory on a disk", root.display());
                    continue;
                }
                if let Ok(meta) = fs::symlink_metadata(&root) {
                    if meta.is_dir() && walk.first_visit(&meta) {
                        walk.pending.push(PendingDir {
                            path: root,
                            dev: meta.dev(),
                            done: 0,
                        });
                    }
                }
                continue;
            };
            let Ok(entries) = fs::read_dir(&dir.path) else {
                continue;
            };
            let mut stopped = false;
            for entry in entries.skip(dir.done) {
                if self.exhausted() {
                    stopped = true;
                    break;
                }
                dir.done += 1;
                let Ok(entry) = entry else { continue };
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_file() {
                    self.consider(entry.path(), false, false);
                } else if kind.is_dir() {
                    self.examined += 1;
                    if let Ok(meta) = entry.metadata() {
                        if meta.dev() == dir.dev && walk.first_visit(&meta) {
                            walk.pending.push(PendingDir {
                                path: entry.path(),
                                dev: dir.dev,
                                done: 0,
                            });
                        }
                    }
                }
            }
            if stopped {
                // Resumed first next time, past the entries already seen.
                walk.pending.push(dir);
            }
        };
        if finished {
            let fresh = !walk.stale;
            *slot = None;
            fresh
        } else {
            walk.pause();
            false
        }
    }
}

/// The most files remembered from one request to the next; re-counting them costs about
/// 10 µs each.
const MAX_REMEMBERED: usize = 2000;

/// The most directories remembered as visited in one walk (against bind mounts showing a tree
/// twice); past it the walk just goes on, bounded by time.
const MAX_VISITED: usize = 200_000;

/// What the search keeps from one request to the next: where the walk stopped, so the next
/// request goes on from there instead of walking the same first directories again; and the
/// files that held cache, which the next request looks at first.
#[derive(Debug, Default)]
pub struct SearchState {
    walk: Option<Walk>,
    remembered: Vec<Candidate>,
}

impl SearchState {
    /// Remembers the files that may still hold cache, the biggest at most [`MAX_REMEMBERED`].
    pub fn remember(&mut self, files: impl IntoIterator<Item = Candidate>) {
        let mut files: Vec<Candidate> = files.into_iter().collect();
        files.sort_by_key(|c| std::cmp::Reverse(c.cached_pages));
        files.truncate(MAX_REMEMBERED);
        self.remembered = files;
    }
}

#[derive(Debug)]
struct Walk {
    roots: Vec<PathBuf>,
    next_root: usize,
    /// Directories still to read, the next on top.
    pending: Vec<PendingDir>,
    visited: HashSet<(u64, u64)>,
    /// What had come into the page cache when the walk last paused (`None` while it runs).
    paused_at: Option<CacheInflow>,
    /// Something came into the page cache while the walk was paused: files it passed with
    /// no cache may hold some now, and its end does not make a search complete.
    stale: bool,
}

#[derive(Debug)]
struct PendingDir {
    path: PathBuf,
    /// The filesystem the walk stays on.
    dev: u64,
    /// Entries already looked at (a directory too big for one request is resumed).
    done: usize,
}

impl Walk {
    /// A walk over the scan roots, or over every disk-backed filesystem.
    fn new(config: &CandidateConfig) -> Walk {
        let roots = if config.scan_roots.is_empty() {
            match mounts::read() {
                Ok(mounts) => mounts
                    .into_iter()
                    .filter(|m| m.is_disk_backed())
                    .map(|m| m.mount_point)
                    .collect(),
                Err(e) => {
                    debug!("cannot read /proc/mounts: {e}");
                    Vec::new()
                }
            }
        } else {
            config.scan_roots.clone()
        };
        Walk {
            roots,
            next_root: 0,
            pending: Vec::new(),
            visited: HashSet::new(),
            paused_at: None,
            stale: false,
        }
    }

    /// Whether the files already passed may have gained cache since they were looked at.
    /// Cache that comes in while the walk runs is a race any search has; cache that comes in
    /// while it is paused (between requests, or between an inventory refresh and a request)
    /// can be whole files the walk passed while the guest had not read them yet.
    fn is_stale(&self) -> bool {
        self.stale
            || self
                .paused_at
                .is_some_and(|at| vmstat::cache_inflow() != Some(at))
    }

    fn pause(&mut self) {
        self.paused_at = vmstat::cache_inflow();
        // Without the counters nothing says the pause was quiet.
        self.stale |= self.paused_at.is_none();
    }

    fn resume(&mut self) {
        self.stale = self.is_stale();
        self.paused_at = None;
    }

    fn first_visit(&mut self, meta: &fs::Metadata) -> bool {
        self.visited.len() >= MAX_VISITED || self.visited.insert((meta.dev(), meta.ino()))
    }
}

/// Who searches: the walk is shared, but only a request needs its search to be complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The idle refresh: any progress is worth keeping, so it always resumes the walk.
    Inventory,
    /// A `deactivate_file`: it resumes the walk only if no cache came in while it was paused.
    Request,
}

/// Finds the candidate files and counts their cached pages: first the files remembered from
/// the last search, then the walk, then the files processes have open or mapped, until done
/// or out of bounds.
pub fn gather(
    config: &CandidateConfig,
    counter: CacheCounter,
    state: &mut SearchState,
    purpose: Purpose,
) -> Candidates {
    let start = Instant::now();
    let mut search = Search {
        config,
        counter,
        // CPU time, not wall time: on a busy guest a walk at a low priority would otherwise
        // spend its budget waiting for a CPU and find nothing (the agent's requests run at
        // normal priority, but the guest may be busy at any priority). Wall time is bounded
        // too, at four times the budget.
        deadline: Deadline::cpu_after(config.budget, config.budget.saturating_mul(4)),
        known: HashMap::new(),
        files: Vec::new(),
        examined: 0,
        complete: true,
    };
    // The remembered files (the inventory, refreshed while idle) are counted whatever the
    // time: at most MAX_REMEMBERED of them, about 10 µs each. Only the walk for more is timed.
    for file in std::mem::take(&mut state.remembered) {
        if search.examined >= config.max_examined {
            search.complete = false;
            break;
        }
        let follow = file.path.starts_with("/proc");
        search.consider(file.path, follow, false);
    }
    // The walk first, with half the budget: it finds the cold files (nobody has them open),
    // which go first. Then the processes, with what is left: the files in use, marked so.
    // Measured under nested TCG: the process scan alone took the whole budget, the walk never
    // ran, and nothing but in-use files was ever found.
    let full = search.deadline;
    search.deadline = Deadline::cpu_after(config.budget / 2, config.budget.saturating_mul(2));
    let resume = purpose == Purpose::Inventory || !state.walk.as_ref().is_some_and(Walk::is_stale);
    let walked_all = if resume {
        search.walk(&mut state.walk)
    } else {
        // The paused walk passed files while they held no cache, and cache has come in since
        // (agent-deactivate-file: the inventory walked half the files while the guest was
        // still reading them, the request finished that walk and missed two big files). A
        // walk of its own from the roots; the paused one stays for the inventory, which carries
        // it over a big filesystem across refreshes, unless this one saw everything.
        let mut own = None;
        let done = search.walk(&mut own);
        if done {
            state.walk = None;
        }
        done
    };
    search.deadline = full;
    search.complete = true;
    search.processes();
    search.complete &= walked_all;
    let files = search.files;
    let report = CandidateReport {
        files: files.len() as u64,
        big_files: files.iter().filter(|c| c.is_big()).count() as u64,
        small_files: files.iter().filter(|c| !c.is_big()).count() as u64,
        in_use_files: files.iter().filter(|c| c.in_use).count() as u64,
        cached_pages: files.iter().map(|c| c.cached_pages).sum(),
        examined: search.examined,
        complete: search.complete,
        elapsed_us: micros_since(start),
    };
    Candidates { files, report }
}

#[cfg(test)]
mod tests;
