//! Puts a virtio device on the MMIO bus: a 4 KiB window, an ioeventfd per queue on the
//! QueueNotify register, and an irqfd on the device's GSI.

use std::sync::{Arc, Mutex};

use ballast_virtio::mmio::NOTIFY_REG_OFFSET;
use ballast_virtio::{GuestMemoryMmap, MmioTransport, VirtioDevice, VirtioInterrupt};
use kvm_ioctls::{IoEventAddress, VmFd};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::layout::{VIRTIO_IRQ_END, VIRTIO_IRQ_START, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START};
use ballast_devices::bus::{Bus, BusDevice, BusError};

#[derive(Debug, thiserror::Error)]
pub enum VirtioMmioError {
    #[error("too many virtio devices: only {0} interrupt lines are free")]
    NoIrq(u32),
    #[error("cannot create an eventfd for a virtio device: {0}")]
    EventFd(std::io::Error),
    #[error("cannot register the queue notification ioeventfd: {0}")]
    IoEventFd(kvm_ioctls::Error),
    #[error("cannot register the device's irqfd: {0}")]
    IrqFd(kvm_ioctls::Error),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Where a virtio-mmio device lives, for the ACPI tables and the kernel command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSlot {
    pub base: u64,
    pub size: u64,
    pub irq: u32,
}

impl MmioSlot {
    /// The `index`-th virtio-mmio slot.
    pub fn nth(index: u32) -> Result<Self, VirtioMmioError> {
        let irq = VIRTIO_IRQ_START + index;
        if irq > VIRTIO_IRQ_END {
            return Err(VirtioMmioError::NoIrq(
                VIRTIO_IRQ_END - VIRTIO_IRQ_START + 1,
            ));
        }
        Ok(Self {
            base: VIRTIO_MMIO_START + u64::from(index) * VIRTIO_MMIO_SIZE,
            size: VIRTIO_MMIO_SIZE,
            irq,
        })
    }
}

/// The transport as a device on the MMIO bus.
struct TransportOnBus(MmioTransport);

impl BusDevice for TransportOnBus {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.0.read(offset, data)
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0.write(offset, data)
    }
}

/// Wires `device` into slot `index` and returns where it is.
pub fn attach(
    vm: &VmFd,
    bus: &mut Bus,
    mem: &GuestMemoryMmap,
    device: Arc<Mutex<dyn VirtioDevice>>,
    index: u32,
) -> Result<MmioSlot, VirtioMmioError> {
    let slot = MmioSlot::nth(index)?;
    let num_queues = device
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .queue_max_sizes()
        .len();
    let mut queue_events = Vec::with_capacity(num_queues);
    for queue in 0..num_queues {
        let evt = EventFd::new(EFD_NONBLOCK).map_err(VirtioMmioError::EventFd)?;
        // The guest writes the queue index to QueueNotify; KVM turns that write into an eventfd
        // signal without leaving the kernel.
        vm.register_ioevent(
            &evt,
            &IoEventAddress::Mmio(slot.base + NOTIFY_REG_OFFSET),
            queue as u32,
        )
        .map_err(VirtioMmioError::IoEventFd)?;
        queue_events.push(evt);
    }
    let irqfd = EventFd::new(EFD_NONBLOCK).map_err(VirtioMmioError::EventFd)?;
    vm.register_irqfd(&irqfd, slot.irq)
        .map_err(VirtioMmioError::IrqFd)?;
    let interrupt = Arc::new(VirtioInterrupt::new(irqfd));
    let transport = MmioTransport::new(mem.clone(), device, interrupt, queue_events);
    bus.insert(
        Arc::new(Mutex::new(TransportOnBus(transport))),
        slot.base,
        slot.size,
    )?;
    Ok(slot)
}
