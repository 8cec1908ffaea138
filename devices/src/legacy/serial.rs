//! COM1: a 16550 UART (vm-superio) whose output goes to ballast's stdout. Its input (ballast's
//! stdin, with the console's escape sequence) is fed by the VMM: `vmm/src/console.rs`.

use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::Serial;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
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
