//! ACPI tables for the guest: RSDP → XSDT → {FADT → DSDT, MADT}, written into the BIOS area.
//!
//! The platform is "hardware-reduced" ACPI (no PM1 blocks, no SCI, no GPEs): power-off and reset
//! go through one byte-wide I/O register (`devices::acpi_pm`), and devices are described in the
//! DSDT because the stock guest kernel finds virtio-mmio devices only there (`_HID` LNRO0005).

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{aml, Aml};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use ballast_devices::legacy::acpi_pm::{RESET_VALUE, S5_SLEEP_TYPE};

use crate::layout;

const OEM_ID: [u8; 6] = *b"BALLST";
const OEM_REVISION: u32 = 1;
/// FADT "hypervisor vendor identity": lets a guest tell it runs under ballast.
const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"BALLAST ";

/// MADT revision of ACPI 6.5 (from revision 5 on Linux honours the "online capable" flag, which
/// ballast does not set).
const MADT_REVISION: u8 = 6;
/// DSDT revision 2 and up means 64-bit AML integers.
const DSDT_REVISION: u8 = 6;
/// Size of the MADT before its interrupt controller structures.
const MADT_HEADER_LEN: u32 = 44;
/// MADT flags: PCAT_COMPAT (bit 0) stays clear. On a hardware-reduced platform Linux installs
/// the null legacy PIC anyway, and Firecracker and Cloud Hypervisor leave it clear too.
const MADT_FLAGS: u32 = 0;
/// KVM's in-kernel IOAPIC resets its ID register to 0; the MADT must report the same ID. (The
/// IOAPIC and local APIC IDs live in separate namespaces since xAPIC, so 0 does not clash.)
const IOAPIC_ID: u8 = 0;

/// FADT IA-PC boot architecture flags (ACPI 6.5, table 5.11).
const IAPC_BOOT_ARCH_8042: u16 = 1 << 1;
const IAPC_BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_BOOT_ARCH_MSI_NOT_SUPPORTED: u16 = 1 << 3;
const IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
/// ballast emulates an i8042 (so `reboot=k` works and Linux does not declare it absent), has no
/// VGA, no MSI (virtio-mmio uses IOAPIC pins) and no CMOS RTC (so Linux does not register the
/// rtc_cmos device on ports that read as all ones).
const IAPC_BOOT_ARCH: u16 = IAPC_BOOT_ARCH_8042
    | IAPC_BOOT_ARCH_VGA_NOT_PRESENT
    | IAPC_BOOT_ARCH_MSI_NOT_SUPPORTED
    | IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT;

/// Table placement; 8 keeps every table's 64-bit fields naturally aligned.
const TABLE_ALIGN: u64 = 8;

/// One virtio-mmio device as the DSDT describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioInfo {
    /// Guest-physical base of the register window.
    pub base: u64,
    /// Length of the register window in bytes.
    pub size: u64,
    /// GSI (IOAPIC pin) of the device's edge-triggered interrupt.
    pub irq: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("the ACPI tables need at least one vCPU")]
    NoVcpus,
    #[error(
        "virtio-mmio device {index} at {base:#x}+{size:#x} does not lie below 4 GiB, \
         where the DSDT's 32-bit memory descriptors can describe it"
    )]
    DeviceAbove4G { index: usize, base: u64, size: u64 },
    #[error(
        "virtio-mmio device {index} uses IRQ {irq}, outside the virtio range {}..={} \
         of the IOAPIC",
        layout::VIRTIO_IRQ_START,
        layout::VIRTIO_IRQ_END
    )]
    IrqOutOfRange { index: usize, irq: u32 },
    #[error("virtio-mmio device {index} uses IRQ {irq}, which another device already uses")]
    IrqInUse { index: usize, irq: u32 },
    #[error(
        "the ACPI tables take {size:#x} bytes but only {room:#x} fit between {start:#x} and \
         {end:#x}; configure fewer vCPUs or devices"
    )]
    TooLarge {
        size: u64,
        room: u64,
        start: u64,
        end: u64,
    },
    #[error(
        "cannot write the ACPI tables to guest memory at {addr:#x} \
         (is guest RAM at least 1 MiB?): {source}"
    )]
    GuestMemory {
        addr: u64,
        source: vm_memory::GuestMemoryError,
    },
}

/// Writes the ACPI tables for `num_vcpus` vCPUs and the given virtio-mmio devices into
/// [`layout::RSDP_START`, `layout::ACPI_TABLES_END`) and returns the RSDP's address.
pub fn create_acpi_tables<M: GuestMemory>(
    mem: &M,
    num_vcpus: u8,
    virtio_devices: &[VirtioMmioInfo],
) -> Result<GuestAddress, AcpiError> {
    write_tables(
        mem,
        num_vcpus,
        virtio_devices,
        layout::RSDP_START,
        layout::ACPI_TABLES_END,
    )
}

/// [`create_acpi_tables`] with the area as parameters, so tests can make it too small.
fn write_tables<M: GuestMemory>(
    mem: &M,
    num_vcpus: u8,
    virtio_devices: &[VirtioMmioInfo],
    start: u64,
    end: u64,
) -> Result<GuestAddress, AcpiError> {
    if num_vcpus == 0 {
        return Err(AcpiError::NoVcpus);
    }
    let dsdt = build_dsdt(virtio_devices)?;
    let madt = build_madt(num_vcpus);

    // Everything's size is known up front (the FADT and XSDT have fixed sizes), so place the
    // tables first and then fill in the pointers between them.
    let rsdp_addr = start;
    let xsdt_len = 36 + 2 * 8;
    let xsdt_addr = align_up(rsdp_addr + Rsdp::len() as u64);
    let fadt_addr = align_up(xsdt_addr + xsdt_len);
    let madt_addr = align_up(fadt_addr + acpi_tables::fadt::FADT::len() as u64);
    let dsdt_addr = align_up(madt_addr + madt.len() as u64);
    let tables_end = dsdt_addr + dsdt.len() as u64;
    if tables_end > end {
        return Err(AcpiError::TooLarge {
            size: tables_end - start,
            room: end.saturating_sub(start),
            start,
            end,
        });
    }

    let fadt = build_fadt(dsdt_addr);
    let mut xsdt = XSDT::new(OEM_ID, *b"BALLXSDT", OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let rsdp = Rsdp::new(OEM_ID, xsdt_addr);

    let xsdt = aml_bytes(&xsdt);
    debug_assert_eq!(xsdt.len() as u64, xsdt_len);
    write(mem, rsdp_addr, &aml_bytes(&rsdp))?;
    write(mem, xsdt_addr, &xsdt)?;
    write(mem, fadt_addr, &fadt)?;
    write(mem, madt_addr, madt.as_slice())?;
    write(mem, dsdt_addr, dsdt.as_slice())?;
    log::debug!(
        "ACPI tables at {rsdp_addr:#x}..{tables_end:#x}: XSDT {xsdt_addr:#x}, FADT {fadt_addr:#x}, \
         MADT {madt_addr:#x}, DSDT {dsdt_addr:#x} ({num_vcpus} vCPUs, {} virtio-mmio devices)",
        virtio_devices.len()
    );
    Ok(GuestAddress(rsdp_addr))
}

fn align_up(addr: u64) -> u64 {
    addr.next_multiple_of(TABLE_ALIGN)
}

fn write<M: GuestMemory>(mem: &M, addr: u64, bytes: &[u8]) -> Result<(), AcpiError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| AcpiError::GuestMemory { addr, source })
}

fn aml_bytes(item: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    item.to_aml_bytes(&mut bytes);
    bytes
}

/// The one register of `devices::acpi_pm`: sleep control, sleep status and reset all live there.
fn pm_register() -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        layout::ACPI_PM_PORT,
    )
}

fn build_fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, *b"BALLFACP", OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // No fixed-feature buttons: without these Linux would create fixed power and sleep
        // button devices whose events a hardware-reduced platform cannot deliver.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    fadt.reset_reg = pm_register();
    fadt.reset_value = RESET_VALUE;
    // Linux powers a hardware-reduced platform off through these two (ACPICA's extended sleep):
    // it writes WAK_STS to the status register, then SLP_TYP | SLP_EN to the control register.
    fadt.sleep_control_reg = pm_register();
    fadt.sleep_status_reg = pm_register();
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();
    aml_bytes(&fadt.finalize())
}

fn build_madt(num_vcpus: u8) -> Sdt {
    let mut madt = Sdt::new(
        *b"APIC",
        MADT_HEADER_LEN,
        MADT_REVISION,
        OEM_ID,
        *b"BALLAPIC",
        OEM_REVISION,
    );
    madt.write_u32(36, layout::APIC_START as u32);
    madt.write_u32(40, MADT_FLAGS);
    let mut entries = Vec::new();
    for id in 0..num_vcpus {
        ProcessorLocalApic::new(id, id, EnabledStatus::Enabled).to_aml_bytes(&mut entries);
    }
    // GSI base 0: GSI n is IOAPIC pin n, which is what KVM's default routing makes of IRQ n.
    // No Interrupt Source Overrides: without one an ISA IRQ is identity-mapped to its GSI,
    // which is exactly ballast's wiring (serial 4, i8042 1), and an override of IRQ 0 would
    // even be taken for the SCI's (the FADT's SCI_INT is 0).
    IoApic::new(IOAPIC_ID, layout::IOAPIC_START as u32, 0).to_aml_bytes(&mut entries);
    madt.append_slice(&entries);
    madt
}

fn build_dsdt(devices: &[VirtioMmioInfo]) -> Result<Sdt, AcpiError> {
    let mut used_irqs = 0u32;
    let mut sb = Vec::new();
    for (index, dev) in devices.iter().enumerate() {
        if !(layout::VIRTIO_IRQ_START..=layout::VIRTIO_IRQ_END).contains(&dev.irq) {
            return Err(AcpiError::IrqOutOfRange {
                index,
                irq: dev.irq,
            });
        }
        if used_irqs & (1 << dev.irq) != 0 {
            return Err(AcpiError::IrqInUse {
                index,
                irq: dev.irq,
            });
        }
        used_irqs |= 1 << dev.irq;
        let range = u32::try_from(dev.base)
            .ok()
            .zip(u32::try_from(dev.size).ok())
            .filter(|(base, size)| base.checked_add(*size).is_some());
        let Some((base, size)) = range else {
            return Err(AcpiError::DeviceAbove4G {
                index,
                base: dev.base,
                size: dev.size,
            });
        };
        // Unique IRQs from a range of 19 bound `index`, so the name stays 4 characters.
        virtio_device_aml(index, base, size, dev.irq, &mut sb);
    }
    serial_aml(&mut sb);
    i8042_aml(&mut sb);

    let mut body = Vec::new();
    // \_S5_: Package { SLP_TYPa, SLP_TYPb, reserved, reserved }. Only SLP_TYPa is used: a
    // hardware-reduced platform has no PM1b block.
    aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_SLEEP_TYPE, &aml::ZERO, &aml::ZERO, &aml::ZERO]),
    )
    .to_aml_bytes(&mut body);
    body.extend(aml::Scope::raw("\\_SB_".into(), sb));

    let mut dsdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        *b"BALLDSDT",
        OEM_REVISION,
    );
    dsdt.append_slice(&body);
    Ok(dsdt)
}

/// Edge-triggered, active-high, exclusive: how KVM's irqfd and KVM_IRQ_LINE pulses look.
fn edge_irq(gsi: u32) -> aml::Interrupt {
    aml::Interrupt::new(true, true, false, false, gsi)
}

fn virtio_device_aml(index: usize, base: u32, size: u32, irq: u32, sink: &mut Vec<u8>) {
    let name = format!("VR{index:02X}");
    let hid = aml::Name::new("_HID".into(), &"LNRO0005");
    let uid = aml::Name::new("_UID".into(), &(index as u32));
    // Cache-coherent DMA: the "device" is the VMM reading guest RAM through the same caches.
    let cca = aml::Name::new("_CCA".into(), &aml::ONE);
    let mem = aml::Memory32Fixed::new(true, base, size);
    let int = edge_irq(irq);
    let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&mem, &int]));
    aml::Device::new(name.as_str().into(), vec![&hid, &uid, &cca, &crs]).to_aml_bytes(sink);
}

/// COM1. With the null legacy PIC of a hardware-reduced platform, Linux maps a legacy IRQ only
/// when a device's `_CRS` names it; the 8250 PNP driver then takes over the hard-coded ttyS0.
fn serial_aml(sink: &mut Vec<u8>) {
    let port = layout::COM1_PORT as u16;
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501"));
    let uid = aml::Name::new("_UID".into(), &aml::ZERO);
    let io = aml::IO::new(port, port, 1, 8);
    let int = edge_irq(layout::SERIAL_IRQ);
    let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&io, &int]));
    aml::Device::new("COM1".into(), vec![&hid, &uid, &crs]).to_aml_bytes(sink);
}

/// The i8042: data port first, then command/status port, as Linux's i8042 PNP probe expects.
fn i8042_aml(sink: &mut Vec<u8>) {
    let data = layout::I8042_PORT as u16;
    let command = data + 4;
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0303"));
    let data_io = aml::IO::new(data, data, 1, 1);
    let command_io = aml::IO::new(command, command, 1, 1);
    let int = edge_irq(layout::I8042_IRQ);
    let crs = aml::Name::new(
        "_CRS".into(),
        &aml::ResourceTemplate::new(vec![&data_io, &command_io, &int]),
    );
    aml::Device::new("PS2_".into(), vec![&hid, &crs]).to_aml_bytes(sink);
}

#[cfg(test)]
mod tests;
