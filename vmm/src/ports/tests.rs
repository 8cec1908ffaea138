//! The balloon port against the real balloon device and real guest RAM: the manager's sampler
//! never holds the device's lock while it measures, and balloon pages the host holds again are
//! released only while they are still in the balloon.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_devices::balloon::{BalloonBitmap, BalloonConfig, BalloonMetrics};
use ballast_manager::driver::ports::GuestRam;
use ballast_manager::host_enforce::HostEnforcer;
use ballast_manager::policy::PolicyConfig;
use ballast_manager::tracker::{NoDirtyLog, RamRegion};
use ballast_manager::{ManagerConfig, ManagerParts, MemoryManager};
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::vstate::memory::create_guest_memory;

/// Guest RAM that notes, at every residency read, whether the balloon's lock was free.
struct WatchedRam {
    mem: GuestMemoryMmap,
    balloon: Arc<Mutex<Balloon>>,
    lock_free: Arc<Mutex<Vec<bool>>>,
}

impl GuestRam for WatchedRam {
    fn regions(&self) -> Vec<RamRegion> {
        self.mem.regions()
    }

    fn residency(&self, region: usize, vector: &mut [u8]) -> io::Result<()> {
        // What a vCPU or the event loop touching the balloon would find: the lock free.
        let free = self.balloon.try_lock().is_ok();
        self.lock_free.lock().unwrap().push(free);
        // Long enough that a lock held across the sample would be seen.
        std::thread::sleep(Duration::from_millis(20));
        self.mem.residency(region, vector)
    }

    fn take_vmm_writes(&self, region: usize) -> Vec<u64> {
        self.mem.take_vmm_writes(region)
    }
}

#[test]
fn the_sampler_never_holds_the_balloon_lock_while_it_measures() {
    let mem = create_guest_memory(64 << 20).unwrap();
    let balloon = Arc::new(Mutex::new(Balloon::new(BalloonConfig::default()).unwrap()));
    let lock_free = Arc::new(Mutex::new(Vec::new()));
    let parts = ManagerParts {
        ram: Box::new(WatchedRam {
            mem: mem.clone(),
            balloon: balloon.clone(),
            lock_free: lock_free.clone(),
        }),
        balloon: Box::new(BalloonPort::new(balloon.clone(), mem.clone())),
        dirty_log: Box::new(NoDirtyLog),
        agent: None,
        host_enforcer: HostEnforcer::off(),
    };
    let config = ManagerConfig {
        sample_interval: Duration::from_millis(10),
        limit_pages: Some(pages::from_mib(32)),
        policy: PolicyConfig::default(),
        over_limit_after: Duration::from_secs(5),
    };
    let manager = MemoryManager::start(parts, config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while manager.handle().view().epochs < 5 {
        assert!(Instant::now() < deadline, "the manager took no epochs");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(manager);
    let seen = lock_free.lock().unwrap().clone();
    assert!(seen.len() >= 5);
    assert!(seen.iter().all(|&free| free), "{seen:?}");
}

/// Writes one byte into each of `count` guest pages from `pfn`: the host holds them now.
fn touch(mem: &GuestMemoryMmap, pfn: u64, count: u64) {
    for p in pfn..pfn + count {
        mem.write_obj(0x5au8, GuestAddress(p * pages::PAGE_SIZE))
            .unwrap();
    }
}

fn resident_pages(mem: &GuestMemoryMmap, pfn: u64, count: u64) -> usize {
    residency_of(mem, pfn, count)
        .unwrap()
        .iter()
        .filter(|&&b| b & 1 != 0)
        .count()
}

#[test]
fn resident_balloon_pages_are_released_again_and_only_those() {
    let mem = create_guest_memory(16 << 20).unwrap();
    let mut bitmap = BalloonBitmap::new(&mem);
    let metrics = BalloonMetrics::default();
    // Pages 100..140 are in the balloon, 100..110 and 130..140 of them touched again; pages
    // 200..210 are the guest's and touched too.
    bitmap.insert_run(100, 40);
    touch(&mem, 100, 10);
    touch(&mem, 130, 10);
    touch(&mem, 200, 10);

    // The tracker's (possibly stale) runs name all of them, and a page past guest RAM.
    let runs = [(95, 50), (200, 10), (1 << 40, 4)];
    let found = release_resident(&mem, &bitmap, &metrics, &runs);
    assert_eq!(found.confirmed, 20);
    assert_eq!(found.released, 20);
    assert_eq!(resident_pages(&mem, 100, 40), 0);
    // The guest's own pages stay: never released, whatever the runs said.
    assert_eq!(resident_pages(&mem, 200, 10), 10);
    // The released pages read as zeros, as after any balloon release.
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(100 * pages::PAGE_SIZE))
            .unwrap(),
        0
    );

    // Deflated since the tracker's copy: taken back by the guest, so not released.
    touch(&mem, 120, 5);
    for pfn in 120..125 {
        bitmap.remove(pfn);
    }
    let found = release_resident(&mem, &bitmap, &metrics, &[(120, 5)]);
    assert_eq!(found, ResidentBalloonPages::default());
    assert_eq!(resident_pages(&mem, 120, 5), 5);
}
