//! The system calls each kind of thread may make. A list is the calls the thread's own code and
//! what it calls (std, glibc, tokio, the rust-vmm crates) were seen to make; a call missing from
//! one shows up with `--seccomp log` (see `mod.rs`) and goes in the list of its thread kind,
//! with a word on what makes it when that is not obvious.
//!
//! Three calls are filtered on their arguments too (`mod.rs`): `ioctl` is KVM's requests and
//! the 'T' family (terminal settings, FIONBIO, the TAP's TUNSET*) less the terminal calls that
//! reach beyond ballast (TIOCSTI and kin); `socket` and `socketpair` make Unix sockets only; and
//! a thread whose list has no ioctl may still read and set the terminal's settings on stdin,
//! which the panic hook does to put the terminal back.

use libc::*;

use super::ThreadKind;

/// Every thread: memory, locks, time, signals it handles, its own exit, and logging to stderr.
const EVERY_THREAD: &[c_long] = &[
    SYS_read,
    SYS_write,
    SYS_readv,
    SYS_writev,
    SYS_close,
    SYS_futex,
    SYS_mmap,
    SYS_munmap,
    SYS_mremap,
    SYS_mprotect,
    SYS_madvise,
    SYS_brk,
    SYS_rt_sigreturn,
    SYS_rt_sigprocmask,
    // Rust's stack-overflow guard: taken down when the thread ends.
    SYS_sigaltstack,
    SYS_exit,
    SYS_exit_group,
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_nanosleep,
    SYS_sched_yield,
    SYS_sched_getaffinity,
    // HashMap's random keys, once per thread.
    SYS_getrandom,
    SYS_gettid,
    SYS_getpid,
    // abort() on a panic that cannot unwind.
    SYS_tgkill,
    SYS_rseq,
    SYS_fcntl,
    SYS_fstat,
    SYS_newfstatat,
    SYS_statx,
    SYS_lseek,
    SYS_poll,
    SYS_ppoll,
    SYS_prctl,
];

/// A vCPU: KVM_RUN and the exits it dispatches. A virtio device activates and resets on this
/// thread (eventfds written, duplicated and closed, the balloon's statistics timer stopped),
/// and COM1 writes the guest's console to stdout here.
const VCPU: &[c_long] = &[SYS_ioctl, SYS_dup, SYS_timerfd_settime, SYS_eventfd2];

/// The event loop: epoll, the devices' eventfds and timers, host sockets of the vsock device
/// (accepting, connecting to `PATH_P`), the balloon's madvise and hole punching, the API's
/// residency (`mincore`), kicking vCPUs out of KVM_RUN; at teardown, the socket files and
/// `--host-enforce`'s cgroup.
const EVENT_LOOP: &[c_long] = &[
    SYS_epoll_wait,
    SYS_epoll_pwait,
    SYS_epoll_ctl,
    SYS_eventfd2,
    SYS_timerfd_settime,
    SYS_timerfd_gettime,
    SYS_ioctl,
    SYS_dup,
    SYS_accept4,
    SYS_socket,
    SYS_connect,
    SYS_socketpair,
    SYS_shutdown,
    SYS_getsockopt,
    SYS_setsockopt,
    SYS_sendto,
    SYS_recvfrom,
    SYS_sendmsg,
    SYS_recvmsg,
    SYS_mincore,
    SYS_fallocate,
    SYS_kill,
    SYS_openat,
    SYS_unlink,
    SYS_unlinkat,
    SYS_rmdir,
    SYS_getdents64,
    SYS_rt_sigaction,
    SYS_sysinfo,
];

/// The API server (tokio on one thread): epoll, the listening socket and its connections, the
/// eventfd that hands requests to the event loop.
const API: &[c_long] = &[
    SYS_epoll_wait,
    SYS_epoll_pwait,
    SYS_epoll_pwait2,
    SYS_epoll_ctl,
    SYS_epoll_create1,
    SYS_eventfd2,
    SYS_ioctl,
    SYS_accept4,
    SYS_getsockopt,
    SYS_setsockopt,
    SYS_getsockname,
    SYS_getpeername,
    SYS_shutdown,
    SYS_sendto,
    SYS_recvfrom,
    SYS_sendmsg,
    SYS_recvmsg,
    SYS_timerfd_create,
    SYS_timerfd_settime,
    SYS_unlink,
];

/// The memory manager: residency (`mincore`), KVM's dirty log (ioctls on the VM), the balloon's
/// target, and `--host-enforce`'s cgroup files (memory.current opened each epoch).
const MANAGER: &[c_long] = &[
    SYS_ioctl,
    SYS_mincore,
    SYS_openat,
    SYS_pread64,
    SYS_pwrite64,
    // memory.high's writer sets the file's length after each write (harmless on cgroupfs;
    // needed where a regular file stands in for it): limit-host-enforce was stopped without it.
    SYS_ftruncate,
];

/// The agent link: a socket pair to the vsock device, and waiting on it.
const AGENT: &[c_long] = &[
    SYS_socketpair,
    SYS_ioctl,
    SYS_shutdown,
    SYS_sendto,
    SYS_recvfrom,
    SYS_setsockopt,
    SYS_getsockopt,
];

/// A disk's I/O thread: the image, and the eventfd that tells the event loop a request is done.
const BLOCK_IO: &[c_long] = &[
    SYS_pread64,
    SYS_pwrite64,
    SYS_preadv,
    SYS_pwritev,
    SYS_fdatasync,
    SYS_fsync,
];

/// The console thread: stdout, which every thread may write.
const CONSOLE: &[c_long] = &[];

/// What `kind` may call: the common list and its own.
pub fn allowed(kind: ThreadKind) -> Vec<i64> {
    let own = match kind {
        ThreadKind::EventLoop => EVENT_LOOP,
        ThreadKind::Vcpu => VCPU,
        ThreadKind::Api => API,
        ThreadKind::Manager => MANAGER,
        ThreadKind::Agent => AGENT,
        ThreadKind::BlockIo => BLOCK_IO,
        ThreadKind::Console => CONSOLE,
    };
    let mut calls: Vec<i64> = EVERY_THREAD.iter().chain(own).copied().collect();
    calls.sort_unstable();
    calls.dedup();
    calls
}
