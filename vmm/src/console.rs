//! The guest's console on ballast's stdin. When stdin is a terminal it is put in raw mode, so
//! every key reaches the guest as typed (Ctrl-C included, as on a serial line), and an escape
//! sequence, as QEMU's, stops the VM: `Ctrl-A x`. `Ctrl-A Ctrl-A` sends one Ctrl-A to the
//! guest. The terminal is restored when ballast exits, also after a panic.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, OnceLock};

use ballast_devices::legacy::serial::SerialDevice;
use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use crate::vstate::exit::{ExitState, VmExit};

/// The escape key: Ctrl-A.
pub const ESCAPE: u8 = 0x01;
/// After the escape key: stop the VM.
pub const STOP: u8 = b'x';

/// What the escape filter made of some input.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filtered {
    /// Bytes for the guest.
    pub guest: Vec<u8>,
    /// `Ctrl-A x` was typed.
    pub stop: bool,
}

/// The escape sequence's state, across reads (the two keys may arrive in two reads).
#[derive(Debug, Default)]
pub struct Escape {
    pending: bool,
}

impl Escape {
    pub fn filter(&mut self, input: &[u8]) -> Filtered {
        let mut out = Filtered::default();
        for &byte in input {
            if std::mem::take(&mut self.pending) {
                match byte {
                    STOP | b'X' => {
                        out.stop = true;
                        return out;
                    }
                    ESCAPE => out.guest.push(ESCAPE),
                    // Not a sequence: both keys go to the guest.
                    other => out.guest.extend_from_slice(&[ESCAPE, other]),
                }
            } else if byte == ESCAPE {
                self.pending = true;
            } else {
                out.guest.push(byte);
            }
        }
        out
    }
}

/// The terminal settings to put back at exit, when stdin is a terminal in raw mode.
static SAVED: OnceLock<libc::termios> = OnceLock::new();

/// Puts stdin in raw mode when it is a terminal; `RawMode` restores it when dropped (and a
/// panic hook does, should ballast panic first). Returns `None` when stdin is no terminal.
pub fn raw_mode() -> Option<RawMode> {
    let fd = libc::STDIN_FILENO;
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(fd) } != 1 {
        return None;
    }
    // SAFETY: termios is plain data; tcgetattr fills it for a terminal descriptor.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `saved` is a valid termios owned by this frame.
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return None;
    }
    let mut raw = saved;
    // SAFETY: `raw` is a valid termios; cfmakeraw only edits its flags.
    unsafe { libc::cfmakeraw(&mut raw) };
    // Keep output post-processing, so ballast's own log lines still start at column 0.
    raw.c_oflag |= libc::OPOST | libc::ONLCR;
    // SAFETY: `raw` is a valid termios for this terminal.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
        return None;
    }
    let _ = SAVED.set(saved);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
    Some(RawMode)
}

fn restore() {
    if let Some(saved) = SAVED.get() {
        // SAFETY: `saved` is the terminal's own earlier settings.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
    }
}

/// Restores the terminal when dropped.
pub struct RawMode;

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Feeds ballast's stdin to the guest's COM1 on the event loop, through the escape filter when
/// stdin is a raw terminal.
pub struct ConsoleInput {
    serial: Arc<Mutex<SerialDevice>>,
    stdin: std::io::Stdin,
    /// `None` when stdin is not a terminal: every byte then goes to the guest.
    escape: Option<Escape>,
    exit: Arc<ExitState>,
}

impl ConsoleInput {
    pub fn new(serial: Arc<Mutex<SerialDevice>>, exit: Arc<ExitState>) -> Self {
        Self {
            serial,
            stdin: std::io::stdin(),
            escape: SAVED.get().map(|_| Escape::default()),
            exit,
        }
    }
}

impl MutEventSubscriber for ConsoleInput {
    fn init(&mut self, ops: &mut EventOps) {
        // epoll refuses regular files and /dev/null: then there simply is no console input.
        if let Err(e) = ops.add(Events::new(&self.stdin, EventSet::IN)) {
            log::debug!("console: stdin is not pollable ({e:?}); no console input");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        let mut serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        // At most what the guest's FIFO takes, less one: an escape pair may become one byte
        // more than it was read as (`Ctrl-A` then another key gives both).
        let room = serial.0.fifo_capacity().min(buf.len()).saturating_sub(1);
        let n = if room == 0 {
            // The guest is not draining its FIFO; the bytes wait in the pipe.
            0
        } else {
            match self.stdin.lock().read(&mut buf[..room]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
                Err(_) => 0,
            }
        };
        if n == 0 && room != 0 || events.event_set().contains(EventSet::HANG_UP) {
            // End of input: stop polling, or epoll would report it forever.
            let _ = ops.remove(Events::new_raw(self.stdin.as_raw_fd(), EventSet::IN));
            return;
        }
        let filtered = match &mut self.escape {
            Some(escape) => escape.filter(&buf[..n]),
            None => Filtered {
                guest: buf[..n].to_vec(),
                stop: false,
            },
        };
        if let Err(e) = serial.0.enqueue_raw_bytes(&filtered.guest) {
            log::debug!("console: input dropped: {e:?}");
        }
        if filtered.stop {
            log::info!("Ctrl-A x typed on the console: stopping the VM");
            self.exit
                .request(VmExit::Stopped("Ctrl-A x on the console".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_a_x_stops_and_everything_else_reaches_the_guest() {
        let mut e = Escape::default();
        assert_eq!(e.filter(b"ls\x03\r").guest, b"ls\x03\r");
        let stop = e.filter(b"ab\x01x");
        assert_eq!(
            stop,
            Filtered {
                guest: b"ab".to_vec(),
                stop: true
            }
        );
        // Split across two reads.
        let mut e = Escape::default();
        assert_eq!(
            e.filter(b"q\x01"),
            Filtered {
                guest: b"q".to_vec(),
                stop: false
            }
        );
        assert!(e.filter(b"X").stop);
        // Ctrl-A Ctrl-A is one Ctrl-A; Ctrl-A and another key are both sent.
        let mut e = Escape::default();
        assert_eq!(e.filter(b"\x01\x01\x01c").guest, b"\x01\x01c");
    }
}
