//! COM1's output on its way to ballast's stdout, off the vCPU: the vCPU that writes the guest's
//! console appends to a bounded buffer and goes on, and a thread of its own writes the buffer
//! to stdout. A stdout that blocks (a pipe nobody reads) then stalls only that thread — never a
//! vCPU, nor the serial port's lock, which the event loop also takes to feed stdin to COM1.
//! Output that does not fit the buffer (1 MiB) while stdout is stuck is dropped and counted.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ballast_virtio::metrics::Counter;

use crate::ThreadSetup;

/// What the buffer holds before output is dropped.
pub const CONSOLE_BUFFER: usize = 1 << 20;
/// At exit, how long the writer thread may take to write what is buffered.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

#[derive(Default)]
struct State {
    buf: VecDeque<u8>,
    closing: bool,
    /// The writer thread has ended.
    done: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Output arrived, or the console is closing.
    more: Condvar,
    /// The writer thread ended.
    ended: Condvar,
    dropped: Counter,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The serial port's output (a `Write` for vm-superio's UART).
pub struct ConsoleOut {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl ConsoleOut {
    /// Starts the thread that writes to `out`, running `setup` on it first (the VMM installs
    /// the thread's seccomp filter there).
    pub fn start(out: Box<dyn Write + Send>, setup: Option<ThreadSetup>) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                if let Some(setup) = setup {
                    if let Err(why) = setup() {
                        log::error!("console: {why}; the guest's console output is dropped");
                        return finish(&writer);
                    }
                }
                write_out(&writer, out);
                finish(&writer);
            })?;
        Ok(ConsoleOut {
            shared,
            thread: Some(thread),
        })
    }

    /// Bytes dropped because stdout did not keep up.
    pub fn dropped(&self) -> &Counter {
        &self.shared.dropped
    }
}

fn finish(shared: &Shared) {
    shared.lock().done = true;
    shared.ended.notify_all();
}

/// The writer thread: takes what is buffered, writes it, until the console closes.
fn write_out(shared: &Shared, mut out: Box<dyn Write + Send>) {
    loop {
        let chunk: Vec<u8> = {
            let mut state = shared.lock();
            while state.buf.is_empty() && !state.closing {
                state = shared
                    .more
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.buf.is_empty() {
                return;
            }
            state.buf.drain(..).collect()
        };
        // A closed stdout must not stop anything: the output is then lost.
        if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
            shared.dropped.add(chunk.len() as u64);
        }
    }
}

impl Write for ConsoleOut {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut state = self.shared.lock();
        let room = CONSOLE_BUFFER.saturating_sub(state.buf.len());
        let taken = data.len().min(room);
        state.buf.extend(&data[..taken]);
        drop(state);
        self.shared.dropped.add((data.len() - taken) as u64);
        if taken > 0 {
            self.shared.more.notify_one();
        }
        // Dropped bytes count as written: the guest's UART never waits for the host.
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ConsoleOut {
    /// Lets the writer thread write what is buffered (the guest's last lines), for a moment.
    fn drop(&mut self) {
        let deadline = Instant::now() + DRAIN_GRACE;
        let mut state = self.shared.lock();
        state.closing = true;
        self.shared.more.notify_all();
        while !state.done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // stdout is stuck: leave the thread behind rather than hang the exit.
                return;
            }
            state = self
                .shared
                .ended
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(state);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;
    use crate::bus::BusDevice;
    use crate::legacy::serial::SerialDevice;
    use crate::legacy::EventFdTrigger;

    /// A pipe: (read end, write end).
    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two descriptors, which are then owned by the Files.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both descriptors were just made and are owned by nothing else.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    fn serial(out: Box<dyn Write + Send>) -> Arc<Mutex<SerialDevice>> {
        let trigger = EventFdTrigger(EventFd::new(EFD_NONBLOCK).unwrap());
        let drained = EventFd::new(EFD_NONBLOCK).unwrap();
        Arc::new(Mutex::new(SerialDevice::new(trigger, drained, out)))
    }

    /// stdout is a pipe nobody reads (it fills at 64 KiB): a vCPU writing 2 MiB of console never
    /// waits on it, nor holds the serial port's lock while it would, and the overflow is counted.
    #[test]
    fn a_stuck_stdout_stalls_neither_the_vcpu_nor_the_serial_lock() {
        let (read_end, write_end) = pipe();
        let console = ConsoleOut::start(Box::new(write_end), None).unwrap();
        let dropped = console.dropped().clone();
        let port = serial(Box::new(console));
        let vcpu_port = port.clone();
        let vcpu = std::thread::spawn(move || {
            for _ in 0..(2 << 20) {
                vcpu_port.lock().unwrap().write(0, b"x");
            }
        });
        let started = Instant::now();
        while !vcpu.is_finished() {
            // The event loop's turn: it gets the lock.
            drop(port.lock().unwrap());
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the vCPU is stuck on the console"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        vcpu.join().unwrap();
        assert!(dropped.get() >= (2 << 20) - CONSOLE_BUFFER as u64 - 64 * 1024);
        drop(read_end);
    }

    #[test]
    fn what_was_written_reaches_the_output_before_the_console_is_gone() {
        let (mut read_end, write_end) = pipe();
        let mut console = ConsoleOut::start(Box::new(write_end), None).unwrap();
        console.write_all(b"reboot: Power down\n").unwrap();
        drop(console);
        let mut got = String::new();
        read_end.read_to_string(&mut got).unwrap();
        assert_eq!(got, "reboot: Power down\n");
    }
}
