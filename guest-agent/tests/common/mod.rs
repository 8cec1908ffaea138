//! Shared by the integration tests: a running `ballast-agent`, test directories on disk, and
//! an independent page cache probe.

#![allow(dead_code)] // each test file uses its own part

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ballast_agent::AgentClient;

pub const PAGE: u64 = 4096;

/// A fresh directory under Cargo's per-target temporary dir (inside target/, on the machine's
/// disk), removed on drop.
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TestDir(path.canonicalize().unwrap())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Why `dir` cannot hold droppable page cache, if it cannot (it is on tmpfs or ramfs).
pub fn not_disk_backed(dir: &Path) -> Option<String> {
    let file = File::open(dir).unwrap();
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: valid descriptor; `stat` is written by the kernel on success only.
    assert_eq!(
        unsafe { libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) },
        0
    );
    // SAFETY: fstatfs succeeded.
    let magic = unsafe { stat.assume_init() }.f_type as u32;
    match magic {
        0x0102_1994 => Some(format!("{} is on tmpfs", dir.display())),
        0x8584_58f6 => Some(format!("{} is on ramfs", dir.display())),
        _ => None,
    }
}

/// Pages of `path` in the page cache, by mmap + mincore (independent of the agent's code).
pub fn cached_pages(path: &Path) -> u64 {
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    // SAFETY: a fresh read-only mapping, only passed to mincore and unmapped.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    let mut vec = vec![0u8; len.div_ceil(PAGE as usize)];
    // SAFETY: the mapping above and a vector of one byte per page.
    assert_eq!(unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) }, 0);
    // SAFETY: the mapping above.
    unsafe { libc::munmap(addr, len) };
    vec.iter().filter(|&&b| b & 1 != 0).count() as u64
}

/// Writes `pages` pages, syncs them, and reads them back: clean and cached.
pub fn write_cached_file(path: &Path, pages: u64) {
    let mut f = File::create(path).unwrap();
    f.write_all(&vec![0x5a; (pages * PAGE) as usize]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::read(path).unwrap();
}

/// `ballast-agent --listen-unix`, killed on drop (its log is printed if the test failed).
pub struct Agent {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
    _dir: TestDir,
}

impl Agent {
    pub fn start(extra_args: &[&str]) -> Agent {
        let dir = TestDir::new("agent-run");
        let socket = dir.path().join("agent.sock");
        let log = dir.path().join("agent.log");
        let child = Command::new(env!("CARGO_BIN_EXE_ballast-agent"))
            .arg("--listen-unix")
            .arg(&socket)
            .args(["--log-level", "debug"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("cannot start ballast-agent");
        let agent = Agent {
            child,
            socket,
            log,
            _dir: dir,
        };
        let start = Instant::now();
        while UnixStream::connect(&agent.socket).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the agent did not listen within 10 s:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        agent
    }

    pub fn connect(&self) -> UnixStream {
        UnixStream::connect(&self.socket).unwrap()
    }

    pub fn client(&self) -> AgentClient<UnixStream> {
        AgentClient::connect_unix(&self.socket)
            .unwrap()
            .with_timeout(Duration::from_secs(10))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.log());
        }
    }
}
