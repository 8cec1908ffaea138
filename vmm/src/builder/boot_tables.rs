//! What the guest reads at boot: the ACPI tables (which is how the stock kernel finds the
//! virtio-mmio devices), the command line (with `virtio_mmio.device=` entries for kernels that
//! take them) and the boot parameters.

use super::memory::Guest;
use super::RunError;
use crate::acpi::{create_acpi_tables, VirtioMmioInfo};
use crate::boot;
use crate::config::VmConfig;
use crate::virtio_mmio::MmioSlot;

pub(super) fn write(
    config: &VmConfig,
    guest: &Guest,
    num_vcpus: u8,
    slots: &[MmioSlot],
) -> Result<(), RunError> {
    let acpi_devices: Vec<VirtioMmioInfo> = slots
        .iter()
        .map(|s| VirtioMmioInfo {
            base: s.base,
            size: s.size,
            irq: s.irq,
        })
        .collect();
    let rsdp = create_acpi_tables(&guest.mem, num_vcpus, &acpi_devices)?;
    let mmio_cmdline: Vec<_> = slots.iter().map(|s| (s.base, s.size, s.irq)).collect();
    let cmdline = boot::build_cmdline(&config.cmdline, &mmio_cmdline)?;
    boot::write_boot_params(
        &guest.mem,
        config.mem_size,
        &guest.kernel,
        &cmdline,
        guest.initrd,
        Some(rsdp),
    )?;
    Ok(())
}
