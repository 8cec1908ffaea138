//! The interrupt a virtio-mmio device raises: an InterruptStatus register shared with the
//! transport plus an irqfd that injects the device's GSI through KVM.

use std::sync::atomic::{AtomicU32, Ordering};

use vmm_sys_util::eventfd::EventFd;

/// InterruptStatus bit: a used buffer was added to a queue.
pub const VIRTIO_MMIO_INT_VRING: u32 = 0x1;
/// InterruptStatus bit: the device configuration changed.
pub const VIRTIO_MMIO_INT_CONFIG: u32 = 0x2;

#[derive(Debug)]
pub struct VirtioInterrupt {
    status: AtomicU32,
    irqfd: EventFd,
}

impl VirtioInterrupt {
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            irqfd,
        }
    }

    /// The eventfd registered with KVM as the device's irqfd.
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The driver acknowledged `bits` through InterruptACK.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    pub fn signal_used_queue(&self) -> std::io::Result<()> {
        self.signal(VIRTIO_MMIO_INT_VRING)
    }

    pub fn signal_config_change(&self) -> std::io::Result<()> {
        self.signal(VIRTIO_MMIO_INT_CONFIG)
    }

    fn signal(&self, bit: u32) -> std::io::Result<()> {
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.irqfd.write(1)
    }
}
