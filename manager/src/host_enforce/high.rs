//! The cgroup's `memory.high`, opened once when ballast is placed and kept open, so that running
//! out of descriptors later cannot stop ballast from writing it; a write that fails is tried
//! again (on a fresh descriptor) after a backoff that doubles up to a minute, instead of giving
//! `--host-enforce` up for the VM's lifetime.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroup::CgroupError;

/// The wait after a first failed write; it doubles with each failure in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct MemoryHigh {
    path: PathBuf,
    /// `None` after a failed write: the next try opens the file again.
    file: Option<File>,
    /// After a failed write: when to try again, and how long the wait was.
    retry: Option<(Instant, Duration)>,
}

impl MemoryHigh {
    /// Opens `dir`'s memory.high for writing.
    pub fn open(dir: &Path) -> Result<Self, CgroupError> {
        let path = dir.join("memory.high");
        if !path.exists() {
            return Err(CgroupError::NoMemoryHigh {
                path: dir.to_path_buf(),
            });
        }
        let file = open(&path)?;
        Ok(Self {
            path,
            file: Some(file),
            retry: None,
        })
    }

    /// Whether a write may be tried at `now` (no failure, or its backoff has passed).
    pub fn due(&self, now: Instant) -> bool {
        self.retry.is_none_or(|(at, _)| now >= at)
    }

    /// How long until the next try, after a failure.
    pub fn retry_in(&self, now: Instant) -> Option<Duration> {
        self.retry.map(|(at, _)| at.saturating_duration_since(now))
    }

    /// Writes bytes, or `max` for `None`, in one `write(2)` at offset 0, as the kernel wants
    /// cgroup files written. On failure the next try waits (see `due`).
    pub fn write(&mut self, bytes: Option<u64>, now: Instant) -> Result<(), CgroupError> {
        let result = self.try_write(bytes);
        match &result {
            Ok(()) => self.retry = None,
            Err(_) => {
                self.file = None;
                let backoff = self
                    .retry
                    .map_or(FIRST_BACKOFF, |(_, last)| (last * 2).min(MAX_BACKOFF));
                self.retry = Some((now + backoff, backoff));
            }
        }
        result
    }

    fn try_write(&mut self, bytes: Option<u64>) -> Result<(), CgroupError> {
        let value = bytes.map_or("max".to_string(), |b| b.to_string());
        if self.file.is_none() {
            self.file = Some(open(&self.path)?);
        }
        let Some(file) = &self.file else {
            return Ok(());
        };
        let io = |source| CgroupError::Io {
            what: "write to",
            path: self.path.clone(),
            source,
        };
        let written = file.write_at(value.as_bytes(), 0).map_err(io)?;
        if written != value.len() {
            return Err(io(std::io::Error::other("a short write")));
        }
        // A regular file (the tests' stand-in) keeps old bytes past the new value; cgroupfs has
        // no length to set and may refuse, which is harmless.
        let _ = file.set_len(value.len() as u64);
        Ok(())
    }
}

fn open(path: &Path) -> Result<File, CgroupError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| CgroupError::Io {
            what: "open",
            path: path.to_path_buf(),
            source,
        })
}
