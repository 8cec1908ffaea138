//! The memory manager's ports over this VM's parts: the balloon device as its balloon control.
//! (KVM's dirty log is `vstate::dirty_log::KvmDirtyLog`, guest RAM is vm-memory's mapping, the
//! guest agent is `agent::AgentHandle`.)

use std::sync::{Arc, Mutex, MutexGuard};

use ballast_devices::balloon::{Balloon, GUEST_PAGE_SIZE};
use ballast_manager::driver::ports::BalloonControl;
use ballast_manager::pages;

// A balloon PFN names a 4 KiB page by the virtio spec, whatever the guest's page size; the
// manager counts the same 4 KiB guest pages, so balloon sizes need no conversion.
const _: () = assert!(GUEST_PAGE_SIZE == pages::PAGE_SIZE);

/// The balloon device, locked for each call only.
pub struct BalloonPort(pub Arc<Mutex<Balloon>>);

impl BalloonPort {
    fn balloon(&self) -> MutexGuard<'_, Balloon> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
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

    fn ballooned_runs(&self) -> Vec<(u64, u64)> {
        self.balloon().ballooned().runs()
    }
}
