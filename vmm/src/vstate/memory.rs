//! Guest RAM: private anonymous `MAP_NORESERVE` mappings around the MMIO gap, with vm-memory's
//! dirty bitmap, and the e820 map that describes them to the guest.

use ballast_virtio::GuestMemoryMmap;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestRegionMmap};

use crate::layout::{EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START};

pub const PAGE_SIZE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot map {size} bytes of guest RAM: {source}")]
    Mmap {
        size: u64,
        source: vm_memory::mmap::MmapRegionError,
    },
    #[error("guest RAM region at {0:#x} does not fit the guest-physical address space")]
    RegionAddress(u64),
    #[error("guest RAM regions are invalid: {0}")]
    Regions(#[from] vm_memory::GuestRegionCollectionError),
    #[error("guest RAM of {0} bytes is too small: at least 2 MiB are needed to boot")]
    TooSmall(u64),
}

/// The guest-physical ranges of `mem_size` bytes of RAM: below the MMIO gap, and the rest from
/// 4 GiB up.
pub fn ram_ranges(mem_size: u64) -> Vec<(GuestAddress, u64)> {
    let low = mem_size.min(MMIO_GAP_START);
    let mut ranges = vec![(GuestAddress(0), low)];
    if mem_size > low {
        ranges.push((GuestAddress(MMIO_GAP_END), mem_size - low));
    }
    ranges
}

/// Maps guest RAM. Untouched pages cost the host nothing (`MAP_NORESERVE`, faulted on demand).
/// Without transparent huge pages unless `thp`.
pub fn create_guest_memory(mem_size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    create_guest_memory_with(mem_size, false)
}

/// [`create_guest_memory`], with transparent huge pages asked for (`MADV_HUGEPAGE`) when `thp`.
pub fn create_guest_memory_with(mem_size: u64, thp: bool) -> Result<GuestMemoryMmap, MemoryError> {
    if mem_size < 2 << 20 {
        return Err(MemoryError::TooSmall(mem_size));
    }
    let mut regions = Vec::new();
    for (base, size) in ram_ranges(mem_size) {
        let mapping = MmapRegionBuilder::new_with_bitmap(
            size as usize,
            AtomicBitmap::new(
                size as usize,
                std::num::NonZeroUsize::new(PAGE_SIZE).unwrap(),
            ),
        )
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE)
        .build()
        .map_err(|source| MemoryError::Mmap { size, source })?;
        // No transparent huge pages unless asked: the balloon and the memory manager release
        // guest RAM in 4 KiB pages, and khugepaged would collapse released pages back into
        // resident 2 MiB pages behind their back (measured: resident crept back over the limit).
        let advice = if thp {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        // SAFETY: the range is exactly the mapping just created, owned by `mapping`.
        let rc = unsafe { libc::madvise(mapping.as_ptr().cast(), size as usize, advice) };
        if rc != 0 {
            log::debug!(
                "guest RAM: madvise({}) refused: {}",
                if thp {
                    "MADV_HUGEPAGE"
                } else {
                    "MADV_NOHUGEPAGE"
                },
                std::io::Error::last_os_error()
            );
        }
        let region =
            GuestRegionMmap::new(mapping, base).ok_or(MemoryError::RegionAddress(base.0))?;
        regions.push(region);
    }
    Ok(GuestMemoryMmap::from_regions(regions)?)
}

/// e820 entry types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// The e820 map: low RAM up to the EBDA, the BIOS area (where the ACPI tables live) reserved,
/// RAM from 1 MiB to the MMIO gap, and the RAM above 4 GiB.
pub fn e820_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for (base, size) in ram_ranges(mem_size) {
        let start = base.0.max(HIMEM_START);
        let end = base.0 + size;
        if end > start {
            map.push((start, end - start, E820_RAM));
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryBackend;

    #[test]
    fn ram_splits_around_the_mmio_gap() {
        assert_eq!(ram_ranges(512 << 20), vec![(GuestAddress(0), 512 << 20)]);
        let big = ram_ranges(4 << 30);
        assert_eq!(big[0], (GuestAddress(0), MMIO_GAP_START));
        assert_eq!(
            big[1],
            (GuestAddress(MMIO_GAP_END), (4 << 30) - MMIO_GAP_START)
        );
        let e820 = e820_map(4 << 30);
        let ram: u64 = e820.iter().filter(|e| e.2 == E820_RAM).map(|e| e.1).sum();
        assert_eq!(ram, (4 << 30) - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn guest_memory_is_mapped_lazily() {
        let mem = create_guest_memory(64 << 20).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert!(create_guest_memory(4096).is_err());
    }
}
