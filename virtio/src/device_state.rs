//! What every device keeps the same way for the transport: the features it offers and those the
//! driver acked, its config space as the driver reads it, and whether it found its queues broken
//! and needs a reset.
//!
//! `label` arguments name the device in log messages ("balloon", "virtio-blk /path/disk.img").

use std::fmt::Display;

use log::{error, warn};

use crate::metrics::Counter;
use crate::VirtioInterrupt;

/// A device's feature negotiation and its broken flag (virtio 1.2, 2.1.2: DEVICE_NEEDS_RESET).
#[derive(Debug)]
pub struct DeviceState {
    avail_features: u64,
    acked_features: u64,
    broken: bool,
    config_write_logged: bool,
}

impl DeviceState {
    /// A device that offers `avail_features` (VIRTIO_F_VERSION_1 included).
    pub fn new(avail_features: u64) -> Self {
        DeviceState {
            avail_features,
            acked_features: 0,
            broken: false,
            config_write_logged: false,
        }
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
    pub fn set_acked_features(&mut self, label: impl Display, features: u64) {
        let unoffered = features & !self.avail_features;
        if unoffered != 0 {
            warn!(
                "{label}: the driver acked features {unoffered:#x} that were not offered; ignored"
            );
        }
        self.acked_features = features & self.avail_features;
    }

    /// `VirtioDevice::write_config` for a config space that is all the device's: the first
    /// write is logged, later ones are ignored silently.
    pub fn ignore_config_write(&mut self, label: impl Display, offset: u64, len: usize) {
        if !self.config_write_logged {
            self.config_write_logged = true;
            warn!(
                "{label}: the driver wrote {len} bytes of read-only config space at offset \
                 {offset}; ignored (further ones are not logged)"
            );
        }
    }

    /// True once the device found its queues broken beyond use; cleared by a new activation or
    /// a reset.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Marks the device broken after a failure that leaves its queues in an unknown state, and
    /// tells the driver through a config-change interrupt (virtio 1.2, 2.1.2) if the device is
    /// active. Counts the failure in `queue_errors`, and an interrupt that cannot be raised in
    /// `interrupt_errors`. Nothing happens if the device is already broken.
    pub fn mark_broken(
        &mut self,
        label: impl Display,
        why: &dyn Display,
        interrupt: Option<&VirtioInterrupt>,
        queue_errors: &Counter,
        interrupt_errors: &Counter,
    ) {
        if self.broken {
            return;
        }
        self.broken = true;
        queue_errors.inc();
        error!("{label}: {why}; the device needs a reset");
        if let Some(interrupt) = interrupt {
            if let Err(e) = interrupt.signal_config_change() {
                interrupt_errors.inc();
                error!("{label}: cannot raise the config-change interrupt for NEEDS_RESET: {e}");
            }
        }
    }

    /// A new activation: its queues are good until they fail.
    pub fn activated(&mut self) {
        self.broken = false;
    }

    /// The driver reset the device: nothing acked, nothing broken.
    pub fn reset(&mut self) {
        self.acked_features = 0;
        self.broken = false;
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

    #[test]
    fn only_offered_features_are_acked_and_a_reset_forgets_them() {
        let mut state = DeviceState::new(0b1011);
        state.set_acked_features("test", 0b1110);
        assert_eq!(state.acked_features(), 0b1010);
        assert!(state.has_acked(1) && state.has_acked(3) && !state.has_acked(2));
        state.reset();
        assert_eq!(state.acked_features(), 0);
        assert_eq!(state.avail_features(), 0b1011);
    }

    #[test]
    fn config_reads_past_the_end_are_zero() {
        let mut data = [0xaa; 4];
        read_config(&[1, 2, 3], 1, &mut data);
        assert_eq!(data, [2, 3, 0, 0]);
        read_config(&[1, 2, 3], u64::MAX, &mut data);
        assert_eq!(data, [0; 4]);
    }

    #[test]
    fn a_broken_device_interrupts_once_until_reset() {
        let interrupt = VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let (queue_errors, interrupt_errors) = (Counter::default(), Counter::default());
        let mut state = DeviceState::new(0);
        for _ in 0..2 {
            state.mark_broken(
                "test",
                &"it broke",
                Some(&interrupt),
                &queue_errors,
                &interrupt_errors,
            );
        }
        assert!(state.is_broken());
        assert_eq!(queue_errors.get(), 1);
        assert_eq!(interrupt_errors.get(), 0);
        assert_eq!(interrupt.status(), VIRTIO_MMIO_INT_CONFIG);
        assert_eq!(interrupt.irqfd().read().unwrap(), 1);

        state.activated();
        assert!(!state.is_broken());
        state.mark_broken("test", &"again", None, &queue_errors, &interrupt_errors);
        state.reset();
        assert!(!state.is_broken());
        assert_eq!(queue_errors.get(), 2);
    }
}
