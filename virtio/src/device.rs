//! The interface between a virtio device model and the transport that exposes it.

use std::fmt::Display;
use std::sync::Arc;

use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use crate::{DeviceCore, GuestMemoryMmap, VirtioInterrupt};

/// One queue handed to a device at activation, with the eventfd the guest's notifications
/// arrive on (an ioeventfd on the transport's QueueNotify register).
pub struct QueueEvent {
    pub queue: Queue,
    pub event: EventFd,
}

impl QueueEvent {
    /// At activation: checks that the driver set the queue up within guest RAM, and makes it
    /// follow the negotiated VIRTIO_RING_F_EVENT_IDX. `what` names the queue in the error ("the
    /// rx queue").
    pub fn prepare(
        &mut self,
        mem: &GuestMemoryMmap,
        event_idx: bool,
        what: impl Display,
    ) -> Result<(), ActivateError> {
        if !self.queue.is_valid(mem) {
            return Err(ActivateError::Backend(format!(
                "{what} is not ready or does not fit in guest RAM"
            )));
        }
        self.queue.set_event_idx(event_idx);
        Ok(())
    }
}

/// What a device gets when the driver sets DRIVER_OK: guest memory, the interrupt it raises,
/// and the queues the driver set up (with their notification eventfds), in queue-index order.
pub struct Activation {
    pub mem: GuestMemoryMmap,
    pub interrupt: Arc<VirtioInterrupt>,
    pub queues: Vec<QueueEvent>,
}

impl Activation {
    /// Guest memory, the interrupt and the queues.
    pub fn into_parts(self) -> (GuestMemoryMmap, Arc<VirtioInterrupt>, Vec<QueueEvent>) {
        (self.mem, self.interrupt, self.queues)
    }

    /// What a device with exactly `N` queues does first: refuses a second activation (`what`
    /// names the device), takes its queues and prepares each (`names`, in queue-index order:
    /// "rx" is "the rx queue" in an error). Returns the parts, as `into_parts` does.
    pub fn take_queues<const N: usize>(
        self,
        core: &DeviceCore,
        what: &str,
        names: [&str; N],
    ) -> Result<(GuestMemoryMmap, Arc<VirtioInterrupt>, [QueueEvent; N]), ActivateError> {
        core.ensure_inactive(what)?;
        let mut queues = exact_queues(self.queues)?;
        let event_idx = core.has_acked(VIRTIO_RING_F_EVENT_IDX);
        for (queue, name) in queues.iter_mut().zip(names) {
            queue.prepare(&self.mem, event_idx, format_args!("the {name} queue"))?;
        }
        Ok((self.mem, self.interrupt, queues))
    }

    pub fn new(
        mem: GuestMemoryMmap,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<QueueEvent>,
    ) -> Self {
        Self {
            mem,
            interrupt,
            queues,
        }
    }
}

/// The queues of a device that has exactly `N` of them, in queue-index order.
pub fn exact_queues<const N: usize>(
    queues: Vec<QueueEvent>,
) -> Result<[QueueEvent; N], ActivateError> {
    let got = queues.len();
    <[QueueEvent; N]>::try_from(queues).map_err(|_| ActivateError::QueueCount { want: N, got })
}

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("the driver set up {got} queues, the device needs {want}")]
    QueueCount { want: usize, got: usize },
    #[error("the device could not start: {0}")]
    Backend(String),
}

/// A virtio device model (balloon, block, vsock, ...).
///
/// The transport owns the register file and the queues until the driver sets DRIVER_OK; then it
/// calls `activate` and the device owns the queues. A device processes its queues on the VMM
/// event loop, never on a vCPU thread, so `activate` only hands the queues over and wakes the
/// loop (through its core's activation eventfd, which the device watches as an event-manager
/// subscriber).
///
/// Every method but `activate` and `reset` has a default that reads the device's
/// [`DeviceCore`]; a device overrides `write_config` when the driver may write part of its
/// config space.
pub trait VirtioDevice: Send {
    /// What every device keeps the same way.
    fn core(&self) -> &DeviceCore;
    fn core_mut(&mut self) -> &mut DeviceCore;

    /// The virtio device ID (5 for the balloon, 2 for block, 19 for vsock).
    fn device_type(&self) -> u32 {
        self.core().device_type()
    }
    /// The maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16] {
        self.core().queue_max_sizes()
    }
    /// Feature bits the device offers (VIRTIO_F_VERSION_1 included).
    fn avail_features(&self) -> u64 {
        self.core().avail_features()
    }
    /// Feature bits the driver accepted (a subset of `avail_features`).
    fn set_acked_features(&mut self, features: u64) {
        self.core_mut().set_acked_features(features);
    }
    /// Reads device config space at `offset`; bytes past the end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.core().read_config(offset, data);
    }
    /// Writes device config space; writes to read-only or missing fields are ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.core_mut().ignore_config_write(offset, data.len());
    }
    /// Hands the driver's queues to the device.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// The driver reset the device: drop the queues and go back to the pre-activation state.
    /// Returns false if the device cannot be reset (the transport then sets NEEDS_RESET).
    fn reset(&mut self) -> bool;
    /// True once the device found its queues broken beyond use; the transport then shows
    /// DEVICE_NEEDS_RESET to the driver instead of the VMM stopping.
    fn needs_reset(&self) -> bool {
        self.core().is_broken()
    }
}
