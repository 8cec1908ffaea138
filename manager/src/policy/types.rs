//! What goes in and out of the policy: its configuration, what the driver measured, the actions
//! it asks for and what they obtained, the memory state, and the per-step counters.

use std::fmt;
use std::time::Duration;

use crate::pages::{Shown, PAGES_PER_MIB};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyConfig {
    /// Guest pages kept above the working set when inflating.
    pub reserve_pages: u64,
    /// The balloon deflates in steps of this many guest pages.
    pub deflate_step_pages: u64,
    /// Memory PSI `full` avg10 (%) at which the guest counts as starved.
    pub psi_full_starved_avg10: f64,
    /// Memory PSI `some` avg10 (%) at which a guest the balloon holds pages from counts as
    /// short of its working set (with refaults, see [`PolicyConfig::refault_pages_per_epoch`]).
    pub psi_some_pressed_avg10: f64,
    /// Refaults (evicted pages read back) per epoch at which the guest counts as short of its
    /// working set while the balloon holds pages; at least this, or 1/512 of guest RAM.
    pub refault_pages_per_epoch: u64,
    /// Consecutive epochs with resident above the limit after which the guest is over it,
    /// whatever reclaim is doing, and the host backstop (`--host-enforce`) engages.
    pub sustained_epochs: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            reserve_pages: 16 * PAGES_PER_MIB,
            deflate_step_pages: 64 * PAGES_PER_MIB,
            psi_full_starved_avg10: 10.0,
            psi_some_pressed_avg10: 20.0,
            refault_pages_per_epoch: 256,
            sustained_epochs: 5,
        }
    }
}

/// What the driver measured this epoch (pages are 4 KiB guest pages).
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub guest_ram_pages: u64,
    /// Guest RAM resident on the host, as the host measures it (balloon pages included).
    pub resident_pages: u64,
    /// Balloon pages found resident this epoch and confirmed under the device's lock: the
    /// guest touched pages it gave the balloon.
    pub balloon_violation_pages: u64,
    pub balloon_target_pages: u64,
    pub balloon_actual_pages: u64,
    /// Pages dirtied in the last epochs (KVM's dirty log: writes only); `None` until the
    /// tracker has enough epochs.
    pub working_set_pages: Option<u64>,
    /// `None` when the agent has not answered (absent or unresponsive).
    pub guest: Option<GuestView>,
    /// The VM has no link to a guest agent at all (no vsock device): reasons then say so
    /// instead of blaming an agent that was never there.
    pub agent_absent: bool,
}

/// The guest's own account of its memory, from the agent.
#[derive(Debug, Clone, Default)]
pub struct GuestView {
    /// Page cache on the file LRU lists.
    pub file_pages: u64,
    /// Anon memory swap can take: the anon LRU lists less shmem and tmpfs.
    pub anon_pages: u64,
    pub free_pages: u64,
    pub swap_total_pages: u64,
    pub swap_used_pages: u64,
    pub psi_full_avg10: f64,
    pub psi_some_avg10: f64,
    /// On the guest's active lists: what it used recently, reads included (the dirty log sees
    /// writes only).
    pub active_file_pages: u64,
    pub active_anon_pages: u64,
    /// Refaults since boot (file and anon): evicted pages the guest had to read back.
    pub refaults: u64,
    /// In use but on no LRU list (kernel, slab, page tables, stacks): nothing reclaim or the
    /// agent can take, which the balloon cap must leave.
    pub kernel_pages: u64,
}

impl GuestView {
    /// The guest's hot pages by its own account: its active lists.
    pub fn hot_pages(&self) -> u64 {
        self.active_file_pages
            .saturating_add(self.active_anon_pages)
    }
}

impl Observation {
    /// Why the policy has no guest view this epoch, in the words of a reason.
    pub(crate) fn no_agent_reason(&self) -> &'static str {
        if self.agent_absent {
            "the VM has no guest agent (no vsock device: start it with --vsock-sock)"
        } else {
            "the guest agent does not answer"
        }
    }

    /// The working set the policy keeps: the larger of the dirty log's (writes) and the
    /// guest's active lists (reads too); `None` while neither is known. What the guest says is
    /// hot is believed up to what the host holds: a hot page that is not resident is a claim
    /// the host's measurement refutes.
    pub fn working_set(&self) -> Option<u64> {
        let guest = self
            .guest
            .as_ref()
            .map(|g| g.hot_pages().min(self.resident_pages));
        match (self.working_set_pages, guest) {
            (Some(dirty), Some(hot)) => Some(dirty.max(hot)),
            (one, other) => one.or(other),
        }
    }
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

/// What an anon request asks of the guest, in a log line.
pub(crate) fn anon_verb(urgent: bool) -> &'static str {
    if urgent {
        "page out"
    } else {
        "deactivate"
    }
}

/// As the driver's log shows an action: what is asked, in pages and MiB.
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Action::DeactivateFile { pages } => {
                write!(f, "ask the agent to drop {} of file cache", Shown(pages))
            }
            Action::DeactivateAnon { pages, urgent } => write!(
                f,
                "ask the agent to {} {} of anon memory",
                anon_verb(urgent),
                Shown(pages)
            ),
            Action::SetBalloon { target_pages } => {
                write!(f, "set the balloon target to {}", Shown(target_pages))
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub enum ManagerState {
    #[default]
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
    /// The guest keeps using pages it gave the balloon: the balloon is not honoured.
    BalloonViolated,
    /// The limit is below what the guest uses: inflating made it refault (or stall), so the
    /// balloon gave a step back and holds.
    WorkingSet,
    /// The agent's requests did not lower host residency by what it claimed they freed.
    AgentUnverified,
    /// Resident has stayed above the limit for the configured number of epochs while reclaim
    /// went on: the host backstop engages.
    Sustained,
}

impl OverLimitCause {
    pub const ALL: [OverLimitCause; 7] = [
        OverLimitCause::BalloonAtCap,
        OverLimitCause::BalloonStuck,
        OverLimitCause::Starved,
        OverLimitCause::BalloonViolated,
        OverLimitCause::WorkingSet,
        OverLimitCause::AgentUnverified,
        OverLimitCause::Sustained,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OverLimitCause::BalloonAtCap => "balloon_at_cap",
            OverLimitCause::BalloonStuck => "balloon_stuck",
            OverLimitCause::Starved => "starved",
            OverLimitCause::BalloonViolated => "balloon_violated",
            OverLimitCause::WorkingSet => "working_set",
            OverLimitCause::AgentUnverified => "agent_unverified",
            OverLimitCause::Sustained => "sustained",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub state: ManagerState,
    /// Resident has been above the limit for [`PolicyConfig::sustained_epochs`] epochs: the host
    /// backstop should hold the guest now.
    pub engage_backstop: bool,
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
    /// The agent did not carry out a request of `step`; it is charged to the oldest request of
    /// that step still waiting for its outcome.
    AgentFailed {
        step: Step,
        reason: String,
    },
    BalloonSet {
        target_pages: u64,
    },
}

/// As the driver's log shows an outcome: the agent's claims are called claims.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::FileDeactivated { asked, freed } => write!(
                f,
                "the agent claims {} freed of {asked} asked",
                Shown(*freed)
            ),
            Outcome::AnonDeactivated { asked, deactivated } => write!(
                f,
                "the agent claims {} deactivated of {asked} asked",
                Shown(*deactivated)
            ),
            Outcome::AgentFailed { step, reason } => {
                write!(f, "the agent did not carry out the {step} step: {reason}")
            }
            Outcome::BalloonSet { target_pages } => {
                write!(f, "balloon target set to {}", Shown(*target_pages))
            }
        }
    }
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
    /// For the agent's steps (file, anon): the fall in host residency measured over the rounds
    /// that asked, attributed to the step up to what the agent claimed. For the balloon: pages
    /// by which it actually grew (inflate) or shrank (deflate) by the time it settled.
    pub obtained_pages: u64,
    /// For the agent's steps: what the agent said it freed or deactivated, shown beside what
    /// was measured and never trusted over it.
    pub claimed_pages: u64,
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
    /// Balloon pages found resident (touched by the guest after it gave them away) and
    /// released again, summed over epochs.
    pub balloon_violation_pages: u64,
    /// Epochs in which such pages were found.
    pub balloon_violation_epochs: u64,
    /// Epochs in a row, up to now, with resident above the limit.
    pub over_limit_epochs: u64,
    /// The most resident was above the limit at one epoch since the limit was last set.
    pub max_overshoot_pages: u64,
    /// Times the guest took balloon pages back on its own (deflate on OOM).
    pub balloon_oom_deflates: u64,
    /// Times the guest showed it was short of its working set (refaults, PSI) with pages in
    /// the balloon, and got a step back.
    pub working_set_backoffs: u64,
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

    pub(super) fn step_mut(&mut self, step: Step) -> &mut StepCounters {
        match step {
            Step::File => &mut self.file,
            Step::Anon => &mut self.anon,
            Step::Inflate => &mut self.inflate,
            Step::Deflate => &mut self.deflate,
        }
    }
}
