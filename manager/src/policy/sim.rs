//! A simulated guest for the policy's tests: pools of guest pages, which of them are resident on
//! the host, a balloon driver, an agent, optional swap and free page reporting.
//!
//! Hostile guests too: an agent that claims whatever it is asked and frees nothing, a cache it
//! reports growing without end, a guest that keeps using pages it gave the balloon (the
//! harness in `tests/` adds slow and silent agents).
//!
//! Every guest page is in exactly one pool (`check` verifies it). Resident on the host are the
//! kernel, file cache, anon pages and the free pages the guest has touched; free pages never
//! touched (or released by the host) and balloon pages are not. Like the real guest (the
//! design's measured warning), the balloon takes untouched free pages first, so inflating does
//! not lower resident by as much as it inflates.

use super::{Action, GuestView, Observation, Outcome, Step};

pub const MIB: u64 = 256;

/// The guest's starting point, in MiB.
#[derive(Debug, Clone)]
pub struct SimSpec {
    pub ram_mib: u64,
    pub kernel_mib: u64,
    pub file_mib: u64,
    /// Of `file_mib`: in use or dirty, neither the agent nor the guest's reclaim can drop it.
    pub file_pinned_mib: u64,
    /// Of `file_mib`: read over and over (on the active list). The guest's reclaim can evict
    /// it, but the guest reads it back at once: refaults.
    pub file_hot_mib: u64,
    /// Anon pages in constant use: the working set. Never given up.
    pub anon_hot_mib: u64,
    pub anon_cold_mib: u64,
    /// Free pages the guest touched once (freed cache, exited processes): resident.
    pub free_touched_mib: u64,
    pub swap_mib: u64,
    pub agent: bool,
    pub balloon_responds: bool,
    /// Balloon pages moved per epoch.
    pub balloon_rate_mib: u64,
    pub free_page_reporting: bool,
    /// The tracker reports the working set (the hot anon pages).
    pub working_set_known: bool,
    /// The agent claims it freed or deactivated all it was asked, and does nothing.
    pub agent_lies: bool,
    /// The agent reports this much more file cache at every epoch than the last (a lie).
    pub cache_growth_mib: u64,
    /// The guest keeps using the pages it gives the balloon: they stay resident (the host
    /// finds them there every epoch, however often it releases them).
    pub balloon_violated: bool,
    /// The agent reports no active lists (a kernel whose lists say nothing of what is hot):
    /// only refaults tell the policy it took too much.
    pub hot_unreported: bool,
    /// The active lists the agent reports shrink as the balloon grows (by the share of RAM the
    /// balloon holds), as a real guest's do under the squeeze: its reclaim deactivates hot
    /// pages to refill the inactive lists, though it reads them again at once.
    pub active_lists_squeezed: bool,
}

impl Default for SimSpec {
    fn default() -> Self {
        Self {
            ram_mib: 512,
            kernel_mib: 8,
            file_mib: 0,
            file_pinned_mib: 0,
            file_hot_mib: 0,
            anon_hot_mib: 0,
            anon_cold_mib: 0,
            free_touched_mib: 0,
            swap_mib: 0,
            agent: true,
            balloon_responds: true,
            balloon_rate_mib: 64,
            free_page_reporting: false,
            working_set_known: true,
            agent_lies: false,
            cache_growth_mib: 0,
            balloon_violated: false,
            hot_unreported: false,
            active_lists_squeezed: false,
        }
    }
}

/// All counts are 4 KiB guest pages.
#[derive(Debug, Clone)]
pub struct SimGuest {
    pub ram: u64,
    pub kernel: u64,
    pub file: u64,
    pub file_pinned: u64,
    pub file_hot: u64,
    /// Hot file pages evicted since the last tick: read back (refaulted) at the next.
    pub evicted_hot: u64,
    /// Refaults since boot, as /proc/vmstat counts them.
    pub refaults: u64,
    pub psi_some_avg10: f64,
    pub anon_hot: u64,
    pub anon_cold: u64,
    /// Of `anon_cold`: deactivated by the agent, first for the guest's reclaim.
    pub anon_inactive: u64,
    pub swapped: u64,
    pub swap_total: u64,
    pub free_touched: u64,
    pub free_untouched: u64,
    pub balloon: u64,
    pub balloon_target: u64,
    pub balloon_rate: u64,
    pub balloon_responds: bool,
    pub agent: bool,
    /// The VM has no vsock device: no agent link at all.
    pub no_vsock: bool,
    /// Free pages the guest took off its free lists to report them (free page reporting): its
    /// meminfo shows them as neither free nor cached nor anon, so they read as kernel memory.
    pub reporting_isolated: u64,
    pub free_page_reporting: bool,
    pub working_set_known: bool,
    pub psi_full_avg10: f64,
    pub agent_lies: bool,
    pub cache_growth: u64,
    /// File cache the agent reports beyond what there is.
    pub cache_lie: u64,
    pub balloon_violated: bool,
    pub hot_unreported: bool,
    pub active_lists_squeezed: bool,
    /// PSI `some` the guest shows whatever else happens (a need that rises).
    pub psi_some_floor: f64,
}

impl SimGuest {
    pub fn new(spec: SimSpec) -> Self {
        let used = spec.kernel_mib
            + spec.file_mib
            + spec.anon_hot_mib
            + spec.anon_cold_mib
            + spec.free_touched_mib;
        assert!(used <= spec.ram_mib, "the spec does not fit in guest RAM");
        let guest = Self {
            ram: spec.ram_mib * MIB,
            kernel: spec.kernel_mib * MIB,
            file: spec.file_mib * MIB,
            file_pinned: spec.file_pinned_mib.min(spec.file_mib) * MIB,
            file_hot: spec
                .file_hot_mib
                .min(spec.file_mib - spec.file_pinned_mib.min(spec.file_mib))
                * MIB,
            evicted_hot: 0,
            refaults: 0,
            psi_some_avg10: 0.0,
            anon_hot: spec.anon_hot_mib * MIB,
            anon_cold: spec.anon_cold_mib * MIB,
            anon_inactive: 0,
            swapped: 0,
            swap_total: spec.swap_mib * MIB,
            free_touched: spec.free_touched_mib * MIB,
            free_untouched: (spec.ram_mib - used) * MIB,
            balloon: 0,
            balloon_target: 0,
            balloon_rate: spec.balloon_rate_mib * MIB,
            balloon_responds: spec.balloon_responds,
            agent: spec.agent,
            no_vsock: false,
            reporting_isolated: 0,
            free_page_reporting: spec.free_page_reporting,
            working_set_known: spec.working_set_known,
            psi_full_avg10: 0.0,
            agent_lies: spec.agent_lies,
            cache_growth: spec.cache_growth_mib * MIB,
            cache_lie: 0,
            balloon_violated: spec.balloon_violated,
            hot_unreported: spec.hot_unreported,
            active_lists_squeezed: spec.active_lists_squeezed,
            psi_some_floor: 0.0,
        };
        guest.check();
        guest
    }

    /// Every guest page is in one pool.
    pub fn check(&self) {
        let total = self.kernel
            + self.file
            + self.anon_hot
            + self.anon_cold
            + self.free_touched
            + self.free_untouched
            + self.balloon;
        assert_eq!(total, self.ram, "pages lost or made up: {self:?}");
        assert!(self.file_pinned + self.file_hot <= self.file);
        assert!(self.anon_inactive <= self.anon_cold);
        assert!(self.swapped <= self.swap_total);
    }

    pub fn resident(&self) -> u64 {
        let violated = if self.balloon_violated {
            self.balloon
        } else {
            0
        };
        self.kernel + self.file + self.anon_hot + self.anon_cold + self.free_touched + violated
    }

    pub fn observe(&self) -> Observation {
        Observation {
            guest_ram_pages: self.ram,
            resident_pages: self.resident(),
            balloon_violation_pages: if self.balloon_violated {
                self.balloon
            } else {
                0
            },
            balloon_target_pages: self.balloon_target,
            balloon_actual_pages: self.balloon,
            working_set_pages: self.working_set_known.then_some(self.anon_hot),
            guest: self.agent.then(|| GuestView {
                file_pages: self.file.saturating_add(self.cache_lie),
                anon_pages: self.anon_hot + self.anon_cold,
                free_pages: (self.free_touched + self.free_untouched)
                    .saturating_sub(self.reporting_isolated),
                swap_total_pages: self.swap_total,
                swap_used_pages: self.swapped,
                psi_full_avg10: self.psi_full_avg10,
                psi_some_avg10: self.psi_some_avg10,
                active_file_pages: self.reported_active(self.file_hot),
                active_anon_pages: self.reported_active(self.anon_hot),
                refaults: self.refaults,
                kernel_pages: self.kernel + self.reporting_isolated,
            }),
            agent_absent: self.no_vsock,
        }
    }

    /// What the agent reports on an active list holding `hot` pages.
    fn reported_active(&self, hot: u64) -> u64 {
        if self.hot_unreported {
            0
        } else if self.active_lists_squeezed && self.ram > 0 {
            hot * (self.ram - self.balloon) / self.ram
        } else {
            hot
        }
    }

    /// Carries out an action the way the driver would, and says what it obtained.
    pub fn apply(&mut self, action: &Action) -> Outcome {
        let outcome = match *action {
            Action::DeactivateFile { .. } | Action::DeactivateAnon { .. } if !self.agent => {
                Outcome::AgentFailed {
                    step: Step::of(action).unwrap_or(Step::File),
                    reason: "no guest agent".into(),
                }
            }
            Action::DeactivateFile { pages } if self.agent_lies => Outcome::FileDeactivated {
                asked: pages,
                freed: pages,
            },
            Action::DeactivateAnon { pages, .. } if self.agent_lies => Outcome::AnonDeactivated {
                asked: pages,
                deactivated: pages,
            },
            Action::DeactivateFile { pages } => {
                // The agent drops clean cache, cold before hot: free in the guest, still
                // resident on the host.
                let freed = pages.min(self.file_cold());
                self.file -= freed;
                self.free_touched += freed;
                Outcome::FileDeactivated {
                    asked: pages,
                    freed,
                }
            }
            Action::DeactivateAnon { pages, urgent } => {
                // Like the agent, it reports the anon pages in the ranges it advised: hot ones
                // too, though they are back in use at once.
                let advised = pages.min(self.anon_hot + self.anon_cold);
                if self.swap_total > 0 && urgent {
                    // MADV_PAGEOUT: cold pages go to swap and are free (still resident).
                    let n = pages
                        .min(self.anon_cold)
                        .min(self.swap_total - self.swapped);
                    self.anon_cold -= n;
                    self.anon_inactive = self.anon_inactive.min(self.anon_cold);
                    self.swapped += n;
                    self.free_touched += n;
                } else if self.swap_total > 0 {
                    // MADV_COLD: cold pages stay on the inactive list, first for reclaim.
                    let n = pages.min(self.anon_cold - self.anon_inactive);
                    self.anon_inactive += n;
                }
                Outcome::AnonDeactivated {
                    asked: pages,
                    deactivated: if self.swap_total > 0 { advised } else { 0 },
                }
            }
            Action::SetBalloon { target_pages } => {
                self.balloon_target = target_pages.min(self.ram);
                Outcome::BalloonSet {
                    target_pages: self.balloon_target,
                }
            }
        };
        self.check();
        outcome
    }

    /// One epoch of guest time: the balloon driver moves, free page reporting runs.
    pub fn tick(&mut self) {
        self.cache_lie = self.cache_lie.saturating_add(self.cache_growth);
        if self.balloon_responds {
            if self.balloon < self.balloon_target {
                let want = (self.balloon_target - self.balloon).min(self.balloon_rate);
                let got = self.give_balloon(want);
                self.balloon += got;
            } else {
                let back = (self.balloon - self.balloon_target).min(self.balloon_rate);
                // Deflated pages come back untouched: the host released them.
                self.balloon -= back;
                self.free_untouched += back;
            }
        }
        // The hot cache the balloon took is read back: refaults, and a guest stalling on them.
        // What finds no free page to come back to is read (and refaults) again at every tick.
        let evicted = self.evicted_hot;
        let stalled: f64 = if evicted > 0 { 40.0 } else { 0.0 };
        self.psi_some_avg10 = stalled.max(self.psi_some_floor);
        if evicted > 0 {
            self.refaults += evicted;
            let back = evicted.min(self.free_untouched + self.free_touched);
            self.read_files(back);
            self.file_hot += back;
            self.evicted_hot -= back;
        }
        if self.free_page_reporting {
            self.free_untouched += self.free_touched;
            self.free_touched = 0;
        }
        self.check();
    }

    /// The guest's balloon driver finds `want` pages: free ones (untouched first), then what
    /// its reclaim takes — deactivated anon (with swap), unpinned cache, cold anon (with swap).
    /// Never hot anon pages: the balloon stops short instead.
    fn give_balloon(&mut self, want: u64) -> u64 {
        let mut got = take(&mut self.free_untouched, want);
        got += take(&mut self.free_touched, want - got);
        let n = (want - got)
            .min(self.anon_inactive)
            .min(self.swap_total - self.swapped);
        self.anon_inactive -= n;
        self.anon_cold -= n;
        self.swapped += n;
        got += n;
        let n = (want - got).min(self.file_cold());
        self.file -= n;
        got += n;
        let n = (want - got)
            .min(self.anon_cold - self.anon_inactive)
            .min(self.swap_total - self.swapped);
        self.anon_cold -= n;
        self.swapped += n;
        got += n;
        // Last, the hot cache: the guest's LRU lets it go, and the guest reads it back.
        let n = (want - got).min(self.file_hot);
        self.file -= n;
        self.file_hot -= n;
        self.evicted_hot += n;
        got + n
    }

    /// Clean cache nobody is reading.
    fn file_cold(&self) -> u64 {
        self.file - self.file_pinned - self.file_hot
    }

    /// The guest reads `pages` of files into its cache from free pages, untouched ones first
    /// (so resident grows).
    pub fn read_files(&mut self, pages: u64) {
        let from_untouched = pages.min(self.free_untouched);
        let from_touched = (pages - from_untouched).min(self.free_touched);
        self.free_untouched -= from_untouched;
        self.free_touched -= from_touched;
        self.file += from_untouched + from_touched;
        self.check();
    }
}

/// Takes up to `want` pages from `pool`; how many it took.
fn take(pool: &mut u64, want: u64) -> u64 {
    let n = want.min(*pool);
    *pool -= n;
    n
}
