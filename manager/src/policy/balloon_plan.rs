//! Step 3 of a round: the balloon inflates by what is still needed, up to the cap that leaves
//! the guest its working set and a reserve, once it has reached its last target; and the
//! bookkeeping of whether it moves and what each target obtained.

use log::info;

use super::need_hold::Need;
use super::record::Pending;
use super::{
    mib, Action, Observation, OverLimitCause, Policy, PolicyConfig, Step, BALLOON_STALL_ROUNDS,
};

/// The least yield (resident fall per page ballooned) an inflate is scaled by: at most four
/// times the need.
const MIN_YIELD: f64 = 0.25;
/// Inflates that moved fewer pages say nothing about the yield (4 MiB).
const MIN_YIELD_SAMPLE: u64 = 1024;

/// What the balloon cap leaves the guest, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// The working set + reserve: the larger of the tracker's (pages written in the last
    /// epochs) and the guest's active lists (reads too), when the agent answers.
    WorkingSet {
        working_set: u64,
        /// The guest's active lists, when the agent answered.
        guest_hot: Option<u64>,
        keep: u64,
    },
    /// No dirty-log working set yet: the guest's anon pages (or its active lists, if more) +
    /// reserve.
    Anon { anon: u64, keep: u64 },
    /// Neither a working set nor guest statistics: a quarter of guest RAM (at least the
    /// reserve), since nothing says how much the guest needs.
    QuarterOfRam { keep: u64 },
    /// More than this epoch's figures say: what the guest needed before the balloon squeezed
    /// it (`need_hold.rs`) + reserve.
    Held { need: Need, keep: u64 },
}

impl Keep {
    fn pages(self) -> u64 {
        match self {
            Keep::WorkingSet { keep, .. }
            | Keep::Anon { keep, .. }
            | Keep::QuarterOfRam { keep }
            | Keep::Held { keep, .. } => keep,
        }
    }
}

/// What this epoch's figures say the guest needs beside the reserve; `None` when nothing does
/// (neither a working set nor guest statistics).
pub(crate) fn need_now(obs: &Observation) -> Option<Need> {
    // The guest's own memory off the LRU lists (kernel, slab, page tables) stays too: without
    // it a cap of working set + reserve starves a small guest before it reports the limit.
    // Believed up to what the host holds, as the guest's hot pages are.
    let kernel = obs
        .guest
        .as_ref()
        .map_or(0, |g| g.kernel_pages.min(obs.resident_pages));
    let guest_hot = obs.guest.as_ref().map(|g| g.hot_pages());
    let working_set = match (obs.working_set_pages, &obs.guest) {
        (Some(_), _) => obs.working_set().unwrap_or(0),
        (None, Some(guest)) => guest
            .anon_pages
            .max(guest.hot_pages())
            .min(obs.resident_pages),
        (None, None) => return None,
    };
    Some(Need {
        working_set,
        guest_hot,
        kernel,
    })
}

/// The largest balloon target this epoch's figures allow: guest RAM less what the guest must
/// keep.
pub(crate) fn balloon_cap(config: &PolicyConfig, obs: &Observation) -> (u64, Keep) {
    let reserve = config.reserve_pages;
    let keep = match need_now(obs) {
        Some(need) if obs.working_set_pages.is_some() => Keep::WorkingSet {
            working_set: need.working_set,
            guest_hot: need.guest_hot,
            keep: need.pages().saturating_add(reserve),
        },
        Some(need) => Keep::Anon {
            anon: need.working_set,
            keep: need.pages().saturating_add(reserve),
        },
        None => Keep::QuarterOfRam {
            keep: (obs.guest_ram_pages / 4).max(reserve),
        },
    };
    (obs.guest_ram_pages.saturating_sub(keep.pages()), keep)
}

/// [`balloon_cap`], never above what leaves the guest the need `held` since the balloon began
/// taking pages: the squeeze must not raise the cap.
pub(crate) fn held_balloon_cap(
    config: &PolicyConfig,
    obs: &Observation,
    held: Option<Need>,
) -> (u64, Keep) {
    let (cap, keep) = balloon_cap(config, obs);
    match held {
        Some(need) if need.pages().saturating_add(config.reserve_pages) > keep.pages() => {
            let keep = need.pages().saturating_add(config.reserve_pages);
            (
                obs.guest_ram_pages.saturating_sub(keep),
                Keep::Held { need, keep },
            )
        }
        _ => (cap, keep),
    }
}

/// ", its kernel's own N MiB" when the guest reported memory off the LRU lists.
fn kernel_text(obs: &Observation) -> String {
    match obs.guest.as_ref().map_or(0, |g| g.kernel_pages) {
        0 => String::new(),
        kernel => format!(", its kernel's own {} MiB", mib(kernel)),
    }
}

/// Whether the balloon gets closer to its target.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct BalloonWatch {
    pub(super) seen: bool,
    pub(super) target: u64,
    pub(super) actual: u64,
    /// Pages between actual and target when the target was set, and the fewest since.
    pub(super) first_distance: u64,
    pub(super) best_distance: u64,
    pub(super) stalled_rounds: u32,
}

/// A balloon target being reached, to count and log what it obtained once it settles.
#[derive(Debug, Clone, Copy)]
pub(super) struct BalloonMove {
    pub(super) step: Step,
    pub(super) from_actual: u64,
    /// Resident when the target was set: an inflate's yield is the fall per page ballooned.
    pub(super) from_resident: u64,
    pub(super) target: u64,
    pub(super) asked: u64,
}

/// The balloon part of a reclaim round.
pub(super) enum BalloonPlan {
    Inflating,
    Stuck,
    /// Not asked: the guest does not honour it.
    Violated,
    Full(OverLimitCause, String),
}

impl Policy {
    pub(super) fn finish_balloon_move(&mut self, m: BalloonMove, actual: u64) {
        let obtained = match m.step {
            Step::Inflate => actual.saturating_sub(m.from_actual),
            _ => m.from_actual.saturating_sub(actual),
        }
        .min(m.asked);
        if m.step == Step::Inflate && obtained >= MIN_YIELD_SAMPLE {
            let fall = m.from_resident.saturating_sub(self.last_resident);
            self.inflate_yield = Some((fall as f64 / obtained as f64).clamp(MIN_YIELD, 1.0));
        }
        let counters = self.counters.step_mut(m.step);
        counters.obtained_pages = counters.obtained_pages.saturating_add(obtained);
        info!(
            "over-limit step {}: asked {} pages, obtained {obtained} (balloon target {} MiB)",
            m.step,
            m.asked,
            mib(m.target)
        );
    }

    pub(super) fn watch_balloon(&mut self, obs: &Observation) {
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

    pub(super) fn balloon_stuck(&self) -> bool {
        self.watch.stalled_rounds >= BALLOON_STALL_ROUNDS
    }

    pub(super) fn settle_balloon_move(&mut self, obs: &Observation) {
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

    pub(super) fn push_balloon(
        &mut self,
        obs: &Observation,
        target: u64,
        actions: &mut Vec<Action>,
    ) {
        actions.push(Action::SetBalloon {
            target_pages: target,
        });
        self.pending.push(Pending::Balloon {
            from_target: obs.balloon_target_pages,
            from_actual: obs.balloon_actual_pages,
        });
    }

    /// Inflate by `need`, up to the cap, once the balloon has reached its last target.
    pub(super) fn plan_balloon(
        &mut self,
        need: u64,
        obs: &Observation,
        actions: &mut Vec<Action>,
    ) -> BalloonPlan {
        let target = obs.balloon_target_pages;
        if obs.balloon_actual_pages < target {
            return BalloonPlan::Stuck;
        }
        let (cap, keep) = held_balloon_cap(&self.config, obs, self.need_hold.held());
        let ceiling = self.ceiling.filter(|c| c.pages < cap);
        // The guest gives the balloon untouched pages first: when the last inflate lowered
        // resident by a fraction of what it took, ask for that much more at once rather than
        // creep towards T in ever smaller steps (the cap still bounds it).
        // Never more than the need plus the pages the host holds neither resident nor in the
        // balloon: the most the guest can hand over before it hands over what it uses.
        let untouched = obs
            .guest_ram_pages
            .saturating_sub(obs.resident_pages)
            .saturating_sub(obs.balloon_actual_pages);
        let step = match self.inflate_yield {
            Some(y) if y < 1.0 => ((need as f64 / y) as u64).min(need.saturating_add(untouched)),
            _ => need,
        };
        let new = target
            .saturating_add(step.max(need))
            .min(ceiling.map_or(cap, |c| c.pages));
        if new > target {
            self.push_balloon(obs, new, actions);
            return BalloonPlan::Inflating;
        }
        let reserve = mib(self.config.reserve_pages);
        // At a cap the working set set, the limit is below what the guest uses: say so.
        let at_cap = match keep {
            Keep::WorkingSet { .. } | Keep::Held { .. } => OverLimitCause::WorkingSet,
            _ => OverLimitCause::BalloonAtCap,
        };
        let cause = ceiling.map_or(at_cap, |c| c.cause);
        BalloonPlan::Full(
            cause,
            match (ceiling, keep) {
                (Some(c), _) => c.reason(),
                (
                    None,
                    Keep::WorkingSet {
                        working_set,
                        guest_hot,
                        ..
                    },
                ) => format!(
                    "balloon at its cap ({} MiB): the guest's working set ({} MiB{}){} + \
                     reserve ({reserve} MiB) leaves no room",
                    mib(cap),
                    mib(working_set),
                    guest_hot.map_or(String::new(), |hot| format!(
                        "; {} MiB on its active lists",
                        mib(hot)
                    )),
                    kernel_text(obs)
                ),
                (None, Keep::Held { need, .. }) => format!(
                    "balloon at its cap ({} MiB): what the guest used before the balloon \
                     squeezed it — working set {} MiB{}, its kernel's own {} MiB — + reserve \
                     ({reserve} MiB) leaves no room",
                    mib(cap),
                    mib(need.working_set),
                    need.guest_hot.map_or(String::new(), |hot| format!(
                        "; {} MiB on its active lists",
                        mib(hot)
                    )),
                    mib(need.kernel)
                ),
                (None, Keep::Anon { anon, .. }) => format!(
                "balloon at its cap ({} MiB): with no working-set estimate yet, the guest's anon \
                 memory ({} MiB){} + reserve ({reserve} MiB) leaves no room",
                mib(cap),
                mib(anon),
                kernel_text(obs)
            ),
                (None, Keep::QuarterOfRam { keep }) => format!(
                    "balloon at its cap ({} MiB): with neither a working-set estimate nor guest \
                 statistics, the guest keeps a quarter of its RAM ({} MiB)",
                    mib(cap),
                    mib(keep)
                ),
            },
        )
    }
}
