//! Legacy PC devices on the port-I/O bus: no queues, one register file each, so one file each.
//!
//! | file | job |
//! | --- | --- |
//! | `serial.rs` | COM1 (vm-superio's 16550) and ballast's stdin as its input |
//! | `i8042.rs` | the i8042 keyboard controller, for the guest's `reboot=k` |
//! | `acpi_pm.rs` | the ACPI sleep control / status / reset register: power-off and reset |

pub mod acpi_pm;
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

impl EventFdTrigger {
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self(self.0.try_clone()?))
    }
}
