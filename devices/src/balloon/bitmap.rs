//! The set of guest pages in the balloon: one bit per 4 KiB guest page of guest RAM.
//!
//! Guest RAM has holes (the 32-bit MMIO gap below 4 GiB), so the bitmap keeps one bit array per
//! RAM region rather than one over the whole address range: a PFN in a hole or past the end of
//! RAM has no bit, and is not a guest page at all.

use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use ballast_virtio::GuestMemoryMmap;

use super::GUEST_PAGE_SIZE;

const BITS_PER_WORD: u64 = u64::BITS as u64;

/// The guest pages of one RAM region: `[first_pfn, end_pfn)`.
#[derive(Debug, Clone)]
struct RegionPages {
    first_pfn: u64,
    end_pfn: u64,
    words: Vec<u64>,
}

impl RegionPages {
    fn contains_pfn(&self, pfn: u64) -> bool {
        (self.first_pfn..self.end_pfn).contains(&pfn)
    }

    /// The word index and the bit mask of `pfn`, which must be in this region.
    fn bit(&self, pfn: u64) -> (usize, u64) {
        let index = pfn - self.first_pfn;
        (
            (index / BITS_PER_WORD) as usize,
            1 << (index % BITS_PER_WORD),
        )
    }
}

/// Which guest pages the balloon holds.
#[derive(Debug, Clone, Default)]
pub struct BalloonBitmap {
    regions: Vec<RegionPages>,
    ballooned: u64,
}

impl BalloonBitmap {
    /// An empty balloon over the guest RAM of `mem`. Only whole 4 KiB pages inside a region are
    /// guest pages.
    pub fn new(mem: &GuestMemoryMmap) -> Self {
        let mut regions: Vec<RegionPages> = mem
            .iter()
            .filter_map(|region| {
                let start = region.start_addr().0;
                let first_pfn = start.div_ceil(GUEST_PAGE_SIZE);
                let end_pfn = start.checked_add(region.len())? / GUEST_PAGE_SIZE;
                (end_pfn > first_pfn).then(|| RegionPages {
                    first_pfn,
                    end_pfn,
                    words: vec![0; (end_pfn - first_pfn).div_ceil(BITS_PER_WORD) as usize],
                })
            })
            .collect();
        regions.sort_by_key(|r| r.first_pfn);
        BalloonBitmap {
            regions,
            ballooned: 0,
        }
    }

    /// Guest pages in the balloon.
    pub fn len(&self) -> u64 {
        self.ballooned
    }

    pub fn is_empty(&self) -> bool {
        self.ballooned == 0
    }

    /// Guest pages of guest RAM, in the balloon or not.
    pub fn guest_pages(&self) -> u64 {
        self.regions.iter().map(|r| r.end_pfn - r.first_pfn).sum()
    }

    /// Whether `pfn` names a page of guest RAM.
    pub fn is_guest_page(&self, pfn: u64) -> bool {
        self.region(pfn).is_some()
    }

    /// Whether the guest page `pfn` is in the balloon.
    pub fn contains(&self, pfn: u64) -> bool {
        self.region(pfn).is_some_and(|r| {
            let (word, mask) = r.bit(pfn);
            r.words[word] & mask != 0
        })
    }

    /// Puts `count` guest pages from `first_pfn` into the balloon. Returns how many were not in
    /// it before; PFNs that are not guest pages are ignored.
    pub fn insert_run(&mut self, first_pfn: u64, count: u64) -> u64 {
        let mut inserted = 0;
        for pfn in first_pfn..first_pfn.saturating_add(count) {
            if let Some(r) = self.region_mut(pfn) {
                let (word, mask) = r.bit(pfn);
                if r.words[word] & mask == 0 {
                    r.words[word] |= mask;
                    inserted += 1;
                }
            }
        }
        self.ballooned += inserted;
        inserted
    }

    /// Takes the guest page `pfn` out of the balloon. Returns whether it was in it.
    pub fn remove(&mut self, pfn: u64) -> bool {
        let Some(r) = self.region_mut(pfn) else {
            return false;
        };
        let (word, mask) = r.bit(pfn);
        let was_in = r.words[word] & mask != 0;
        r.words[word] &= !mask;
        if was_in {
            self.ballooned -= 1;
        }
        was_in
    }

    /// Empties the balloon (the driver was reset and forgot its pages).
    pub fn clear(&mut self) {
        for r in &mut self.regions {
            r.words.fill(0);
        }
        self.ballooned = 0;
    }

    /// Each RAM region's bits, as `(first PFN, pages, words)` (bit i of the words = guest page
    /// `first PFN + i`): what the memory manager copies, cheaply, under the device's lock.
    pub fn regions(&self) -> impl Iterator<Item = (u64, u64, &[u64])> + '_ {
        self.regions
            .iter()
            .map(|r| (r.first_pfn, r.end_pfn - r.first_pfn, r.words.as_slice()))
    }

    /// The balloon as runs of consecutive guest pages, `(first_pfn, count)`, in PFN order.
    pub fn runs(&self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for r in &self.regions {
            let mut run: Option<(u64, u64)> = None;
            for (w, &word) in r.words.iter().enumerate() {
                if word == 0 && run.is_none() {
                    continue;
                }
                for bit in 0..BITS_PER_WORD {
                    let pfn = r.first_pfn + w as u64 * BITS_PER_WORD + bit;
                    if pfn >= r.end_pfn {
                        break;
                    }
                    match (word & (1 << bit) != 0, &mut run) {
                        (true, Some((_, count))) => *count += 1,
                        (true, None) => run = Some((pfn, 1)),
                        (false, Some(_)) => runs.extend(run.take()),
                        (false, None) => {}
                    }
                }
            }
            runs.extend(run);
        }
        runs
    }

    fn region(&self, pfn: u64) -> Option<&RegionPages> {
        self.regions.iter().find(|r| r.contains_pfn(pfn))
    }

    fn region_mut(&mut self, pfn: u64) -> Option<&mut RegionPages> {
        self.regions.iter_mut().find(|r| r.contains_pfn(pfn))
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestAddress;

    use super::*;

    const MIB: u64 = 1 << 20;

    /// 1 MiB of RAM, a 1 MiB hole, then 1 MiB of RAM.
    fn memory_with_hole() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), MIB as usize),
            (GuestAddress(2 * MIB), MIB as usize),
        ])
        .unwrap()
    }

    #[test]
    fn pages_in_the_hole_or_beyond_ram_are_not_guest_pages() {
        let bitmap = BalloonBitmap::new(&memory_with_hole());
        assert_eq!(bitmap.guest_pages(), 512);
        assert!(bitmap.is_guest_page(0));
        assert!(bitmap.is_guest_page(255));
        assert!(!bitmap.is_guest_page(256));
        assert!(!bitmap.is_guest_page(511));
        assert!(bitmap.is_guest_page(512));
        assert!(bitmap.is_guest_page(767));
        assert!(!bitmap.is_guest_page(768));
        assert!(!bitmap.is_guest_page(u64::MAX));
    }

    #[test]
    fn insert_is_idempotent_and_remove_is_exact() {
        let mut bitmap = BalloonBitmap::new(&memory_with_hole());
        assert_eq!(bitmap.insert_run(250, 10), 6);
        assert_eq!(bitmap.insert_run(252, 2), 0);
        assert_eq!(bitmap.insert_run(510, 4), 2);
        assert_eq!(bitmap.len(), 8);
        assert!(bitmap.contains(250) && bitmap.contains(255) && bitmap.contains(513));
        assert!(!bitmap.contains(256) && !bitmap.contains(249));
        assert_eq!(bitmap.runs(), vec![(250, 6), (512, 2)]);

        assert!(bitmap.remove(252));
        assert!(!bitmap.remove(252));
        assert!(!bitmap.remove(300));
        assert_eq!(bitmap.len(), 7);
        assert_eq!(bitmap.runs(), vec![(250, 2), (253, 3), (512, 2)]);

        bitmap.clear();
        assert!(bitmap.is_empty());
        assert!(bitmap.runs().is_empty());
    }

    #[test]
    fn runs_cross_word_boundaries() {
        let mut bitmap = BalloonBitmap::new(&memory_with_hole());
        bitmap.insert_run(60, 140);
        bitmap.insert_run(255, 1);
        assert_eq!(bitmap.runs(), vec![(60, 140), (255, 1)]);
    }

    #[test]
    fn a_region_not_page_aligned_keeps_only_its_whole_pages() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0x800), 0x3000)]).unwrap();
        let bitmap = BalloonBitmap::new(&mem);
        // [0x800, 0x3800) holds the whole pages 1 and 2 only.
        assert!(!bitmap.is_guest_page(0));
        assert!(bitmap.is_guest_page(1) && bitmap.is_guest_page(2));
        assert!(!bitmap.is_guest_page(3));
    }
}
