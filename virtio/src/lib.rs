//! What a virtio device looks like to ballast's virtio-mmio transport, the interrupt the device
//! raises towards the guest, and the plumbing every device shares: its feature and broken-state
//! bookkeeping (`device_state`), its queues on the event loop (`events`), its counters
//! (`metrics`), and, for tests, a driver's side of its queues (`test_utils`).

pub mod device;
pub mod device_state;
pub mod events;
pub mod interrupt;
pub mod metrics;
pub mod mmio;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use device::{exact_queues, ActivateError, QueueEvent, VirtioDevice};
pub use device_state::DeviceState;
pub use events::ActivationEvents;
pub use interrupt::VirtioInterrupt;
pub use mmio::MmioTransport;

/// Guest RAM as every device sees it: mmap-backed, with vm-memory's dirty bitmap so the memory
/// manager can tell which guest pages the VMM itself wrote.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<vm_memory::bitmap::AtomicBitmap>;
