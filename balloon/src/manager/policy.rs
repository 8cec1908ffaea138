//! The over-limit policy: the over-limit handler of the 2006 containers patch
//! (`mm/container_mm.c`), with the VM as the container. Pure logic, no I/O: the driver measures
//! an [`Observation`], calls [`Policy::decide`], carries out the [`Action`]s (agent requests,
//! balloon targets) and reports each [`Outcome`] through [`Policy::record`].
//!
//! With limit L and threshold T = L − L/8, a reclaim *episode* starts when resident > L and
//! lasts until resident ≤ T: the patch's hysteresis. A round of the episode comes at every
//! `decide` once the balloon has settled (reached its last target, or counts as stuck), and asks,
//! in this order:
//! 1. the guest agent to drop file cache, while the cache is above L/2 and its last request was
//!    not fruitless (it freed at least 10 % of what it was asked);
//! 2. the agent to deactivate anon memory, only with swap and anon above L/64, for whatever the
//!    file request did not cover;
//! 3. the balloon to grow by resident − T, but never past the cap that leaves the guest its
//!    working set + reserve (the guest's anon pages + reserve before the tracker has a working
//!    set, a quarter of guest RAM when the agent is silent too). The guest's reclaim gives the
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
//! The balloon deflates in steps when the limit is raised or cleared, and when the guest is
//! starved (memory PSI `full`). Every number from the guest is untrusted: all arithmetic
//! saturates, so hostile statistics can make bad decisions but never a panic.

use std::fmt;
use std::mem::discriminant;
use std::time::Duration;

use log::{debug, info, warn};

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

/// After a starvation deflate the balloon may not grow above where it was deflated to, until the
/// guest has been calm (PSI below half the starvation threshold, or unknown) for this many
/// rounds: without it the policy would inflate into starvation and deflate out of it forever.
pub const STARVATION_CALM_ROUNDS: u32 = 30;

/// Rounds an agent step rests after the agent failed it, before it is tried again.
pub const AGENT_RETRY_ROUNDS: u32 = 10;

/// A request that obtained less than this share (in %) of what it asked leaves its step
/// exhausted for the rest of the episode, unless the guest's pool grows again.
pub const FRUITLESS_PERCENT: u64 = 10;

/// 4 KiB guest pages per MiB.
const PAGES_PER_MIB: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyConfig {
    /// Guest pages kept above the working set when inflating.
    pub reserve_pages: u64,
    /// The balloon deflates in steps of this many guest pages.
    pub deflate_step_pages: u64,
    /// Memory PSI `full` avg10 (%) at which the guest counts as starved.
    pub psi_full_starved_avg10: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            reserve_pages: 16 * PAGES_PER_MIB,
            deflate_step_pages: 64 * PAGES_PER_MIB,
            psi_full_starved_avg10: 10.0,
        }
    }
}

/// What the driver measured this epoch (pages are 4 KiB guest pages).
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub guest_ram_pages: u64,
    /// Guest RAM resident on the host, balloon pages excluded.
    pub resident_pages: u64,
    pub balloon_target_pages: u64,
    pub balloon_actual_pages: u64,
    /// `None` until the tracker has enough epochs.
    pub working_set_pages: Option<u64>,
    /// `None` when the agent has not answered (absent or unresponsive).
    pub guest: Option<GuestView>,
}

/// The guest's own account of its memory, from the agent.
#[derive(Debug, Clone, Default)]
pub struct GuestView {
    pub file_pages: u64,
    pub anon_pages: u64,
    pub free_pages: u64,
    pub swap_total_pages: u64,
    pub psi_full_avg10: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ask the agent to drop file cache: one request, a whole number of batches.
    DeactivateFile { pages: u64 },
    /// Ask the agent to deactivate anon memory (page it out when `urgent`); only with swap.
    DeactivateAnon { pages: u64, urgent: bool },
    /// A new balloon target: bigger inflates, smaller deflates.
    SetBalloon { target_pages: u64 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ManagerState {
    WithinLimit,
    Reclaiming,
    OverLimit {
        reason: String,
        cause: OverLimitCause,
    },
    GuestUnresponsive {
        reason: String,
    },
}

/// Why the policy takes nothing more while over the limit: a short, fixed set (metrics labels),
/// where the `reason` text carries the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverLimitCause {
    /// The balloon is at its cap: the guest's working set (or its stand-in) + reserve leaves no
    /// room.
    BalloonAtCap,
    /// The guest gives the balloon no more pages.
    BalloonStuck,
    /// The guest is starved (memory PSI `full`), or was recently: the balloon deflates or is held.
    Starved,
}

impl OverLimitCause {
    pub const ALL: [OverLimitCause; 3] = [
        OverLimitCause::BalloonAtCap,
        OverLimitCause::BalloonStuck,
        OverLimitCause::Starved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OverLimitCause::BalloonAtCap => "balloon_at_cap",
            OverLimitCause::BalloonStuck => "balloon_stuck",
            OverLimitCause::Starved => "starved",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub state: ManagerState,
}

/// What an action obtained, reported back by the driver after executing it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    FileDeactivated {
        asked: u64,
        freed: u64,
    },
    AnonDeactivated {
        asked: u64,
        deactivated: u64,
    },
    /// The agent did not carry out the request; it is charged to the oldest agent action of the
    /// last decision that has no outcome yet.
    AgentFailed {
        reason: String,
    },
    BalloonSet {
        target_pages: u64,
    },
}

/// The steps of the handler, for counters, metrics labels and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    File,
    Anon,
    Inflate,
    Deflate,
}

impl Step {
    pub const ALL: [Step; 4] = [Step::File, Step::Anon, Step::Inflate, Step::Deflate];

    /// The step an action belongs to; a balloon target is an inflate or a deflate depending
    /// on where the balloon is, so it has none here.
    pub fn of(action: &Action) -> Option<Step> {
        match action {
            Action::DeactivateFile { .. } => Some(Step::File),
            Action::DeactivateAnon { .. } => Some(Step::Anon),
            Action::SetBalloon { .. } => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Step::File => "file",
            Step::Anon => "anon",
            Step::Inflate => "inflate",
            Step::Deflate => "deflate",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step's account, counted from the outcomes the driver recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepCounters {
    /// Actions of this step carried out (failed ones included).
    pub taken: u64,
    pub asked_pages: u64,
    /// Pages freed (file), deactivated (anon), or by which the balloon actually grew (inflate)
    /// or shrank (deflate) by the time it settled.
    pub obtained_pages: u64,
    /// Agent requests that failed.
    pub failed: u64,
    /// Time spent, as the driver charges it ([`Policy::add_time`]): the agent's requests, and
    /// the balloon moving towards a target.
    pub time: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyCounters {
    pub file: StepCounters,
    pub anon: StepCounters,
    pub inflate: StepCounters,
    pub deflate: StepCounters,
    /// Reclaim episodes started (resident went over the limit).
    pub episodes: u64,
}

impl PolicyCounters {
    pub fn step(&self, step: Step) -> &StepCounters {
        match step {
            Step::File => &self.file,
            Step::Anon => &self.anon,
            Step::Inflate => &self.inflate,
            Step::Deflate => &self.deflate,
        }
    }

    fn step_mut(&mut self, step: Step) -> &mut StepCounters {
        match step {
            Step::File => &mut self.file,
            Step::Anon => &mut self.anon,
            Step::Inflate => &mut self.inflate,
            Step::Deflate => &mut self.deflate,
        }
    }
}

/// T = L − L/8: where an episode stops (the patch's `container_under_threshold`).
pub fn threshold_for(limit_pages: u64) -> u64 {
    limit_pages - limit_pages / 8
}

/// An agent request for `pages`: rounded down to whole batches so it never asks much more than
/// is needed, but at least one batch, the smallest unit the agent works in.
pub(crate) fn batch_request(pages: u64) -> u64 {
    if pages == 0 {
        0
    } else {
        (pages / DEACTIVATE_BATCH_PAGES * DEACTIVATE_BATCH_PAGES).max(DEACTIVATE_BATCH_PAGES)
    }
}

/// Whether a request obtained less than [`FRUITLESS_PERCENT`] of what it asked.
pub(crate) fn fruitless(asked: u64, obtained: u64) -> bool {
    // In u128: the product of two guest-reported u64s cannot overflow there.
    u128::from(obtained) * 100 < u128::from(asked) * u128::from(FRUITLESS_PERCENT)
}

/// What the balloon cap leaves the guest, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// The tracker's working set + reserve.
    WorkingSet { working_set: u64, keep: u64 },
    /// No working set yet: the guest's anon pages + reserve.
    Anon { anon: u64, keep: u64 },
    /// Neither a working set nor guest statistics: a quarter of guest RAM (at least the
    /// reserve), since nothing says how much the guest needs.
    QuarterOfRam { keep: u64 },
}

impl Keep {
    fn pages(self) -> u64 {
        match self {
            Keep::WorkingSet { keep, .. }
            | Keep::Anon { keep, .. }
            | Keep::QuarterOfRam { keep } => keep,
        }
    }
}

/// The largest balloon target: guest RAM less what the guest must keep.
pub(crate) fn balloon_cap(config: &PolicyConfig, obs: &Observation) -> (u64, Keep) {
    let reserve = config.reserve_pages;
    let keep = match (obs.working_set_pages, &obs.guest) {
        (Some(working_set), _) => Keep::WorkingSet {
            working_set,
            keep: working_set.saturating_add(reserve),
        },
        (None, Some(guest)) => Keep::Anon {
            anon: guest.anon_pages,
            keep: guest.anon_pages.saturating_add(reserve),
        },
        (None, None) => Keep::QuarterOfRam {
            keep: (obs.guest_ram_pages / 4).max(reserve),
        },
    };
    (obs.guest_ram_pages.saturating_sub(keep.pages()), keep)
}

fn mib(pages: u64) -> u64 {
    pages / PAGES_PER_MIB
}

/// Why an agent step is off for now.
#[derive(Debug, Clone)]
struct Exhausted {
    /// The guest's pool (file or anon pages) when the step ran dry: it comes back once the pool
    /// has grown by a margin.
    pool_pages: u64,
    why: String,
    /// After a failure: rounds until the step is tried again.
    retry_in: Option<u32>,
}

#[derive(Debug, Clone, Default)]
struct Episode {
    file: Option<Exhausted>,
    anon: Option<Exhausted>,
    last_resident: Option<u64>,
    last_actual: u64,
    /// Consecutive rounds without progress, for `urgent`.
    still_rounds: u32,
    /// Urgent anon requests since the last progress.
    fruitless_urgent: u32,
}

impl Episode {
    fn exhausted(&mut self, step: Step) -> &mut Option<Exhausted> {
        match step {
            Step::Anon => &mut self.anon,
            _ => &mut self.file,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeflateBudget {
    /// The limit was cleared: deflate to 0.
    Unbounded,
    /// The limit was raised: the budget is T − resident, measured at the first round.
    Unmeasured,
    Left(u64),
}

/// The cap a starvation deflate leaves on the balloon.
#[derive(Debug, Clone, Copy)]
struct Ceiling {
    pages: u64,
    psi: f64,
    calm_rounds: u32,
}

/// Whether the balloon gets closer to its target.
#[derive(Debug, Clone, Copy, Default)]
struct BalloonWatch {
    seen: bool,
    target: u64,
    actual: u64,
    /// Pages between actual and target when the target was set, and the fewest since.
    first_distance: u64,
    best_distance: u64,
    stalled_rounds: u32,
}

/// A balloon target being reached, to count and log what it obtained once it settles.
#[derive(Debug, Clone, Copy)]
struct BalloonMove {
    step: Step,
    from_actual: u64,
    target: u64,
    asked: u64,
}

/// An action of the last decision waiting for its outcome.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Agent {
        step: Step,
        asked: u64,
        pool_pages: u64,
    },
    Balloon {
        from_target: u64,
        from_actual: u64,
    },
}

/// The balloon part of a reclaim round.
enum BalloonPlan {
    Inflating,
    Stuck,
    Full(OverLimitCause, String),
}

#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
    limit: Option<u64>,
    episode: Option<Episode>,
    deflate: Option<DeflateBudget>,
    ceiling: Option<Ceiling>,
    watch: BalloonWatch,
    balloon_move: Option<BalloonMove>,
    pending: Vec<Pending>,
    last_state: ManagerState,
    counters: PolicyCounters,
}

impl Policy {
    pub fn new(config: PolicyConfig) -> Self {
        Self {
            config,
            limit: None,
            episode: None,
            deflate: None,
            ceiling: None,
            watch: BalloonWatch::default(),
            balloon_move: None,
            pending: Vec::new(),
            last_state: ManagerState::WithinLimit,
            counters: PolicyCounters::default(),
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
        if self.episode.take().is_some() {
            info!("over-limit: episode ends, the limit changed");
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

    /// Called once per epoch (and again right after the driver executed the previous
    /// decision's actions, if it likes: a balloon on its way to a target is waited for, not
    /// pushed again).
    pub fn decide(&mut self, obs: &Observation) -> Decision {
        if !self.pending.is_empty() {
            debug!("over-limit: {} actions got no outcome", self.pending.len());
            self.pending.clear();
        }
        self.watch_balloon(obs);
        self.settle_balloon_move(obs);
        let starved = self.starved(obs);
        self.update_ceiling(obs, starved);
        let ended = self.track_episode(obs);

        let mut actions = Vec::new();
        let state = if starved {
            self.starvation_round(obs, &mut actions)
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

        if discriminant(&state) != discriminant(&self.last_state) {
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
        Decision { actions, state }
    }

    /// What an action of the last decision obtained.
    pub fn record(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::FileDeactivated { asked, freed } => {
                self.record_agent(Step::File, *asked, *freed)
            }
            Outcome::AnonDeactivated { asked, deactivated } => {
                self.record_agent(Step::Anon, *asked, *deactivated)
            }
            Outcome::AgentFailed { reason } => self.record_agent_failure(reason),
            Outcome::BalloonSet { target_pages } => self.record_balloon(*target_pages),
        }
    }

    fn record_agent(&mut self, step: Step, asked: u64, obtained: u64) {
        let pool_pages = self
            .take_pending_agent(Some(step))
            .map_or(0, |(_, _, pool)| pool);
        let counters = self.counters.step_mut(step);
        counters.taken += 1;
        counters.asked_pages = counters.asked_pages.saturating_add(asked);
        counters.obtained_pages = counters.obtained_pages.saturating_add(obtained);
        info!("over-limit step {step}: asked {asked} pages, obtained {obtained}");
        if fruitless(asked, obtained) {
            if let Some(episode) = &mut self.episode {
                debug!("over-limit step {step}: exhausted for this episode");
                *episode.exhausted(step) = Some(Exhausted {
                    pool_pages,
                    why: format!("its last request obtained {obtained} of {asked} pages"),
                    retry_in: None,
                });
            }
        }
    }

    fn record_agent_failure(&mut self, reason: &str) {
        let Some((step, asked, pool_pages)) = self.take_pending_agent(None) else {
            warn!("over-limit: agent failure with no request waiting: {reason}");
            return;
        };
        let counters = self.counters.step_mut(step);
        counters.taken += 1;
        counters.failed += 1;
        counters.asked_pages = counters.asked_pages.saturating_add(asked);
        warn!(
            "over-limit step {step}: asked {asked} pages, obtained 0: the agent failed: {reason}"
        );
        if let Some(episode) = &mut self.episode {
            *episode.exhausted(step) = Some(Exhausted {
                pool_pages,
                why: format!("the agent failed it ({reason})"),
                retry_in: Some(AGENT_RETRY_ROUNDS),
            });
        }
    }

    /// The oldest waiting agent action (of `step`, if given): (step, asked, pool pages).
    fn take_pending_agent(&mut self, step: Option<Step>) -> Option<(Step, u64, u64)> {
        let index = self.pending.iter().position(|p| match p {
            Pending::Agent { step: s, .. } => step.is_none_or(|step| step == *s),
            Pending::Balloon { .. } => false,
        })?;
        match self.pending.remove(index) {
            Pending::Agent {
                step,
                asked,
                pool_pages,
            } => Some((step, asked, pool_pages)),
            Pending::Balloon { .. } => None,
        }
    }

    fn record_balloon(&mut self, target: u64) {
        let index = self
            .pending
            .iter()
            .position(|p| matches!(p, Pending::Balloon { .. }));
        let (from_target, from_actual) = match index.map(|i| self.pending.remove(i)) {
            Some(Pending::Balloon {
                from_target,
                from_actual,
            }) => (from_target, from_actual),
            // Not asked for by the last decision: measure from what was last seen.
            _ => (self.watch.target, self.watch.actual),
        };
        if target == from_target {
            return;
        }
        let (step, asked) = if target > from_target {
            (Step::Inflate, target - from_target)
        } else {
            (Step::Deflate, from_target - target)
        };
        let counters = self.counters.step_mut(step);
        counters.taken += 1;
        counters.asked_pages = counters.asked_pages.saturating_add(asked);
        if let Some(previous) = self.balloon_move.take() {
            // Superseded before it settled: it obtained what it had by the last round.
            self.finish_balloon_move(previous, from_actual);
        }
        debug!("over-limit step {step}: balloon target {from_target} -> {target} pages");
        self.balloon_move = Some(BalloonMove {
            step,
            from_actual,
            target,
            asked,
        });
    }

    fn finish_balloon_move(&mut self, m: BalloonMove, actual: u64) {
        let obtained = match m.step {
            Step::Inflate => actual.saturating_sub(m.from_actual),
            _ => m.from_actual.saturating_sub(actual),
        }
        .min(m.asked);
        let counters = self.counters.step_mut(m.step);
        counters.obtained_pages = counters.obtained_pages.saturating_add(obtained);
        info!(
            "over-limit step {}: asked {} pages, obtained {obtained} (balloon target {} MiB)",
            m.step,
            m.asked,
            mib(m.target)
        );
    }

    fn watch_balloon(&mut self, obs: &Observation) {
        let distance = obs.balloon_target_pages.abs_diff(obs.balloon_actual_pages);
        let w = &mut self.watch;
        w.actual = obs.balloon_actual_pages;
        if !w.seen || w.target != obs.balloon_target_pages {
            *w = BalloonWatch {
                seen: true,
                target: obs.balloon_target_pages,
                actual: obs.balloon_actual_pages,
                first_distance: distance,
                best_distance: distance,
                stalled_rounds: 0,
            };
        } else if distance < w.best_distance || distance == 0 {
            w.best_distance = distance;
            w.stalled_rounds = 0;
        } else {
            w.stalled_rounds = w.stalled_rounds.saturating_add(1);
        }
    }

    fn balloon_stuck(&self) -> bool {
        self.watch.stalled_rounds >= BALLOON_STALL_ROUNDS
    }

    fn settle_balloon_move(&mut self, obs: &Observation) {
        let Some(m) = self.balloon_move else { return };
        let actual = obs.balloon_actual_pages;
        let reached = match m.step {
            Step::Inflate => actual >= m.target,
            _ => actual <= m.target,
        };
        if reached || obs.balloon_target_pages != m.target || self.balloon_stuck() {
            self.balloon_move = None;
            self.finish_balloon_move(m, actual);
        }
    }

    fn starved(&self, obs: &Observation) -> bool {
        // NaN compares false: a guest reporting nonsense is not starved.
        obs.guest
            .as_ref()
            .is_some_and(|g| g.psi_full_avg10 >= self.config.psi_full_starved_avg10)
    }

    fn update_ceiling(&mut self, obs: &Observation, starved: bool) {
        let Some(ceiling) = &mut self.ceiling else {
            return;
        };
        let calm = obs
            .guest
            .as_ref()
            .is_none_or(|g| g.psi_full_avg10 < self.config.psi_full_starved_avg10 / 2.0);
        if starved || !calm {
            ceiling.calm_rounds = 0;
            return;
        }
        ceiling.calm_rounds += 1;
        if ceiling.calm_rounds >= STARVATION_CALM_ROUNDS {
            info!(
                "over-limit: the guest is calm again, the balloon may grow past {} MiB",
                mib(ceiling.pages)
            );
            self.ceiling = None;
        }
    }

    /// Starts or ends the episode; whether it ended.
    fn track_episode(&mut self, obs: &Observation) -> bool {
        let Some(limit) = self.limit else {
            self.episode = None;
            return false;
        };
        let resident = obs.resident_pages;
        if self.episode.is_some() && resident <= threshold_for(limit) {
            self.episode = None;
            info!(
                "over-limit: episode ends, resident {} MiB is within the threshold {} MiB",
                mib(resident),
                mib(threshold_for(limit))
            );
            return true;
        } else if self.episode.is_none() && resident > limit {
            self.episode = Some(Episode::default());
            // Reclaim wins over giving back.
            self.deflate = None;
            self.counters.episodes += 1;
            info!(
                "over-limit: episode starts, resident {} MiB is over the limit {} MiB",
                mib(resident),
                mib(limit)
            );
        }
        false
    }

    fn push_balloon(&mut self, obs: &Observation, target: u64, actions: &mut Vec<Action>) {
        actions.push(Action::SetBalloon {
            target_pages: target,
        });
        self.pending.push(Pending::Balloon {
            from_target: obs.balloon_target_pages,
            from_actual: obs.balloon_actual_pages,
        });
    }

    /// The guest is starved: give it a step back, take nothing, and hold the balloon there.
    /// This ignores T on purpose: a starving guest comes before the limit; if it goes over, the
    /// episode reports it.
    fn starvation_round(&mut self, obs: &Observation, actions: &mut Vec<Action>) -> ManagerState {
        let psi = obs.guest.as_ref().map_or(0.0, |g| g.psi_full_avg10);
        let target = obs.balloon_target_pages;
        let actual = obs.balloon_actual_pages;
        let mut held_at = target.min(actual);
        // A balloon already giving pages back is left to finish: the PSI average lags.
        if actual <= target {
            let amount = self.config.deflate_step_pages.min(held_at);
            if amount > 0 {
                held_at -= amount;
                self.push_balloon(obs, held_at, actions);
            }
        }
        let pages = self.ceiling.map_or(held_at, |c| c.pages.min(held_at));
        self.ceiling = Some(Ceiling {
            pages,
            psi,
            calm_rounds: 0,
        });
        match self.limit {
            Some(limit) if self.episode.is_some() => ManagerState::OverLimit {
                cause: OverLimitCause::Starved,
                reason: format!(
                    "the guest is starved (memory PSI full avg10 {psi:.1} % ≥ {:.1} %): the \
                     balloon deflates to {} MiB and nothing more is taken; limit {} MiB",
                    self.config.psi_full_starved_avg10,
                    mib(held_at),
                    mib(limit)
                ),
            },
            _ => ManagerState::WithinLimit,
        }
    }

    /// Outside an episode: give back balloon pages after the limit was raised or cleared, one
    /// step per round once the balloon reached the previous one.
    ///
    /// With a limit, a deflate must not start the next episode. Deflated pages are not resident
    /// until the guest touches them, so resident alone would not stop a run; instead either
    /// everything deflated in this run fits in T − resident (measured when the run starts), or
    /// the balloon stays big enough that the guest cannot go over the limit at all
    /// (guest RAM − balloon ≤ L). Whichever allows more: a limit at or above guest RAM deflates
    /// the balloon completely.
    fn deflate_round(&mut self, obs: &Observation, actions: &mut Vec<Action>) {
        let Some(budget) = self.deflate else { return };
        let target = obs.balloon_target_pages;
        if obs.balloon_actual_pages > target && !self.balloon_stuck() {
            return;
        }
        let (room, above_floor) = match self.limit {
            None => (u64::MAX, target),
            Some(limit) => {
                let floor = obs.guest_ram_pages.saturating_sub(limit);
                (
                    threshold_for(limit).saturating_sub(obs.resident_pages),
                    target.saturating_sub(floor),
                )
            }
        };
        let left = match budget {
            DeflateBudget::Unbounded => u64::MAX,
            DeflateBudget::Unmeasured => room,
            DeflateBudget::Left(left) => left,
        };
        let amount = self
            .config
            .deflate_step_pages
            .min(target)
            .min(room.min(left).max(above_floor));
        if amount == 0 {
            self.deflate = None;
            info!("over-limit: deflate done, balloon at {} MiB", mib(target));
            return;
        }
        self.deflate = Some(match budget {
            DeflateBudget::Unbounded => DeflateBudget::Unbounded,
            _ => DeflateBudget::Left(left.saturating_sub(amount)),
        });
        self.push_balloon(obs, target - amount, actions);
    }

    fn reclaim_round(
        &mut self,
        limit: u64,
        obs: &Observation,
        actions: &mut Vec<Action>,
    ) -> ManagerState {
        let threshold = threshold_for(limit);
        let resident = obs.resident_pages;
        let need = resident.saturating_sub(threshold);
        let stuck = self.balloon_stuck();
        let Some(episode) = self.episode.as_mut() else {
            return ManagerState::WithinLimit;
        };

        let progress = episode
            .last_resident
            .is_none_or(|last| resident < last || obs.balloon_actual_pages > episode.last_actual);
        episode.still_rounds = if progress {
            0
        } else {
            episode.still_rounds.saturating_add(1)
        };
        episode.last_resident = Some(resident);
        episode.last_actual = obs.balloon_actual_pages;
        if progress {
            episode.fruitless_urgent = 0;
        }
        let urgent = episode.still_rounds >= NO_PROGRESS_ROUNDS;
        if episode.fruitless_urgent >= NO_PROGRESS_ROUNDS && episode.anon.is_none() {
            if let Some(guest) = &obs.guest {
                episode.anon = Some(Exhausted {
                    pool_pages: guest.anon_pages,
                    why: "paging it out did not lower resident".to_string(),
                    retry_in: None,
                });
            }
        }

        // One round per balloon cycle: while the balloon is still taking the last inflate, the
        // pages the agent freed for it are not used up yet, and asking again would count them
        // twice. The next round comes once it settles (or counts as stuck).
        if obs.balloon_actual_pages < obs.balloon_target_pages && !stuck {
            return ManagerState::Reclaiming;
        }

        // Why the agent steps do nothing this round, for the reason.
        let mut idle = Vec::new();
        let mut remaining = need;
        let mut asked_agent = false;
        match &obs.guest {
            None => idle.push("the guest agent does not answer".to_string()),
            Some(guest) => {
                // A pool that grew by a margin since its step ran dry is worth another try.
                let margin = (limit / 8).max(DEACTIVATE_BATCH_PAGES);
                for (slot, pool) in [
                    (&mut episode.file, guest.file_pages),
                    (&mut episode.anon, guest.anon_pages),
                ] {
                    let rearm = slot.as_mut().is_some_and(|ex| match &mut ex.retry_in {
                        Some(rounds) => {
                            *rounds = rounds.saturating_sub(1);
                            *rounds == 0
                        }
                        None => pool >= ex.pool_pages.saturating_add(margin),
                    });
                    if rearm {
                        *slot = None;
                    }
                }

                if let Some(ex) = &episode.file {
                    idle.push(format!("file cache: {}", ex.why));
                } else if guest.file_pages <= limit / 2 {
                    idle.push(format!(
                        "file cache {} MiB, not above half the limit",
                        mib(guest.file_pages)
                    ));
                } else {
                    let pages = batch_request(need.min(guest.file_pages));
                    actions.push(Action::DeactivateFile { pages });
                    self.pending.push(Pending::Agent {
                        step: Step::File,
                        asked: pages,
                        pool_pages: guest.file_pages,
                    });
                    remaining = remaining.saturating_sub(pages);
                    asked_agent = true;
                }

                if guest.swap_total_pages == 0 {
                    idle.push("no swap for anon memory".to_string());
                } else if let Some(ex) = &episode.anon {
                    idle.push(format!("anon memory: {}", ex.why));
                } else if guest.anon_pages <= limit / 64 {
                    idle.push(format!(
                        "anon memory {} MiB, not above 1/64 of the limit",
                        mib(guest.anon_pages)
                    ));
                } else if remaining >= DEACTIVATE_BATCH_PAGES || (remaining > 0 && !asked_agent) {
                    // Only for what the file request does not cover: cache is cheaper to lose.
                    let pages = batch_request(remaining.min(guest.anon_pages));
                    actions.push(Action::DeactivateAnon { pages, urgent });
                    if urgent {
                        episode.fruitless_urgent += 1;
                    }
                    self.pending.push(Pending::Agent {
                        step: Step::Anon,
                        asked: pages,
                        pool_pages: guest.anon_pages,
                    });
                    asked_agent = true;
                }
            }
        }

        let plan = self.plan_balloon(need, obs, actions);
        let reason = |balloon: &str| {
            let mut reason = balloon.to_string();
            for why in &idle {
                reason.push_str("; ");
                reason.push_str(why);
            }
            reason.push_str(&format!(
                "; threshold {} MiB, limit {} MiB",
                mib(threshold),
                mib(limit)
            ));
            reason
        };
        match plan {
            BalloonPlan::Inflating => ManagerState::Reclaiming,
            _ if asked_agent => ManagerState::Reclaiming,
            // Not one page since the last inflate, and no agent: nothing in the guest answers.
            BalloonPlan::Stuck
                if obs.guest.is_none() && self.watch.best_distance >= self.watch.first_distance =>
            {
                ManagerState::GuestUnresponsive {
                    reason: reason(&format!(
                        "the balloon has not moved for {BALLOON_STALL_ROUNDS} rounds ({} of {} MiB)",
                        mib(obs.balloon_actual_pages),
                        mib(obs.balloon_target_pages)
                    )),
                }
            }
            BalloonPlan::Stuck => ManagerState::OverLimit {
                cause: OverLimitCause::BalloonStuck,
                reason: reason(&format!(
                    "the balloon is stuck at {} MiB of its {} MiB target: the guest gives it no \
                     more pages",
                    mib(obs.balloon_actual_pages),
                    mib(obs.balloon_target_pages)
                )),
            },
            BalloonPlan::Full(cause, balloon) => ManagerState::OverLimit {
                cause,
                reason: reason(&balloon),
            },
        }
    }

    /// Inflate by `need`, up to the cap, once the balloon has reached its last target.
    fn plan_balloon(
        &mut self,
        need: u64,
        obs: &Observation,
        actions: &mut Vec<Action>,
    ) -> BalloonPlan {
        let target = obs.balloon_target_pages;
        if obs.balloon_actual_pages < target {
            return BalloonPlan::Stuck;
        }
        let (cap, keep) = balloon_cap(&self.config, obs);
        let ceiling = self.ceiling.filter(|c| c.pages < cap);
        let new = target
            .saturating_add(need)
            .min(ceiling.map_or(cap, |c| c.pages));
        if new > target {
            self.push_balloon(obs, new, actions);
            return BalloonPlan::Inflating;
        }
        let reserve = mib(self.config.reserve_pages);
        let cause = if ceiling.is_some() {
            OverLimitCause::Starved
        } else {
            OverLimitCause::BalloonAtCap
        };
        BalloonPlan::Full(cause, match (ceiling, keep) {
            (Some(c), _) => format!(
                "balloon held at {} MiB since the guest was starved (memory PSI full avg10 {:.1} %)",
                mib(c.pages),
                c.psi
            ),
            (None, Keep::WorkingSet { working_set, .. }) => format!(
                "balloon at its cap ({} MiB): the guest's working set ({} MiB) + reserve ({reserve} \
                 MiB) leaves no room",
                mib(cap),
                mib(working_set)
            ),
            (None, Keep::Anon { anon, .. }) => format!(
                "balloon at its cap ({} MiB): with no working-set estimate yet, the guest's anon \
                 memory ({} MiB) + reserve ({reserve} MiB) leaves no room",
                mib(cap),
                mib(anon)
            ),
            (None, Keep::QuarterOfRam { keep }) => format!(
                "balloon at its cap ({} MiB): with neither a working-set estimate nor guest \
                 statistics, the guest keeps a quarter of its RAM ({} MiB)",
                mib(cap),
                mib(keep)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_an_eighth_under_the_limit() {
        assert_eq!(threshold_for(0), 0);
        assert_eq!(threshold_for(7), 7);
        assert_eq!(threshold_for(8), 7);
        assert_eq!(threshold_for(192 * PAGES_PER_MIB), 168 * PAGES_PER_MIB);
        assert_eq!(threshold_for(u64::MAX), u64::MAX - u64::MAX / 8);
        let mut policy = Policy::new(PolicyConfig::default());
        assert_eq!(policy.threshold_pages(), None);
        policy.set_limit(Some(8000));
        assert_eq!(policy.limit_pages(), Some(8000));
        assert_eq!(policy.threshold_pages(), Some(7000));
    }

    #[test]
    fn requests_are_whole_batches() {
        assert_eq!(batch_request(0), 0);
        assert_eq!(batch_request(1), DEACTIVATE_BATCH_PAGES);
        assert_eq!(batch_request(999), 1000);
        assert_eq!(batch_request(1000), 1000);
        assert_eq!(batch_request(1999), 1000);
        assert_eq!(batch_request(46_600), 46_000);
        assert_eq!(batch_request(u64::MAX), u64::MAX / 1000 * 1000);
    }

    #[test]
    fn fruitless_is_under_ten_percent() {
        assert!(fruitless(1000, 99));
        assert!(!fruitless(1000, 100));
        assert!(!fruitless(1000, 5000));
        assert!(fruitless(u64::MAX, 0));
        assert!(fruitless(u64::MAX, u64::MAX / 10));
        assert!(!fruitless(u64::MAX, u64::MAX / 10 + 1));
        assert!(!fruitless(0, 0));
    }

    fn obs(ram: u64, ws: Option<u64>, guest: Option<GuestView>) -> Observation {
        Observation {
            guest_ram_pages: ram,
            working_set_pages: ws,
            guest,
            ..Default::default()
        }
    }

    #[test]
    fn cap_leaves_the_working_set_and_reserve() {
        let config = PolicyConfig::default();
        let guest = GuestView {
            anon_pages: 20_000,
            ..Default::default()
        };
        assert_eq!(
            balloon_cap(&config, &obs(131_072, Some(12_288), Some(guest.clone()))),
            (
                131_072 - 12_288 - 4096,
                Keep::WorkingSet {
                    working_set: 12_288,
                    keep: 16_384
                }
            )
        );
        // No working set yet: the guest's anon pages stand in for it.
        assert_eq!(
            balloon_cap(&config, &obs(131_072, None, Some(guest))).0,
            131_072 - 20_000 - 4096
        );
        // Nothing known: a quarter of RAM stays, or the reserve if that is more.
        assert_eq!(
            balloon_cap(&config, &obs(131_072, None, None)).0,
            131_072 - 32_768
        );
        assert_eq!(balloon_cap(&config, &obs(8000, None, None)).0, 8000 - 4096);
    }

    #[test]
    fn cap_never_underflows() {
        let config = PolicyConfig {
            reserve_pages: u64::MAX,
            ..Default::default()
        };
        assert_eq!(balloon_cap(&config, &obs(1000, Some(u64::MAX), None)).0, 0);
        assert_eq!(balloon_cap(&config, &obs(0, None, None)).0, 0);
        let config = PolicyConfig::default();
        assert_eq!(balloon_cap(&config, &obs(1000, Some(5000), None)).0, 0);
        let hostile = GuestView {
            anon_pages: u64::MAX,
            ..Default::default()
        };
        assert_eq!(
            balloon_cap(&config, &obs(u64::MAX, None, Some(hostile))).0,
            0
        );
    }

    #[test]
    fn agent_failure_is_charged_to_the_oldest_waiting_request() {
        let mut policy = Policy::new(PolicyConfig::default());
        policy.set_limit(Some(10_000));
        let guest = GuestView {
            file_pages: 8000,
            anon_pages: 8000,
            swap_total_pages: 1000,
            ..Default::default()
        };
        let o = Observation {
            guest_ram_pages: 100_000,
            resident_pages: 20_000,
            guest: Some(guest.clone()),
            ..Default::default()
        };
        let d = policy.decide(&o);
        // need = 20 000 − 8750: the file request covers 8000, anon the rest.
        assert_eq!(
            d.actions,
            vec![
                Action::DeactivateFile { pages: 8000 },
                Action::DeactivateAnon {
                    pages: 3000,
                    urgent: false
                },
                Action::SetBalloon {
                    target_pages: 11_250
                },
            ]
        );
        policy.record(&Outcome::AgentFailed {
            reason: "timed out".into(),
        });
        policy.record(&Outcome::AnonDeactivated {
            asked: 3000,
            deactivated: 3000,
        });
        policy.record(&Outcome::BalloonSet {
            target_pages: 11_250,
        });
        let c = policy.counters();
        assert_eq!(
            (c.file.taken, c.file.failed, c.file.asked_pages),
            (1, 1, 8000)
        );
        assert_eq!((c.anon.taken, c.anon.obtained_pages), (1, 3000));
        assert_eq!((c.inflate.taken, c.inflate.asked_pages), (1, 11_250));
        // The failed file step rests; anon carries on.
        let o = Observation {
            balloon_target_pages: 11_250,
            balloon_actual_pages: 11_250,
            ..o
        };
        let d = policy.decide(&o);
        assert!(!d
            .actions
            .iter()
            .any(|a| matches!(a, Action::DeactivateFile { .. })));
        assert!(d
            .actions
            .iter()
            .any(|a| matches!(a, Action::DeactivateAnon { .. })));
        assert_eq!(policy.counters().inflate.obtained_pages, 11_250);
        // A failure goes to the request still waiting (anon); one with nothing waiting is only
        // logged.
        policy.record(&Outcome::AgentFailed {
            reason: "late".into(),
        });
        policy.record(&Outcome::AgentFailed {
            reason: "later".into(),
        });
        assert_eq!(policy.counters().anon.failed, 1);
        assert_eq!(policy.counters().file.failed, 1);
    }

    #[test]
    fn time_is_charged_to_its_step() {
        let mut policy = Policy::new(PolicyConfig::default());
        policy.add_time(Step::File, Duration::from_millis(1500));
        policy.add_time(Step::File, Duration::from_millis(500));
        policy.add_time(Step::Inflate, Duration::MAX);
        policy.add_time(Step::Inflate, Duration::from_secs(1));
        let c = policy.counters();
        assert_eq!(c.file.time, Duration::from_secs(2));
        assert_eq!(c.inflate.time, Duration::MAX, "saturates");
        assert_eq!(c.anon.time, Duration::ZERO);
        assert_eq!(
            Step::of(&Action::DeactivateAnon {
                pages: 1,
                urgent: false
            }),
            Some(Step::Anon)
        );
        assert_eq!(Step::of(&Action::SetBalloon { target_pages: 1 }), None);
    }

    /// Hostile or absurd numbers from the guest (and the driver) must never panic.
    #[test]
    fn extreme_observations_do_not_panic() {
        let values = [0, 1, 999, 1000, u64::MAX / 2, u64::MAX - 1, u64::MAX];
        let psis = [0.0, f64::NAN, f64::INFINITY, -1.0, 1e300];
        let limits = [None, Some(0), Some(1), Some(8000), Some(u64::MAX)];
        let configs = [
            PolicyConfig::default(),
            PolicyConfig {
                reserve_pages: u64::MAX,
                deflate_step_pages: u64::MAX,
                psi_full_starved_avg10: f64::NAN,
            },
            PolicyConfig {
                reserve_pages: 0,
                deflate_step_pages: 0,
                psi_full_starved_avg10: 0.0,
            },
        ];
        let mut rounds = 0u64;
        for config in configs {
            for limit in limits {
                let mut policy = Policy::new(config);
                policy.set_limit(limit);
                for (i, &a) in values.iter().enumerate() {
                    for &b in &values {
                        for &c in &values {
                            let psi = psis[(i + rounds as usize) % psis.len()];
                            let o = Observation {
                                guest_ram_pages: a,
                                resident_pages: b,
                                balloon_target_pages: c,
                                balloon_actual_pages: values[(rounds % 7) as usize],
                                working_set_pages: (!rounds.is_multiple_of(3)).then_some(c),
                                guest: (!rounds.is_multiple_of(4)).then_some(GuestView {
                                    file_pages: b,
                                    anon_pages: c,
                                    free_pages: a,
                                    swap_total_pages: b,
                                    psi_full_avg10: psi,
                                }),
                            };
                            let d = policy.decide(&o);
                            for action in &d.actions {
                                policy.record(&match *action {
                                    Action::DeactivateFile { pages } => Outcome::FileDeactivated {
                                        asked: pages,
                                        freed: c,
                                    },
                                    Action::DeactivateAnon { pages, .. } => {
                                        Outcome::AnonDeactivated {
                                            asked: pages,
                                            deactivated: b,
                                        }
                                    }
                                    Action::SetBalloon { target_pages } => {
                                        Outcome::BalloonSet { target_pages }
                                    }
                                });
                            }
                            rounds += 1;
                            if rounds.is_multiple_of(5) {
                                policy.set_limit(limits[(rounds / 5 % 5) as usize]);
                            }
                        }
                    }
                }
            }
        }
        assert!(rounds > 1000);
    }
}
