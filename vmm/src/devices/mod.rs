//! Devices of the VM: legacy ones on the PIO bus, virtio ones on the MMIO bus.

pub mod bus;
