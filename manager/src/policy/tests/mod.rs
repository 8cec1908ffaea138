//! The over-limit policy against a simulated guest: the loop the driver runs (observe, decide,
//! act, record), with the policy's promises checked at every decision.

mod deflate;
mod hostile;
mod reclaim;
mod units;
mod working_set;

use super::balloon_plan::held_balloon_cap;
use super::sim::{SimGuest, SimSpec, MIB};
use super::{
    Action, Decision, ManagerState, Observation, Outcome, Policy, PolicyConfig, Step,
    DEACTIVATE_BATCH_PAGES,
};

/// How the simulated agent answers (the driver guarantees an outcome for every request: an
/// answer, or a failure once its deadline passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answers {
    /// In the epoch it was asked.
    Prompt,
    /// This many epochs later.
    Slow(u32),
    /// Never: the request fails after this many epochs (the driver's deadline).
    Silent(u32),
}

struct Harness {
    config: PolicyConfig,
    policy: Policy,
    guest: SimGuest,
    /// Decide again right after acting, as the driver may.
    recheck: bool,
    answers: Answers,
    /// Agent requests under way: epochs left, the request.
    in_flight: Vec<(u32, Action)>,
    log: Vec<(Observation, Decision)>,
}

impl Harness {
    fn new(spec: SimSpec, limit_mib: Option<u64>) -> Self {
        // The rounds' own story, without the rule that calls any long stay over L over the limit
        // (tested on its own).
        Self::with_config(
            spec,
            limit_mib,
            PolicyConfig {
                sustained_epochs: 1000,
                ..PolicyConfig::default()
            },
        )
    }

    fn with_config(spec: SimSpec, limit_mib: Option<u64>, config: PolicyConfig) -> Self {
        let mut policy = Policy::new(config);
        policy.set_limit(limit_mib.map(|l| l * MIB));
        Self {
            config,
            policy,
            guest: SimGuest::new(spec),
            recheck: false,
            answers: Answers::Prompt,
            in_flight: Vec::new(),
            log: Vec::new(),
        }
    }

    fn decide(&mut self) -> Decision {
        let obs = self.guest.observe();
        let decision = self.policy.decide(&obs);
        self.check(&obs, &decision);
        for action in &decision.actions {
            match (action, self.answers) {
                (Action::SetBalloon { .. }, _) | (_, Answers::Prompt) => self.answer(action),
                (_, Answers::Slow(epochs) | Answers::Silent(epochs)) => {
                    self.in_flight.push((epochs, action.clone()))
                }
            }
        }
        self.log.push((obs, decision.clone()));
        decision
    }

    fn answer(&mut self, action: &Action) {
        let outcome = match (action, self.answers) {
            (Action::SetBalloon { .. }, _) | (_, Answers::Prompt | Answers::Slow(_)) => {
                self.guest.apply(action)
            }
            (_, Answers::Silent(_)) => Outcome::AgentFailed {
                step: Step::of(action).unwrap_or(Step::File),
                reason: "the guest agent did not answer".into(),
            },
        };
        self.policy.record(&outcome);
    }

    /// Agent requests whose time has come answer.
    fn deliver(&mut self) {
        let mut due = Vec::new();
        self.in_flight.retain_mut(|(left, action)| {
            *left = left.saturating_sub(1);
            if *left == 0 {
                due.push(action.clone());
            }
            *left > 0
        });
        for action in due {
            self.answer(&action);
        }
    }

    /// One epoch; the last decision.
    fn epoch(&mut self) -> Decision {
        self.deliver();
        let mut decision = self.decide();
        if self.recheck {
            decision = self.decide();
        }
        self.guest.tick();
        decision
    }

    fn run(&mut self, epochs: usize) -> Decision {
        let mut last = None;
        for _ in 0..epochs {
            last = Some(self.epoch());
        }
        last.expect("at least one epoch")
    }

    /// Runs until the state is no longer `Reclaiming` (at most `epochs`).
    /// The user sets the balloon by hand (`PATCH /balloon`), as the API does it: the device's
    /// target, and the manager told.
    fn set_balloon_by_hand(&mut self, pages: u64) {
        self.guest.balloon_target = pages;
        self.policy.set_user_balloon_pages(pages);
    }

    fn run_episode(&mut self, epochs: usize) -> Decision {
        for _ in 0..epochs {
            let decision = self.epoch();
            if decision.state != ManagerState::Reclaiming {
                return decision;
            }
        }
        panic!("still reclaiming after {epochs} epochs: {:?}", self.guest);
    }

    fn threshold(&self) -> u64 {
        self.policy.threshold_pages().expect("a limit")
    }

    fn actions(&self) -> Vec<Action> {
        self.log
            .iter()
            .flat_map(|(_, d)| d.actions.iter().cloned())
            .collect()
    }

    /// What the policy promises of every decision.
    fn check(&self, obs: &Observation, decision: &Decision) {
        let rank = |a: &Action| match a {
            Action::DeactivateFile { .. } => 0,
            Action::DeactivateAnon { .. } => 1,
            Action::SetBalloon { .. } => 2,
        };
        assert!(
            decision
                .actions
                .windows(2)
                .all(|w| rank(&w[0]) < rank(&w[1])),
            "file, then anon, then balloon, each at most once: {decision:?}"
        );
        for action in &decision.actions {
            match *action {
                Action::DeactivateFile { pages } | Action::DeactivateAnon { pages, .. } => {
                    let guest = obs.guest.as_ref().expect("agent steps need the agent");
                    assert!(
                        pages > 0 && pages.is_multiple_of(DEACTIVATE_BATCH_PAGES),
                        "{action:?}"
                    );
                    if matches!(action, Action::DeactivateAnon { .. }) {
                        assert!(guest.swap_total_pages > 0, "anon step without swap");
                    }
                }
                Action::SetBalloon { target_pages } if target_pages > obs.guest_ram_pages => {
                    panic!("a balloon bigger than guest RAM: {action:?} for {obs:?}")
                }
                Action::SetBalloon { target_pages } if target_pages > obs.balloon_target_pages => {
                    let bounded = self.policy.kernel_bounded(obs);
                    let seen = bounded.as_ref().unwrap_or(obs);
                    let (cap, _) =
                        held_balloon_cap(&self.config, seen, self.policy.need_hold.held());
                    assert!(
                        target_pages <= cap,
                        "inflated past the cap {cap}: {action:?}"
                    );
                    assert!(
                        obs.balloon_actual_pages >= obs.balloon_target_pages,
                        "inflated again before the balloon reached its last target: {obs:?}"
                    );
                }
                Action::SetBalloon { target_pages } => {
                    let from = obs.balloon_target_pages.min(obs.balloon_actual_pages);
                    assert!(
                        target_pages + self.config.deflate_step_pages >= from,
                        "deflated by more than a step: {obs:?} -> {action:?}"
                    );
                }
            }
        }
    }
}

/// A 512 MiB guest that read 120 MiB of files and keeps 48 MiB of anon memory busy, with
/// 100 MiB of cold anon memory and swap: resident 276 MiB.
fn busy_guest() -> SimSpec {
    SimSpec {
        file_mib: 120,
        anon_hot_mib: 48,
        anon_cold_mib: 100,
        swap_mib: 256,
        ..Default::default()
    }
}

/// The cause of an `over_limit` state.
fn cause(state: &ManagerState) -> Option<super::OverLimitCause> {
    match state {
        ManagerState::OverLimit { cause, .. } => Some(*cause),
        _ => None,
    }
}

fn reason(state: &ManagerState) -> &str {
    match state {
        ManagerState::OverLimit { reason, .. } | ManagerState::GuestUnresponsive { reason } => {
            reason
        }
        other => panic!("no reason in {other:?}"),
    }
}
