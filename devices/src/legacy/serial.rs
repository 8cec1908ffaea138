//! COM1: a 16550 UART (vm-superio) whose output goes to ballast's stdout and whose input comes
//! from ballast's stdin, read on the event loop.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vm_superio::serial::NoEvents;
use vm_superio::Serial;
use vmm_sys_util::epoll::EventSet;

use super::{read_byte_register, write_byte_register, EventFdTrigger};
use crate::bus::BusDevice;

/// The eight UART registers.
pub const SERIAL_PORT_RANGE: u64 = 8;

pub type SerialOut = Box<dyn Write + Send>;

pub struct SerialDevice(pub Serial<EventFdTrigger, NoEvents, SerialOut>);

impl SerialDevice {
    pub fn new(interrupt: EventFdTrigger, out: SerialOut) -> Self {
        Self(Serial::new(interrupt, out))
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_byte_register(offset, data, |offset| self.0.read(offset));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_byte_register(offset, data, |offset, value| {
            // A closed stdout must not stop the guest; its console output is then lost.
            if let Err(e) = self.0.write(offset, value) {
                log::debug!("serial: {e:?}");
            }
        });
    }
}

/// Feeds ballast's stdin to the guest's COM1.
pub struct SerialInput {
    serial: Arc<Mutex<SerialDevice>>,
    stdin: std::io::Stdin,
}

impl SerialInput {
    pub fn new(serial: Arc<Mutex<SerialDevice>>) -> Self {
        Self {
            serial,
            stdin: std::io::stdin(),
        }
    }
}

impl MutEventSubscriber for SerialInput {
    fn init(&mut self, ops: &mut EventOps) {
        // epoll refuses regular files and /dev/null: then there simply is no console input.
        if let Err(e) = ops.add(Events::new(&self.stdin, EventSet::IN)) {
            log::debug!("serial: stdin is not pollable ({e:?}); no console input");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        let mut serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let room = serial.0.fifo_capacity().min(buf.len());
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
        if let Err(e) = serial.0.enqueue_raw_bytes(&buf[..n]) {
            log::debug!("serial: input dropped: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmitted_bytes_reach_the_output() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let sink = Sink::default();
        let mut dev = SerialDevice::new(EventFdTrigger(irq), Box::new(sink.clone()));
        for b in b"hi\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
        // Line status register: transmitter empty.
        let mut lsr = [0u8; 1];
        dev.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }
}
