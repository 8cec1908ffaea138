//! Giving balloon pages back: after the limit was raised or cleared (in steps, never so far
//! that the next episode starts), and when the guest is starved (memory PSI `full`), which also
//! holds the balloon below a ceiling until the guest has been calm for a while.

use log::info;

use super::{
    mib, threshold_for, Action, ManagerState, Observation, OverLimitCause, Policy,
    STARVATION_CALM_ROUNDS,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeflateBudget {
    /// The limit was cleared: deflate to 0.
    Unbounded,
    /// The limit was raised: the budget is T − resident, measured at the first round.
    Unmeasured,
    Left(u64),
}

/// The cap a starvation deflate leaves on the balloon.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ceiling {
    pub(super) pages: u64,
    pub(super) psi: f64,
    pub(super) calm_rounds: u32,
}

impl Policy {
    pub(super) fn starved(&self, obs: &Observation) -> bool {
        // NaN compares false: a guest reporting nonsense is not starved.
        obs.guest
            .as_ref()
            .is_some_and(|g| g.psi_full_avg10 >= self.config.psi_full_starved_avg10)
    }

    pub(super) fn update_ceiling(&mut self, obs: &Observation, starved: bool) {
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

    /// The guest is starved: give it a step back, take nothing, and hold the balloon there.
    /// This ignores T on purpose: a starving guest comes before the limit; if it goes over, the
    /// episode reports it.
    pub(super) fn starvation_round(
        &mut self,
        obs: &Observation,
        actions: &mut Vec<Action>,
    ) -> ManagerState {
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
    pub(super) fn deflate_round(&mut self, obs: &Observation, actions: &mut Vec<Action>) {
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
}
