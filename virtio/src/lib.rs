//! What a virtio device looks like to ballast's virtio-mmio transport, and the interrupt the
//! device raises towards the guest.

pub mod device;
pub mod interrupt;
pub mod metrics;
pub mod mmio;

pub use device::{ActivateError, QueueEvent, VirtioDevice};
pub use interrupt::VirtioInterrupt;
pub use mmio::MmioTransport;

/// Guest RAM as every device sees it: mmap-backed, with vm-memory's dirty bitmap so the memory
/// manager can tell which guest pages the VMM itself wrote.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<vm_memory::bitmap::AtomicBitmap>;
