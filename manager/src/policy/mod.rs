//! The over-limit policy: the over-limit handler of the 2006 containers patch
//! (`mm/container_mm.c`), with the VM as the container. Pure logic, no I/O: the driver measures
//! an [`Observation`], calls [`Policy::decide`], carries out the [`Action`]s (agent requests,
//! balloon targets) and reports each [`Outcome`] through [`Policy::record`].
//!
//! The host's measurement wins every argument with the guest: resident is what the host holds
//! (balloon pages included), what the agent's steps obtained is the fall in residency measured
//! after them (the agent's own figure is shown beside it), a guest that keeps using pages it
//! gave the balloon is found out (`balloon_violated`), and resident above L for
//! [`PolicyConfig::sustained_epochs`] epochs is `over_limit` and engages the host backstop,
//! whatever reclaim is doing or the agent says.
//!
//! With limit L and threshold T = L − L/8, a reclaim *episode* starts when resident > L and
//! lasts until resident ≤ T: the patch's hysteresis. A round of the episode comes at every
//! `decide` once the balloon has settled (reached its last target, or counts as stuck) and no
//! agent request is under way (the driver runs them beside the sampler), and asks, in this
//! order:
//! 1. the guest agent to drop file cache, while the cache is above L/2 and its last request was
//!    not fruitless (it freed at least 10 % of what it was asked);
//! 2. the agent to deactivate anon memory, only with swap and anon above L/64, for whatever the
//!    file request did not cover;
//! 3. the balloon to grow by resident − T, but never past the cap that leaves the guest its
//!    working set + reserve (the guest's anon pages + reserve before the tracker has a working
//!    set, a quarter of guest RAM when the agent is silent too) — the largest the guest showed
//!    since the balloon began taking pages, since the balloon's squeeze shrinks those figures. The guest's reclaim gives the
//!    balloon the pages steps 1 and 2 freed or deactivated, and the host releases what the
//!    balloon holds.
//!
//! The guest gives the balloon whichever free pages it likes, many of them never touched (the
//! design's measured warning), so one inflate by resident − T rarely brings resident to T: the
//! policy waits for the balloon to reach its target, re-measures, and inflates again, until
//! resident ≤ T or nothing more can be taken — then the state is [`ManagerState::OverLimit`]
//! with a reason a user can read, or [`ManagerState::GuestUnresponsive`] when neither the agent
//! nor the balloon answers.
//!
//! The balloon deflates in steps when the limit is raised or cleared, and gives steps back
//! when the guest shows it needs them: starved (memory PSI `full`), short of its working set
//! with pages in the balloon (refaults, PSI `some`: then `over_limit`, cause `working_set`, if
//! resident is still over L — a limit below what the guest uses is reported, not enforced by
//! thrashing it), or deflating on OOM. Every number from the guest is untrusted: all arithmetic
//! saturates, so hostile statistics can make bad decisions but never a panic.
//!
//! | file | job |
//! | --- | --- |
//! | `mod.rs` | the policy: its state, the limit, and one decision per round |
//! | `types.rs` | what goes in and out: config, observation, actions, outcomes, state, counters |
//! | `episode.rs` | a reclaim episode: when it starts and ends, and one round of it |
//! | `file_step.rs` | step 1: the agent drops file cache; request sizing |
//! | `anon_step.rs` | step 2: the agent deactivates anon memory, only with swap |
//! | `balloon_plan.rs` | step 3: the balloon's cap, its next target, and whether it moves |
//! | `need_hold.rs` | what the guest needed before the balloon squeezed it, held for the cap |
//! | `deflate.rs` | giving balloon pages back: a raised or cleared limit, a guest under pressure |
//! | `verdict.rs` | what overrules the rounds: a violated balloon, resident over L for too long |
//! | `record.rs` | what the driver reports back, and the counters |
//! | `sim.rs` | a simulated guest: pools of pages, a balloon driver, an agent (tests only) |
//! | `tests/` | unit tests, and the policy against the simulated guest |

mod anon_step;
mod balloon_plan;
mod deflate;
mod episode;
mod file_step;
mod need_hold;
mod record;
mod types;
mod verdict;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::mem::discriminant;
use std::time::Duration;

use log::{debug, info, warn};

use crate::pages;
pub use types::*;

use balloon_plan::{BalloonMove, BalloonWatch};
use deflate::{Ceiling, DeflateBudget, PressureWatch};
use episode::Episode;
use need_hold::NeedHold;
use record::Pending;
use verdict::ViolationWatch;

/// Agent requests are sized in whole batches of this many pages: the patch's
/// `DEACTIVATE_COUNT`.
pub const DEACTIVATE_BATCH_PAGES: u64 = 1000;

/// Rounds (`decide` calls) without the balloon getting one page closer to its target before it
/// counts as stuck. The slowest measured balloon (nested TCG) took 256 MiB in 10 s; ten epochs
/// without a single page is a guest that does not serve its balloon, not a slow one.
pub const BALLOON_STALL_ROUNDS: u32 = 10;

/// Consecutive rounds in which resident did not fall and the balloon did not grow before the
/// anon request turns urgent (page out to swap now rather than only deactivate). Two, so that a
/// `decide` made right after the previous actions, before anything could move, does not count.
/// After as many urgent requests without progress the anon step is exhausted: paging out did
/// not help either.
pub const NO_PROGRESS_ROUNDS: u32 = 2;

/// After a pressure step the balloon may not grow above where it was deflated to, until the
/// guest has been calm (PSI and refaults under half their thresholds) for this many rounds,
/// doubled each time the pressure comes back under the ceiling, up to the most: without it the
/// policy would inflate into pressure and deflate out of it forever.
pub const CALM_ROUNDS_FIRST: u32 = 5;
pub const CALM_ROUNDS_MAX: u32 = 80;

/// Rounds between two pressure steps: PSI's avg10 lags by seconds, and a step every round would
/// give back far more than the guest needed.
pub const PRESSURE_STEP_ROUNDS: u32 = 4;

/// Settled agent rounds in a row whose measured fall in residency was under a tenth of what the
/// agent claimed, after which the agent's steps are done for the episode.
pub const AGENT_UNPRODUCTIVE_ROUNDS: u32 = 2;

/// Epochs in a row with balloon pages found resident after which the balloon counts as not
/// honoured; as many clean epochs in a row as [`VIOLATION_CLEAN_EPOCHS`] forgive it.
pub const VIOLATION_EPOCHS: u32 = 3;
pub const VIOLATION_CLEAN_EPOCHS: u32 = 30;

/// Rounds an agent step rests after the agent failed it, before it is tried again.
pub const AGENT_RETRY_ROUNDS: u32 = 10;

/// A request that obtained less than this share (in %) of what it asked leaves its step
/// exhausted for the rest of the episode, unless the guest's pool grows again.
pub const FRUITLESS_PERCENT: u64 = 10;

/// T = L − L/8: where an episode stops (the patch's `container_under_threshold`).
pub fn threshold_for(limit_pages: u64) -> u64 {
    limit_pages - limit_pages / 8
}

fn mib(guest_pages: u64) -> u64 {
    pages::to_mib(guest_pages)
}

#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
    limit: Option<u64>,
    episode: Option<Episode>,
    deflate: Option<DeflateBudget>,
    ceiling: Option<Ceiling>,
    pressure: PressureWatch,
    watch: BalloonWatch,
    balloon_move: Option<BalloonMove>,
    pending: Vec<Pending>,
    violation: ViolationWatch,
    /// The largest need the guest showed since the balloon began taking pages.
    need_hold: NeedHold,
    /// Resident at the last decision.
    last_resident: u64,
    /// Resident fall per page ballooned by the last inflate that settled.
    inflate_yield: Option<f64>,
    last_state: ManagerState,
    counters: PolicyCounters,
    /// The balloon target the user set by hand (`PATCH /balloon`): a raised or cleared limit
    /// gives the balloon back down to it, not below.
    user_balloon_pages: u64,
    /// The guest's memory off the LRU lists as it was when the balloon's squeeze began (the
    /// first episode since the balloon was empty): the kernel figure the cap leaves is not
    /// raised above it while the balloon holds pages. That figure is what meminfo does not
    /// explain (total − free − file − anon), and free page reporting takes up to 128 MiB of
    /// free pages off the free lists while the host releases them: seen as 131 MiB "kernel"
    /// against 30 MiB without reporting, which left the balloon's cap short of the limit
    /// (`limit-reclaim-fpr`).
    kernel_bound: Option<u64>,
}

impl Policy {
    pub fn new(config: PolicyConfig) -> Self {
        Self {
            config,
            limit: None,
            episode: None,
            deflate: None,
            ceiling: None,
            pressure: PressureWatch::default(),
            watch: BalloonWatch::default(),
            balloon_move: None,
            pending: Vec::new(),
            violation: ViolationWatch::default(),
            need_hold: NeedHold::default(),
            last_resident: 0,
            inflate_yield: None,
            last_state: ManagerState::WithinLimit,
            counters: PolicyCounters::default(),
            user_balloon_pages: 0,
            kernel_bound: None,
        }
    }

    /// A new limit (or none) takes effect at the next `decide`. A change ends the running
    /// episode (the next round starts a new one if resident is over the new limit); a raised
    /// limit deflates the balloon in steps as far as no new episode can follow, a cleared one
    /// deflates it to 0.
    pub fn set_limit(&mut self, limit_pages: Option<u64>) {
        let old = self.limit;
        if old == limit_pages {
            return;
        }
        self.limit = limit_pages;
        self.counters.over_limit_epochs = 0;
        self.counters.max_overshoot_pages = 0;
        if self.episode.take().is_some() {
            info!("over-limit: episode ends, the limit changed");
        }
        if limit_pages.is_none() {
            self.need_hold.clear();
            self.kernel_bound = None;
        }
        self.deflate = match (old, limit_pages) {
            (Some(_), None) => Some(DeflateBudget::Unbounded),
            (Some(old), Some(new)) if new > old => Some(DeflateBudget::Unmeasured),
            _ => None,
        };
    }

    pub fn limit_pages(&self) -> Option<u64> {
        self.limit
    }

    /// The balloon target the user set by hand: deflating after a raised or cleared limit
    /// stops there.
    pub fn set_user_balloon_pages(&mut self, pages: u64) {
        self.user_balloon_pages = pages;
    }

    /// Takes or lets go of [`Policy::kernel_bound`]: taken at the last epoch of an episode (or
    /// one starting) with an empty balloon, let go once the balloon is empty with no episode
    /// (or the limit is cleared).
    fn update_kernel_bound(&mut self, obs: &Observation) {
        if obs.balloon_target_pages != 0 || obs.balloon_actual_pages != 0 {
            return;
        }
        // Nothing squeezes the guest: its figure is what it needs.
        let squeeze_due =
            self.episode.is_some() || self.limit.is_some_and(|l| obs.resident_pages > l);
        self.kernel_bound = squeeze_due
            .then(|| obs.guest.as_ref().map(|g| g.kernel_pages))
            .flatten();
    }

    /// `obs` with the guest's kernel figure held to [`Policy::kernel_bound`], when that lowers
    /// it: what the policy decides from.
    pub(crate) fn kernel_bounded(&self, obs: &Observation) -> Option<Observation> {
        let bound = self.kernel_bound?;
        if obs.guest.as_ref()?.kernel_pages <= bound {
            return None;
        }
        let mut bounded = obs.clone();
        if let Some(guest) = bounded.guest.as_mut() {
            guest.kernel_pages = bound;
        }
        Some(bounded)
    }

    /// L − L/8.
    pub fn threshold_pages(&self) -> Option<u64> {
        self.limit.map(threshold_for)
    }

    /// Charges time to a step: the driver times what it carries out.
    pub fn add_time(&mut self, step: Step, time: Duration) {
        let counters = self.counters.step_mut(step);
        counters.time = counters.time.saturating_add(time);
    }

    pub fn counters(&self) -> &PolicyCounters {
        &self.counters
    }

    /// Whether an agent request of an earlier decision still waits for its outcome.
    pub fn agent_in_flight(&self) -> bool {
        self.pending
            .iter()
            .any(|p| matches!(p, Pending::Agent { .. }))
    }

    /// Called once per epoch (and again whenever the driver likes, e.g. when an agent request
    /// answered: a balloon on its way to a target is waited for, not pushed again).
    pub fn decide(&mut self, obs: &Observation) -> Decision {
        self.update_kernel_bound(obs);
        let bounded;
        let obs = match self.kernel_bounded(obs) {
            Some(b) => {
                bounded = b;
                &bounded
            }
            None => obs,
        };
        // Agent requests answer in their own time; a balloon target is recorded at once.
        let before = self.pending.len();
        self.pending.retain(|p| matches!(p, Pending::Agent { .. }));
        if self.pending.len() != before {
            debug!(
                "over-limit: {} actions got no outcome",
                before - self.pending.len()
            );
        }
        self.last_resident = obs.resident_pages;
        self.watch_pressure(obs);
        self.watch_balloon(obs);
        if self.limit.is_some() {
            self.need_hold.note(obs, balloon_plan::need_now(obs));
        }
        self.settle_balloon_move(obs);
        self.watch_violations(obs);
        let engage_backstop = self.count_over_limit(obs);
        let pressure = self.pressure(obs);
        self.update_ceiling(obs, pressure.is_some());
        let ended = self.track_episode(obs);

        let mut actions = Vec::new();
        let mut state = if let Some(pressure) = pressure {
            self.pressure_round(pressure, obs, &mut actions)
        } else {
            match self.limit {
                Some(limit) if self.episode.is_some() => {
                    self.reclaim_round(limit, obs, &mut actions)
                }
                _ if ended && obs.balloon_actual_pages < obs.balloon_target_pages => {
                    // Within T before the balloon got all it was asked for (free page
                    // reporting, the guest freeing memory): the rest would only be taken from
                    // a guest that no longer needs to give it.
                    self.push_balloon(obs, obs.balloon_actual_pages, &mut actions);
                    ManagerState::WithinLimit
                }
                _ => {
                    self.deflate_round(obs, &mut actions);
                    ManagerState::WithinLimit
                }
            }
        };
        if engage_backstop && matches!(state, ManagerState::WithinLimit | ManagerState::Reclaiming)
        {
            state = self.sustained_state(obs);
        }

        let cause_of = |s: &ManagerState| match s {
            ManagerState::OverLimit { cause, .. } => Some(*cause),
            _ => None,
        };
        if discriminant(&state) != discriminant(&self.last_state)
            || cause_of(&state) != cause_of(&self.last_state)
        {
            match &state {
                ManagerState::OverLimit { reason, .. } => {
                    warn!("over-limit: over the limit: {reason}")
                }
                ManagerState::GuestUnresponsive { reason } => {
                    warn!("over-limit: guest unresponsive: {reason}")
                }
                other => info!("over-limit: {other:?}"),
            }
        }
        self.last_state = state.clone();
        Decision {
            actions,
            state,
            engage_backstop,
        }
    }
}
