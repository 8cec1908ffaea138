//! COM1: a 16550 UART (vm-superio) whose output goes to ballast's stdout. Its input (ballast's
//! stdin, with the console's escape sequence) is fed by the VMM: `vmm/src/console.rs`.

use std::io::Write;

use vm_superio::serial::SerialEvents;
use vm_superio::Serial;
use vmm_sys_util::eventfd::EventFd;

use super::{read_byte_register, write_byte_register, EventFdTrigger};
use crate::bus::BusDevice;

/// The eight UART registers.
pub const SERIAL_PORT_RANGE: u64 = 8;

pub type SerialOut = Box<dyn Write + Send>;

pub struct SerialDevice(pub Serial<EventFdTrigger, InputDrained, SerialOut>);

impl SerialDevice {
    /// `drained` is signalled each time the guest has read the last byte of its input FIFO:
    /// the console stops reading stdin while the FIFO is full and starts again then.
    pub fn new(interrupt: EventFdTrigger, drained: EventFd, out: SerialOut) -> Self {
        Self(Serial::with_events(interrupt, InputDrained(drained), out))
    }
}

/// Signals an eventfd when the guest empties the input FIFO (vm-superio's `in_buffer_empty`).
pub struct InputDrained(pub EventFd);

impl SerialEvents for InputDrained {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        // A failed write only delays the input until the next time the FIFO drains.
        let _ = self.0.write(1);
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
        let drained = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(EventFdTrigger(irq), drained, Box::new(sink.clone()));
        for b in b"hi\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
        // Line status register: transmitter empty.
        let mut lsr = [0u8; 1];
        dev.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }

    #[test]
    fn the_guest_draining_its_input_signals_the_console() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let drained = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(
            EventFdTrigger(irq),
            drained.try_clone().unwrap(),
            Box::new(Sink::default()),
        );
        dev.0.enqueue_raw_bytes(b"ab").unwrap();
        let mut byte = [0u8; 1];
        dev.read(0, &mut byte);
        assert_eq!(byte[0], b'a');
        assert!(
            drained.read().is_err(),
            "one byte still waits: not drained yet"
        );
        dev.read(0, &mut byte);
        assert_eq!(byte[0], b'b');
        assert_eq!(drained.read().unwrap(), 1);
    }
}
