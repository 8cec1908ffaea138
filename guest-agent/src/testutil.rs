//! Helpers for the unit tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// xorshift64*: enough randomness for fuzz-style tests, reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A directory under the workspace's target dir, which is on the machine's disk (unlike /tmp,
/// which is tmpfs on many hosts): page cache tests need a disk-backed filesystem.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/agent-unit-tests")
            .join(format!(
                "{name}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// False on tmpfs or ramfs, where page cache cannot be dropped: the tests that drop cache
    /// then skip (with a message) instead of failing.
    pub fn disk_backed(&self) -> bool {
        let dir = std::fs::File::open(&self.0).unwrap();
        let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: valid descriptor; `stat` is written by the kernel on success only.
        let ret =
            unsafe { libc::fstatfs(std::os::fd::AsRawFd::as_raw_fd(&dir), stat.as_mut_ptr()) };
        assert_eq!(ret, 0);
        // SAFETY: fstatfs succeeded.
        let magic = unsafe { stat.assume_init() }.f_type as u32;
        let disk = !crate::proc::mounts::is_memory_backed_magic(magic);
        if !disk {
            eprintln!("skipped: {} is memory-backed", self.0.display());
        }
        disk
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
