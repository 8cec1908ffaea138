//! ballast's memory manager: the VM is the container, this is its over-limit handler. It owns the
//! memory limit and the memory state; the VMM hands it guest RAM, KVM's dirty log, the balloon and
//! the guest agent through the traits of [`driver::ports`], and reads back a published
//! [`ManagerView`].
//!
//! | path | job |
//! | --- | --- |
//! | `lib.rs` | the running manager: its thread, the handle the API keeps, the published view |
//! | `pages.rs` | the guest page: the unit inside, and the conversions at the edges |
//! | `limit.rs` | the memory limit's one validation, for `--limit` and the API |
//! | `tracker/` | residency (`mincore`) and dirtiness (KVM's dirty log) per epoch, page ages, the working set |
//! | `policy/` | the over-limit policy: pure, no I/O, one file per step, tested against a simulated guest |
//! | `driver/` | one epoch: sample, decide, act through the ports, publish |
//! | `host_enforce/` | `--host-enforce`: the host's cgroup v2 `memory.high` behind the limit |
//!
//! A limit's journey: the API validates nothing itself — it calls [`ManagerHandle::set_limit`]
//! ([`limit::validate`]), which wakes the driver's thread; the driver's next epoch measures,
//! lets the policy decide, and asks the guest agent or sets the balloon's target through the
//! ports.

pub mod driver;
pub mod host_enforce;
pub mod limit;
pub mod pages;
pub mod policy;
pub mod tracker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

pub use driver::ManagerParts;
pub use host_enforce::{HostEnforceState, HostEnforceStatus};
pub use limit::LimitError;
use policy::{ManagerState, PolicyConfig, PolicyCounters};

/// How long resident may stay above the limit before the guest is `over_limit` whatever reclaim
/// is doing, and `--host-enforce` engages, unless `--over-limit-after` says otherwise.
pub const DEFAULT_OVER_LIMIT_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub struct ManagerConfig {
    pub sample_interval: Duration,
    /// Already validated ([`limit::validate`]).
    pub limit_pages: Option<u64>,
    /// Its `sustained_epochs` is set from `over_limit_after` and `sample_interval`.
    pub policy: PolicyConfig,
    /// Resident above the limit this long is `over_limit` and engages the host backstop.
    pub over_limit_after: Duration,
}

impl ManagerConfig {
    /// Epochs in `over_limit_after`, rounded up, at least one.
    pub fn sustained_epochs(&self) -> u32 {
        let interval = self.sample_interval.as_secs_f64();
        if interval <= 0.0 {
            return 1;
        }
        let epochs = (self.over_limit_after.as_secs_f64() / interval).ceil();
        (epochs as u32).max(1)
    }
}

/// What the manager knows, published for the API after every epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManagerView {
    /// Guest RAM, in guest pages.
    pub guest_pages: u64,
    pub limit_pages: Option<u64>,
    /// The balloon target the user set by hand (`PATCH /balloon`); the manager gives the
    /// balloon back down to it, not below, when the limit is raised or cleared.
    pub user_balloon_pages: u64,
    pub threshold_pages: Option<u64>,
    pub resident_pages: Option<u64>,
    /// Balloon pages found resident at the last epoch (the guest touched pages it gave away)
    /// and released again; the totals are in `counters`.
    pub ballooned_resident_pages: u64,
    /// The working set the policy keeps: the larger of the two below; `None` while neither
    /// is known.
    pub working_set_pages: Option<u64>,
    /// Pages dirtied in the last epochs (KVM's dirty log: writes); `None` until the log (on
    /// only while a limit is set) has a few epochs of history.
    pub dirty_working_set_pages: Option<u64>,
    /// The guest's active lists (reads too), while its agent answers.
    pub guest_active_pages: Option<u64>,
    /// Whether this host's kernel has idle page tracking (`/sys/kernel/mm/page_idle`); not a
    /// source yet, shown so that a user knows.
    pub host_idle_tracking: bool,
    /// `None` while dirty logging is off (no limit).
    pub dirty_rate_pages_per_s: Option<f64>,
    pub state: ManagerState,
    pub counters: PolicyCounters,
    pub epochs: u64,
    /// Time the last sample took.
    pub sample_cost: Duration,
    /// `--host-enforce`, as of the last epoch.
    pub host_enforce: HostEnforceStatus,
    /// Where the agent's `deactivate_file` answers say their pages came from.
    pub file_passes: FilePassCounters,
}

/// The agent's file passes, summed over its answers (its own figures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilePassCounters {
    pub big_pages: u64,
    pub small_pages: u64,
    pub fallback_pages: u64,
    /// Requests in which the whole-guest fallback ran.
    pub fallbacks: u64,
}

impl FilePassCounters {
    pub fn add(&mut self, passes: &driver::ports::FilePasses) {
        self.big_pages = self.big_pages.saturating_add(passes.big_pages);
        self.small_pages = self.small_pages.saturating_add(passes.small_pages);
        self.fallback_pages = self.fallback_pages.saturating_add(passes.fallback_pages);
        self.fallbacks += u64::from(passes.fallback_ran);
    }
}

impl ManagerView {
    /// Before the first epoch.
    pub fn new(
        guest_pages: u64,
        limit_pages: Option<u64>,
        host_enforce: HostEnforceStatus,
    ) -> Self {
        Self {
            guest_pages,
            limit_pages,
            host_enforce,
            host_idle_tracking: std::path::Path::new("/sys/kernel/mm/page_idle/bitmap").exists(),
            ..Default::default()
        }
    }
}

pub(crate) struct Shared {
    view: Mutex<ManagerView>,
    /// Wakes the driver early when the limit changes.
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn new(view: ManagerView) -> Arc<Self> {
        Arc::new(Shared {
            view: Mutex::new(view),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        })
    }

    pub(crate) fn view(&self) -> MutexGuard<'_, ManagerView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }
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
    /// A handle with no driver behind it: the limit is kept and shown, nothing enforces it.
    /// For the API's unit tests, which have no guest to manage.
    pub fn without_driver(guest_pages: u64) -> Self {
        Self {
            shared: Shared::new(ManagerView::new(
                guest_pages,
                None,
                HostEnforceStatus::off(),
            )),
        }
    }

    pub fn view(&self) -> ManagerView {
        self.shared.view().clone()
    }

    /// Validates the limit against guest RAM and sets it; a refused limit changes nothing. Takes
    /// effect at once: the driver wakes and runs an epoch with the new limit.
    pub fn set_limit(&self, limit_pages: Option<u64>) -> Result<(), LimitError> {
        let mut view = self.shared.view();
        view.limit_pages = limit::validate(limit_pages, view.guest_pages)?;
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Records a balloon target the user set by hand, which the manager keeps when it gives
    /// balloon pages back (the target itself is set on the device by the caller).
    pub fn set_user_balloon_pages(&self, pages: u64) {
        self.shared.view().user_balloon_pages = pages;
    }
}

impl MemoryManager {
    pub fn start(parts: ManagerParts, config: ManagerConfig) -> std::io::Result<Self> {
        Self::start_with(parts, config, || {})
    }

    /// `start`, with `setup` run first on the manager's thread (the VMM installs the thread's
    /// seccomp filter there).
    pub fn start_with(
        parts: ManagerParts,
        config: ManagerConfig,
        setup: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Self> {
        let guest_pages = parts.guest_pages();
        let shared = Shared::new(ManagerView::new(
            guest_pages,
            config.limit_pages,
            parts.host_enforcer.status().clone(),
        ));
        let driver = driver::Driver::new(parts, config, shared.clone());
        let thread = std::thread::Builder::new()
            .name("memory-manager".into())
            .spawn(move || {
                setup();
                driver.run()
            })?;
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
