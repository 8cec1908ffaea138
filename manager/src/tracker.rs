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
//! Pages in the balloon are neither resident nor dirty, whatever the host and KVM say: they are
//! the balloon's, and their history is dropped.
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

mod guest_ram;
mod region;
pub mod residency;
#[cfg(test)]
mod tests;

use std::io;
use std::time::{Duration, Instant};

pub use guest_ram::{GuestMemoryMmap, GuestRam, RamRegion};
use region::{clear_bits, count_bits, merge, RegionTrack, NEVER};

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

/// What one epoch measured. Balloon pages are excluded from every page count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// 1 for the first sample, then one more per sample.
    pub epoch: u64,
    /// Guest RAM pages resident on the host (`mincore`).
    pub resident_pages: u64,
    /// Pages dirtied since the last sample, by the guest (KVM's log) or the VMM (vm-memory's bitmap).
    pub dirtied_pages: u64,
    /// Pages dirtied within the last `working_set_epochs` epochs.
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
        }
    }

    /// One epoch: residency (mincore over each region's host mapping), dirtiness (DirtyLog +
    /// the VMM's own writes, reset after reading), per-page ages. `balloon_runs` are the guest
    /// pages in the balloon, as `(first PFN, count)` runs.
    ///
    /// On an error nothing is aged and no epoch passes, though the logs already read are spent.
    pub fn sample(
        &mut self,
        ram: &dyn GuestRam,
        dirty: &mut dyn DirtyLog,
        balloon_runs: &[(u64, u64)],
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

        let (mut resident, mut dirtied, mut working_set) = (0, 0, 0);
        for (track, mut words) in self.regions.iter_mut().zip(dirtied_words) {
            let mut balloon_resident = 0;
            for &(first_pfn, count) in balloon_runs {
                if let Some(pages) = track.overlap(first_pfn, count) {
                    clear_bits(&mut words, pages.clone());
                    balloon_resident += residency::count_resident(&track.residency[pages.clone()]);
                    track.forget(pages);
                }
            }
            track.age_one_epoch();
            track.mark_dirty(&words);
            resident += residency::count_resident(&track.residency) - balloon_resident;
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
