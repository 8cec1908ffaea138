//! What overrules the rounds of an episode: a guest that does not honour its balloon, and
//! resident that has stayed above the limit for too long, whatever reclaim is doing. Both are
//! judged on the host's measurement alone.

use log::warn;

use super::{
    mib, ManagerState, Observation, OverLimitCause, Policy, VIOLATION_CLEAN_EPOCHS,
    VIOLATION_EPOCHS,
};

/// Balloon pages found resident, epoch after epoch.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ViolationWatch {
    /// Epochs in a row with violations, and without.
    pub(super) dirty_epochs: u32,
    pub(super) clean_epochs: u32,
    /// The balloon is not honoured: it is not inflated any more.
    pub(super) violated: bool,
    /// Pages found in the last epoch that had any.
    pub(super) last_pages: u64,
}

impl Policy {
    /// Counts this epoch's resident balloon pages; [`VIOLATION_EPOCHS`] epochs in a row with
    /// some make the balloon violated, [`VIOLATION_CLEAN_EPOCHS`] without forgive it.
    pub(super) fn watch_violations(&mut self, obs: &Observation) {
        let pages = obs.balloon_violation_pages;
        let w = &mut self.violation;
        if pages > 0 {
            self.counters.balloon_violation_pages =
                self.counters.balloon_violation_pages.saturating_add(pages);
            self.counters.balloon_violation_epochs += 1;
            w.last_pages = pages;
            w.clean_epochs = 0;
            w.dirty_epochs = w.dirty_epochs.saturating_add(1);
            if w.dirty_epochs >= VIOLATION_EPOCHS && !w.violated {
                w.violated = true;
                warn!(
                    "over-limit: the guest keeps using pages it gave the balloon ({} KiB this \
                     epoch, {} epochs in a row): the balloon is not honoured",
                    pages.saturating_mul(4),
                    w.dirty_epochs
                );
            }
        } else {
            w.dirty_epochs = 0;
            w.clean_epochs = w.clean_epochs.saturating_add(1);
            if w.clean_epochs >= VIOLATION_CLEAN_EPOCHS {
                w.violated = false;
            }
        }
    }

    pub(super) fn violation_reason(&self) -> String {
        format!(
            "the guest uses pages it gave the balloon ({} MiB found resident in {} epochs, {} \
             KiB in the last; each time released again): the balloon is not honoured",
            mib(self.counters.balloon_violation_pages),
            self.counters.balloon_violation_epochs,
            self.violation.last_pages.saturating_mul(4)
        )
    }

    /// Counts epochs in a row with resident above the limit and the worst overshoot; whether
    /// there have been enough to engage the host backstop.
    pub(super) fn count_over_limit(&mut self, obs: &Observation) -> bool {
        let c = &mut self.counters;
        match self.limit {
            Some(limit) if obs.resident_pages > limit => {
                c.over_limit_epochs += 1;
                c.max_overshoot_pages = c.max_overshoot_pages.max(obs.resident_pages - limit);
            }
            _ => c.over_limit_epochs = 0,
        }
        self.limit.is_some()
            && c.over_limit_epochs >= u64::from(self.config.sustained_epochs.max(1))
    }

    /// Resident has been above the limit for too long while the rounds still say they are at
    /// work: the guest is over its limit all the same. Unresponsive when nothing in the guest
    /// answers (no agent, a balloon that has not moved since its target was set).
    pub(super) fn sustained_state(&self, obs: &Observation) -> ManagerState {
        let epochs = self.counters.over_limit_epochs;
        let limit = self.limit.map_or(0, mib);
        let resident = mib(obs.resident_pages);
        let balloon_silent = obs.balloon_actual_pages < obs.balloon_target_pages
            && self.watch.best_distance >= self.watch.first_distance;
        if obs.guest.is_none() && balloon_silent {
            return ManagerState::GuestUnresponsive {
                reason: format!(
                    "resident {resident} MiB has been over the limit {limit} MiB for {epochs} \
                     epochs, {} and the balloon has not moved ({} of {} MiB)",
                    obs.no_agent_reason(),
                    mib(obs.balloon_actual_pages),
                    mib(obs.balloon_target_pages)
                ),
            };
        }
        let episode = self.episode.as_ref();
        if self.violation.violated {
            return ManagerState::OverLimit {
                cause: OverLimitCause::BalloonViolated,
                reason: self.violation_reason(),
            };
        }
        if let Some(e) = episode.filter(|e| e.agent_unverified) {
            return ManagerState::OverLimit {
                cause: OverLimitCause::AgentUnverified,
                reason: format!(
                    "resident {resident} MiB has been over the limit {limit} MiB for {epochs} \
                     epochs; the agent claimed {} MiB freed, host residency fell {} MiB: its \
                     claims are not borne out",
                    mib(e.claimed_pages),
                    mib(e.measured_pages)
                ),
            };
        }
        ManagerState::OverLimit {
            cause: OverLimitCause::Sustained,
            reason: format!(
                "resident {resident} MiB has been over the limit {limit} MiB for {epochs} epochs; \
                 reclaim goes on"
            ),
        }
    }
}
