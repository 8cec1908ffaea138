//! seccomp: every thread ballast starts runs under a filter of the system calls its kind of
//! thread makes (`rules.rs`), installed by the thread itself once its setup is done, so a
//! memory-safety bug in a guest-facing parser cannot use the whole system call surface.
//!
//! `--seccomp on` (the default): a system call outside the thread's list raises SIGSYS, whose
//! handler (`sigsys.rs`) prints which thread made which call and ends the process with status
//! 159 (128 + SIGSYS). `--seccomp log`: the call goes through and the kernel logs it (`dmesg`:
//! `audit: type=1326 ... comm="vcpu0" ... syscall=N`), which is how a missing entry is found;
//! `--seccomp off`: no filters.
//!
//! | file | job |
//! | --- | --- |
//! | `mod.rs` | the mode, the thread kinds, compiling the filters once and installing one per thread |
//! | `rules.rs` | the system calls each kind of thread may make (one list per kind, easy to extend) |
//! | `sigsys.rs` | the SIGSYS handler: the clear message and the exit |

mod rules;
mod sigsys;

use std::cell::Cell;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// `--seccomp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SeccompMode {
    /// A system call outside the thread's list ends ballast with a message.
    #[default]
    On,
    /// It goes through, and the kernel logs it (to find what a list lacks).
    Log,
    /// No filters.
    Off,
}

/// The kinds of thread ballast runs, each with its own list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreadKind {
    /// The main thread once the VM is built: the event loop (devices, the API's requests,
    /// lifecycle), then the teardown.
    EventLoop,
    /// A vCPU: KVM_RUN and the exits it dispatches to the buses.
    Vcpu,
    /// The API server: HTTP on the Unix socket.
    Api,
    /// The memory manager: residency, the dirty log, the policy, `--host-enforce`.
    Manager,
    /// The guest agent service: the in-process vsock link to the guest agent.
    Agent,
    /// A disk's I/O thread: reads, writes and syncs of the image.
    BlockIo,
    /// The console thread: the guest's COM1 output to stdout.
    Console,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 7] = [
        ThreadKind::EventLoop,
        ThreadKind::Vcpu,
        ThreadKind::Api,
        ThreadKind::Manager,
        ThreadKind::Agent,
        ThreadKind::BlockIo,
        ThreadKind::Console,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::EventLoop => "event loop",
            ThreadKind::Vcpu => "vCPU",
            ThreadKind::Api => "API",
            ThreadKind::Manager => "memory manager",
            ThreadKind::Agent => "agent link",
            ThreadKind::BlockIo => "disk I/O",
            ThreadKind::Console => "console",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the seccomp filter of the {0} thread: {1}")]
    Build(&'static str, seccompiler::BackendError),
    #[error("cannot compile the seccomp filter of the {0} thread: {1}")]
    Compile(&'static str, seccompiler::BackendError),
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(std::io::Error),
    #[error("cannot install the seccomp filter of the {0} thread: {1}")]
    Apply(&'static str, seccompiler::Error),
}

/// The compiled filters, one per thread kind; none with `--seccomp off`.
struct Filters {
    programs: BTreeMap<ThreadKind, BpfProgram>,
}

static FILTERS: OnceLock<Filters> = OnceLock::new();

thread_local! {
    /// The filter this thread runs under, for the SIGSYS handler's message.
    static KIND: Cell<Option<ThreadKind>> = const { Cell::new(None) };
}

/// Compiles every thread kind's filter for `mode` and installs the SIGSYS handler. Called once,
/// early (before the first thread that installs a filter starts); later calls keep the first
/// mode.
pub fn prepare(mode: SeccompMode) -> Result<(), SeccompError> {
    if FILTERS.get().is_some() {
        return Ok(());
    }
    let mismatch = match mode {
        SeccompMode::Off => {
            let _ = FILTERS.set(Filters {
                programs: BTreeMap::new(),
            });
            return Ok(());
        }
        SeccompMode::On => SeccompAction::Trap,
        SeccompMode::Log => SeccompAction::Log,
    };
    one_malloc_arena();
    let mut programs = BTreeMap::new();
    for kind in ThreadKind::ALL {
        programs.insert(kind, compile(kind, mismatch.clone())?);
    }
    if mode == SeccompMode::On {
        sigsys::install().map_err(SeccompError::Handler)?;
    }
    let _ = FILTERS.set(Filters { programs });
    Ok(())
}

/// glibc gives each thread a malloc arena of its own, and the first time it trims one (a thread
/// freed a big enough block) it opens `/proc/sys/vm/overcommit_memory` — an `openat` from a
/// thread whose filter has none (seen on the API thread after a 300 KB request header). With
/// one arena, the main one, memory goes back with `brk`, which every thread may call; ballast's
/// few threads allocate little on their hot paths, so sharing the arena costs nothing that
/// matters. Must run before the first thread starts (an arena made before stays in use).
#[cfg(target_env = "gnu")]
fn one_malloc_arena() {
    // SAFETY: mallopt only sets a malloc parameter; no thread that allocates runs yet.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) } != 1 {
        log::warn!(
            "seccomp: cannot keep malloc to one arena; a thread may be stopped for an openat"
        );
    }
}

/// Other C libraries (musl) trim without opening anything.
#[cfg(not(target_env = "gnu"))]
fn one_malloc_arena() {}

fn compile(kind: ThreadKind, mismatch: SeccompAction) -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = rules::allowed(kind)
        .into_iter()
        .map(|syscall| (syscall, Vec::new()))
        .collect();
    let build = |e| SeccompError::Build(kind.name(), e);
    match rules.entry(libc::SYS_ioctl) {
        // A thread without ioctl may still put the terminal back (the panic hook does, on
        // whatever thread panics): `tcsetattr` on stdin and nothing else, so that a panic there
        // prints its own message instead of ending in a seccomp error with the terminal left raw.
        Entry::Vacant(ioctl) => {
            ioctl.insert(vec![
                terminal_rule(kind, libc::TCGETS)?,
                terminal_rule(kind, libc::TCSETS)?,
            ]);
        }
        // A thread with ioctl: KVM's, and the 'T' family (terminal settings, FIONBIO, FIOCLEX,
        // the TAP's TUNSET*) without the terminal calls that reach other processes or the
        // console (TIOCSTI types into a terminal, TIOCLINUX, TIOCCONS, TIOCSETD).
        Entry::Occupied(mut ioctl) => {
            *ioctl.get_mut() = ioctl_rules().map_err(build)?;
        }
    }
    // Sockets are Unix sockets (the vsock device's host side, the agent link's pair).
    for call in [libc::SYS_socket, libc::SYS_socketpair] {
        if let Some(socket) = rules.get_mut(&call) {
            *socket = vec![SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                libc::AF_UNIX as u64,
            )
            .map_err(build)?])
            .map_err(build)?];
        }
    }
    let arch = TargetArch::x86_64;
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch)
        .map_err(|e| SeccompError::Build(kind.name(), e))?;
    BpfProgram::try_from(filter).map_err(|e| SeccompError::Compile(kind.name(), e))
}

/// The ioctl type byte (bits 8-15 of the request) of KVM's calls and of the 'T' family.
const KVMIO: u64 = 0xAE;
const TTY_AND_TUN: u64 = b'T' as u64;

/// The 'T' ioctls no thread of ballast makes, and which reach beyond the VMM.
const TERMINAL_REACH: [u64; 4] = [
    libc::TIOCSTI,
    libc::TIOCLINUX,
    libc::TIOCCONS,
    libc::TIOCSETD,
];

/// ioctl for a thread whose list has it: a KVM request, or a 'T' one other than
/// `TERMINAL_REACH`.
fn ioctl_rules() -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let request = |op, value| SeccompCondition::new(1, SeccompCmpArgLen::Dword, op, value);
    let of_type = |t: u64| request(SeccompCmpOp::MaskedEq(0xff00), t << 8);
    let mut tty = vec![of_type(TTY_AND_TUN)?];
    for denied in TERMINAL_REACH {
        tty.push(request(SeccompCmpOp::Ne, denied)?);
    }
    Ok(vec![
        SeccompRule::new(vec![of_type(KVMIO)?])?,
        SeccompRule::new(tty)?,
    ])
}

/// `ioctl(STDIN_FILENO, request, ...)`: `tcsetattr(0, TCSANOW, ...)` makes TCGETS (glibc reads
/// the settings first), then TCSETS.
fn terminal_rule(kind: ThreadKind, request: u64) -> Result<SeccompRule, SeccompError> {
    let build = |e| SeccompError::Build(kind.name(), e);
    let arg = |index, value| {
        SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
            .map_err(build)
    };
    SeccompRule::new(vec![arg(0, libc::STDIN_FILENO as u64)?, arg(1, request)?]).map_err(build)
}

/// Installs `kind`'s filter on the calling thread (nothing if `prepare` was not called, or with
/// `--seccomp off`). From here on the thread can make only the system calls of its list.
pub fn apply(kind: ThreadKind) -> Result<(), SeccompError> {
    let Some(program) = FILTERS.get().and_then(|f| f.programs.get(&kind)) else {
        return Ok(());
    };
    KIND.with(|k| k.set(Some(kind)));
    seccompiler::apply_filter(program).map_err(|e| SeccompError::Apply(kind.name(), e))
}

/// `apply` for a thread that has no one to hand the error to: a thread that cannot be confined
/// must not run, so ballast stops with the reason.
pub fn apply_or_exit(kind: ThreadKind) {
    if let Err(e) = apply(kind) {
        eprintln!("ballast: {e}");
        std::process::exit(2);
    }
}

/// The kind of filter the calling thread runs under.
pub(crate) fn current_kind() -> Option<ThreadKind> {
    KIND.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Runs `child` (an ignored test of this module) in a process of its own, in `mode`.
    fn run_child(child: &str, mode: &str) -> std::process::Output {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &format!("seccomp::tests::{child}")])
            .args(["--ignored", "--nocapture", "--test-threads=1"])
            .env("BALLAST_SECCOMP_CHILD", mode)
            .output()
            .unwrap()
    }

    #[test]
    fn a_forbidden_call_from_a_vcpu_thread_ends_the_process_with_a_message() {
        let out = run_child("child_vcpu_makes_a_forbidden_call", "on");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(128 + libc::SIGSYS), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "ballast: seccomp: the vCPU thread made system call {}, which its filter does \
                 not allow; stopping",
                libc::SYS_socket
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("the call went through"), "{stderr}");
    }

    #[test]
    fn with_log_the_forbidden_call_goes_through() {
        let out = run_child("child_vcpu_makes_a_forbidden_call", "log");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("the call went through"), "{stderr}");
    }

    #[test]
    #[ignore = "run by the tests above, in a process of its own"]
    fn child_vcpu_makes_a_forbidden_call() {
        let mode = match std::env::var("BALLAST_SECCOMP_CHILD").as_deref() {
            Ok("on") => SeccompMode::On,
            Ok("log") => SeccompMode::Log,
            _ => return,
        };
        prepare(mode).unwrap();
        std::thread::Builder::new()
            .name("vcpu0".into())
            .spawn(|| {
                apply(ThreadKind::Vcpu).unwrap();
                // A vCPU has no business opening sockets.
                // SAFETY: a plain system call; the descriptor, if any, is closed below.
                let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
                eprintln!("the call went through: {fd}");
                // SAFETY: closes the descriptor just made (or fails harmlessly on -1).
                unsafe { libc::close(fd) };
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_thread_without_ioctl_may_restore_the_terminal_and_nothing_else() {
        let out = run_child("child_disk_io_restores_the_terminal", "on");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // tcsetattr went through the filter (stdin is no terminal here: ENOTTY), then the
        // other terminal ioctl stopped the process.
        assert!(stderr.contains("tcsetattr went through"), "{stderr}");
        assert_eq!(out.status.code(), Some(128 + libc::SIGSYS), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "the disk I/O thread made system call {}",
                libc::SYS_ioctl
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("FIONREAD went through"), "{stderr}");
    }

    #[test]
    #[ignore = "run by the test above, in a process of its own"]
    fn child_disk_io_restores_the_terminal() {
        if std::env::var("BALLAST_SECCOMP_CHILD").as_deref() != Ok("on") {
            return;
        }
        prepare(SeccompMode::On).unwrap();
        std::thread::Builder::new()
            .name("disk-io".into())
            .spawn(|| {
                apply(ThreadKind::BlockIo).unwrap();
                // SAFETY: termios is plain data; tcsetattr only reads it.
                let settings: libc::termios = unsafe { std::mem::zeroed() };
                // SAFETY: a valid termios; stdin is not a terminal, so nothing changes.
                let rc = unsafe { libc::tcsetattr(0, libc::TCSANOW, &settings) };
                eprintln!("tcsetattr went through: {rc}");
                let mut n: libc::c_int = 0;
                // SAFETY: FIONREAD writes one int into `n`.
                let rc = unsafe { libc::ioctl(0, libc::FIONREAD, &mut n) };
                eprintln!("FIONREAD went through: {rc}");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// The event loop's calls that pass the argument filters, then `forbidden`: the process
    /// must stop on it, naming `syscall`.
    fn event_loop_stops_on(forbidden: &str, syscall: libc::c_long) {
        let out = run_child("child_event_loop_makes_calls", forbidden);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("allowed calls went through"), "{stderr}");
        assert_eq!(out.status.code(), Some(128 + libc::SIGSYS), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "the event loop thread made system call {syscall}, which its filter does not allow"
            )),
            "{stderr}"
        );
        assert!(
            !stderr.contains("the forbidden call went through"),
            "{stderr}"
        );
    }

    #[test]
    fn tiocsti_is_refused_to_a_thread_with_ioctl() {
        event_loop_stops_on("tiocsti", libc::SYS_ioctl);
    }

    #[test]
    fn an_ioctl_of_another_family_is_refused() {
        event_loop_stops_on("blkgetsize64", libc::SYS_ioctl);
    }

    #[test]
    fn an_inet_socket_is_refused() {
        event_loop_stops_on("inet", libc::SYS_socket);
    }

    #[test]
    #[ignore = "run by the tests above, in a process of its own"]
    fn child_event_loop_makes_calls() {
        let Ok(forbidden) = std::env::var("BALLAST_SECCOMP_CHILD") else {
            return;
        };
        prepare(SeccompMode::On).unwrap();
        std::thread::Builder::new()
            .name("event-loop".into())
            .spawn(move || {
                apply(ThreadKind::EventLoop).unwrap();
                let mut n: libc::c_int = 0;
                // SAFETY: each ioctl gets a valid pointer to an int (or none); on stdin, which
                // is no terminal or KVM descriptor here, they fail with ENOTTY after the filter.
                unsafe {
                    libc::ioctl(0, libc::FIONREAD, &mut n);
                    libc::ioctl(0, libc::TCGETS, &mut [0u8; 64]);
                    libc::ioctl(0, 0xAE00); // KVM_GET_API_VERSION
                    libc::ioctl(0, 0xc008_aec0_u64, &mut [0u64; 4]); // KVM_CLEAR_DIRTY_LOG
                }
                // SAFETY: a plain system call; the descriptor is closed right away.
                let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
                assert!(fd >= 0);
                // SAFETY: closes the descriptor just made.
                unsafe { libc::close(fd) };
                eprintln!("allowed calls went through");
                let c = b'x';
                // SAFETY: as above: plain calls with valid pointers, on stdin or a new socket.
                let rc = unsafe {
                    match forbidden.as_str() {
                        "tiocsti" => libc::ioctl(0, libc::TIOCSTI, &c),
                        "blkgetsize64" => libc::ioctl(0, 0x8008_1272_u64, &mut [0u64; 1]),
                        _ => libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0),
                    }
                };
                eprintln!("the forbidden call went through: {rc}");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn every_kind_compiles_in_both_modes() {
        for kind in ThreadKind::ALL {
            for mismatch in [SeccompAction::Trap, SeccompAction::Log] {
                let program = compile(kind, mismatch).unwrap();
                assert!(!program.is_empty(), "{kind:?}");
            }
        }
    }
}
