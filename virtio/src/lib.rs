//! What a virtio device looks like to ballast's virtio-mmio transport, the interrupt the device
//! raises towards the guest, and the skeleton every device in `ballast-devices` is built on.
//!
//! | file | job |
//! | --- | --- |
//! | `chain.rs` | what every device checks about a chain before reading it (its head, indirect tables), and the budget of one run |
//! | `device.rs` | the `VirtioDevice` trait (its methods default to the device core) and the queues handed over at activation |
//! | `device_core.rs` | the device core: type, queue sizes, features, config space, broken flag, activation eventfd |
//! | `events.rs` | a device's queues on the event loop: activation, reset, queue kicks |
//! | `options.rs` | the `key=value,...` parser of every device's command-line options |
//! | `metrics.rs` | counters, and rate-limited reports of a guest's misbehaviour |
//! | `interrupt.rs` | the interrupt status register and the irqfd |
//! | `mmio/` | the virtio-mmio transport, hardened against a hostile driver |
//! | `test_utils.rs` | the driver-side test kit every device's tests use (`test-utils` feature) |

pub mod chain;
pub mod device;
pub mod device_core;
pub mod events;
pub mod interrupt;
pub mod metrics;
pub mod mmio;
pub mod options;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use chain::{check_chain, ChainRefusal, RunBudget};
pub use device::{exact_queues, ActivateError, Activation, QueueEvent, VirtioDevice};
pub use device_core::{DeviceCore, DeviceErrors};
pub use events::ActivationEvents;
pub use interrupt::VirtioInterrupt;
pub use mmio::MmioTransport;

/// Guest RAM as every device sees it: mmap-backed, with vm-memory's dirty bitmap so the memory
/// manager can tell which guest pages the VMM itself wrote.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<vm_memory::bitmap::AtomicBitmap>;
