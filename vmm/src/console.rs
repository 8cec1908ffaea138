//! The guest's console on ballast's stdin. When stdin is a terminal it is put in raw mode, so
//! every key reaches the guest as typed (Ctrl-C included, as on a serial line), and an escape
//! sequence, as QEMU's, stops the VM: `Ctrl-A x`. `Ctrl-A Ctrl-A` sends one Ctrl-A to the
//! guest. The terminal is restored when ballast exits, also after a panic.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex, OnceLock};

use ballast_devices::legacy::serial::SerialDevice;
use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

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
    /// stdin, unbuffered (a copy of the descriptor): `std::io::Stdin` reads ahead into a buffer
    /// of its own, and bytes there are invisible to epoll, so the end of a line longer than the
    /// guest's FIFO waited there until the next key. `None` when it could not be copied.
    stdin: Option<File>,
    /// Signalled when the guest has emptied its input FIFO (`SerialDevice::new`).
    drained: EventFd,
    /// stdin is out of the epoll set because the guest's FIFO was full: back in on `drained`.
    paused: bool,
    /// stdin reached its end (or cannot be polled): never polled again.
    closed: bool,
    /// `None` when stdin is not a terminal: every byte then goes to the guest.
    escape: Option<Escape>,
    exit: Arc<ExitState>,
}

impl ConsoleInput {
    pub fn new(serial: Arc<Mutex<SerialDevice>>, drained: EventFd, exit: Arc<ExitState>) -> Self {
        Self {
            serial,
            stdin: std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map(File::from)
                .inspect_err(|e| log::warn!("console: cannot use stdin ({e}); no console input"))
                .ok(),
            drained,
            paused: false,
            closed: false,
            escape: SAVED.get().map(|_| Escape::default()),
            exit,
        }
    }

    fn stdin_events(&self) -> Option<Events> {
        let stdin = self.stdin.as_ref()?;
        Some(Events::new_raw(stdin.as_raw_fd(), EventSet::IN))
    }

    /// The guest emptied its FIFO: read stdin again if it was paused.
    fn on_drained(&mut self, ops: &mut EventOps) {
        let _ = self.drained.read();
        if self.paused && !self.closed {
            self.paused = false;
            let Some(stdin) = self.stdin_events() else {
                return;
            };
            if let Err(e) = ops.add(stdin) {
                log::debug!("console: cannot poll stdin again ({e:?}); no more console input");
                self.closed = true;
            }
        }
    }
}

impl MutEventSubscriber for ConsoleInput {
    fn init(&mut self, ops: &mut EventOps) {
        // epoll refuses regular files and /dev/null: then there simply is no console input.
        let Some(stdin) = self.stdin_events() else {
            self.closed = true;
            return;
        };
        if let Err(e) = ops.add(stdin) {
            log::debug!("console: stdin is not pollable ({e:?}); no console input");
            self.closed = true;
            return;
        }
        if let Err(e) = ops.add(Events::new(&self.drained, EventSet::IN)) {
            log::debug!("console: cannot poll the serial port's drain event ({e:?})");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.drained.as_raw_fd() {
            self.on_drained(ops);
            return;
        }
        let mut buf = [0u8; 64];
        let mut serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        // At most what the guest's FIFO takes, less one: an escape pair may become one byte
        // more than it was read as (`Ctrl-A` then another key gives both).
        let room = serial.0.fifo_capacity().min(buf.len()).saturating_sub(1);
        if room == 0 {
            // The guest is not draining its FIFO: the bytes wait in the pipe, and stdin leaves
            // the (level-triggered) epoll set until the guest has read its FIFO empty, or the
            // event loop would spin on a readable stdin it cannot take from.
            if let Some(stdin) = self.stdin_events() {
                self.paused = ops.remove(stdin).is_ok();
            }
            return;
        }
        let Some(file) = self.stdin.as_mut() else {
            return;
        };
        let n = match file.read(&mut buf[..room]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
            Err(_) => 0,
        };
        if n == 0 {
            // End of input (a hang-up is, once what is left has been read): stop polling, or
            // epoll would report it forever.
            if let Some(stdin) = self.stdin_events() {
                let _ = ops.remove(stdin);
            }
            self.closed = true;
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
