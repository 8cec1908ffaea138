//! Devices of the VM: legacy ones on the PIO bus, virtio ones on the MMIO bus.

pub mod acpi_pm;
pub mod block;
pub mod bus;
pub mod legacy;
pub mod virtio_mmio;
pub mod vsock;
