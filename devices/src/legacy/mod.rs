//! Legacy PC devices on the port-I/O bus: no queues, one register file each, so one file each.
//!
//! | file | job |
//! | --- | --- |
//! | `serial.rs` | COM1 (vm-superio's 16550); its input is fed by the VMM's console |
//! | `console.rs` | COM1's output to ballast's stdout, on a thread of its own |
//! | `i8042.rs` | the i8042 keyboard controller, for the guest's `reboot=k` |
//! | `acpi_pm.rs` | the ACPI sleep control / status / reset register: power-off and reset |

pub mod acpi_pm;
pub mod console;
pub mod i8042;
pub mod serial;

use vmm_sys_util::eventfd::EventFd;

/// An eventfd as vm-superio's interrupt / reset trigger.
pub struct EventFdTrigger(pub EventFd);

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// A bus read of a device with byte-wide registers (vm-superio's): the register at `offset`
/// in the first byte, zeros in the rest; an offset past 255 reads zeros.
pub(crate) fn read_byte_register(offset: u64, data: &mut [u8], read: impl FnOnce(u8) -> u8) {
    data.fill(0);
    if let (Ok(offset), Some(first)) = (u8::try_from(offset), data.first_mut()) {
        *first = read(offset);
    }
}

/// A bus write to a device with byte-wide registers: the first byte goes to the register at
/// `offset`; an offset past 255, or an empty write, is dropped.
pub(crate) fn write_byte_register(offset: u64, data: &[u8], write: impl FnOnce(u8, u8)) {
    if let (Ok(offset), Some(&value)) = (u8::try_from(offset), data.first()) {
        write(offset, value);
    }
}

impl EventFdTrigger {
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self(self.0.try_clone()?))
    }
}
