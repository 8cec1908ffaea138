//! The device status state machine (virtio 1.2 §2.1 and §3.1.1): which writes to the Status
//! register the transport accepts, and what each one asks it to do.
//!
//! The driver builds the status up one bit at a time, in a fixed order, always writing back the
//! whole value it read plus the new bit (this is what Linux's `virtio_add_status` does):
//! ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK. It may give up with FAILED at any time and
//! clears everything only by writing 0 (reset). Anything else is refused, so the transport never
//! reaches a state the spec does not describe.

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};

pub const ACKNOWLEDGE: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
pub const DRIVER: u32 = VIRTIO_CONFIG_S_DRIVER;
pub const FEATURES_OK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;
pub const DRIVER_OK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;
/// Set by the device, never by the driver: the device hit an error only a reset clears.
pub const NEEDS_RESET: u32 = VIRTIO_CONFIG_S_NEEDS_RESET;
pub const FAILED: u32 = VIRTIO_CONFIG_S_FAILED;

/// The bits a driver may set.
const DRIVER_BITS: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | FAILED;

/// The status while the driver sets up queues: after FEATURES_OK, before DRIVER_OK.
pub const QUEUE_SETUP: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK;
/// The status while the driver writes its feature bits.
pub const FEATURE_NEGOTIATION: u32 = ACKNOWLEDGE | DRIVER;

/// What a write to Status asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    /// 0 was written: reset the device.
    Reset,
    /// The same status was written again.
    Unchanged,
    /// Store this bit (ACKNOWLEDGE, DRIVER or FAILED); nothing else happens.
    Set(u32),
    /// The driver finished writing features: check them, and set FEATURES_OK only if they pass.
    FeaturesOk,
    /// The driver finished setting up queues: activate the device.
    DriverOk,
    /// Not a transition the spec allows; the status stays as it was.
    Refused(&'static str),
}

/// Classifies the driver's write of `written` to Status while it holds `current`.
pub fn classify(current: u32, written: u32) -> StatusChange {
    if written == 0 {
        return StatusChange::Reset;
    }
    // NEEDS_RESET belongs to the device. A driver that writes back the value it read (plus
    // FAILED, say) carries it along; that neither sets nor clears it.
    let written = written & !NEEDS_RESET;
    let held = current & !NEEDS_RESET;
    if written & !DRIVER_BITS != 0 {
        return StatusChange::Refused("unknown status bits");
    }
    if held & !written != 0 {
        return StatusChange::Refused("status bits can only be cleared by a reset");
    }
    let added = written & !held;
    if added == 0 {
        return StatusChange::Unchanged;
    }
    // Giving up is always allowed; the driver resets the device afterwards.
    if added == FAILED {
        return StatusChange::Set(FAILED);
    }
    if current & (FAILED | NEEDS_RESET) != 0 {
        return StatusChange::Refused("the device must be reset first");
    }
    let expected = match held {
        0 => ACKNOWLEDGE,
        ACKNOWLEDGE => DRIVER,
        FEATURE_NEGOTIATION => FEATURES_OK,
        QUEUE_SETUP => DRIVER_OK,
        _ => return StatusChange::Refused("the driver has already finished initialisation"),
    };
    if added != expected {
        return StatusChange::Refused("status bits must be set one at a time, in order");
    }
    match added {
        FEATURES_OK => StatusChange::FeaturesOk,
        DRIVER_OK => StatusChange::DriverOk,
        bit => StatusChange::Set(bit),
    }
}

#[cfg(test)]
mod tests {
    use super::StatusChange::*;
    use super::*;

    const LIVE: u32 = QUEUE_SETUP | DRIVER_OK;

    #[test]
    fn the_linux_sequence_is_accepted_step_by_step() {
        assert_eq!(classify(0, 0), Reset);
        assert_eq!(classify(0, ACKNOWLEDGE), Set(ACKNOWLEDGE));
        assert_eq!(classify(ACKNOWLEDGE, FEATURE_NEGOTIATION), Set(DRIVER));
        assert_eq!(classify(FEATURE_NEGOTIATION, QUEUE_SETUP), FeaturesOk);
        assert_eq!(classify(QUEUE_SETUP, LIVE), DriverOk);
        assert_eq!(classify(LIVE, LIVE), Unchanged);
        assert_eq!(classify(LIVE, 0), Reset);
    }

    #[test]
    fn skipping_or_bundling_steps_is_refused() {
        assert!(matches!(classify(0, DRIVER), Refused(_)));
        assert!(matches!(classify(0, FEATURE_NEGOTIATION), Refused(_)));
        // DRIVER_OK without FEATURES_OK: a legacy driver, which a version 2 device refuses.
        assert!(matches!(
            classify(FEATURE_NEGOTIATION, FEATURE_NEGOTIATION | DRIVER_OK),
            Refused(_)
        ));
        assert!(matches!(classify(ACKNOWLEDGE, QUEUE_SETUP), Refused(_)));
    }

    #[test]
    fn clearing_bits_or_setting_unknown_ones_is_refused() {
        assert!(matches!(classify(LIVE, QUEUE_SETUP), Refused(_)));
        assert!(matches!(classify(ACKNOWLEDGE, DRIVER), Refused(_)));
        assert!(matches!(classify(0, 0x10), Refused(_)));
        assert!(matches!(classify(0, 0x20), Refused(_)));
    }

    #[test]
    fn failed_is_accepted_at_any_time() {
        assert_eq!(classify(0, FAILED), Set(FAILED));
        assert_eq!(
            classify(FEATURE_NEGOTIATION, FEATURE_NEGOTIATION | FAILED),
            Set(FAILED)
        );
        assert_eq!(
            classify(LIVE | NEEDS_RESET, LIVE | NEEDS_RESET | FAILED),
            Set(FAILED)
        );
    }

    #[test]
    fn after_failure_or_needs_reset_only_a_reset_moves_on() {
        assert!(matches!(
            classify(ACKNOWLEDGE | FAILED, FEATURE_NEGOTIATION | FAILED),
            Refused(_)
        ));
        assert!(matches!(classify(NEEDS_RESET, ACKNOWLEDGE), Refused(_)));
        assert_eq!(classify(NEEDS_RESET, 0), Reset);
    }

    #[test]
    fn needs_reset_in_the_written_value_is_ignored() {
        // Writing back what was read, NEEDS_RESET included, changes nothing...
        assert_eq!(classify(LIVE | NEEDS_RESET, LIVE | NEEDS_RESET), Unchanged);
        // ...and the driver cannot set it either.
        assert_eq!(classify(LIVE, LIVE | NEEDS_RESET), Unchanged);
    }
}
