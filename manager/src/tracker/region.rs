//! The tracker's state for one guest RAM region: the age of each page and the residency vector
//! of the last epoch, both one byte per 4 KiB page (256 KiB each per GiB of guest RAM).

/// The age of a page never dirtied since the tracker started (or since it left the balloon).
pub(super) const NEVER: u8 = u8::MAX;
/// Ages saturate here, so an old page never wraps round to look freshly dirtied.
pub(super) const MAX_AGE: u8 = NEVER - 1;

const BITS: u64 = u64::BITS as u64;

pub(super) struct RegionTrack {
    pub first_pfn: u64,
    pub pages: u64,
    /// Epochs since each page was last dirtied: 0 = in the latest epoch, `NEVER` = not seen.
    pub ages: Vec<u8>,
    /// `mincore`'s vector from the latest epoch (bit 0 of each byte: resident).
    pub residency: Vec<u8>,
}

impl RegionTrack {
    pub fn new(first_pfn: u64, pages: u64) -> Self {
        RegionTrack {
            first_pfn,
            pages,
            ages: vec![NEVER; pages as usize],
            residency: vec![0; pages as usize],
        }
    }

    /// The index of `pfn` in this region's per-page vectors.
    pub fn index(&self, pfn: u64) -> Option<usize> {
        let offset = pfn.checked_sub(self.first_pfn)?;
        (offset < self.pages).then_some(offset as usize)
    }

    /// One epoch passes: every page seen dirty grows one epoch older.
    pub fn age_one_epoch(&mut self) {
        // Branch-free so it vectorizes: this runs over every page of guest RAM each epoch.
        for age in &mut self.ages {
            *age += u8::from(*age < MAX_AGE);
        }
    }

    /// Pages whose bit is set in `dirty` were dirtied in this epoch: age 0.
    pub fn mark_dirty(&mut self, dirty: &[u64]) {
        for (w, &word) in dirty.iter().enumerate() {
            let mut bits = word;
            // Dirty bitmaps are sparse: visit set bits only.
            while bits != 0 {
                let page = w * BITS as usize + bits.trailing_zeros() as usize;
                self.ages[page] = 0;
                bits &= bits - 1;
            }
        }
    }

    /// Pages in the balloon hold nothing of the guest's: their history is dropped. `bits` has
    /// one bit per page from index `first`.
    pub fn forget_bits(&mut self, first: usize, bits: u64) {
        let end = (first + 64).min(self.ages.len());
        if bits == u64::MAX && end == first + 64 {
            self.ages[first..end].fill(NEVER);
            return;
        }
        let mut rest = bits;
        while rest != 0 {
            let page = first + rest.trailing_zeros() as usize;
            if page < end {
                self.ages[page] = NEVER;
            }
            rest &= rest - 1;
        }
    }

    /// Pages dirtied within the last `epochs` epochs.
    pub fn working_set(&self, epochs: u8) -> u64 {
        count_where(&self.ages, |age| age < epochs)
    }

    pub fn is_resident(&self, index: usize) -> bool {
        self.residency[index] & 1 != 0
    }
}

/// Words of a bitmap with one bit per page of `pages`.
pub(super) fn words_for(pages: u64) -> usize {
    pages.div_ceil(BITS) as usize
}

/// ORs `other` into `into` (missing words count as zero) and clears any bit at or past `pages`.
pub(super) fn merge(into: &mut Vec<u64>, other: &[u64], pages: u64) {
    into.resize(words_for(pages), 0);
    for (word, &extra) in into.iter_mut().zip(other) {
        *word |= extra;
    }
    let tail = pages % BITS;
    if tail != 0 {
        if let Some(last) = into.last_mut() {
            *last &= (1 << tail) - 1;
        }
    }
}

pub(super) fn count_bits(words: &[u64]) -> u64 {
    words.iter().map(|w| u64::from(w.count_ones())).sum()
}

/// How many of `bytes` satisfy `f`. Byte-wide counters over chunks of 255 (they cannot overflow)
/// let this vectorize 16 bytes at a time; summing into a u64 per byte runs at a quarter of that.
pub(super) fn count_where(bytes: &[u8], f: impl Fn(u8) -> bool) -> u64 {
    bytes
        .chunks(255)
        .map(|chunk| u64::from(chunk.iter().fold(0u8, |n, &b| n + u8::from(f(b)))))
        .sum()
}
