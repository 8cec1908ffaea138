//! Guest RAM as the tracker reads it: its regions in guest pages, which of their pages the host
//! holds, and which the VMM itself wrote. Implemented here for vm-memory's mmap-backed guest
//! memory with its dirty bitmap (what the VMM builds); tests and benchmarks may give their own.

use std::io;

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MmapRegion};

use super::residency;
use crate::pages::{self, PAGE_SIZE};

/// Guest RAM as every part of ballast maps it: mmap-backed, with vm-memory's dirty bitmap so the
/// tracker can tell which guest pages the VMM itself wrote.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<AtomicBitmap>;

/// One guest RAM region, in guest pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRegion {
    pub first_pfn: u64,
    pub pages: u64,
}

/// What the tracker needs of guest RAM (the driver's "residency" port).
pub trait GuestRam {
    /// The RAM regions, in a fixed order the other methods index.
    fn regions(&self) -> Vec<RamRegion>;
    /// Fills `vector` (one byte per page of region `region`, bit 0 = resident on the host).
    fn residency(&self, region: usize, vector: &mut [u8]) -> io::Result<()>;
    /// The pages of region `region` the VMM wrote since the last call, one bit per page from
    /// the region's start, and forgets them.
    fn take_vmm_writes(&self, region: usize) -> Vec<u64>;
}

impl GuestRam for GuestMemoryMmap {
    fn regions(&self) -> Vec<RamRegion> {
        self.iter()
            .map(|r| RamRegion {
                first_pfn: pages::from_bytes(r.start_addr().0),
                pages: pages::from_bytes(r.len()),
            })
            .collect()
    }

    fn residency(&self, region: usize, vector: &mut [u8]) -> io::Result<()> {
        let region = self.iter().nth(region).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no such guest RAM region")
        })?;
        let len = pages::from_bytes(region.len()) * PAGE_SIZE;
        let mapping: &MmapRegion<AtomicBitmap> = region;
        residency::mincore(mapping.as_ptr(), len as usize, vector)
    }

    fn take_vmm_writes(&self, region: usize) -> Vec<u64> {
        // Atomic per word: a device writing right now lands in this epoch or the next.
        self.iter()
            .nth(region)
            .map(|region| {
                let mapping: &MmapRegion<AtomicBitmap> = region;
                mapping.bitmap().get_and_reset()
            })
            .unwrap_or_default()
    }
}
