//! What the API tests and the API load benchmark share: tiny hand-made guest kernels, a real
//! `ballast run` process on a real socket, and a raw HTTP/1.1 exchange over that socket.
//!
//! A stock Linux kernel cannot boot on the project's machines (ring-0 guest code is emulated and
//! the emulator lacks instructions, see shared/nested-kvm.md), so the tests boot minimal ELF
//! "vmlinux" files built here: an ELF header and one PT_LOAD segment at 16 MiB, entered by
//! ballast in long mode like any ELF kernel.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the test kernels are loaded and entered.
const LOAD_ADDR: u64 = 0x100_0000;

/// A guest that runs forever.
#[derive(Debug, Clone, Copy)]
pub enum Guest {
    /// `hlt` in a loop: the vCPU sleeps inside KVM_RUN and costs no host CPU.
    Halt,
    /// Counts in a loop and writes a `.` to COM1 every 4096 iterations: the guest's progress,
    /// visible on ballast's stdout. Keeps its vCPU thread busy.
    Ticker,
    /// Polls COM1 and echoes each byte it receives, a Ctrl-C (0x03) as `!`: what reaches the
    /// guest from ballast's stdin. Keeps its vCPU thread busy.
    Echo,
}

impl Guest {
    pub fn code(self) -> Vec<u8> {
        match self {
            Guest::Halt => vec![
                0xf4, // hlt
                0xeb, 0xfd, // jmp back to hlt
            ],
            Guest::Ticker => vec![
                0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8 (COM1)
                0x31, 0xc9, // xor ecx, ecx
                0xff, 0xc1, // loop: inc ecx
                0xf7, 0xc1, 0xff, 0x0f, 0x00, 0x00, // test ecx, 0xfff
                0x75, 0xf6, // jnz loop
                0xb0, b'.', // mov al, '.'
                0xee, // out dx, al
                0xeb, 0xf1, // jmp loop
            ],
            Guest::Echo => vec![
                0x66, 0xba, 0xfd, 0x03, // start: mov dx, 0x3fd (line status)
                0xec, // poll: in al, dx
                0xa8, 0x01, // test al, 1 (data ready)
                0x74, 0xfb, // jz poll
                0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
                0xec, // in al, dx
                0x3c, 0x03, // cmp al, 3 (Ctrl-C)
                0x75, 0x02, // jne echo
                0xb0, b'!', // mov al, '!'
                0xee, // echo: out dx, al
                0xeb, 0xe9, // jmp start
            ],
        }
    }
}

/// An ELF64 x86-64 executable with `code` as its only PT_LOAD segment, at and entered at 16 MiB.
pub fn elf_kernel(code: &[u8]) -> Vec<u8> {
    const EHDR_SIZE: u16 = 64;
    const PHDR_SIZE: u16 = 56;
    const CODE_OFFSET: u64 = 0x1000;
    let mut elf = Vec::new();
    // e_ident: magic, 64-bit, little-endian, version 1, System V ABI, padding.
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // e_entry
    elf.extend_from_slice(&u64::from(EHDR_SIZE).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&EHDR_SIZE.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&PHDR_SIZE.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    assert_eq!(elf.len(), EHDR_SIZE as usize);
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R+X
    elf.extend_from_slice(&CODE_OFFSET.to_le_bytes()); // p_offset
    elf.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&(code.len() as u64).to_le_bytes()); // p_filesz
    elf.extend_from_slice(&(code.len() as u64).to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    elf.resize(CODE_OFFSET as usize, 0);
    elf.extend_from_slice(code);
    elf
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under /tmp (short, so socket paths stay under 108 bytes), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
        let path = PathBuf::from(format!("/tmp/ballast-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How to start one `ballast run`.
#[derive(Debug, Clone)]
pub struct Launch {
    pub guest: Guest,
    pub memory: &'static str,
    pub vcpus: u32,
    pub balloon: &'static str,
    /// Bytes of initramfs to load: ballast copies it into guest RAM, which makes that much RAM
    /// resident on the host without any guest code running.
    pub initrd_bytes: usize,
    /// More `ballast run` arguments.
    pub args: &'static [&'static str],
}

impl Default for Launch {
    fn default() -> Self {
        Self {
            guest: Guest::Halt,
            memory: "64M",
            vcpus: 1,
            balloon: "",
            initrd_bytes: 0,
            args: &[],
        }
    }
}

/// A running `ballast run` with its API socket; killed on drop if still running.
pub struct Ballast {
    pub dir: TempDir,
    pub sock: PathBuf,
    pub child: Child,
    pub stdout: Arc<Mutex<Vec<u8>>>,
    pub stderr: Arc<Mutex<Vec<u8>>>,
}

pub fn ballast_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ballast")
}

fn drain(mut from: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    out
}

impl Ballast {
    pub fn start(launch: Launch) -> Self {
        let dir = TempDir::new("api");
        let kernel = dir.0.join("vmlinux");
        std::fs::write(&kernel, elf_kernel(&launch.guest.code())).unwrap();
        let sock = dir.0.join("api.sock");
        let mut cmd = Command::new(ballast_bin());
        cmd.arg("run")
            .arg("--kernel")
            .arg(&kernel)
            .args(["--memory", launch.memory])
            .args(["--vcpus", &launch.vcpus.to_string()])
            .arg("--api-sock")
            .arg(&sock)
            .args(["--balloon", launch.balloon])
            .args(launch.args);
        if launch.initrd_bytes > 0 {
            let initrd = dir.0.join("initrd");
            std::fs::write(&initrd, vec![0x5a; launch.initrd_bytes]).unwrap();
            cmd.arg("--initrd").arg(initrd);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ballast run");
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());
        let mut ballast = Ballast {
            dir,
            sock,
            child,
            stdout,
            stderr,
        };
        ballast.wait_ready();
        ballast
    }

    /// Waits until the API answers.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "ballast run exited with {status} before its API answered: {}",
                    self.stderr_text()
                );
            }
            if self.sock.exists() && UnixStream::connect(&self.sock).is_ok() {
                let answer = http(&self.sock, "GET", "/vm", None);
                if answer.status == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "ballast's API did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    pub fn stdout_len(&self) -> usize {
        self.stdout.lock().unwrap().len()
    }

    /// stdout's length once it has stopped growing for 200 ms (at most 5 s): what a paused
    /// guest wrote just before the pause is still on its way through the console thread and
    /// the pipe when the pause is answered.
    pub fn settled_stdout_len(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut len = self.stdout_len();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.stdout_len();
            if now == len || Instant::now() >= deadline {
                return now;
            }
            len = now;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once ballast has exited within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str) -> HttpAnswer {
        http(&self.sock, "GET", path, None)
    }

    pub fn send(&self, method: &str, path: &str, body: &str) -> HttpAnswer {
        http(&self.sock, method, path, Some(body.as_bytes()))
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        let answer = self.get(path);
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
        answer.json()
    }
}

impl Drop for Ballast {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `fault_message` of an error answer.
    pub fn fault(&self) -> String {
        self.json()["fault_message"]
            .as_str()
            .unwrap_or_else(|| panic!("no fault_message in {}", self.body))
            .to_string()
    }
}

/// One HTTP/1.1 exchange written by hand (`Connection: close`, read to EOF), so the server is
/// tested without any client library in between.
pub fn http(sock: &Path, method: &str, path: &str, body: Option<&[u8]>) -> HttpAnswer {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    raw_exchange(sock, &bytes)
}

/// Writes `request` as is and parses the answer.
pub fn raw_exchange(sock: &Path, request: &[u8]) -> HttpAnswer {
    let mut stream = UnixStream::connect(sock).expect("connect to the API socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The server may answer (413) and close before reading all of a large body.
    let _ = stream.write_all(request);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_answer(&raw)
}

pub fn parse_answer(raw: &[u8]) -> HttpAnswer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// CPU time (user + system, in clock ticks) of each thread of `pid` whose name starts with
/// `prefix`, from /proc/<pid>/task/*/stat.
pub fn thread_cpu_ticks(pid: u32, prefix: &str) -> u64 {
    let mut total = 0;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "tid (comm) state ..." — comm may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // After the comm: state is field 3, utime field 14, stime field 15 (1-based, man 5 proc).
        let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        total += utime + stime;
    }
    total
}
