//! Every device of a ballast VM, side by side, each in a folder with the same file roles
//! (`device.rs`, `config.rs`, `queue.rs`, `event_handler.rs`, `metrics.rs`, `tests/`), on the
//! shared skeleton of `ballast-virtio`. The VMM creates them, puts them on its buses and its event
//! loop; nothing here knows KVM, the API or the memory manager.
//!
//! | path | job |
//! | --- | --- |
//! | `balloon/` | virtio-balloon: inflate, deflate, free page reporting, statistics; a guest PFN's journey (`queue.rs` → `bitmap.rs` → `release.rs`: descriptor → bitmap → madvise) |
//! | `block/` | virtio-blk over a raw disk image |
//! | `net/` | virtio-net over a TAP interface of the host |
//! | `vsock/` | virtio-vsock with Firecracker's hybrid Unix socket backend (the agent's link) |
//! | `legacy/` | COM1, the i8042 and the ACPI power-management register on the port-I/O bus |
//! | `bus.rs` | the port-I/O and MMIO buses the vCPUs dispatch exits to |
//! | `unix_socket.rs` | binding a host Unix socket (`--vsock-sock`, and the API's `--api-sock`) |

pub mod balloon;
pub mod block;
pub mod bus;
pub mod legacy;
pub mod net;
pub mod unix_socket;
pub mod vsock;

/// What a thread a device starts runs first, on itself, before any work: the VMM installs the
/// thread's seccomp filter there. An error ends the thread (and, where the device can tell,
/// the launch).
pub type ThreadSetup = Box<dyn FnOnce() -> Result<(), String> + Send>;
