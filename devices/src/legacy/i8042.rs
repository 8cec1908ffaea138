//! The i8042 keyboard controller at ports 0x60/0x64; only its CPU-reset command matters, since
//! that is how Linux reboots with `reboot=k`.

use vm_superio::I8042Device;

use super::{read_byte_register, write_byte_register, EventFdTrigger};
use crate::bus::BusDevice;

/// Ports 0x60 (data) to 0x64 (command/status).
pub const I8042_PORT_RANGE: u64 = 5;

pub struct I8042(pub I8042Device<EventFdTrigger>);

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_byte_register(offset, data, |offset| self.0.read(offset));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_byte_register(offset, data, |offset, value| {
            if let Err(e) = self.0.write(offset, value) {
                log::error!("i8042: cannot signal the reset: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[test]
    fn reset_command_signals() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut dev = I8042(I8042Device::new(EventFdTrigger(evt.try_clone().unwrap())));
        dev.write(4, &[0x01]);
        assert!(evt.read().is_err(), "no reset for another command");
        dev.write(4, &[0xfe]);
        assert_eq!(evt.read().unwrap(), 1);
        let mut b = [0xffu8; 1];
        dev.read(4, &mut b);
        assert_eq!(
            b[0], 0,
            "the input buffer reads empty, so `reboot=k` goes ahead"
        );
    }
}
