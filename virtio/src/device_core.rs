//! What every device keeps the same way for the transport, in one [`DeviceCore`]: its type, its
//! queues' sizes, the features it offers and those the driver acked, its config space as the
//! driver reads it, whether it found its queues broken and needs a reset, and its activation
//! eventfd (`events`). `VirtioDevice`'s methods default to reading the core, so a device writes
//! only what is its own: activation, reset, and config writes the driver may make.
//!
//! The core's `label` names the device in log messages ("balloon", "virtio-blk /path/disk.img").

use std::fmt::Display;
use std::sync::Arc;

use log::{error, warn};

use event_manager::EventOps;
use vmm_sys_util::eventfd::EventFd;

use crate::events::ActivationEvents;
use crate::metrics::Counter;
use crate::{ActivateError, VirtioInterrupt};

/// The failures every device counts the same way: clones of the counters in the device's own
/// metrics, which the core counts into.
#[derive(Debug, Clone, Default)]
pub struct DeviceErrors {
    /// Queue failures that left the device needing a reset.
    pub queue: Counter,
    /// Interrupts that could not be raised.
    pub interrupt: Counter,
    /// Event loop failures: an eventfd that could not be read or (un)registered.
    pub event: Counter,
}

impl DeviceErrors {
    /// Sharing the device's own counters.
    pub fn sharing(queue: &Counter, interrupt: &Counter, event: &Counter) -> Self {
        Self {
            queue: queue.clone(),
            interrupt: interrupt.clone(),
            event: event.clone(),
        }
    }
}

/// A device's bookkeeping towards the transport (virtio 1.2, 2.1.2 for DEVICE_NEEDS_RESET).
#[derive(Debug)]
pub struct DeviceCore {
    /// The device's name in log messages.
    pub label: String,
    device_type: u32,
    queue_sizes: Vec<u16>,
    /// The config space as the driver reads it; a device with driver-writable fields writes
    /// them here itself.
    pub config_space: Vec<u8>,
    /// Wakes the event loop after `activate` or `reset` (both run on a vCPU thread) so it can
    /// register or unregister the queues' eventfds.
    pub events: ActivationEvents,
    /// The interrupt of the current activation.
    interrupt: Option<Arc<VirtioInterrupt>>,
    errors: DeviceErrors,
    avail_features: u64,
    acked_features: u64,
    broken: bool,
    /// Driver writes to config bytes that are the device's, ignored.
    refused_config_writes: Counter,
}

impl DeviceCore {
    /// A device of virtio type `device_type` with queues of `queue_sizes`, offering
    /// `avail_features` (VIRTIO_F_VERSION_1 included), counting its failures in `errors`.
    pub fn new(
        label: impl Into<String>,
        device_type: u32,
        queue_sizes: Vec<u16>,
        avail_features: u64,
        config_space: Vec<u8>,
        errors: DeviceErrors,
    ) -> std::io::Result<Self> {
        Ok(DeviceCore {
            label: label.into(),
            device_type,
            queue_sizes,
            config_space,
            events: ActivationEvents::new()?,
            interrupt: None,
            errors,
            avail_features,
            acked_features: 0,
            broken: false,
            refused_config_writes: Counter::default(),
        })
    }

    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    pub fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    pub fn avail_features(&self) -> u64 {
        self.avail_features
    }

    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Whether the driver acked feature bit `feature`.
    pub fn has_acked(&self, feature: u32) -> bool {
        self.acked_features & (1 << feature) != 0
    }

    /// `VirtioDevice::set_acked_features`: keeps what was offered, warns about the rest.
    pub fn set_acked_features(&mut self, features: u64) {
        let unoffered = features & !self.avail_features;
        if unoffered != 0 {
            warn!(
                "{}: the driver acked features {unoffered:#x} that were not offered; ignored",
                self.label
            );
        }
        self.acked_features = features & self.avail_features;
    }

    /// `VirtioDevice::read_config`: bytes past the config space's end read as zero.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config(&self.config_space, offset, data);
    }

    /// `VirtioDevice::write_config` for config bytes that are the device's: counted, and
    /// logged as warnings only the first few times (a guest can write as often as it likes).
    pub fn ignore_config_write(&mut self, offset: u64, len: usize) {
        crate::metrics::report(
            &self.refused_config_writes,
            &self.label,
            format_args!(
                "the driver wrote {len} bytes of read-only config space at offset {offset}; \
                 ignored"
            ),
        );
    }

    /// How many driver writes to the device's own config bytes were ignored.
    pub fn refused_config_writes(&self) -> u64 {
        self.refused_config_writes.get()
    }

    /// True once the device found its queues broken beyond use; cleared by a new activation or
    /// a reset.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// At the start of `activate`: a device is activated once until it is reset; `what` names
    /// it in the error ("balloon").
    pub fn ensure_inactive(&self, what: &str) -> Result<(), ActivateError> {
        match self.interrupt {
            Some(_) => Err(ActivateError::Backend(format!(
                "the {what} is already active"
            ))),
            None => Ok(()),
        }
    }

    /// Marks the device broken after a failure that leaves its queues in an unknown state, and
    /// tells the driver through a config-change interrupt (virtio 1.2, 2.1.2) if the device is
    /// active. Counts the failure, and an interrupt that cannot be raised. Nothing happens if
    /// the device is already broken.
    pub fn mark_broken(&mut self, why: &dyn Display) {
        if self.broken {
            return;
        }
        self.broken = true;
        self.errors.queue.inc();
        error!("{}: {why}; the device needs a reset", self.label);
        if let Some(interrupt) = &self.interrupt {
            if let Err(e) = interrupt.signal_config_change() {
                self.errors.interrupt.inc();
                error!(
                    "{}: cannot raise the config-change interrupt for NEEDS_RESET: {e}",
                    self.label
                );
            }
        }
    }

    /// At the end of `activate`, with the activation's interrupt: the new queues are good until
    /// they fail, and the event loop (this thread is a vCPU's) is woken to register their
    /// eventfds.
    pub fn activated(&mut self, interrupt: &Arc<VirtioInterrupt>) -> Result<(), ActivateError> {
        self.broken = false;
        self.interrupt = Some(interrupt.clone());
        self.events.activated()
    }

    /// `reset`: nothing acked, nothing broken; the eventfds of the activation that ends are
    /// retired, and the event loop is woken to remove them (always, with `wake` set: for a
    /// device that has more to undo there).
    pub fn reset(&mut self, queue_events: impl IntoIterator<Item = EventFd>, wake: bool) {
        self.events.retire(queue_events);
        self.interrupt = None;
        self.acked_features = 0;
        self.broken = false;
        if wake || self.events.has_retired() {
            self.events
                .wake_after_reset(&self.label, &self.errors.event);
        }
    }

    // --- on the event loop ---

    /// In the device's `init`: watches the activation eventfd under `tag`.
    pub fn watch_activation(&self, ops: &mut EventOps, tag: u32) {
        self.events.watch(ops, tag, &self.label, &self.errors.event);
    }

    /// Removes the eventfds of reset activations from the epoll set.
    pub fn remove_retired(&mut self, ops: &mut EventOps) {
        self.events
            .remove_retired(ops, &self.label, &self.errors.event);
    }

    /// Makes the event loop watch exactly the current activation's `queues` (`None` while not
    /// active; see `ActivationEvents::sync`). A queue eventfd that cannot be watched leaves the
    /// device broken: better the driver learns it needs a reset than waits forever. `what`
    /// names the eventfds in that message ("the queue's eventfd").
    pub fn sync_queues<'a>(
        &mut self,
        ops: &mut EventOps,
        queues: Option<impl IntoIterator<Item = (&'a EventFd, u32)>>,
        what: &str,
    ) {
        let result = self
            .events
            .sync(ops, queues, &self.label, &self.errors.event);
        if let Err(e) = result {
            self.errors.event.inc();
            self.mark_broken(&format_args!("cannot watch {what}: {e}"));
        }
    }
}

/// `VirtioDevice::read_config` over the bytes of a config space: bytes past its end read as
/// zero.
pub fn read_config(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = offset
            .checked_add(i as u64)
            .and_then(|pos| usize::try_from(pos).ok())
            .and_then(|pos| config.get(pos).copied())
            .unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;
    use crate::interrupt::VIRTIO_MMIO_INT_CONFIG;

    fn core(avail_features: u64) -> DeviceCore {
        DeviceCore::new(
            "test",
            5,
            vec![4, 4],
            avail_features,
            vec![1, 2, 3],
            DeviceErrors::default(),
        )
        .unwrap()
    }

    #[test]
    fn only_offered_features_are_acked_and_a_reset_forgets_them() {
        let mut state = core(0b1011);
        state.set_acked_features(0b1110);
        assert_eq!(state.acked_features(), 0b1010);
        assert!(state.has_acked(1) && state.has_acked(3) && !state.has_acked(2));
        state.reset([], false);
        assert_eq!(state.acked_features(), 0);
        assert_eq!(state.avail_features(), 0b1011);
        assert_eq!(
            (state.device_type(), state.queue_max_sizes()),
            (5, &[4, 4][..])
        );
    }

    #[test]
    fn config_reads_past_the_end_are_zero() {
        let mut data = [0xaa; 4];
        core(0).read_config(1, &mut data);
        assert_eq!(data, [2, 3, 0, 0]);
        read_config(&[1, 2, 3], u64::MAX, &mut data);
        assert_eq!(data, [0; 4]);
    }

    #[test]
    fn a_broken_device_interrupts_once_until_reset() {
        let interrupt = Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        let errors = DeviceErrors::default();
        let mut state = DeviceCore::new("test", 5, vec![4], 0, Vec::new(), errors.clone()).unwrap();
        state.activated(&interrupt).unwrap();
        assert!(state.ensure_inactive("test device").is_err());
        for _ in 0..2 {
            state.mark_broken(&"it broke");
        }
        assert!(state.is_broken());
        assert_eq!(errors.queue.get(), 1, "counted into the device's counter");
        assert_eq!(errors.interrupt.get(), 0);
        assert_eq!(interrupt.status(), VIRTIO_MMIO_INT_CONFIG);
        assert_eq!(interrupt.irqfd().read().unwrap(), 1);

        state.activated(&interrupt).unwrap();
        assert!(!state.is_broken());
        state.reset([], false);
        state.ensure_inactive("test device").unwrap();
        state.mark_broken(&"again");
        assert_eq!(errors.interrupt.get(), 0);
        state.reset([], false);
        assert!(!state.is_broken());
        assert_eq!(errors.queue.get(), 2);
    }
}
