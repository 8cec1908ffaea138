//! The memory manager's driver: every epoch it samples the guest's residency and dirtiness
//! (the balloon crate's tracker), lets the over-limit policy decide, and carries the decision
//! out — agent requests over vsock, balloon targets — then reports what happened.
//!
//! It runs on a thread of its own: an agent request may take up to its timeout and a sample
//! walks all of guest RAM, neither of which may hold up the devices on the event loop. The API
//! reads the shared [`ManagerView`] and sets the limit through it.

mod driver;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ballast_balloon::manager::policy::{ManagerState, PolicyConfig, PolicyCounters};

pub use driver::ManagerParts;

use crate::host_enforce::HostEnforceStatus;

/// The guest page size every page count here is in.
pub const PAGE_SIZE: u64 = 4096;

#[derive(Debug, Clone, Copy)]
pub struct ManagerConfig {
    pub sample_interval: Duration,
    pub limit_pages: Option<u64>,
    pub policy: PolicyConfig,
}

/// What the manager knows, shared with the API.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerView {
    pub limit_pages: Option<u64>,
    pub threshold_pages: Option<u64>,
    pub resident_pages: Option<u64>,
    /// Pages dirtied in the last epochs; `None` until KVM's dirty log (on only while a limit
    /// is set) has a few epochs of history.
    pub working_set_pages: Option<u64>,
    /// `None` while dirty logging is off (no limit).
    pub dirty_rate_pages_per_s: Option<f64>,
    pub state: ManagerState,
    pub counters: PolicyCounters,
    pub epochs: u64,
    /// Time the last sample took.
    pub sample_cost: Duration,
    /// `--host-enforce`, as of the last epoch.
    pub host_enforce: HostEnforceStatus,
}

impl ManagerView {
    /// Before the first epoch.
    pub fn new(limit_pages: Option<u64>, host_enforce: HostEnforceStatus) -> Self {
        Self {
            limit_pages,
            threshold_pages: None,
            resident_pages: None,
            working_set_pages: None,
            dirty_rate_pages_per_s: None,
            state: ManagerState::WithinLimit,
            counters: PolicyCounters::default(),
            epochs: 0,
            sample_cost: Duration::ZERO,
            host_enforce,
        }
    }
}

pub(crate) struct Shared {
    view: Mutex<ManagerView>,
    /// Wakes the driver early when the limit changes.
    changed: Condvar,
    stop: AtomicBool,
}

/// The running manager.
pub struct MemoryManager {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the API holds: read the view, set the limit.
#[derive(Clone)]
pub struct ManagerHandle {
    shared: Arc<Shared>,
}

impl ManagerHandle {
    pub fn view(&self) -> ManagerView {
        self.shared
            .view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes effect at once: the driver wakes and runs an epoch with the new limit.
    pub fn set_limit(&self, limit_pages: Option<u64>) {
        let mut view = self.shared.view.lock().unwrap_or_else(|e| e.into_inner());
        view.limit_pages = limit_pages;
        self.shared.changed.notify_all();
    }
}

impl MemoryManager {
    pub fn start(parts: ManagerParts, config: ManagerConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            view: Mutex::new(ManagerView::new(
                config.limit_pages,
                parts.host_enforcer.status().clone(),
            )),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let driver = driver::Driver::new(parts, config, shared.clone());
        let thread = std::thread::Builder::new()
            .name("memory-manager".into())
            .spawn(move || driver.run())?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> ManagerHandle {
        ManagerHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for MemoryManager {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
