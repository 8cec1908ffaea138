//! Giving balloon pages back: after the limit was raised or cleared (in steps, never so far
//! that the next episode starts); and when the guest shows it needs them — starved (memory PSI
//! `full`), short of its working set while the balloon holds pages (refaults or PSI `some`
//! rising), or taking pages back itself (deflate on OOM). Pressure gives a step back, sized
//! small first and growing while it lasts, spaced so that PSI's lagging average can answer, and
//! holds the balloon below a ceiling until the guest has been calm for a while — a while that
//! doubles each time the pressure comes back (no fixed cliff to flap on).

use log::info;

use super::{
    mib, threshold_for, Action, ManagerState, Observation, OverLimitCause, Policy,
    CALM_ROUNDS_FIRST, CALM_ROUNDS_MAX, PRESSURE_STEP_ROUNDS,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeflateBudget {
    /// The limit was cleared: deflate to 0.
    Unbounded,
    /// The limit was raised: the budget is T − resident, measured at the first round.
    Unmeasured,
    Left(u64),
}

/// Why the guest wants balloon pages back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Pressure {
    /// Memory PSI `full` avg10 at or over the starvation threshold.
    Starved { psi_full: f64 },
    /// With pages in the balloon, refaults or PSI `some` rose for two rounds in a row.
    WorkingSet { refaults: u64, psi_some: f64 },
    /// The guest took `pages` back from the balloon on its own (deflate on OOM).
    OomDeflate { pages: u64 },
}

impl Pressure {
    fn cause(self) -> OverLimitCause {
        match self {
            Pressure::WorkingSet { .. } => OverLimitCause::WorkingSet,
            _ => OverLimitCause::Starved,
        }
    }

    fn describe(self) -> String {
        match self {
            Pressure::Starved { psi_full } => {
                format!("the guest is starved (memory PSI full avg10 {psi_full:.1} %)")
            }
            Pressure::WorkingSet { refaults, psi_some } => format!(
                "the guest is short of its working set with pages in the balloon ({refaults} \
                 refaults in the last epoch, memory PSI some avg10 {psi_some:.1} %)"
            ),
            Pressure::OomDeflate { pages } => format!(
                "the guest took {} MiB back from the balloon (deflate on OOM)",
                mib(pages)
            ),
        }
    }
}

/// The cap a pressure step leaves on the balloon.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ceiling {
    pub(super) pages: u64,
    pub(super) cause: OverLimitCause,
    pub(super) pressure: Pressure,
    pub(super) calm_rounds: u32,
    /// Calm rounds before the ceiling lifts.
    pub(super) calm_needed: u32,
    /// The last round was under pressure (so pressure now is the same spell, not a new one).
    pub(super) pressed: bool,
}

impl Ceiling {
    pub(super) fn reason(&self) -> String {
        format!(
            "balloon held at {} MiB since {}",
            mib(self.pages),
            self.pressure.describe()
        )
    }
}

/// Refaults and PSI `some`, epoch after epoch, and the pressure steps given.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PressureWatch {
    last_refaults: Option<u64>,
    /// Refaults since the last decision.
    pub(super) refaults: u64,
    /// Decisions in a row with refaults or PSI `some` over their thresholds.
    rising: u32,
    /// Rounds since the last pressure step, and its size.
    since_step: Option<u32>,
    last_step: u64,
    /// The guest deflated on its own this round, by this many pages.
    pub(super) oom_deflated: u64,
    /// The calm rounds the last ceiling needed, and rounds since it lifted: pressure that
    /// comes back soon after waits twice as long.
    backoff: u32,
    since_lift: Option<u32>,
}

impl Policy {
    /// Notes this round's refaults and PSI `some`, and whether the guest took balloon pages
    /// back itself: the balloon's target stayed, its size fell below it.
    pub(super) fn watch_pressure(&mut self, obs: &Observation) {
        let threshold = self.refault_threshold(obs);
        let pressed_some = self.config.psi_some_pressed_avg10;
        let w = &mut self.pressure;
        w.since_step = w.since_step.map(|r| r.saturating_add(1));
        w.since_lift = w.since_lift.map(|r| r.saturating_add(1));
        let (refaults, psi_some) = obs
            .guest
            .as_ref()
            .map_or((None, 0.0), |g| (Some(g.refaults), g.psi_some_avg10));
        // A counter that went back is a rebooted guest: nothing refaulted.
        w.refaults = match (w.last_refaults, refaults) {
            (Some(last), Some(now)) => now.saturating_sub(last),
            _ => 0,
        };
        w.last_refaults = refaults.or(w.last_refaults);
        let rising = w.refaults >= threshold || psi_some >= pressed_some;
        w.rising = if rising {
            w.rising.saturating_add(1)
        } else {
            0
        };

        let b = &self.watch;
        w.oom_deflated = if b.seen
            && b.target == obs.balloon_target_pages
            && obs.balloon_actual_pages < b.actual
            && obs.balloon_actual_pages < obs.balloon_target_pages
        {
            b.actual - obs.balloon_actual_pages
        } else {
            0
        };
        if w.oom_deflated > 0 {
            self.counters.balloon_oom_deflates += 1;
        }
    }

    fn refault_threshold(&self, obs: &Observation) -> u64 {
        self.config
            .refault_pages_per_epoch
            .max(obs.guest_ram_pages / 512)
    }

    /// What the guest shows it needs now, if anything.
    pub(super) fn pressure(&self, obs: &Observation) -> Option<Pressure> {
        let guest = obs.guest.as_ref();
        // NaN compares false: a guest reporting nonsense is not starved.
        if let Some(g) = guest.filter(|g| g.psi_full_avg10 >= self.config.psi_full_starved_avg10) {
            return Some(Pressure::Starved {
                psi_full: g.psi_full_avg10,
            });
        }
        // Only a balloon the manager sized follows the guest's own deflate: a target the user set
        // by hand, with no limit, stays where the user put it (as the virtio balloon has it).
        if self.limit.is_some() && self.pressure.oom_deflated > 0 {
            return Some(Pressure::OomDeflate {
                pages: self.pressure.oom_deflated,
            });
        }
        let holding = obs.balloon_target_pages.min(obs.balloon_actual_pages) > 0;
        if self.limit.is_some() && holding && self.pressure.rising >= 2 {
            return Some(Pressure::WorkingSet {
                refaults: self.pressure.refaults,
                psi_some: guest.map_or(0.0, |g| g.psi_some_avg10),
            });
        }
        None
    }

    /// Counts calm rounds under a ceiling; lifts it after enough of them.
    pub(super) fn update_ceiling(&mut self, obs: &Observation, pressed: bool) {
        let threshold = self.refault_threshold(obs);
        let Some(ceiling) = &mut self.ceiling else {
            return;
        };
        let calm = !pressed
            && self.pressure.refaults < threshold / 2
            && obs.guest.as_ref().is_none_or(|g| {
                g.psi_full_avg10 < self.config.psi_full_starved_avg10 / 2.0
                    && g.psi_some_avg10 < self.config.psi_some_pressed_avg10 / 2.0
            });
        if !calm {
            ceiling.calm_rounds = 0;
            return;
        }
        ceiling.pressed = false;
        ceiling.calm_rounds += 1;
        if ceiling.calm_rounds >= ceiling.calm_needed {
            info!(
                "over-limit: the guest is calm again, the balloon may grow past {} MiB",
                mib(ceiling.pages)
            );
            self.pressure.backoff = ceiling.calm_needed;
            self.pressure.since_lift = Some(0);
            self.ceiling = None;
        }
    }

    /// The guest needs memory: give it a step back (the first small, then growing while the
    /// pressure lasts, one every [`PRESSURE_STEP_ROUNDS`] rounds), take nothing, and hold the
    /// balloon there. A starved guest comes before T: if it goes over, the state says so.
    pub(super) fn pressure_round(
        &mut self,
        pressure: Pressure,
        obs: &Observation,
        actions: &mut Vec<Action>,
    ) -> ManagerState {
        let target = obs.balloon_target_pages;
        let actual = obs.balloon_actual_pages;
        let mut held_at = target.min(actual);
        let step_due = self
            .pressure
            .since_step
            .is_none_or(|r| r >= PRESSURE_STEP_ROUNDS);
        // A balloon already giving pages back is left to finish.
        if let Pressure::OomDeflate { .. } = pressure {
            // The guest's own deflate: the target follows it, no step on top.
            self.push_balloon(obs, actual, actions);
        } else if actual <= target && step_due {
            let first = (self.config.deflate_step_pages / 4).max(1);
            let step = match self.pressure.since_step {
                Some(r) if r <= PRESSURE_STEP_ROUNDS * 2 => {
                    self.pressure.last_step.saturating_mul(2)
                }
                _ => first,
            }
            .clamp(first, self.config.deflate_step_pages.max(first));
            let mut amount = step.min(held_at);
            // Inside the limit a guest that only stalls gets what leaves it under T; one that
            // refaults (the balloon took what it reads) gets its step whatever T says: its
            // working set is above the limit, which the next episode reports.
            let refaulting = self.pressure.refaults >= self.refault_threshold(obs);
            if let (Pressure::WorkingSet { .. }, Some(limit), None, false) =
                (pressure, self.limit, &self.episode, refaulting)
            {
                amount = amount.min(threshold_for(limit).saturating_sub(obs.resident_pages));
            }
            if amount > 0 {
                held_at -= amount;
                self.push_balloon(obs, held_at, actions);
                self.pressure.since_step = Some(0);
                self.pressure.last_step = amount;
                if let Pressure::WorkingSet { .. } = pressure {
                    self.counters.working_set_backoffs += 1;
                }
            }
        }
        let calm_needed = match self.ceiling {
            // The pressure came back under a ceiling: wait twice as long this time.
            Some(c) if !c.pressed => c.calm_needed.saturating_mul(2).min(CALM_ROUNDS_MAX),
            Some(c) => c.calm_needed,
            None if self
                .pressure
                .since_lift
                .is_some_and(|r| r < self.pressure.backoff.saturating_mul(4)) =>
            {
                self.pressure.backoff.saturating_mul(2).min(CALM_ROUNDS_MAX)
            }
            None => CALM_ROUNDS_FIRST,
        };
        let pages = self.ceiling.map_or(held_at, |c| c.pages.min(held_at));
        self.ceiling = Some(Ceiling {
            pages,
            cause: pressure.cause(),
            pressure,
            calm_rounds: 0,
            calm_needed,
            pressed: true,
        });
        match self.limit {
            Some(limit) if self.episode.is_some() => ManagerState::OverLimit {
                cause: pressure.cause(),
                reason: format!(
                    "{}: the balloon gives back to {} MiB and nothing more is taken; limit {} MiB",
                    pressure.describe(),
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
    pub(super) fn deflate_round(&mut self, obs: &Observation, actions: &mut Vec<Action>) {
        let Some(budget) = self.deflate else { return };
        let target = obs.balloon_target_pages;
        if obs.balloon_actual_pages > target && !self.balloon_stuck() {
            return;
        }
        // What the user set by hand stays: only the manager's own pages are given back.
        let own = target.saturating_sub(self.user_balloon_pages);
        let (room, above_floor) = match self.limit {
            None => (u64::MAX, own),
            Some(limit) => {
                let floor = obs.guest_ram_pages.saturating_sub(limit);
                (
                    threshold_for(limit).saturating_sub(obs.resident_pages),
                    own.min(target.saturating_sub(floor)),
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
            .min(own)
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
}
