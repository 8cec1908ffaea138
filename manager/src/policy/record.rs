//! What the driver reports back: the outcome of each action, charged to its step's counters.
//! Balloon targets are reported at once; agent requests when they answer, epochs later maybe.
//! What the agent claims is counted as a claim (the round's measurement decides what it
//! obtained); a request that claims almost nothing, or fails, leaves its step exhausted.

use log::{debug, info, warn};

use super::balloon_plan::BalloonMove;
use super::episode::Exhausted;
use super::file_step::fruitless;
use super::{Outcome, Policy, Step, AGENT_RETRY_ROUNDS};

/// An action of the last decision waiting for its outcome.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pending {
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

impl Policy {
    /// What an action of the last decision obtained.
    pub fn record(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::FileDeactivated { asked, freed } => {
                self.record_agent(Step::File, *asked, *freed)
            }
            Outcome::AnonDeactivated { asked, deactivated } => {
                self.record_agent(Step::Anon, *asked, *deactivated)
            }
            Outcome::AgentFailed { step, reason } => self.record_agent_failure(*step, reason),
            Outcome::BalloonSet { target_pages } => self.record_balloon(*target_pages),
        }
    }

    fn record_agent(&mut self, step: Step, asked: u64, claimed: u64) {
        let pool_pages = self
            .take_pending_agent(Some(step))
            .map_or(0, |(_, _, pool)| pool);
        let counters = self.counters.step_mut(step);
        counters.taken += 1;
        counters.asked_pages = counters.asked_pages.saturating_add(asked);
        counters.claimed_pages = counters.claimed_pages.saturating_add(claimed);
        info!("over-limit step {step}: asked {asked} pages, the agent claims {claimed}");
        let Some(episode) = &mut self.episode else {
            return;
        };
        if let Some(account) = &mut episode.account {
            let slot = match step {
                Step::Anon => &mut account.claimed_anon,
                _ => &mut account.claimed_file,
            };
            // What a request claims counts up to what it was asked: more is no more credible.
            *slot = slot.saturating_add(claimed.min(asked));
        }
        if fruitless(asked, claimed) {
            let slot = episode.exhausted(step);
            if slot.as_ref().is_none_or(|ex| !ex.for_good) {
                debug!("over-limit step {step}: exhausted for this episode");
                *slot = Some(Exhausted {
                    pool_pages,
                    why: format!(
                        "its last request freed {claimed} of {asked} pages, the agent says"
                    ),
                    retry_in: None,
                    for_good: false,
                });
            }
        }
    }

    fn record_agent_failure(&mut self, step: Step, reason: &str) {
        let Some((step, asked, pool_pages)) = self.take_pending_agent(Some(step)) else {
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
            let slot = episode.exhausted(step);
            if slot.as_ref().is_none_or(|ex| !ex.for_good) {
                *slot = Some(Exhausted {
                    pool_pages,
                    why: format!("the agent failed it ({reason})"),
                    retry_in: Some(AGENT_RETRY_ROUNDS),
                    for_good: false,
                });
            }
        }
    }

    /// The oldest waiting agent action (of `step`, if given): (step, asked, pool pages).
    pub(super) fn take_pending_agent(&mut self, step: Option<Step>) -> Option<(Step, u64, u64)> {
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
            from_resident: self.last_resident,
            target,
            asked,
        });
    }
}
