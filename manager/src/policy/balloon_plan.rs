//! Step 3 of a round: the balloon inflates by what is still needed, up to the cap that leaves
//! the guest its working set and a reserve, once it has reached its last target; and the
//! bookkeeping of whether it moves and what each target obtained.

use log::info;

use super::record::Pending;
use super::{
    mib, Action, Observation, OverLimitCause, Policy, PolicyConfig, Step, BALLOON_STALL_ROUNDS,
};

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
