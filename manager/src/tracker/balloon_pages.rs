//! The guest pages in the balloon, as the tracker reads them: one bitmap per guest RAM region
//! (bit i = guest page `first_pfn + i`), copied from the balloon device while its lock is held
//! for the copy only (32 KiB per GiB of guest RAM), so the device is never held up while the
//! tracker walks guest RAM.
//!
//! The bitmap is written by the guest's balloon driver: it says which pages the guest promised
//! not to touch, not which pages the host does not hold. The tracker counts residency from the
//! host alone and uses these bits only to find pages the guest touched in breach of that promise.

use std::borrow::Cow;

use super::region::{merge, words_for};
use super::RamRegion;

const BITS: u64 = u64::BITS as u64;

/// One region's balloon bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalloonRegion {
    pub first_pfn: u64,
    pub pages: u64,
    pub words: Vec<u64>,
}

/// The guest pages in the balloon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalloonPages {
    regions: Vec<BalloonRegion>,
}

impl BalloonPages {
    /// An empty balloon.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the bits of the region `[first_pfn, first_pfn + pages)`; words past the region are
    /// dropped, missing ones count as zero.
    pub fn push_region(&mut self, first_pfn: u64, pages: u64, words: &[u64]) {
        let mut own = Vec::new();
        merge(&mut own, words, pages);
        self.regions.push(BalloonRegion {
            first_pfn,
            pages,
            words: own,
        });
    }

    /// The balloon over `regions` holding the `(first PFN, count)` runs (tests, benchmarks).
    pub fn from_runs(regions: &[RamRegion], runs: &[(u64, u64)]) -> Self {
        let mut balloon = Self::new();
        for r in regions {
            let mut words = vec![0u64; words_for(r.pages)];
            for &(first, count) in runs {
                let start = first.max(r.first_pfn);
                let end = first.saturating_add(count).min(r.first_pfn + r.pages);
                for pfn in start..end {
                    let bit = pfn - r.first_pfn;
                    words[(bit / BITS) as usize] |= 1 << (bit % BITS);
                }
            }
            balloon.push_region(r.first_pfn, r.pages, &words);
        }
        balloon
    }

    /// Guest pages in the balloon.
    pub fn len(&self) -> u64 {
        self.regions
            .iter()
            .flat_map(|r| &r.words)
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.regions.iter().all(|r| r.words.iter().all(|&w| w == 0))
    }

    /// The bits of the guest pages `[first_pfn, first_pfn + pages)`, one per page: borrowed
    /// when a region covers exactly that range (the balloon and the tracker see the same guest
    /// RAM), else gathered page by page.
    pub(crate) fn bits_for(&self, first_pfn: u64, pages: u64) -> Cow<'_, [u64]> {
        if let Some(r) = self
            .regions
            .iter()
            .find(|r| r.first_pfn == first_pfn && r.pages == pages)
        {
            return Cow::Borrowed(&r.words);
        }
        let mut words = vec![0u64; words_for(pages)];
        for r in &self.regions {
            let start = r.first_pfn.max(first_pfn);
            let end = (r.first_pfn + r.pages).min(first_pfn + pages);
            for pfn in start..end {
                let from = pfn - r.first_pfn;
                if r.words[(from / BITS) as usize] & (1 << (from % BITS)) != 0 {
                    let to = pfn - first_pfn;
                    words[(to / BITS) as usize] |= 1 << (to % BITS);
                }
            }
        }
        Cow::Owned(words)
    }
}

/// Bit 0 of each of up to 64 `mincore` bytes, packed into one word (bit i = byte i).
pub(super) fn pack_resident(bytes: &[u8]) -> u64 {
    let mut word = 0u64;
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut eight = [0u8; 8];
        eight[..chunk.len()].copy_from_slice(chunk);
        // Each byte's bit 0 lands in bit 56 + i of the product, without carries: the
        // exponents 8k + 7j + 7 of its terms are all distinct.
        let lanes = u64::from_le_bytes(eight) & 0x0101_0101_0101_0101;
        word |= (lanes.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (i * 8);
    }
    word
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_takes_bit_zero_of_each_byte() {
        let mut bytes = [0u8; 64];
        for i in [0, 1, 7, 8, 33, 63] {
            bytes[i] = 1;
        }
        bytes[5] = 0xfe; // other bits are not residency
        let word = pack_resident(&bytes);
        assert_eq!(
            word,
            (1 << 0) | (1 << 1) | (1 << 7) | (1 << 8) | (1 << 33) | (1 << 63)
        );
        assert_eq!(pack_resident(&[1, 0, 1]), 0b101);
        assert_eq!(pack_resident(&[1; 64]), u64::MAX);
    }

    #[test]
    fn bits_are_borrowed_for_the_same_region_and_gathered_otherwise() {
        let regions = [
            RamRegion {
                first_pfn: 0,
                pages: 100,
            },
            RamRegion {
                first_pfn: 512,
                pages: 70,
            },
        ];
        let balloon = BalloonPages::from_runs(&regions, &[(98, 500), (560, 1000)]);
        assert_eq!(balloon.len(), 2 + 70);
        assert!(matches!(balloon.bits_for(512, 70), Cow::Borrowed(_)));
        assert_eq!(balloon.bits_for(0, 100)[1], 0b11 << 34);
        // A differently cut range: gathered from both regions.
        let gathered = balloon.bits_for(96, 500);
        assert_eq!(gathered[0], 0b1100);
        assert_eq!(gathered[(512 - 96) / 64] >> ((512 - 96) % 64) & 1, 1);
        assert!(BalloonPages::new().is_empty());
    }
}
