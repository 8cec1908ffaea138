//! The hardware-reduced ACPI power-management register (one port-I/O byte): the FADT the VMM
//! writes names this one byte as sleep control, sleep status and reset register.

use vmm_sys_util::eventfd::EventFd;

use ballast_virtio::metrics::{report, Counter};

use crate::bus::BusDevice;

/// The sleep type the DSDT's `\_S5_` object hands to the guest; the guest writes it (shifted into
/// SLP_TYP, with SLP_EN) to the sleep control register to power off.
pub const S5_SLEEP_TYPE: u8 = 5;
/// The value the guest writes to the FADT reset register to reboot.
pub const RESET_VALUE: u8 = 1;

/// The register is one byte wide.
pub const ACPI_PM_PORT_LEN: u64 = 1;

/// Sleep control register fields (ACPI 6.5, section 4.8.3.7).
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111 << SLP_TYP_SHIFT;
const SLP_EN: u8 = 1 << 5;
/// Sleep status register: wake status, written (as 1 to clear) just before the guest sleeps.
const WAK_STS: u8 = 1 << 7;

/// What the guest writes to power off: SLP_TYP = S5 with SLP_EN.
pub const POWEROFF_VALUE: u8 = (S5_SLEEP_TYPE << SLP_TYP_SHIFT) | SLP_EN;

/// Turns the guest's power-off and reset writes into eventfd signals for the VMM's event loop.
const LABEL: &str = "ACPI PM";

pub struct AcpiPmDevice {
    poweroff: EventFd,
    reset: EventFd,
    /// Writes the device ignored: a guest can make as many as it likes, so only the first few
    /// are warnings (`ballast_virtio::metrics::report`).
    pub ignored_writes: Counter,
}

impl AcpiPmDevice {
    pub fn new(poweroff: EventFd, reset: EventFd) -> Self {
        Self {
            poweroff,
            reset,
            ignored_writes: Counter::default(),
        }
    }

    fn signal(evt: &EventFd, what: &str) {
        if let Err(e) = evt.write(1) {
            log::error!("ACPI PM: cannot signal the guest's {what}: {e}");
        }
    }
}

impl BusDevice for AcpiPmDevice {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Sleep status with WAK_STS clear: the guest is not waking from a sleep state.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (0, Some(&value)) = (offset, data.first()) else {
            report(
                &self.ignored_writes,
                LABEL,
                format_args!("ignoring a write of {data:x?} at offset {offset}"),
            );
            return;
        };
        if value == RESET_VALUE {
            log::info!("guest requested a reset through the ACPI reset register");
            Self::signal(&self.reset, "reset");
        } else if value & SLP_EN != 0 {
            let sleep_type = (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
            if sleep_type == S5_SLEEP_TYPE {
                log::info!("guest powered off (ACPI S5)");
                Self::signal(&self.poweroff, "power-off");
            } else {
                // The DSDT offers only \_S5_, so a guest should never ask for another state.
                report(
                    &self.ignored_writes,
                    LABEL,
                    format_args!("guest asked for unsupported sleep type {sleep_type}; ignored"),
                );
            }
        } else if value == WAK_STS {
            log::debug!("ACPI PM: guest cleared the wake status");
        } else {
            report(
                &self.ignored_writes,
                LABEL,
                format_args!("ignoring an unexpected write of {value:#04x}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    struct Fixture {
        dev: AcpiPmDevice,
        poweroff: EventFd,
        reset: EventFd,
    }

    fn fixture() -> Fixture {
        let poweroff = EventFd::new(EFD_NONBLOCK).unwrap();
        let reset = EventFd::new(EFD_NONBLOCK).unwrap();
        let dev = AcpiPmDevice::new(poweroff.try_clone().unwrap(), reset.try_clone().unwrap());
        Fixture {
            dev,
            poweroff,
            reset,
        }
    }

    #[test]
    fn poweroff_sequence_signals_poweroff_only() {
        let mut f = fixture();
        assert_eq!(POWEROFF_VALUE, 0x34);
        // What Linux (ACPICA's extended sleep) writes: WAK_STS to the status register, then
        // SLP_TYP | SLP_EN to the control register; both are this one port.
        f.dev.write(0, &[WAK_STS]);
        assert!(f.poweroff.read().is_err());
        f.dev.write(0, &[POWEROFF_VALUE]);
        assert_eq!(f.poweroff.read().unwrap(), 1);
        assert!(f.reset.read().is_err());
    }

    #[test]
    fn reset_value_signals_reset_only() {
        let mut f = fixture();
        f.dev.write(0, &[RESET_VALUE]);
        assert_eq!(f.reset.read().unwrap(), 1);
        assert!(f.poweroff.read().is_err());
    }

    #[test]
    fn other_writes_are_ignored() {
        let mut f = fixture();
        // Other sleep types with SLP_EN, SLP_TYP = 5 without SLP_EN, junk, a stray offset and an
        // empty access.
        for v in [(3 << 2) | SLP_EN, SLP_EN, S5_SLEEP_TYPE << 2, 0, 0x02, 0xff] {
            f.dev.write(0, &[v]);
        }
        f.dev.write(1, &[POWEROFF_VALUE]);
        f.dev.write(0, &[]);
        assert!(f.poweroff.read().is_err());
        assert!(f.reset.read().is_err());
        // Counted, and logged as warnings only the first few times.
        assert_eq!(f.dev.ignored_writes.get(), 8);
    }

    #[test]
    fn reads_return_zero() {
        let mut f = fixture();
        let mut b = [0xffu8; 2];
        f.dev.read(0, &mut b);
        assert_eq!(b, [0, 0]);
    }
}
