//! A reclaim episode: it starts when resident goes over the limit L and lasts until resident is
//! at or under T = L − L/8 (the patch's hysteresis); and one round of it, which asks the file
//! step, the anon step and the balloon in that order and says where the guest stands.

use log::info;

use super::anon_step::anon_step;
use super::balloon_plan::BalloonPlan;
use super::file_step::file_step;
use super::record::Pending;
use super::{
    mib, threshold_for, Action, GuestView, ManagerState, Observation, OverLimitCause, Policy, Step,
    BALLOON_STALL_ROUNDS, DEACTIVATE_BATCH_PAGES, NO_PROGRESS_ROUNDS,
};

/// Why an agent step is off for now.
#[derive(Debug, Clone)]
pub(super) struct Exhausted {
    /// The guest's pool (file or anon pages) when the step ran dry: it comes back once the pool
    /// has grown by a margin.
    pub(super) pool_pages: u64,
    pub(super) why: String,
    /// After a failure: rounds until the step is tried again.
    pub(super) retry_in: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Episode {
    pub(super) file: Option<Exhausted>,
    pub(super) anon: Option<Exhausted>,
    pub(super) last_resident: Option<u64>,
    pub(super) last_actual: u64,
    /// Consecutive rounds without progress, for `urgent`.
    pub(super) still_rounds: u32,
    /// Urgent anon requests since the last progress.
    pub(super) fruitless_urgent: u32,
}

impl Episode {
    pub(super) fn exhausted(&mut self, step: Step) -> &mut Option<Exhausted> {
        match step {
            Step::Anon => &mut self.anon,
            _ => &mut self.file,
        }
    }
}

impl Episode {
    /// Notes this round's resident and balloon; whether the anon request turns urgent (nothing
    /// moved for [`NO_PROGRESS_ROUNDS`] rounds). After as many urgent requests without progress
    /// the anon step is exhausted: paging out did not help either.
    fn note_round(&mut self, obs: &Observation) -> bool {
        let resident = obs.resident_pages;
        let progress = self
            .last_resident
            .is_none_or(|last| resident < last || obs.balloon_actual_pages > self.last_actual);
        self.still_rounds = if progress {
            0
        } else {
            self.still_rounds.saturating_add(1)
        };
        self.last_resident = Some(resident);
        self.last_actual = obs.balloon_actual_pages;
        if progress {
            self.fruitless_urgent = 0;
        }
        if self.fruitless_urgent >= NO_PROGRESS_ROUNDS && self.anon.is_none() {
            if let Some(guest) = &obs.guest {
                self.anon = Some(Exhausted {
                    pool_pages: guest.anon_pages,
                    why: "paging it out did not lower resident".to_string(),
                    retry_in: None,
                });
            }
        }
        self.still_rounds >= NO_PROGRESS_ROUNDS
    }

    /// A step that failed is tried again after its rest; one that ran dry once its pool grew by
    /// a margin since.
    fn rearm(&mut self, limit: u64, guest: &GuestView) {
        let margin = (limit / 8).max(DEACTIVATE_BATCH_PAGES);
        for (slot, pool) in [
            (&mut self.file, guest.file_pages),
            (&mut self.anon, guest.anon_pages),
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
    }
}

/// One round's work in progress: what it asked for so far, and why the agent steps that asked
/// nothing did not (for the state's reason).
pub(super) struct Round<'a> {
    pub actions: &'a mut Vec<Action>,
    pub pending: &'a mut Vec<Pending>,
    /// resident − T.
    pub need: u64,
    /// What the agent requests so far leave of `need`.
    pub remaining: u64,
    pub asked_agent: bool,
    pub idle: Vec<String>,
}

impl Policy {
    /// Starts or ends the episode; whether it ended.
    pub(super) fn track_episode(&mut self, obs: &Observation) -> bool {
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

    /// One round of the episode: the agent steps, then the balloon, and where that leaves the
    /// guest.
    pub(super) fn reclaim_round(
        &mut self,
        limit: u64,
        obs: &Observation,
        actions: &mut Vec<Action>,
    ) -> ManagerState {
        let need = obs.resident_pages.saturating_sub(threshold_for(limit));
        let stuck = self.balloon_stuck();
        let Some(episode) = self.episode.as_mut() else {
            return ManagerState::WithinLimit;
        };
        let urgent = episode.note_round(obs);

        // One round per balloon cycle: while the balloon is still taking the last inflate, the
        // pages the agent freed for it are not used up yet, and asking again would count them
        // twice. The next round comes once it settles (or counts as stuck).
        if obs.balloon_actual_pages < obs.balloon_target_pages && !stuck {
            return ManagerState::Reclaiming;
        }

        let mut round = Round {
            actions,
            pending: &mut self.pending,
            need,
            remaining: need,
            asked_agent: false,
            idle: Vec::new(),
        };
        match &obs.guest {
            None => round
                .idle
                .push("the guest agent does not answer".to_string()),
            Some(guest) => {
                episode.rearm(limit, guest);
                let file_exhausted = episode.file.as_ref().map(|ex| ex.why.as_str());
                file_step(&mut round, file_exhausted, guest, limit);
                anon_step(&mut round, episode, guest, limit, urgent);
            }
        }
        let (asked_agent, idle) = (round.asked_agent, round.idle);

        let plan = self.plan_balloon(need, obs, actions);
        self.round_state(plan, asked_agent, &idle, limit, obs)
    }

    /// Reclaiming while anything was asked; otherwise over the limit (or unresponsive), with a
    /// reason that names the balloon's situation, why each agent step did nothing, and T and L.
    fn round_state(
        &self,
        plan: BalloonPlan,
        asked_agent: bool,
        idle: &[String],
        limit: u64,
        obs: &Observation,
    ) -> ManagerState {
        let reason = |balloon: &str| {
            let mut reason = balloon.to_string();
            for why in idle {
                reason.push_str("; ");
                reason.push_str(why);
            }
            reason.push_str(&format!(
                "; threshold {} MiB, limit {} MiB",
                mib(threshold_for(limit)),
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
}
