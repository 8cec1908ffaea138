//! Legacy PC devices on the port-I/O bus: COM1 and the i8042 keyboard controller.

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
