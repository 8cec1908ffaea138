//! Loading a Linux kernel (bzImage or ELF vmlinux), its initramfs and command line, and the zero
//! page that tells the kernel where everything is.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ballast_virtio::GuestMemoryMmap;
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader, KernelLoaderResult};
use vm_memory::{Bytes, GuestAddress};

use crate::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, MMIO_GAP_START, ZERO_PAGE_START,
};
use crate::vstate::memory::{e820_map, PAGE_SIZE};

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
/// The 64-bit entry point of a bzImage is 0x200 bytes into its protected-mode part.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open kernel {path}: {source}")]
    OpenKernel {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a Linux kernel: it is neither a bzImage nor an ELF vmlinux")]
    NotAKernel { path: PathBuf },
    #[error("cannot load kernel {path}: {source}")]
    LoadKernel {
        path: PathBuf,
        source: linux_loader::loader::Error,
    },
    #[error("cannot open initramfs {path}: {source}")]
    OpenInitrd {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("initramfs {path} ({size} bytes) does not fit in guest RAM below {limit:#x} after the kernel; give the VM more --memory")]
    InitrdTooBig {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("cannot read initramfs {path} into guest RAM: {source}")]
    LoadInitrd {
        path: PathBuf,
        source: vm_memory::GuestMemoryError,
    },
    #[error("kernel command line is invalid or longer than {CMDLINE_MAX_SIZE} bytes: {0}")]
    Cmdline(linux_loader::cmdline::Error),
    #[error("cannot write the kernel command line: {0}")]
    WriteCmdline(linux_loader::loader::Error),
    #[error("cannot write boot structures into guest RAM: {0}")]
    WriteBootParams(String),
    #[error("guest RAM too small for the boot page tables: {0}")]
    WriteBootStructures(vm_memory::GuestMemoryError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    BzImage,
    Elf,
}

/// Where the kernel landed and where the boot vCPU starts.
pub struct LoadedKernel {
    pub format: KernelFormat,
    pub entry: GuestAddress,
    result: KernelLoaderResult,
}

/// Tells a bzImage ("HdrS" at 0x202) from an ELF vmlinux by their magic numbers.
pub fn detect_format(file: &mut File) -> std::io::Result<Option<KernelFormat>> {
    let mut elf_magic = [0u8; 4];
    file.seek(SeekFrom::Start(0))?;
    if file.read_exact(&mut elf_magic).is_ok() && elf_magic == *b"\x7fELF" {
        return Ok(Some(KernelFormat::Elf));
    }
    let mut hdrs = [0u8; 4];
    file.seek(SeekFrom::Start(0x202))?;
    if file.read_exact(&mut hdrs).is_ok() && hdrs == *b"HdrS" {
        return Ok(Some(KernelFormat::BzImage));
    }
    Ok(None)
}

pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let open_err = |source| BootError::OpenKernel {
        path: path.into(),
        source,
    };
    let mut file = File::open(path).map_err(open_err)?;
    let format = detect_format(&mut file)
        .map_err(open_err)?
        .ok_or_else(|| BootError::NotAKernel { path: path.into() })?;
    let himem = Some(GuestAddress(HIMEM_START));
    let loaded = match format {
        KernelFormat::BzImage => BzImage::load(mem, None, &mut file, himem),
        KernelFormat::Elf => Elf::load(mem, None, &mut file, himem),
    };
    let result = loaded.map_err(|source| BootError::LoadKernel {
        path: path.into(),
        source,
    })?;
    let entry = match format {
        KernelFormat::BzImage => GuestAddress(result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET),
        KernelFormat::Elf => result.kernel_load,
    };
    Ok(LoadedKernel {
        format,
        entry,
        result,
    })
}

/// Copies the initramfs to the top of low RAM (where the kernel looks for room last) and returns
/// its (address, size).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &LoadedKernel,
    path: &Path,
) -> Result<(GuestAddress, u64), BootError> {
    let mut file = File::open(path).map_err(|source| BootError::OpenInitrd {
        path: path.into(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| BootError::OpenInitrd {
            path: path.into(),
            source,
        })?
        .len();
    let mut limit = mem_size.min(MMIO_GAP_START);
    if let Some(hdr) = kernel.result.setup_header {
        if hdr.initrd_addr_max != 0 {
            limit = limit.min(u64::from(hdr.initrd_addr_max) + 1);
        }
    }
    let kernel_end = kernel.result.kernel_load.0 + kernel.result.kernel_end;
    let too_big = || BootError::InitrdTooBig {
        path: path.into(),
        size,
        limit,
    };
    let start = limit.checked_sub(size).ok_or_else(too_big)? & !(PAGE_SIZE as u64 - 1);
    if start < kernel_end.max(HIMEM_START) {
        return Err(too_big());
    }
    let addr = GuestAddress(start);
    mem.read_exact_volatile_from(addr, &mut file, size as usize)
        .map_err(|source| BootError::LoadInitrd {
            path: path.into(),
            source,
        })?;
    Ok((addr, size))
}

/// Builds the command line: the user's (or the default), plus `virtio_mmio.device=` entries
/// for kernels that find virtio-mmio devices that way.
pub fn build_cmdline(base: &str, virtio_mmio: &[(u64, u64, u32)]) -> Result<Cmdline, BootError> {
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).map_err(BootError::Cmdline)?;
    cmdline.insert_str(base).map_err(BootError::Cmdline)?;
    for (i, &(base, size, irq)) in virtio_mmio.iter().enumerate() {
        cmdline
            .add_virtio_mmio_device(size, GuestAddress(base), irq, Some(i as u32))
            .map_err(BootError::Cmdline)?;
    }
    Ok(cmdline)
}

/// Writes the command line, the boot page tables and the zero page.
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &LoadedKernel,
    cmdline: &Cmdline,
    initrd: Option<(GuestAddress, u64)>,
    rsdp: Option<GuestAddress>,
) -> Result<(), BootError> {
    load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline).map_err(BootError::WriteCmdline)?;
    crate::vstate::regs::write_boot_structures(mem).map_err(BootError::WriteBootStructures)?;

    let mut params = boot_params::default();
    if let Some(hdr) = kernel.result.setup_header {
        params.hdr = hdr;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .unwrap_or(0) as u32;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr.0 as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    if let Some(rsdp) = rsdp {
        params.acpi_rsdp_addr = rsdp.0;
    }
    let map = e820_map(mem_size);
    for (i, &(addr, size, kind)) in map.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr,
            size,
            r#type: kind,
        };
    }
    params.e820_entries = map.len() as u8;

    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(|e| BootError::WriteBootParams(e.to_string()))?;
    // The zero page must be readable back; a failed write above would have said so.
    debug_assert!(mem.read_obj::<u8>(GuestAddress(ZERO_PAGE_START)).is_ok());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rejects_a_file_that_is_not_a_kernel() {
        let mem = crate::vstate::memory::create_guest_memory(64 << 20).unwrap();
        let dir = std::env::temp_dir().join(format!("ballast-boot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-a-kernel");
        File::create(&path)
            .unwrap()
            .write_all(b"hello, I am text")
            .unwrap();
        let err = load_kernel(&mem, &path).err().unwrap();
        assert!(err.to_string().contains("is not a Linux kernel"), "{err}");
        let err = load_kernel(&mem, &dir.join("missing")).err().unwrap();
        assert!(err.to_string().contains("cannot open kernel"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cmdline_gets_virtio_mmio_entries() {
        let c = build_cmdline("console=ttyS0", &[(0xd000_0000, 0x1000, 5)]).unwrap();
        let s = c.as_cstring().unwrap().into_string().unwrap();
        assert!(s.starts_with("console=ttyS0"), "{s}");
        assert!(s.contains("virtio_mmio.device=4K@0xd0000000:5:0"), "{s}");
        assert!(build_cmdline(&"x".repeat(CMDLINE_MAX_SIZE + 1), &[]).is_err());
    }
}
