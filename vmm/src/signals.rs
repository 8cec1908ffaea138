//! SIGINT and SIGTERM as an event on the VMM loop (a signalfd), and the vCPU kick signal.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// Blocks SIGINT and SIGTERM in this thread (and every thread it spawns afterwards) and returns
/// a signalfd that becomes readable when one arrives. Call before spawning any thread.
pub fn termination_signalfd() -> std::io::Result<SignalFd> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `mask` is a valid sigset_t owned by this frame.
    unsafe {
        libc::sigemptyset(&mut mask);
        libc::sigaddset(&mut mask, libc::SIGINT);
        libc::sigaddset(&mut mask, libc::SIGTERM);
    }
    // SAFETY: `mask` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    // SAFETY: -1 asks for a new fd; `mask` is initialised.
    let fd = unsafe { libc::signalfd(-1, &mask, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(SignalFd(unsafe { File::from_raw_fd(fd) }))
}

pub struct SignalFd(File);

impl SignalFd {
    /// The signal that arrived, if any.
    pub fn read(&mut self) -> Option<i32> {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        match self.0.read(&mut info) {
            Ok(n) if n == info.len() => {
                // ssi_signo is the first field, a u32.
                Some(u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32)
            }
            _ => None,
        }
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Installs a no-op handler for the vCPU kick signal: its only job is to make KVM_RUN return
/// EINTR so the vCPU thread sees that the VM is stopping.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    extern "C" fn kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    vmm_sys_util::signal::register_signal_handler(crate::vstate::vcpu::kick_signal(), kick)
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
