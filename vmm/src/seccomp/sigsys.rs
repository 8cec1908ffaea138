//! The SIGSYS handler of `--seccomp on`: a thread made a system call its filter does not allow.
//! It prints which thread and which call, and ends the process (status 159, 128 + SIGSYS):
//! whatever asked for that call may be a guest exploiting a bug, and must not go on.
//!
//! Only async-signal-safe steps: the message is built in a stack buffer and written with one
//! `write(2)` to stderr, then `_exit(2)` (both in every thread's list).

use std::io;

use super::ThreadKind;

/// Where the system call number sits in `siginfo_t` for SIGSYS (`si_syscall`, after
/// `si_call_addr`): the first 16 bytes are signo, errno, code and padding.
const SI_SYSCALL_OFFSET: usize = 16 + 8;

pub fn install() -> io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the fields set are the handler and its flags.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: installs `handler`, which only does async-signal-safe work, for SIGSYS.
    if unsafe { libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

extern "C" fn handler(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // SAFETY: the kernel hands a valid siginfo_t for SIGSYS, whose `si_syscall` (an int) sits at
    // this offset on x86-64.
    let syscall = unsafe { *(info as *const u8).add(SI_SYSCALL_OFFSET).cast::<i32>() };
    let kind = super::current_kind().map_or("a", ThreadKind::name);
    let mut buf = Buffer::default();
    buf.push(b"ballast: seccomp: the ");
    buf.push(kind.as_bytes());
    buf.push(b" thread made system call ");
    buf.push_number(syscall);
    buf.push(
        b", which its filter does not allow; stopping (run with --seccomp log to let it \
          through and see it in dmesg, and report it)\n",
    );
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer outlives the call.
    unsafe {
        libc::write(libc::STDERR_FILENO, buf.bytes.as_ptr().cast(), buf.len);
        libc::_exit(128 + libc::SIGSYS);
    }
}

/// A fixed buffer: no allocation in a signal handler.
struct Buffer {
    bytes: [u8; 256],
    len: usize,
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer {
            bytes: [0; 256],
            len: 0,
        }
    }
}

impl Buffer {
    fn push(&mut self, text: &[u8]) {
        let n = text.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&text[..n]);
        self.len += n;
    }

    fn push_number(&mut self, n: i32) {
        let mut digits = [0u8; 12];
        let mut i = digits.len();
        let mut v = i64::from(n).unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if n < 0 {
            i -= 1;
            digits[i] = b'-';
        }
        self.push(&digits[i..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_without_allocating() {
        let mut buf = Buffer::default();
        buf.push(b"call ");
        buf.push_number(0);
        buf.push(b" ");
        buf.push_number(435);
        buf.push(b" ");
        buf.push_number(-1);
        assert_eq!(&buf.bytes[..buf.len], b"call 0 435 -1");
    }
}
