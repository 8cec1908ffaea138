//! Where things live in guest-physical memory and in port space (x86_64).

/// Boot GDT and IDT for entering the kernel in long mode.
pub const BOOT_GDT_START: u64 = 0x500;
pub const BOOT_IDT_START: u64 = 0x520;
/// Identity page tables: PML4, PDPT and one PD of 2 MiB pages mapping the first 1 GiB.
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// The Linux "zero page" (struct boot_params).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Kernel command line and its maximum size (x86 COMMAND_LINE_SIZE).
pub const CMDLINE_START: u64 = 0x20000;
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the EBDA; low RAM ends here and [EBDA_START, 1 MiB) is reserved in the e820 map.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables: the RSDP where Linux scans for it, the other tables right after.
pub const RSDP_START: u64 = 0xe0000;
pub const ACPI_TABLES_END: u64 = 0x100000;
/// Kernels are loaded from here up.
pub const HIMEM_START: u64 = 0x100000;

/// The 32-bit MMIO gap below 4 GiB: no RAM here.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// virtio-mmio devices, one 4 KiB window each, from here up.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IOAPIC and local APIC register windows.
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const APIC_START: u64 = 0xfee0_0000;

/// Legacy IRQs: COM1 and the i8042 keyboard controller.
pub const SERIAL_IRQ: u32 = 4;
pub const I8042_IRQ: u32 = 1;
/// GSIs handed out to virtio-mmio devices (IOAPIC pins 5..=23).
pub const VIRTIO_IRQ_START: u32 = 5;
pub const VIRTIO_IRQ_END: u32 = 23;

/// Port I/O.
pub const COM1_PORT: u64 = 0x3f8;
pub const I8042_PORT: u64 = 0x60;
/// The ACPI sleep control / status / reset register (one byte), see `devices::acpi_pm`.
pub const ACPI_PM_PORT: u64 = 0x600;

/// The largest guest RAM ballast maps (the guest-physical address width keeps far above this).
pub const MAX_GUEST_MEMORY: u64 = 1 << 40;
