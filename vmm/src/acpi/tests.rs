//! ACPI tables parsed back, and disassembled by iasl where it is installed.

use super::*;
use vm_memory::bitmap::AtomicBitmap;

type Mem = vm_memory::GuestMemoryMmap<AtomicBitmap>;

fn test_mem() -> Mem {
    Mem::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
}

fn devices(n: u32) -> Vec<VirtioMmioInfo> {
    (0..n)
        .map(|i| VirtioMmioInfo {
            base: layout::VIRTIO_MMIO_START + u64::from(i) * layout::VIRTIO_MMIO_SIZE,
            size: layout::VIRTIO_MMIO_SIZE,
            irq: layout::VIRTIO_IRQ_START + i,
        })
        .collect()
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Reads a whole table (its length from its header) and checks the checksum.
fn read_table(mem: &Mem, addr: u64) -> Vec<u8> {
    let mut header = [0u8; 36];
    mem.read_slice(&mut header, GuestAddress(addr)).unwrap();
    let len = u32_at(&header, 4) as usize;
    assert!(len >= 36);
    let mut table = vec![0u8; len];
    mem.read_slice(&mut table, GuestAddress(addr)).unwrap();
    assert_eq!(
        sum(&table),
        0,
        "checksum of {}",
        String::from_utf8_lossy(&table[..4])
    );
    assert!(addr + len as u64 <= layout::ACPI_TABLES_END);
    table
}

struct Tables {
    rsdp: Vec<u8>,
    xsdt: Vec<u8>,
    fadt: Vec<u8>,
    madt: Vec<u8>,
    dsdt: Vec<u8>,
}

fn parse(mem: &Mem, rsdp_addr: GuestAddress) -> Tables {
    let mut rsdp = vec![0u8; 36];
    mem.read_slice(&mut rsdp, rsdp_addr).unwrap();
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp[..20]), 0, "RSDP checksum");
    assert_eq!(sum(&rsdp), 0, "RSDP extended checksum");
    assert_eq!(rsdp[15], 2, "RSDP revision");
    assert_eq!(u32_at(&rsdp, 20), 36, "RSDP length");
    let xsdt = read_table(mem, u64_at(&rsdp, 24));
    assert_eq!(&xsdt[..4], b"XSDT");
    let entries: Vec<u64> = (36..xsdt.len())
        .step_by(8)
        .map(|o| u64_at(&xsdt, o))
        .collect();
    let tables: Vec<Vec<u8>> = entries.iter().map(|&a| read_table(mem, a)).collect();
    let sigs: Vec<&[u8]> = tables.iter().map(|t| &t[..4]).collect();
    assert_eq!(sigs, [b"FACP", b"APIC"]);
    let fadt = tables[0].clone();
    let madt = tables[1].clone();
    let dsdt = read_table(mem, u64_at(&fadt, 140));
    assert_eq!(&dsdt[..4], b"DSDT");
    Tables {
        rsdp,
        xsdt,
        fadt,
        madt,
        dsdt,
    }
}

#[test]
fn tables_parse_back() {
    let mem = test_mem();
    let devs = devices(3);
    let rsdp = create_acpi_tables(&mem, 4, &devs).unwrap();
    assert_eq!(rsdp, GuestAddress(layout::RSDP_START));
    let t = parse(&mem, rsdp);
    assert_eq!(t.xsdt.len(), 36 + 16);

    // MADT: local APIC address, no PCAT_COMPAT, one enabled local APIC per vCPU, one IOAPIC.
    assert_eq!(u32_at(&t.madt, 36), layout::APIC_START as u32);
    assert_eq!(u32_at(&t.madt, 40), 0);
    let mut lapics = Vec::new();
    let mut ioapics = Vec::new();
    let mut off = 44;
    while off < t.madt.len() {
        let (kind, len) = (t.madt[off], t.madt[off + 1] as usize);
        match kind {
            0 => {
                assert_eq!(len, 8);
                lapics.push((t.madt[off + 2], t.madt[off + 3], u32_at(&t.madt, off + 4)));
            }
            1 => {
                assert_eq!(len, 12);
                ioapics.push((u32_at(&t.madt, off + 4), u32_at(&t.madt, off + 8)));
            }
            other => panic!("unexpected MADT entry type {other}"),
        }
        off += len;
    }
    assert_eq!(off, t.madt.len());
    assert_eq!(lapics, [(0, 0, 1), (1, 1, 1), (2, 2, 1), (3, 3, 1)]);
    assert_eq!(ioapics, [(layout::IOAPIC_START as u32, 0)]);

    // DSDT: one LNRO0005 per device with its window and edge IRQ, and \_S5_.
    assert_eq!(count(&t.dsdt, b"LNRO0005"), 3);
    assert_eq!(count(&t.dsdt, b"_S5_"), 1);
    for d in &devs {
        let mut mem32 = vec![0x86, 9, 0, 1];
        mem32.extend((d.base as u32).to_le_bytes());
        mem32.extend((d.size as u32).to_le_bytes());
        assert_eq!(count(&t.dsdt, &mem32), 1);
        let mut irq = vec![0x89, 6, 0, 0b0011, 1];
        irq.extend(d.irq.to_le_bytes());
        assert_eq!(count(&t.dsdt, &irq), 1);
    }
    // COM1 and the i8042, by their EISA IDs and IO descriptors.
    assert_eq!(
        count(&t.dsdt, &aml_bytes(&aml::EISAName::new("PNP0501"))),
        1
    );
    assert_eq!(
        count(&t.dsdt, &aml_bytes(&aml::EISAName::new("PNP0303"))),
        1
    );
    assert_eq!(count(&t.dsdt, &[0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8]), 1);
    assert_eq!(count(&t.dsdt, &[0x47, 1, 0x60, 0, 0x60, 0, 1, 1]), 1);
    assert_eq!(count(&t.dsdt, &[0x47, 1, 0x64, 0, 0x64, 0, 1, 1]), 1);
    assert_eq!(t.rsdp.len(), 36);
}

#[test]
fn fadt_fields() {
    let mem = test_mem();
    let rsdp = create_acpi_tables(&mem, 1, &[]).unwrap();
    let fadt = parse(&mem, rsdp).fadt;
    assert_eq!(
        fadt.len(),
        276,
        "ACPI 6.x FADT, with the hypervisor vendor identity"
    );
    assert_eq!((fadt[8], fadt[131]), (6, 5), "FADT revision 6.5");
    let flags = u32_at(&fadt, 112);
    assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
    assert_ne!(flags & (1 << 4), 0, "PWR_BUTTON");
    assert_ne!(flags & (1 << 5), 0, "SLP_BUTTON");
    let boot_arch = u16_at(&fadt, 109);
    assert_ne!(boot_arch & (1 << 1), 0, "8042 present");
    assert_ne!(boot_arch & (1 << 2), 0, "VGA not present");
    assert_eq!(u32_at(&fadt, 40), 0, "32-bit DSDT pointer unused");
    // Reset register (116), sleep control (244) and status (256): SystemIO, 8 bits, byte
    // access, at the PM port.
    let pm = [1u8, 8, 0, 1];
    for off in [116, 244, 256] {
        assert_eq!(fadt[off..off + 4], pm, "GAS at {off}");
        assert_eq!(u64_at(&fadt, off + 4), layout::ACPI_PM_PORT, "GAS at {off}");
    }
    assert_eq!(fadt[128], RESET_VALUE);
    assert_eq!(&fadt[268..276], b"BALLAST ");
}

#[test]
fn vcpu_counts_and_no_devices() {
    for n in [1u8, 2, 255] {
        let mem = test_mem();
        let rsdp = create_acpi_tables(&mem, n, &[]).unwrap();
        let t = parse(&mem, rsdp);
        assert_eq!(t.madt.len(), 44 + 8 * n as usize + 12);
        assert_eq!(count(&t.dsdt, b"LNRO0005"), 0);
        assert_eq!(count(&t.dsdt, b"_S5_"), 1);
    }
    let all = devices(layout::VIRTIO_IRQ_END - layout::VIRTIO_IRQ_START + 1);
    let mem = test_mem();
    let t = parse(&mem, create_acpi_tables(&mem, 8, &all).unwrap());
    assert_eq!(count(&t.dsdt, b"LNRO0005"), all.len());
}

#[test]
fn bad_input_is_an_error() {
    let mem = test_mem();
    assert!(matches!(
        create_acpi_tables(&mem, 0, &[]),
        Err(AcpiError::NoVcpus)
    ));
    let mut devs = devices(2);
    devs[1].irq = devs[0].irq;
    assert!(matches!(
        create_acpi_tables(&mem, 1, &devs),
        Err(AcpiError::IrqInUse { index: 1, .. })
    ));
    devs[1].irq = layout::SERIAL_IRQ;
    assert!(matches!(
        create_acpi_tables(&mem, 1, &devs),
        Err(AcpiError::IrqOutOfRange { index: 1, irq: 4 })
    ));
    devs[1].irq = 24;
    assert!(create_acpi_tables(&mem, 1, &devs).is_err());
    let mut devs = devices(1);
    devs[0].base = 0xffff_f800;
    assert!(matches!(
        create_acpi_tables(&mem, 1, &devs),
        Err(AcpiError::DeviceAbove4G { index: 0, .. })
    ));
    devs[0].base = 1 << 32;
    assert!(create_acpi_tables(&mem, 1, &devs).is_err());
}

#[test]
fn too_large_is_an_error() {
    let mem = test_mem();
    let start = layout::RSDP_START;
    let err = write_tables(&mem, 255, &devices(19), start, start + 0x400).unwrap_err();
    assert!(
        matches!(err, AcpiError::TooLarge { room: 0x400, .. }),
        "{err}"
    );
    // Nothing was written.
    let mut b = [0u8; 8];
    mem.read_slice(&mut b, GuestAddress(start)).unwrap();
    assert_eq!(b, [0; 8]);
    // Guest RAM that ends inside the table area.
    let small = Mem::from_ranges(&[(GuestAddress(0), (layout::RSDP_START + 64) as usize)]).unwrap();
    let err = create_acpi_tables(&small, 1, &[]).unwrap_err();
    assert!(matches!(err, AcpiError::GuestMemory { .. }), "{err}");
}

/// Disassembles every table with ACPICA's `iasl` (package acpica-tools) when it is installed,
/// which checks the AML and the table layouts independently of acpi_tables.
// Long on purpose: write the tables, run iasl, check each table's disassembly, in one place.
#[test]
fn iasl_disassembles_the_tables() {
    let Ok(out) = std::process::Command::new("iasl").arg("-v").output() else {
        eprintln!("iasl not installed; skipping");
        return;
    };
    assert!(out.status.success());
    let mem = test_mem();
    let devs = devices(2);
    let t = parse(&mem, create_acpi_tables(&mem, 2, &devs).unwrap());
    let dir = std::env::temp_dir().join(format!("ballast-acpi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut dsl = std::collections::HashMap::new();
    for (name, bytes) in [
        ("xsdt", &t.xsdt),
        ("facp", &t.fadt),
        ("apic", &t.madt),
        ("dsdt", &t.dsdt),
    ] {
        std::fs::write(dir.join(format!("{name}.dat")), bytes).unwrap();
        let out = std::process::Command::new("iasl")
            .current_dir(&dir)
            .args(["-d", &format!("{name}.dat")])
            .output()
            .unwrap();
        let text = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap_or_default();
        assert!(
            out.status.success() && !text.is_empty(),
            "iasl -d {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Compare with runs of whitespace squashed: iasl's column alignment is cosmetic.
        dsl.insert(name, text.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    let dsdt = &dsl["dsdt"];
    for want in [
        "Name (_S5, Package (0x04)",
        "Name (_HID, \"LNRO0005\")",
        "Name (_CCA, One)",
        "Memory32Fixed (ReadWrite, 0xD0001000, // Address Base 0x00001000, // Address Length",
        "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000006, }",
        "IO (Decode16, 0x03F8, // Range Minimum 0x03F8, // Range Maximum 0x01, // Alignment \
         0x08, // Length",
        "Name (_HID, EisaId (\"PNP0501\")",
        "Name (_HID, EisaId (\"PNP0303\")",
    ] {
        assert!(dsdt.contains(want), "DSDT lacks {want:?}:\n{dsdt}");
    }
    let fadt = &dsl["facp"];
    for want in [
        "Hardware Reduced (V5) : 1",
        "Reset Register Supported (V2) : 1",
        "8042 Present on ports 60/64 (V2) : 1",
        "Hypervisor ID : 205453414C4C4142",
        &format!("DSDT Address : {:016X}", u64_at(&t.fadt, 140)),
    ] {
        assert!(fadt.contains(want), "FADT lacks {want:?}:\n{fadt}");
    }
    let madt = &dsl["apic"];
    assert_eq!(madt.matches("[Processor Local APIC]").count(), 2, "{madt}");
    assert_eq!(madt.matches("[I/O APIC]").count(), 1, "{madt}");
    for want in [
        "Local Apic Address : FEE00000",
        "PC-AT Compatibility : 0",
        "Address : FEC00000",
    ] {
        assert!(madt.contains(want), "MADT lacks {want:?}:\n{madt}");
    }
    // The disassembled DSDT compiles back without errors.
    let out = std::process::Command::new("iasl")
        .current_dir(&dir)
        .arg("dsdt.dsl")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "iasl dsdt.dsl: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
