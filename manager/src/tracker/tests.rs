//! The tracker against real guest memory mappings, with a fake KVM dirty log standing for KVM.

use std::collections::HashMap;
use std::time::Duration;

use vm_memory::bitmap::Bitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::*;
use crate::pages::PAGE_SIZE;

const MIB: u64 = 1 << 20;
const PAGE: u64 = PAGE_SIZE;
/// The first guest page of the second region in `memory_with_hole`.
const HIGH_PFN: u64 = 2 * MIB / PAGE;

/// 1 MiB of RAM at 0, a 1 MiB hole, 1 MiB of RAM at 2 MiB: 256 + 256 guest pages.
fn memory_with_hole() -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), MIB as usize),
        (GuestAddress(2 * MIB), MIB as usize),
    ])
    .unwrap();
    no_huge_pages(&mem);
    mem
}

/// Backs `mem` with 4 KiB pages only, so one touch makes one page resident whatever the host's
/// transparent huge page setting.
fn no_huge_pages(mem: &GuestMemoryMmap) {
    for region in mem.iter() {
        let host = region.get_host_address(Default::default()).unwrap();
        // SAFETY: the whole region is a live mapping owned by `mem`; MADV_NOHUGEPAGE only
        // changes how the kernel backs it, so one touch makes one 4 KiB page resident whatever
        // the host's transparent huge page setting.
        let ret =
            unsafe { libc::madvise(host.cast(), region.len() as usize, libc::MADV_NOHUGEPAGE) };
        assert_eq!(ret, 0);
    }
}

/// A write by the guest: through the host mapping, bypassing vm-memory's bitmap, as KVM does.
fn guest_write(mem: &GuestMemoryMmap, pfn: u64) {
    let host = mem.get_host_address(GuestAddress(pfn * PAGE)).unwrap();
    // SAFETY: `host` points into a live, writable mapping of guest RAM owned by `mem`.
    unsafe { host.write_volatile(1) };
}

/// The host lets go of guest pages `[pfn, pfn + count)`, as the balloon device does.
fn release(mem: &GuestMemoryMmap, pfn: u64, count: u64) {
    let host = mem.get_host_address(GuestAddress(pfn * PAGE)).unwrap();
    // SAFETY: the range is inside one live mapping of guest RAM owned by `mem`; dropping its
    // pages only makes the next access read zeros.
    let ret = unsafe { libc::madvise(host.cast(), (count * PAGE) as usize, libc::MADV_DONTNEED) };
    assert_eq!(ret, 0);
}

/// Stands for KVM: the test says which pages the guest dirtied; `take_dirty` hands them out once.
#[derive(Default)]
struct FakeDirtyLog {
    pending: HashMap<usize, Vec<u64>>,
    calls: Vec<(usize, u64)>,
    fail: bool,
}

impl FakeDirtyLog {
    /// The guest wrote `pfn`, which is in region `region` starting at `first_pfn`.
    fn dirty(&mut self, region: usize, first_pfn: u64, pfn: u64) {
        let bit = pfn - first_pfn;
        let words = self.pending.entry(region).or_default();
        if words.len() <= (bit / 64) as usize {
            words.resize((bit / 64) as usize + 1, 0);
        }
        words[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    /// Dirties pages of the low region (first PFN 0).
    fn dirty_low(&mut self, pfns: impl IntoIterator<Item = u64>) {
        for pfn in pfns {
            self.dirty(0, 0, pfn);
        }
    }
}

impl DirtyLog for FakeDirtyLog {
    fn take_dirty(&mut self, region: usize, pages: u64) -> io::Result<Vec<u64>> {
        if self.fail {
            return Err(io::Error::other("KVM_GET_DIRTY_LOG failed"));
        }
        self.calls.push((region, pages));
        Ok(self.pending.remove(&region).unwrap_or_default())
    }
}

fn tracker(mem: &GuestMemoryMmap, working_set_epochs: u8) -> Tracker {
    Tracker::new(mem, TrackerConfig { working_set_epochs })
}

#[test]
fn residency_counts_the_touched_pages_of_every_region() {
    let mem = memory_with_hole();
    let mut tracker = tracker(&mem, 8);
    let balloon = BalloonPages::new();
    let mut log = FakeDirtyLog::default();

    let first = tracker.sample(&mem, &mut log, &balloon).unwrap();
    assert_eq!(first.resident_pages, 0);

    for pfn in (0..20).chain(HIGH_PFN + 100..HIGH_PFN + 105) {
        guest_write(&mem, pfn);
    }
    let sample = tracker.sample(&mem, &mut log, &balloon).unwrap();
    assert_eq!(sample.resident_pages, 25);
    assert!(tracker.is_resident_pfn(0) && tracker.is_resident_pfn(19));
    assert!(!tracker.is_resident_pfn(20));
    assert!(tracker.is_resident_pfn(HIGH_PFN + 104));
    // Residency is not dirtiness: no dirty log said anything.
    assert_eq!(sample.dirtied_pages, 0);
}

#[test]
fn ballooned_pages_the_host_holds_are_resident_and_reported() {
    let mem = memory_with_hole();
    let mut tracker = tracker(&mem, 8);
    let mut log = FakeDirtyLog::default();

    for pfn in 0..10 {
        guest_write(&mem, pfn);
    }
    log.dirty_low(0..10);
    let before = tracker
        .sample(&mem, &mut log, &BalloonPages::new())
        .unwrap();
    assert_eq!((before.resident_pages, before.dirtied_pages), (10, 10));
    assert_eq!(before.ballooned_resident_pages, 0);
    assert_eq!(tracker.age(7), Some(0));

    // Pages 5..8 and a page of the high region go into the balloon (the bitmap is the guest's
    // word), but the host still holds 5..8, and the guest dirties 6 again: the host's count
    // wins, and the three pages are reported as resident balloon pages.
    let balloon = BalloonPages::from_runs(&mem.regions(), &[(5, 3), (HIGH_PFN + 9, 1)]);
    log.dirty_low([6, 9]);
    let after = tracker.sample(&mem, &mut log, &balloon).unwrap();
    assert_eq!(after.resident_pages, 10, "residency is what the host says");
    assert_eq!(after.ballooned_resident_pages, 3);
    assert_eq!(tracker.ballooned_resident_runs(), &[(5, 3)]);
    // Balloon pages are no part of the working set.
    assert_eq!(after.dirtied_pages, 1);
    assert_eq!(after.working_set_pages, 7);
    assert_eq!(tracker.age(6), None);
    assert_eq!(tracker.age(7), None);
    assert_eq!(tracker.age(8), Some(1));
    assert_eq!(tracker.age(9), Some(0));

    // Released again on the host (as the driver has the balloon do): nothing to report.
    release(&mem, 5, 3);
    let released = tracker.sample(&mem, &mut log, &balloon).unwrap();
    assert_eq!(released.resident_pages, 7);
    assert_eq!(released.ballooned_resident_pages, 0);
    assert!(tracker.ballooned_resident_runs().is_empty());
}

#[test]
fn violation_runs_are_joined_across_words_and_bounded() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 40 * MIB as usize)]).unwrap();
    no_huge_pages(&mem);
    let mut tracker = tracker(&mem, 8);
    let mut log = FakeDirtyLog::default();
    // Every other page up to past twice MAX_VIOLATION_RUNS, and a run across a word edge
    // (9024 is a multiple of 64).
    let alternate = 2 * MAX_VIOLATION_RUNS as u64 + 100;
    for pfn in (0..alternate).step_by(2).chain(9000..9100) {
        guest_write(&mem, pfn);
    }
    let regions = mem.regions();
    let sample = tracker
        .sample(
            &mem,
            &mut log,
            &BalloonPages::from_runs(&regions, &[(8900, 300)]),
        )
        .unwrap();
    assert_eq!(sample.ballooned_resident_pages, 100);
    assert_eq!(tracker.ballooned_resident_runs(), &[(9000, 100)]);

    let everything = BalloonPages::from_runs(&regions, &[(0, 10240)]);
    let sample = tracker.sample(&mem, &mut log, &everything).unwrap();
    assert_eq!(sample.ballooned_resident_pages, alternate / 2 + 100);
    assert_eq!(sample.resident_pages, alternate / 2 + 100);
    let runs = tracker.ballooned_resident_runs();
    assert_eq!(runs.len(), MAX_VIOLATION_RUNS);
    assert_eq!(runs[..2], [(0, 1), (2, 1)]);
}

#[test]
fn ages_grow_one_per_epoch_reset_on_a_dirty_bit_and_saturate() {
    let mem = memory_with_hole();
    let mut tracker = tracker(&mem, 8);
    let balloon = BalloonPages::new();
    let mut log = FakeDirtyLog::default();

    assert_eq!(tracker.age(3), None);
    log.dirty_low([3]);
    tracker.sample(&mem, &mut log, &balloon).unwrap();
    assert_eq!(tracker.age(3), Some(0));
    for expected in 1..=3 {
        tracker.sample(&mem, &mut log, &balloon).unwrap();
        assert_eq!(tracker.age(3), Some(expected));
    }
    log.dirty_low([3]);
    tracker.sample(&mem, &mut log, &balloon).unwrap();
    assert_eq!(tracker.age(3), Some(0));
    assert_eq!(tracker.age(4), None, "a page never dirtied has no age");

    for _ in 0..300 {
        tracker.sample(&mem, &mut log, &balloon).unwrap();
    }
    assert_eq!(
        tracker.age(3),
        Some(254),
        "ages saturate instead of wrapping"
    );
    assert_eq!(tracker.epoch(), 305);
}

#[test]
fn working_set_is_the_pages_dirtied_in_the_last_n_epochs() {
    let mem = memory_with_hole();
    let mut tracker = tracker(&mem, 3);
    let balloon = BalloonPages::new();
    let mut log = FakeDirtyLog::default();

    // 10 pages in epoch 1, 20 in epoch 2, 30 in epoch 3 (5 of them again), nothing after.
    let mut working_sets = Vec::new();
    for batch in [0..10, 10..30, 25..55, 0..0, 0..0, 0..0] {
        log.dirty_low(batch);
        working_sets.push(
            tracker
                .sample(&mem, &mut log, &balloon)
                .unwrap()
                .working_set_pages,
        );
    }
    assert_eq!(working_sets, vec![10, 30, 55, 45, 30, 0]);
}

#[test]
fn dirty_rate_is_dirtied_pages_over_the_time_between_samples() {
    let mem = memory_with_hole();
    let mut tracker = tracker(&mem, 8);
    let balloon = BalloonPages::new();
    let mut log = FakeDirtyLog::default();

    tracker.sample(&mem, &mut log, &balloon).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    log.dirty_low(0..100);
    let sample = tracker.sample(&mem, &mut log, &balloon).unwrap();
    assert_eq!(sample.epoch, 2);
    assert!(sample.elapsed >= Duration::from_millis(50));
    assert_eq!(sample.dirtied_pages, 100);
    assert_eq!(
        sample.dirty_rate_pages_per_s,
        100.0 / sample.elapsed.as_secs_f64()
    );
    assert!(sample.dirty_rate_pages_per_s < 2000.0);
    assert!(sample.cost < sample.elapsed);
}

#[test]
fn vmm_writes_are_ored_in_and_reset() {
    let mem = memory_with_hole();
    let mut tracker = tracker(&mem, 8);
    let balloon = BalloonPages::new();
    let mut log = FakeDirtyLog::default();

    // A device writes pages 1, 2 and a page of the high region through vm-memory; the guest
    // dirties 2 and 3.
    for pfn in [1, 2, HIGH_PFN + 7] {
        mem.write_obj(0xabu8, GuestAddress(pfn * PAGE)).unwrap();
    }
    log.dirty_low([2, 3]);
    let sample = tracker.sample(&mem, &mut log, &balloon).unwrap();
    assert_eq!(sample.dirtied_pages, 4);
    for pfn in [1, 2, 3, HIGH_PFN + 7] {
        assert_eq!(tracker.age(pfn), Some(0), "pfn {pfn}");
    }
    for region in mem.iter() {
        let bitmap = region.bitmap();
        assert!((0..region.len() as usize)
            .step_by(PAGE as usize)
            .all(|offset| !bitmap.dirty_at(offset)));
    }

    let next = tracker.sample(&mem, &mut log, &balloon).unwrap();
    assert_eq!(next.dirtied_pages, 0, "the VMM's bitmap was reset");
}

#[test]
fn regions_with_a_hole_map_bits_to_their_own_pfns() {
    let mem = memory_with_hole();
    let mut tracker = tracker(&mem, 8);
    let balloon = BalloonPages::new();
    let mut log = FakeDirtyLog::default();
    assert_eq!(tracker.guest_pages(), 512);

    // Bit 0 of region 1 is the first page after the hole.
    log.dirty(1, HIGH_PFN, HIGH_PFN);
    log.dirty(1, HIGH_PFN, HIGH_PFN + 255);
    let sample = tracker.sample(&mem, &mut log, &balloon).unwrap();
    assert_eq!(log.calls, vec![(0, 256), (1, 256)]);
    assert_eq!(sample.dirtied_pages, 2);
    assert_eq!(tracker.age(HIGH_PFN), Some(0));
    assert_eq!(tracker.age(HIGH_PFN + 255), Some(0));
    assert_eq!(tracker.age(0), None);
    // The hole and what lies past RAM are no guest pages.
    for pfn in [256, HIGH_PFN - 1, HIGH_PFN + 256, u64::MAX] {
        assert_eq!(tracker.age(pfn), None);
        assert!(!tracker.is_resident_pfn(pfn));
    }
}

#[test]
fn bits_past_the_end_of_a_region_are_ignored() {
    // 100 pages: the dirty log's second word has 36 bits that name no page.
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 100 * PAGE as usize)]).unwrap();
    let mut tracker = tracker(&mem, 8);
    let balloon = BalloonPages::new();
    let mut log = FakeDirtyLog::default();
    log.pending.insert(0, vec![u64::MAX; 3]);
    let sample = tracker.sample(&mem, &mut log, &balloon).unwrap();
    assert_eq!(sample.dirtied_pages, 100);
    assert_eq!(sample.working_set_pages, 100);
}

#[test]
fn a_failed_sample_ages_nothing() {
    let mem = memory_with_hole();
    let mut tracker = tracker(&mem, 8);
    let balloon = BalloonPages::new();
    let mut log = FakeDirtyLog::default();
    log.dirty_low([4]);
    tracker.sample(&mem, &mut log, &balloon).unwrap();

    log.fail = true;
    assert!(tracker.sample(&mem, &mut log, &balloon).is_err());
    assert_eq!(tracker.epoch(), 1);
    assert_eq!(tracker.age(4), Some(0));
}

#[test]
fn another_memory_layout_is_refused() {
    let mem = memory_with_hole();
    let mut tracker = tracker(&mem, 8);
    let other = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MIB as usize)]).unwrap();
    let err = tracker
        .sample(&other, &mut FakeDirtyLog::default(), &BalloonPages::new())
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}
