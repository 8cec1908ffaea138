//! The memory manager's ports over this VM's parts: the balloon device as its balloon control.
//! (KVM's dirty log is `vstate::dirty_log::KvmDirtyLog`, guest RAM is vm-memory's mapping, the
//! guest agent is `agent::AgentHandle`.)
//!
//! The device is locked for each call only, and only for work bounded by the call: copying its
//! bitmap (32 KiB per GiB of guest RAM) for a sample, and checking and releasing the balloon
//! pages a sample found resident. The sampler itself runs without the lock, so vCPUs and the
//! event loop touching the balloon never wait for a sample.

use std::sync::{Arc, Mutex, MutexGuard};

use ballast_devices::balloon::{
    release_guest_range, Balloon, BalloonBitmap, BalloonMetrics, GUEST_PAGE_SIZE,
};
use ballast_manager::driver::ports::{BalloonControl, BalloonPages, ResidentBalloonPages};
use ballast_manager::pages;
use ballast_manager::tracker::residency;
use ballast_virtio::GuestMemoryMmap;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

// A balloon PFN names a 4 KiB page by the virtio spec, whatever the guest's page size; the
// manager counts the same 4 KiB guest pages, so balloon sizes need no conversion.
const _: () = assert!(GUEST_PAGE_SIZE == pages::PAGE_SIZE);

/// The most balloon pages one epoch checks and releases under the device's lock: 256 MiB, a
/// few tens of milliseconds of `madvise` at worst.
const MAX_CHECKED_PAGES: u64 = 64 * 1024;

/// The balloon device, locked for each call only, and the guest RAM it releases.
pub struct BalloonPort {
    balloon: Arc<Mutex<Balloon>>,
    mem: GuestMemoryMmap,
}

impl BalloonPort {
    pub fn new(balloon: Arc<Mutex<Balloon>>, mem: GuestMemoryMmap) -> Self {
        Self { balloon, mem }
    }

    fn balloon(&self) -> MutexGuard<'_, Balloon> {
        self.balloon.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BalloonControl for BalloonPort {
    fn target_pages(&self) -> u64 {
        u64::from(self.balloon().target_pages())
    }

    fn actual_pages(&self) -> u64 {
        u64::from(self.balloon().actual_pages())
    }

    fn set_target_pages(&mut self, pages: u64) -> u64 {
        // The config space's target is 32 bits: 16 TiB of guest pages, more than any guest.
        let pages = u32::try_from(pages).unwrap_or(u32::MAX);
        self.balloon().set_target_pages(pages);
        u64::from(pages)
    }

    fn ballooned_pages(&self) -> BalloonPages {
        let balloon = self.balloon();
        let mut copy = BalloonPages::new();
        for (first_pfn, count, words) in balloon.ballooned().regions() {
            copy.push_region(first_pfn, count, words);
        }
        copy
    }

    fn release_resident(&mut self, runs: &[(u64, u64)]) -> ResidentBalloonPages {
        // Under the lock from check to release: a page the guest deflated meanwhile is out of
        // the bitmap, and one it deflates now waits for the lock, so no page the guest owns is
        // ever released. Resident while in the balloon means touched after its release.
        let balloon = self.balloon.lock().unwrap_or_else(|e| e.into_inner());
        release_resident(&self.mem, balloon.ballooned(), balloon.metrics(), runs)
    }
}

/// Of `runs`, releases the pages that are in `bitmap` and resident in `mem` now (at most
/// [`MAX_CHECKED_PAGES`]); what it found and released. The caller holds the device's lock.
fn release_resident(
    mem: &GuestMemoryMmap,
    bitmap: &BalloonBitmap,
    metrics: &BalloonMetrics,
    runs: &[(u64, u64)],
) -> ResidentBalloonPages {
    let mut found = ResidentBalloonPages::default();
    let mut budget = MAX_CHECKED_PAGES;
    for &(first, count) in runs {
        let count = count.min(budget);
        budget -= count;
        let Some(vector) = residency_of(mem, first, count) else {
            continue;
        };
        let bad = |i: u64| vector[i as usize] & 1 != 0 && bitmap.contains(first + i);
        let mut i = 0;
        while i < count {
            if !bad(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < count && bad(i) {
                i += 1;
            }
            let run = i - start;
            found.confirmed += run;
            let addr = GuestAddress((first + start) * pages::PAGE_SIZE);
            if let Ok(bytes) = release_guest_range(mem, addr, run * pages::PAGE_SIZE, metrics) {
                found.released += pages::from_bytes(bytes);
            }
        }
    }
    found
}

/// Residency now of the guest pages `[first, first + count)`, one byte each (bit 0 set:
/// resident); `None` when they are not all guest RAM of one region.
fn residency_of(mem: &GuestMemoryMmap, first: u64, count: u64) -> Option<Vec<u8>> {
    let addr = GuestAddress(first.checked_mul(pages::PAGE_SIZE)?);
    let len = count.checked_mul(pages::PAGE_SIZE)?;
    let region = mem.find_region(addr)?;
    if (addr.0 - region.start_addr().0).checked_add(len)? > region.len() {
        return None;
    }
    let host = mem.get_host_address(addr).ok()?;
    let mut vector = vec![0u8; usize::try_from(count).ok()?];
    residency::mincore(host, usize::try_from(len).ok()?, &mut vector).ok()?;
    Some(vector)
}

#[cfg(test)]
mod tests;
