//! The over-limit policy against a simulated guest: the loop the driver runs (observe, decide,
//! act, record), with the policy's promises checked at every decision.

use super::policy::{
    balloon_cap, Action, Decision, ManagerState, Observation, OverLimitCause, Policy, PolicyConfig,
    BALLOON_STALL_ROUNDS, DEACTIVATE_BATCH_PAGES, STARVATION_CALM_ROUNDS,
};
use super::sim::{SimGuest, SimSpec, MIB};

struct Harness {
    config: PolicyConfig,
    policy: Policy,
    guest: SimGuest,
    /// Decide again right after acting, as the driver may.
    recheck: bool,
    log: Vec<(Observation, Decision)>,
}

impl Harness {
    fn new(spec: SimSpec, limit_mib: Option<u64>) -> Self {
        let config = PolicyConfig::default();
        let mut policy = Policy::new(config);
        policy.set_limit(limit_mib.map(|l| l * MIB));
        Self {
            config,
            policy,
            guest: SimGuest::new(spec),
            recheck: false,
            log: Vec::new(),
        }
    }

    fn decide(&mut self) -> Decision {
        let obs = self.guest.observe();
        let decision = self.policy.decide(&obs);
        self.check(&obs, &decision);
        for action in &decision.actions {
            let outcome = self.guest.apply(action);
            self.policy.record(&outcome);
        }
        self.log.push((obs, decision.clone()));
        decision
    }

    /// One epoch; the last decision.
    fn epoch(&mut self) -> Decision {
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
                Action::SetBalloon { target_pages } if target_pages > obs.balloon_target_pages => {
                    let (cap, _) = balloon_cap(&self.config, obs);
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

fn reason(state: &ManagerState) -> &str {
    match state {
        ManagerState::OverLimit { reason, .. } | ManagerState::GuestUnresponsive { reason } => {
            reason
        }
        other => panic!("no reason in {other:?}"),
    }
}

#[test]
fn order_is_file_then_anon_then_balloon() {
    for recheck in [false, true] {
        let mut h = Harness::new(busy_guest(), Some(192));
        h.recheck = recheck;
        h.epoch();
        let first = h.log[0].1.clone();
        // The file request covers the need (rounded down to batches): no anon yet.
        assert!(matches!(
            first.actions[..],
            [
                Action::DeactivateFile { pages: 27_000 },
                Action::SetBalloon { .. }
            ]
        ));
        assert_eq!(first.state, ManagerState::Reclaiming);
        h.run_episode(100);

        let actions = h.actions();
        let last_file = actions
            .iter()
            .rposition(|a| matches!(a, Action::DeactivateFile { .. }))
            .unwrap();
        let first_anon = actions
            .iter()
            .position(|a| matches!(a, Action::DeactivateAnon { .. }))
            .expect("an anon step once the cache is down to half the limit");
        let first_balloon = actions
            .iter()
            .position(|a| matches!(a, Action::SetBalloon { .. }))
            .unwrap();
        assert_eq!(last_file, 0, "the file step comes first: {actions:?}");
        assert!(first_balloon > last_file && first_anon > first_balloon);
        let c = h.policy.counters();
        assert_eq!(
            (c.file.taken, c.file.asked_pages, c.file.obtained_pages),
            (1, 27_000, 27_000)
        );
        assert!(c.anon.taken >= 1 && c.inflate.taken >= 2 && c.inflate.obtained_pages > 0);
        assert_eq!(c.episodes, 1);
    }
}

#[test]
fn stops_at_threshold_and_stays_quiet() {
    for recheck in [false, true] {
        let mut h = Harness::new(busy_guest(), Some(192));
        h.recheck = recheck;
        let end = h.run_episode(100);
        assert_eq!(end.state, ManagerState::WithinLimit);
        assert!(h.guest.resident() <= h.threshold(), "{:?}", h.guest);
        // Inflating by the need each round, from untouched pages first, takes several rounds
        // (the design's measured warning) but not an endless number.
        let inflates = h.policy.counters().inflate.taken;
        assert!(inflates >= 2, "{inflates}");
        let quiet = h.run(30);
        assert_eq!(quiet.state, ManagerState::WithinLimit);
        assert!(h
            .log
            .iter()
            .rev()
            .take(30)
            .all(|(_, d)| d.actions.is_empty()));
        // The busy process kept its working set.
        assert_eq!(h.guest.anon_hot, 48 * MIB);
    }
}

#[test]
fn hysteresis_between_threshold_and_limit() {
    // Resident 180 MiB: over T = 168 MiB, under L = 192 MiB: no episode starts.
    let spec = SimSpec {
        file_mib: 124,
        anon_hot_mib: 48,
        free_page_reporting: true,
        ..Default::default()
    };
    let mut h = Harness::new(spec, Some(192));
    let d = h.run(10);
    assert_eq!(d.state, ManagerState::WithinLimit);
    assert!(h.actions().is_empty());

    // Over L: an episode, down to T or below.
    h.guest.read_files(20 * MIB);
    assert_eq!(h.epoch().state, ManagerState::Reclaiming);
    h.run_episode(100);
    assert!(h.guest.resident() <= h.threshold());
    let after_first = h.log.len();

    // Back between T and L: still no new episode.
    let to_between = h.threshold() + 8 * MIB - h.guest.resident();
    h.guest.read_files(to_between);
    assert!(h.guest.resident() > h.threshold() && h.guest.resident() <= 192 * MIB);
    assert_eq!(h.run(10).state, ManagerState::WithinLimit);
    assert!(h.log[after_first..]
        .iter()
        .all(|(_, d)| d.actions.is_empty()));
    assert_eq!(h.policy.counters().episodes, 1);

    // Over L again: a second episode.
    h.guest.read_files(24 * MIB);
    assert!(h.guest.resident() > 192 * MIB);
    assert!(!h.epoch().actions.is_empty());
    assert_eq!(h.policy.counters().episodes, 2);
}

#[test]
fn episode_ending_mid_inflate_cuts_the_balloon_back() {
    // Free page reporting returns what the file step freed: resident falls within T before
    // the (slow) balloon got what it was asked for.
    let spec = SimSpec {
        free_touched_mib: 20,
        free_page_reporting: true,
        balloon_rate_mib: 16,
        ..busy_guest()
    };
    let mut h = Harness::new(spec, Some(192));
    let first = h.epoch();
    assert!(matches!(first.actions[0], Action::DeactivateFile { .. }));
    assert_eq!(
        first.actions.last(),
        Some(&Action::SetBalloon {
            target_pages: 128 * MIB
        })
    );
    assert!(h.guest.resident() <= h.threshold());
    let d = h.epoch();
    assert_eq!(d.state, ManagerState::WithinLimit);
    assert_eq!(
        d.actions,
        vec![Action::SetBalloon {
            target_pages: 16 * MIB
        }]
    );
    assert!(h.run(5).actions.is_empty());
    assert_eq!(h.guest.balloon, 16 * MIB);
    let c = h.policy.counters();
    assert_eq!(
        (c.inflate.asked_pages, c.inflate.obtained_pages),
        (128 * MIB, 16 * MIB)
    );
    assert_eq!((c.deflate.taken, c.deflate.asked_pages), (1, 112 * MIB));
}

#[test]
fn never_inflates_below_working_set_and_reserve() {
    // 200 MiB busy: a 128 MiB limit cannot be met.
    let spec = SimSpec {
        file_mib: 100,
        anon_hot_mib: 200,
        ..Default::default()
    };
    let mut h = Harness::new(spec, Some(128));
    let end = h.run_episode(100);
    let cap = (512 - 200 - 16) * MIB;
    assert_eq!(h.guest.balloon_target, cap);
    assert_eq!(h.guest.anon_hot, 200 * MIB);
    // The harness checked every target against the cap; the reason says why it stopped.
    assert!(
        reason(&end.state).starts_with(
            "balloon at its cap (296 MiB): the guest's working set (200 MiB) + reserve (16 MiB) \
             leaves no room"
        ),
        "{end:?}"
    );
    assert!(reason(&end.state).contains("no swap"), "{end:?}");
    // It stays so, without asking again.
    let d = h.run(5);
    assert!(matches!(
        d.state,
        ManagerState::OverLimit {
            cause: OverLimitCause::BalloonAtCap,
            ..
        }
    ));
    assert!(d.actions.is_empty());
}

#[test]
fn impossible_limit_ends_over_limit_with_a_reason() {
    // Agent with swap, but nothing cold to give: the agent steps run dry, then the balloon.
    let spec = SimSpec {
        kernel_mib: 4,
        file_mib: 12,
        file_pinned_mib: 12,
        anon_hot_mib: 300,
        swap_mib: 64,
        ..Default::default()
    };
    let mut h = Harness::new(spec, Some(64));
    let end = h.run_episode(200);
    let why = reason(&end.state);
    assert!(matches!(end.state, ManagerState::OverLimit { .. }));
    assert!(why.contains("balloon at its cap"), "{why}");
    assert!(
        why.contains("anon memory: paging it out did not lower resident"),
        "{why}"
    );
    assert!(
        why.contains("file cache 12 MiB, not above half the limit"),
        "{why}"
    );
    assert!(why.contains("threshold 56 MiB, limit 64 MiB"), "{why}");
    assert!(h.guest.resident() > 64 * MIB);
}

#[test]
fn no_working_set_yet_keeps_the_guests_anon_memory() {
    let spec = SimSpec {
        anon_hot_mib: 100,
        anon_cold_mib: 100,
        working_set_known: false,
        ..Default::default()
    };
    let mut h = Harness::new(spec, Some(64));
    let end = h.run_episode(100);
    assert_eq!(h.guest.balloon_target, (512 - 200 - 16) * MIB);
    assert!(
        reason(&end.state).contains("anon memory (200 MiB) + reserve"),
        "{end:?}"
    );
}

#[test]
fn no_anon_step_without_swap() {
    let spec = SimSpec {
        file_mib: 150,
        anon_hot_mib: 48,
        anon_cold_mib: 200,
        ..Default::default()
    };
    let mut h = Harness::new(spec, Some(128));
    h.run_episode(100);
    assert!(h
        .actions()
        .iter()
        .any(|a| matches!(a, Action::DeactivateFile { .. })));
    assert!(!h
        .actions()
        .iter()
        .any(|a| matches!(a, Action::DeactivateAnon { .. })));
    assert_eq!(h.policy.counters().anon.taken, 0);
}

#[test]
fn absent_agent_goes_straight_to_the_balloon() {
    let spec = SimSpec {
        agent: false,
        ..busy_guest()
    };
    let mut h = Harness::new(spec, Some(192));
    let first = h.epoch();
    assert_eq!(
        first.actions,
        vec![Action::SetBalloon {
            target_pages: (276 - 168) * MIB
        }]
    );
    let end = h.run_episode(100);
    assert_eq!(end.state, ManagerState::WithinLimit);
    assert!(h.guest.resident() <= h.threshold());
    assert!(h
        .actions()
        .iter()
        .all(|a| matches!(a, Action::SetBalloon { .. })));
}

#[test]
fn absent_agent_and_no_working_set_keep_a_quarter_of_ram() {
    let spec = SimSpec {
        agent: false,
        working_set_known: false,
        anon_hot_mib: 100,
        ..Default::default()
    };
    let mut h = Harness::new(spec, Some(64));
    let end = h.run_episode(100);
    assert_eq!(h.guest.balloon_target, 384 * MIB);
    let why = reason(&end.state);
    assert!(
        why.contains("keeps a quarter of its RAM (128 MiB)"),
        "{why}"
    );
    assert!(why.contains("the guest agent does not answer"), "{why}");
}

#[test]
fn unresponsive_guest() {
    let spec = SimSpec {
        agent: false,
        balloon_responds: false,
        ..busy_guest()
    };
    let mut h = Harness::new(spec, Some(192));
    let first = h.epoch();
    assert!(matches!(first.actions[..], [Action::SetBalloon { .. }]));
    let mut state = first.state;
    for _ in 0..BALLOON_STALL_ROUNDS + 2 {
        state = h.epoch().state;
    }
    let why = reason(&state).to_string();
    assert!(
        matches!(state, ManagerState::GuestUnresponsive { .. }),
        "{state:?}"
    );
    assert!(
        why.starts_with("the balloon has not moved for 10 rounds (0 of 108 MiB)"),
        "{why}"
    );
    assert!(why.contains("the guest agent does not answer"), "{why}");
    // Asked once, not piled on.
    assert_eq!(h.actions().len(), 1);
    // The balloon wakes up: back to reclaiming.
    h.guest.balloon_responds = true;
    h.epoch();
    assert_eq!(h.epoch().state, ManagerState::Reclaiming);
}

#[test]
fn stuck_balloon_with_an_agent_is_over_limit() {
    // The guest has nothing to give: everything is kernel, busy or pinned cache, and the
    // working set is not known yet, so the cap is loose.
    let spec = SimSpec {
        ram_mib: 256,
        kernel_mib: 56,
        file_mib: 100,
        file_pinned_mib: 100,
        anon_hot_mib: 100,
        working_set_known: false,
        ..Default::default()
    };
    let mut h = Harness::new(spec, Some(128));
    let end = h.run_episode(100);
    let why = reason(&end.state);
    assert!(
        matches!(
            end.state,
            ManagerState::OverLimit {
                cause: OverLimitCause::BalloonStuck,
                ..
            }
        ),
        "{end:?}"
    );
    assert!(
        why.starts_with("the balloon is stuck at 0 MiB of its"),
        "{why}"
    );
}

/// The deflate steps after `from` in the log: (target before, target after).
fn deflates(h: &Harness, from: usize) -> Vec<(u64, u64)> {
    h.log[from..]
        .iter()
        .flat_map(|(o, d)| d.actions.iter().map(move |a| (o, a)))
        .map(|(o, a)| match *a {
            Action::SetBalloon { target_pages } if target_pages < o.balloon_target_pages => {
                (o.balloon_target_pages, target_pages)
            }
            _ => panic!("not a deflate: {a:?}"),
        })
        .collect()
}

#[test]
fn raised_limit_deflates_in_steps_within_the_threshold() {
    let mut h = Harness::new(busy_guest(), Some(192));
    h.run_episode(100);
    let balloon = h.guest.balloon;
    assert!(balloon > 64 * MIB);

    h.policy.set_limit(Some(320 * MIB));
    let threshold = 280 * MIB;
    let resident = h.guest.resident();
    let from = h.log.len();
    h.run(30);
    let steps = deflates(&h, from);
    assert!(steps.len() >= 2, "{steps:?}");
    for &(before, after) in &steps {
        assert!(before - after <= 64 * MIB, "{steps:?}");
        // Even if the guest touched every page it got back, it stays within T, or cannot go
        // over the limit at all: no new episode.
        let deflated = balloon - after;
        assert!(
            resident + deflated <= threshold || h.guest.ram - after <= 320 * MIB,
            "deflated too far: {steps:?}"
        );
    }
    assert_eq!(h.guest.balloon, steps.last().unwrap().1);
    assert_eq!(h.guest.balloon, 192 * MIB);
}

#[test]
fn limit_raised_to_guest_ram_deflates_completely() {
    // The end-to-end scenario: a 512 MiB guest that read 256 MiB of files and keeps a
    // 48 MiB anon working set busy, `limit set 192M`, later `limit set 512M`.
    let spec = SimSpec {
        file_mib: 256,
        anon_hot_mib: 48,
        ..Default::default()
    };
    let mut h = Harness::new(spec, Some(192));
    let end = h.run_episode(100);
    assert_eq!(end.state, ManagerState::WithinLimit);
    assert!(h.guest.resident() <= 168 * MIB);
    assert_eq!(h.guest.anon_hot, 48 * MIB);
    assert!(matches!(h.actions()[0], Action::DeactivateFile { .. }));

    h.policy.set_limit(Some(512 * MIB));
    let from = h.log.len();
    h.run(20);
    let steps = deflates(&h, from);
    assert_eq!(
        steps.len() as u64,
        steps[0].0.div_ceil(64 * MIB),
        "{steps:?}"
    );
    assert_eq!(h.guest.balloon, 0);
}

#[test]
fn cleared_limit_deflates_to_zero_in_steps() {
    let mut h = Harness::new(busy_guest(), Some(192));
    h.run_episode(100);
    h.policy.set_limit(None);
    let from = h.log.len();
    h.run(40);
    let steps: Vec<&Action> = h.log[from..]
        .iter()
        .flat_map(|(_, d)| d.actions.iter())
        .collect();
    let expected = h.log[from].0.balloon_target_pages.div_ceil(64 * MIB);
    assert_eq!(steps.len() as u64, expected, "{steps:?}");
    assert_eq!(h.guest.balloon, 0);
    assert_eq!(h.policy.counters().deflate.taken, expected);
    assert!(h.log[from..]
        .iter()
        .all(|(_, d)| d.state == ManagerState::WithinLimit));
}

#[test]
fn starved_guest_gets_memory_back_and_is_not_reinflated_at_once() {
    // An impossible limit: the balloon goes to its cap.
    let spec = SimSpec {
        file_mib: 100,
        anon_hot_mib: 200,
        ..Default::default()
    };
    let mut h = Harness::new(spec, Some(128));
    h.run_episode(100);
    let cap = h.guest.balloon;

    h.guest.psi_full_avg10 = 42.0;
    let d = h.epoch();
    assert_eq!(
        d.actions,
        vec![Action::SetBalloon {
            target_pages: cap - 64 * MIB
        }]
    );
    assert!(reason(&d.state).starts_with("the guest is starved (memory PSI full avg10 42.0 %"));
    let d = h.run(3);
    assert!(matches!(
        d.state,
        ManagerState::OverLimit {
            cause: OverLimitCause::Starved,
            ..
        }
    ));
    let held = h.guest.balloon_target;
    assert!(held <= cap - 128 * MIB, "deflated in several steps");

    // Calm again: the balloon stays where the starvation left it for a while...
    h.guest.psi_full_avg10 = 0.5;
    let d = h.run(STARVATION_CALM_ROUNDS as usize - 1);
    assert_eq!(h.guest.balloon_target, held);
    assert!(reason(&d.state).starts_with("balloon held at"), "{d:?}");
    // ...then may grow again.
    let d = h.run(2);
    assert!(h.guest.balloon_target > held, "{d:?}");
}

#[test]
fn starvation_without_a_limit_deflates_too() {
    let spec = SimSpec {
        anon_hot_mib: 100,
        ..Default::default()
    };
    let mut h = Harness::new(spec, None);
    // Someone set the balloon by hand.
    h.guest.balloon_target = 200 * MIB;
    h.run(5);
    assert_eq!(h.guest.balloon, 200 * MIB);
    assert!(h.actions().is_empty());
    h.guest.psi_full_avg10 = 25.0;
    let d = h.epoch();
    assert_eq!(
        d.actions,
        vec![Action::SetBalloon {
            target_pages: 136 * MIB
        }]
    );
    assert_eq!(d.state, ManagerState::WithinLimit);
}

#[test]
fn fruitless_file_step_moves_on() {
    // Lots of cache, nearly all of it pinned: one file request, then the anon step and balloon.
    let spec = SimSpec {
        file_mib: 200,
        file_pinned_mib: 195,
        anon_hot_mib: 48,
        anon_cold_mib: 60,
        swap_mib: 128,
        ..Default::default()
    };
    let mut h = Harness::new(spec, Some(192));
    h.run(10);
    let files = h
        .actions()
        .iter()
        .filter(|a| matches!(a, Action::DeactivateFile { .. }))
        .count();
    assert_eq!(files, 1);
    assert!(h
        .actions()
        .iter()
        .any(|a| matches!(a, Action::DeactivateAnon { .. })));
}

#[test]
fn anon_turns_urgent_when_nothing_moves() {
    // The balloon never moves; only paging anon memory out can still help.
    let spec = SimSpec {
        anon_hot_mib: 150,
        anon_cold_mib: 200,
        swap_mib: 512,
        balloon_responds: false,
        ..Default::default()
    };
    let mut h = Harness::new(spec, Some(192));
    // One round, then waiting for the balloon until it counts as stuck, then a round each
    // epoch: urgent, since nothing moved; twice without progress and the anon step is done.
    let d = h.run(BALLOON_STALL_ROUNDS as usize + 4);
    let urgency: Vec<bool> = h
        .actions()
        .iter()
        .filter_map(|a| match a {
            Action::DeactivateAnon { urgent, .. } => Some(*urgent),
            _ => None,
        })
        .collect();
    assert_eq!(urgency, [false, true, true]);
    let why = reason(&d.state);
    assert!(why.starts_with("the balloon is stuck at 0 MiB"), "{why}");
    assert!(
        why.contains("anon memory: paging it out did not lower resident"),
        "{why}"
    );
    assert!(d.actions.is_empty());
}
