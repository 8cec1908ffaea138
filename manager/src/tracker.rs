//! Tracking: how much of the guest's RAM the host really holds, and how much of it the guest is
//! using, measured once per epoch.
//!
//! - Residency: `mincore` over each guest RAM region's host mapping (through [`GuestRam`],
//!   implemented here for vm-memory's mmap-backed guest memory).
//! - Dirtiness: KVM's dirty log (through [`DirtyLog`], which the vmm crate implements) OR'ed with
//!   vm-memory's bitmap of the VMM's own writes (virtio devices writing guest memory), which
//!   KVM's log never sees.
//! - Per page, its age in epochs since it was last dirtied; from the ages the working set (pages
//!   dirtied within the last N epochs). The dirty rate comes from the count of dirtied pages.
//!
//! Residency is what the host says, full stop: a page the guest put in the balloon counts as
//! resident if the host holds it. The balloon bitmap is the guest's word, so it only finds
//! *violations*: balloon pages that are resident again, i.e. touched after the device released
//! them. The sample counts them and keeps their runs (bounded), for the driver to have them
//! checked and released again. Balloon pages are no part of the working set: their history
//! is dropped and their dirty bits ignored.
//!
//! Cost per epoch is linear in guest RAM (one byte of age and one of residency per 4 KiB page);
//! `benches/tracker.rs` measures it against the bare `mincore` floor.
//!
//! | file | job |
//! | --- | --- |
//! | `tracker.rs` | the tracker: one sample per epoch, ages, the working set |
//! | `guest_ram.rs` | guest RAM as the tracker reads it: regions, residency, the VMM's writes |
//! | `region.rs` | one region's per-page ages and residency, and bitmap arithmetic |
//! | `residency.rs` | `mincore`, shared with the API's residency count |
//! | `balloon_pages.rs` | the balloon's pages as per-region bitmaps, and the violation scan |

mod balloon_pages;
mod guest_ram;
mod region;
pub mod residency;
#[cfg(test)]
mod tests;

use std::io;
use std::time::{Duration, Instant};

use balloon_pages::pack_resident;
pub use balloon_pages::{BalloonPages, BalloonRegion};
pub use guest_ram::{GuestMemoryMmap, GuestRam, RamRegion};
use region::{count_bits, merge, RegionTrack, NEVER};

/// Runs of resident balloon pages kept per sample: what one epoch may have checked and
/// released again. A guest that breaks its promise on more is counted in full all the same.
pub const MAX_VIOLATION_RUNS: usize = 4096;

/// Where the KVM dirty log comes from (the vmm crate implements it; the balloon crate has no KVM).
pub trait DirtyLog {
    /// The pages the guest dirtied in guest RAM region `region` (index in GuestMemoryMmap's region
    /// order) since the last call, as a bitmap of u64 words, one bit per 4 KiB page from the
    /// region's start.
    fn take_dirty(&mut self, region: usize, pages: u64) -> io::Result<Vec<u64>>;

    /// Turns the log on or off for all of guest RAM. Logging makes the guest's first write to
    /// each page after every read of the log fault, so the manager keeps it on only while a
    /// limit is set.
    fn set_logging(&mut self, on: bool) -> io::Result<()> {
        let _ = on;
        Ok(())
    }
}

/// The dirty log while logging is off: nothing is known to be dirty.
pub struct NoDirtyLog;

impl DirtyLog for NoDirtyLog {
    fn take_dirty(&mut self, _region: usize, pages: u64) -> io::Result<Vec<u64>> {
        Ok(vec![0; pages.div_ceil(64) as usize])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerConfig {
    /// A page is in the working set while it was dirtied within this many epochs (the latest
    /// included). Ages saturate at 254 epochs, so 255 means "ever dirtied".
    pub working_set_epochs: u8,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            working_set_epochs: 8,
        }
    }
}

/// What one epoch measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// 1 for the first sample, then one more per sample.
    pub epoch: u64,
    /// Guest RAM pages resident on the host (`mincore`), balloon pages included.
    pub resident_pages: u64,
    /// Of those, pages in the balloon: the guest touched pages it gave away (or they were
    /// taken back since the balloon's copy was made: the driver checks before acting).
    pub ballooned_resident_pages: u64,
    /// Pages dirtied since the last sample, by the guest (KVM's log) or the VMM (vm-memory's
    /// bitmap), balloon pages left out.
    pub dirtied_pages: u64,
    /// Pages dirtied within the last `working_set_epochs` epochs (balloon pages left out).
    pub working_set_pages: u64,
    pub dirty_rate_pages_per_s: f64,
    /// Wall time since the previous sample (for the first one: since the tracker was made).
    pub elapsed: Duration,
    /// Time this sample took (for the benchmark and the metrics).
    pub cost: Duration,
}

/// Per-page residency and age over the guest RAM regions of one VM.
pub struct Tracker {
    config: TrackerConfig,
    regions: Vec<RegionTrack>,
    epoch: u64,
    last_sample: Instant,
    /// The resident balloon pages of the last sample, as `(first PFN, count)` runs (at most
    /// [`MAX_VIOLATION_RUNS`]).
    violations: Vec<(u64, u64)>,
}

impl Tracker {
    /// A tracker over the RAM regions of `ram`, which must keep this layout. Regions are
    /// page-aligned (KVM memory slots have to be), so region `i` covers the guest pages
    /// `[start / 4 KiB, start / 4 KiB + len / 4 KiB)`.
    pub fn new(ram: &dyn GuestRam, config: TrackerConfig) -> Self {
        Tracker {
            config,
            regions: ram
                .regions()
                .into_iter()
                .map(|r| RegionTrack::new(r.first_pfn, r.pages))
                .collect(),
            epoch: 0,
            last_sample: Instant::now(),
            violations: Vec::new(),
        }
    }

    /// One epoch: residency (mincore over each region's host mapping), dirtiness (DirtyLog +
    /// the VMM's own writes, reset after reading), per-page ages, and the balloon pages the
    /// host holds. `balloon` is a copy of the balloon's pages, taken before the call.
    ///
    /// On an error nothing is aged and no epoch passes, though the logs already read are spent.
    pub fn sample(
        &mut self,
        ram: &dyn GuestRam,
        dirty: &mut dyn DirtyLog,
        balloon: &BalloonPages,
    ) -> io::Result<Sample> {
        let started = Instant::now();
        self.check_layout(ram)?;

        // First everything that can fail, so a failed sample leaves the ages as they were.
        let mut dirtied_words = Vec::with_capacity(self.regions.len());
        for (index, track) in self.regions.iter_mut().enumerate() {
            ram.residency(index, &mut track.residency)?;
            let mut words = dirty.take_dirty(index, track.pages)?;
            merge(&mut words, &ram.take_vmm_writes(index), track.pages);
            dirtied_words.push(words);
        }

        self.violations.clear();
        let (mut resident, mut in_balloon, mut dirtied, mut working_set) = (0, 0, 0, 0);
        for (track, mut words) in self.regions.iter_mut().zip(dirtied_words) {
            let bits = balloon.bits_for(track.first_pfn, track.pages);
            in_balloon += scan_balloon(track, &bits, &mut words, &mut self.violations);
            track.age_one_epoch();
            track.mark_dirty(&words);
            resident += residency::count_resident(&track.residency);
            dirtied += count_bits(&words);
            working_set += track.working_set(self.config.working_set_epochs);
        }

        self.epoch += 1;
        let elapsed = started.duration_since(self.last_sample);
        self.last_sample = started;
        let seconds = elapsed.as_secs_f64();
        Ok(Sample {
            epoch: self.epoch,
            resident_pages: resident,
            ballooned_resident_pages: in_balloon,
            dirtied_pages: dirtied,
            working_set_pages: working_set,
            dirty_rate_pages_per_s: if seconds > 0.0 {
                dirtied as f64 / seconds
            } else {
                0.0
            },
            elapsed,
            cost: started.elapsed(),
        })
    }

    /// The resident balloon pages of the last sample, as `(first PFN, count)` runs in PFN
    /// order (at most [`MAX_VIOLATION_RUNS`] of them).
    pub fn ballooned_resident_runs(&self) -> &[(u64, u64)] {
        &self.violations
    }

    /// Age in epochs since `pfn` was last dirtied (None: never, or not guest RAM).
    pub fn age(&self, pfn: u64) -> Option<u8> {
        let (track, index) = self.find(pfn)?;
        let age = track.ages[index];
        (age != NEVER).then_some(age)
    }

    /// Whether `pfn` was resident on the host at the last sample (false for non-RAM PFNs).
    pub fn is_resident_pfn(&self, pfn: u64) -> bool {
        self.find(pfn)
            .is_some_and(|(track, index)| track.is_resident(index))
    }

    /// Samples taken so far.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn config(&self) -> TrackerConfig {
        self.config
    }

    /// Tracked pages of guest RAM, in the balloon or not.
    pub fn guest_pages(&self) -> u64 {
        self.regions.iter().map(|r| r.pages).sum()
    }

    fn find(&self, pfn: u64) -> Option<(&RegionTrack, usize)> {
        self.regions
            .iter()
            .find_map(|track| Some((track, track.index(pfn)?)))
    }

    /// The tracker's per-page vectors index `ram`'s regions: a different layout would misread them.
    fn check_layout(&self, ram: &dyn GuestRam) -> io::Result<()> {
        let regions = ram.regions();
        let same = regions.len() == self.regions.len()
            && regions.iter().zip(&self.regions).all(|(region, track)| {
                region.first_pfn == track.first_pfn && region.pages == track.pages
            });
        if same {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "guest memory does not have the layout the tracker was made for",
            ))
        }
    }
}

/// One region against the balloon's `bits`: drops the history and the dirty bits of balloon
/// pages, and notes the resident ones in `runs` (while there is room); how many are resident.
/// Only words with balloon pages are looked at, so an empty balloon costs one pass over its bits.
fn scan_balloon(
    track: &mut RegionTrack,
    bits: &[u64],
    dirty: &mut [u64],
    runs: &mut Vec<(u64, u64)>,
) -> u64 {
    let mut resident = 0;
    for (w, &balloon) in bits.iter().enumerate() {
        if balloon == 0 {
            continue;
        }
        if let Some(word) = dirty.get_mut(w) {
            *word &= !balloon;
        }
        let first = w * 64;
        let end = (first + 64).min(track.residency.len());
        let hit = pack_resident(&track.residency[first..end]) & balloon;
        track.forget_bits(first, balloon);
        resident += u64::from(hit.count_ones());
        note_runs(runs, track.first_pfn + first as u64, hit);
    }
    resident
}

/// Appends the set bits of `word` (bit i = guest page `first_pfn + i`) to `runs`, joining a run
/// that continues the last one, while fewer than [`MAX_VIOLATION_RUNS`] are kept.
fn note_runs(runs: &mut Vec<(u64, u64)>, first_pfn: u64, mut word: u64) {
    while word != 0 {
        let start = word.trailing_zeros() as u64;
        let len = (word >> start).trailing_ones() as u64;
        let pfn = first_pfn + start;
        let joined = match runs.last_mut() {
            Some((first, count)) if *first + *count == pfn => {
                *count += len;
                true
            }
            _ => false,
        };
        if !joined {
            if runs.len() >= MAX_VIOLATION_RUNS {
                return;
            }
            runs.push((pfn, len));
        }
        word = if start + len >= 64 {
            0
        } else {
            word & !(((1u64 << len) - 1) << start)
        };
    }
}
