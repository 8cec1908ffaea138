//! How much of guest RAM is resident on the host right now: `mincore` over each guest RAM
//! mapping, with the memory manager's tracker's own residency functions. Cheap (about 1 ms per
//! GiB), so it is measured on every request rather than cached.

use ballast_manager::pages;
use ballast_manager::tracker::residency;
use ballast_virtio::GuestMemoryMmap;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

#[derive(Debug, thiserror::Error)]
pub enum ResidencyError {
    #[error("guest RAM region at {0:#x} has no host mapping")]
    NoMapping(u64),
    #[error("mincore over guest RAM failed: {0}")]
    Mincore(std::io::Error),
}

/// Measures resident guest RAM; keeps its `mincore` vector between calls.
#[derive(Debug, Default)]
pub struct Residency {
    scratch: Vec<u8>,
}

impl Residency {
    /// Bytes of `mem` that are resident on the host.
    pub fn resident_bytes(&mut self, mem: &GuestMemoryMmap) -> Result<u64, ResidencyError> {
        let mut resident = 0u64;
        for region in mem.iter() {
            let start = region.start_addr();
            let host = mem
                .get_host_address(start)
                .map_err(|_| ResidencyError::NoMapping(start.0))?;
            let len = region.len() as usize;
            let npages = len.div_ceil(pages::PAGE_SIZE as usize);
            self.scratch.clear();
            self.scratch.resize(npages, 0);
            // The tracker's mincore: `host..host + len` is the region's whole live mapping.
            residency::mincore(host, len, &mut self.scratch).map_err(ResidencyError::Mincore)?;
            resident += residency::count_resident(&self.scratch);
        }
        Ok(pages::to_bytes(resident))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::create_guest_memory;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn counts_the_pages_written() {
        let mem = create_guest_memory(64 << 20).unwrap();
        let mut residency = Residency::default();
        assert_eq!(residency.resident_bytes(&mem).unwrap(), 0);
        // One byte in each of 100 pages faults exactly those pages in.
        for page in 0..100u64 {
            mem.write_obj(1u8, GuestAddress(page * 2 * pages::PAGE_SIZE))
                .unwrap();
        }
        assert_eq!(
            residency.resident_bytes(&mem).unwrap(),
            pages::to_bytes(100)
        );
    }
}
