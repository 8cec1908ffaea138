//! A reclaim episode: it starts when resident goes over the limit L and lasts until resident is
//! at or under T = L − L/8 (the patch's hysteresis); and one round of it, which asks the file
//! step and the anon step, waits for their answers (sampling goes on meanwhile), then moves the
//! balloon, and says where the guest stands.
//!
//! What the agent's steps obtained is measured, not taken from the agent: a round's account
//! opens when it asks the agent and settles at the next round (or the episode's end) with the
//! fall in host residency since, attributed to the steps up to what the agent claimed. Rounds
//! whose measured fall is under a tenth of the claims are unproductive; after
//! [`AGENT_UNPRODUCTIVE_ROUNDS`] of them the agent's steps are done for the episode, whatever
//! the agent reports of its pools, and the balloon (then `over_limit`) takes over.

use log::info;

use super::anon_step::anon_step;
use super::balloon_plan::BalloonPlan;
use super::file_step::file_step;
use super::file_step::fruitless;
use super::record::Pending;
use super::types::PolicyCounters;
use super::{
    mib, threshold_for, Action, GuestView, ManagerState, Observation, OverLimitCause, Policy, Step,
    AGENT_UNPRODUCTIVE_ROUNDS, BALLOON_STALL_ROUNDS, DEACTIVATE_BATCH_PAGES, NO_PROGRESS_ROUNDS,
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
    /// For the rest of the episode, whatever the pool does (the agent's claims were not borne
    /// out by measurement).
    pub(super) for_good: bool,
}

/// The agent's part of one round, measured at the next: resident and the balloon when it asked,
/// the pages the host held neither in residency nor in the balloon then, and what the agent
/// claimed since.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RoundAccount {
    pub(super) start_resident: u64,
    pub(super) start_balloon: u64,
    pub(super) untouched: u64,
    pub(super) claimed_file: u64,
    pub(super) claimed_anon: u64,
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
    /// The agent's round waiting to be measured.
    pub(super) account: Option<RoundAccount>,
    /// The agent answered this round's requests: the balloon moves next.
    pub(super) balloon_due: bool,
    /// Settled rounds in a row whose measured fall was under a tenth of the agent's claims.
    pub(super) unproductive: u32,
    /// The agent's claims and the measured fall, over the episode's settled rounds.
    pub(super) claimed_pages: u64,
    pub(super) measured_pages: u64,
    /// The agent's steps are done for the episode: its claims were not borne out.
    pub(super) agent_unverified: bool,
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
                    for_good: false,
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
                _ if ex.for_good => false,
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

impl Episode {
    /// Measures the agent's last round against `obs`: the fall in residency since it asked,
    /// given to its steps up to their claims. A round whose fall is under a tenth of the claims
    /// counts towards [`AGENT_UNPRODUCTIVE_ROUNDS`], after which the agent's steps are done for
    /// the episode — unless the balloon grew meanwhile by no more than the pages the host did
    /// not hold: the guest may have given it those first, so the round proves nothing.
    pub(super) fn settle(&mut self, obs: &Observation, counters: &mut PolicyCounters) {
        let Some(account) = self.account.take() else {
            return;
        };
        let fall = account.start_resident.saturating_sub(obs.resident_pages);
        let file = fall.min(account.claimed_file);
        let anon = (fall - file).min(account.claimed_anon);
        counters.file.obtained_pages = counters.file.obtained_pages.saturating_add(file);
        counters.anon.obtained_pages = counters.anon.obtained_pages.saturating_add(anon);
        let claimed = account.claimed_file.saturating_add(account.claimed_anon);
        self.claimed_pages = self.claimed_pages.saturating_add(claimed);
        self.measured_pages = self.measured_pages.saturating_add(file + anon);
        if claimed == 0 || !fruitless(claimed, fall) {
            self.unproductive = 0;
            return;
        }
        let grown = obs
            .balloon_actual_pages
            .saturating_sub(account.start_balloon);
        if grown > 0 && grown <= account.untouched {
            return;
        }
        self.unproductive += 1;
        info!(
            "over-limit: the agent claimed {} MiB, host residency fell {} MiB ({} such rounds)",
            mib(claimed),
            mib(fall),
            self.unproductive
        );
        if self.unproductive >= AGENT_UNPRODUCTIVE_ROUNDS && !self.agent_unverified {
            self.agent_unverified = true;
            let why = format!(
                "the agent claimed {} MiB over this episode's requests, host residency fell {} \
                 MiB: its claims are not borne out",
                mib(self.claimed_pages),
                mib(self.measured_pages)
            );
            for slot in [&mut self.file, &mut self.anon] {
                *slot = Some(Exhausted {
                    pool_pages: 0,
                    why: why.clone(),
                    retry_in: None,
                    for_good: true,
                });
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
            if let Some(mut episode) = self.episode.take() {
                episode.settle(obs, &mut self.counters);
            }
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

    /// One round of the episode, or the part of it that is due: the agent steps; once the agent
    /// answered, the balloon; and where that leaves the guest.
    pub(super) fn reclaim_round(
        &mut self,
        limit: u64,
        obs: &Observation,
        actions: &mut Vec<Action>,
    ) -> ManagerState {
        let need = obs.resident_pages.saturating_sub(threshold_for(limit));
        let stuck = self.balloon_stuck();
        let agent_busy = self.agent_in_flight();
        let violated = self.violation.violated;
        let Some(episode) = self.episode.as_mut() else {
            return ManagerState::WithinLimit;
        };
        let urgent = episode.note_round(obs);

        // The agent works: the sampler goes on, the balloon waits for the pages it frees.
        if agent_busy {
            return ManagerState::Reclaiming;
        }
        // One round per balloon cycle: while the balloon is still taking the last inflate, the
        // pages the agent freed for it are not used up yet, and asking again would count them
        // twice. The next round comes once it settles (or counts as stuck).
        if obs.balloon_actual_pages < obs.balloon_target_pages && !stuck {
            return ManagerState::Reclaiming;
        }
        if std::mem::take(&mut episode.balloon_due) {
            if !violated {
                self.plan_balloon(need, obs, actions);
            }
            // What the round obtained is measured at the next one.
            return ManagerState::Reclaiming;
        }
        episode.settle(obs, &mut self.counters);

        let mut round = Round {
            actions,
            pending: &mut self.pending,
            need,
            remaining: need,
            asked_agent: false,
            idle: Vec::new(),
        };
        match &obs.guest {
            None => round.idle.push(obs.no_agent_reason().to_string()),
            Some(guest) => {
                episode.rearm(limit, guest);
                let file_exhausted = episode.file.as_ref().map(|ex| ex.why.as_str());
                file_step(&mut round, file_exhausted, guest, limit);
                anon_step(&mut round, episode, guest, limit, urgent);
            }
        }
        let (asked_agent, idle) = (round.asked_agent, round.idle);
        if asked_agent {
            episode.account = Some(RoundAccount {
                start_resident: obs.resident_pages,
                start_balloon: obs.balloon_actual_pages,
                untouched: obs
                    .guest_ram_pages
                    .saturating_sub(obs.resident_pages)
                    .saturating_sub(obs.balloon_actual_pages),
                ..RoundAccount::default()
            });
            episode.balloon_due = true;
            return ManagerState::Reclaiming;
        }
        let plan = if violated {
            BalloonPlan::Violated
        } else {
            self.plan_balloon(need, obs, actions)
        };
        self.round_state(plan, &idle, limit, obs)
    }

    /// Reclaiming while the balloon inflates; otherwise over the limit (or unresponsive), with a
    /// reason that names the balloon's situation, why each agent step did nothing, and T and L.
    fn round_state(
        &self,
        plan: BalloonPlan,
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
        let agent_unverified = self
            .episode
            .as_ref()
            .is_some_and(|episode| episode.agent_unverified);
        let (cause, balloon) = match plan {
            BalloonPlan::Inflating => return ManagerState::Reclaiming,
            // Not one page since the last inflate, and no agent: nothing in the guest answers.
            BalloonPlan::Stuck
                if obs.guest.is_none() && self.watch.best_distance >= self.watch.first_distance =>
            {
                return ManagerState::GuestUnresponsive {
                    reason: reason(&format!(
                        "the balloon has not moved for {BALLOON_STALL_ROUNDS} rounds ({} of {} MiB)",
                        mib(obs.balloon_actual_pages),
                        mib(obs.balloon_target_pages)
                    )),
                };
            }
            BalloonPlan::Stuck => (
                OverLimitCause::BalloonStuck,
                format!(
                    "the balloon is stuck at {} MiB of its {} MiB target: the guest gives it no \
                     more pages",
                    mib(obs.balloon_actual_pages),
                    mib(obs.balloon_target_pages)
                ),
            ),
            BalloonPlan::Violated => (OverLimitCause::BalloonViolated, self.violation_reason()),
            BalloonPlan::Full(cause, balloon) => (cause, balloon),
        };
        // The agent's unmet claims are named before the balloon's state, which they explain:
        // a guest that kept what its agent said it freed has nothing for the balloon either.
        let cause = match cause {
            OverLimitCause::BalloonAtCap
            | OverLimitCause::BalloonStuck
            | OverLimitCause::WorkingSet
                if agent_unverified =>
            {
                OverLimitCause::AgentUnverified
            }
            cause => cause,
        };
        ManagerState::OverLimit {
            cause,
            reason: reason(&balloon),
        }
    }
}
