//! The policy against guests that do not play along: an agent that lies, is slow or silent, a
//! balloon that is ignored or violated. Whatever they do, the host's measurement decides: a
//! guest above its limit for `sustained_epochs` epochs is `over_limit` (or unresponsive) with
//! the backstop engaged, and the rounds themselves end in a state that names the culprit.

use proptest::prelude::*;

use super::super::sim::{SimSpec, MIB};
use super::super::{Action, ManagerState, OverLimitCause, PolicyConfig};
use super::{cause, reason, Answers, Harness};

/// A guest that keeps 300 MiB busy and 100 MiB of cache nobody can drop, whose agent claims it
/// freed whatever it was asked and reports a cache growing by L/8 every epoch: the modelled
/// guest that used to keep the policy `reclaiming` for ever.
fn lying_guest() -> SimSpec {
    SimSpec {
        file_mib: 100,
        file_pinned_mib: 100,
        anon_hot_mib: 300,
        agent_lies: true,
        cache_growth_mib: 24,
        ..SimSpec::default()
    }
}

#[test]
fn a_lying_agent_ends_over_limit_naming_the_agent() {
    let mut h = Harness::new(lying_guest(), Some(192));
    let end = h.run_episode(100);
    assert_eq!(cause(&end.state), Some(OverLimitCause::AgentUnverified));
    let why = reason(&end.state);
    assert!(why.contains("its claims are not borne out"), "{why}");
    let c = h.policy.counters();
    assert!(
        c.file.claimed_pages > 0 && c.file.obtained_pages == 0,
        "{c:?}"
    );
    // It stays so, without asking the agent again, however the cache it reports grows.
    let quiet = h.run(50);
    assert_eq!(cause(&quiet.state), Some(OverLimitCause::AgentUnverified));
    let asked = h.log.len() - 50;
    assert!(h.log[asked..].iter().all(|(_, d)| d
        .actions
        .iter()
        .all(|a| matches!(a, Action::SetBalloon { .. }))));
}

#[test]
fn a_violated_balloon_is_found_out_and_not_inflated_further() {
    let spec = SimSpec {
        file_mib: 200,
        anon_hot_mib: 100,
        agent: false,
        balloon_violated: true,
        ..SimSpec::default()
    };
    let mut h = Harness::new(spec, Some(192));
    let end = h.run_episode(100);
    assert_eq!(cause(&end.state), Some(OverLimitCause::BalloonViolated));
    let why = reason(&end.state);
    assert!(why.contains("the balloon is not honoured"), "{why}");
    let target = h.guest.balloon_target;
    h.run(20);
    assert_eq!(h.guest.balloon_target, target, "no more inflating");
    assert!(h.policy.counters().balloon_violation_pages > 0);
}

#[test]
fn over_the_limit_for_n_epochs_is_over_limit_and_engages_the_backstop() {
    // An honest guest whose balloon is slow: reclaim goes on, but after five epochs over L the
    // state says so and the backstop engages; once resident is back under L it lets go.
    let spec = SimSpec {
        balloon_rate_mib: 4,
        anon_cold_mib: 250,
        anon_hot_mib: 40,
        ..SimSpec::default()
    };
    let config = PolicyConfig {
        sustained_epochs: 5,
        ..PolicyConfig::default()
    };
    let mut h = Harness::with_config(spec, Some(192), config);
    let states: Vec<_> = (0..6).map(|_| h.epoch()).collect();
    assert!(states[..4].iter().all(|d| !d.engage_backstop));
    assert_eq!(states[3].state, ManagerState::Reclaiming);
    assert!(states[4].engage_backstop);
    assert_eq!(cause(&states[4].state), Some(OverLimitCause::Sustained));
    assert!(reason(&states[4].state).contains("for 5 epochs; reclaim goes on"));
    // Reclaim went on all the same.
    assert!(states[5].engage_backstop);
    let c = h.policy.counters();
    assert!(c.max_overshoot_pages >= (298 - 192) * MIB - MIB, "{c:?}");
}

#[test]
fn a_silent_agent_and_a_dead_balloon_are_unresponsive_in_n_epochs() {
    let spec = SimSpec {
        file_mib: 150,
        anon_hot_mib: 100,
        balloon_responds: false,
        ..SimSpec::default()
    };
    let config = PolicyConfig {
        sustained_epochs: 8,
        ..PolicyConfig::default()
    };
    let mut h = Harness::with_config(spec, Some(192), config);
    h.answers = Answers::Silent(4);
    let d = h.run(8);
    assert!(d.engage_backstop);
    assert!(
        matches!(
            d.state,
            ManagerState::OverLimit { .. } | ManagerState::GuestUnresponsive { .. }
        ),
        "{d:?}"
    );
}

/// What the guest does, for the property test.
#[derive(Debug, Clone)]
struct Behaviour {
    spec: SimSpec,
    answers: Answers,
    limit_mib: u64,
    sustained_epochs: u32,
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    let pools = (0u64..150, 0u64..60, 0u64..150, 0u64..150, 0u64..40);
    let guest = (
        prop_oneof![Just(0u64), Just(256)],
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(0u32), Just(1), Just(2)],
        prop_oneof![Just(0u32), Just(1), Just(2)],
        1u64..64,
    );
    let answers = prop_oneof![
        Just(Answers::Prompt),
        (1u32..4).prop_map(Answers::Slow),
        (1u32..8).prop_map(Answers::Silent),
    ];
    (pools, guest, answers, 64u64..400, 1u32..12).prop_map(
        |(
            (file, pinned, hot, cold, touched),
            (swap, fpr, ws_known, agent_kind, balloon_kind, rate),
            answers,
            limit_mib,
            sustained_epochs,
        )| Behaviour {
            spec: SimSpec {
                file_mib: file,
                file_pinned_mib: pinned.min(file),
                anon_hot_mib: hot,
                anon_cold_mib: cold,
                free_touched_mib: touched,
                swap_mib: swap,
                free_page_reporting: fpr,
                working_set_known: ws_known,
                agent: agent_kind != 0,
                agent_lies: agent_kind == 2,
                cache_growth_mib: if agent_kind == 2 { limit_mib / 8 } else { 0 },
                balloon_responds: balloon_kind != 1,
                balloon_violated: balloon_kind == 2,
                balloon_rate_mib: rate,
                ..SimSpec::default()
            },
            answers,
            limit_mib,
            sustained_epochs,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// For any guest behaviour: once resident has been above L for `sustained_epochs` epochs
    /// in a row, the state is `over_limit` or `guest_unresponsive` and the backstop is asked to
    /// engage; the policy never panics and never asks the balloon for more than guest RAM (the
    /// harness checks every decision).
    #[test]
    fn over_the_limit_for_n_epochs_is_always_over_limit(b in behaviour()) {
        let config = PolicyConfig {
            sustained_epochs: b.sustained_epochs,
            ..PolicyConfig::default()
        };
        let limit = b.limit_mib * MIB;
        let mut h = Harness::with_config(b.spec.clone(), Some(b.limit_mib), config);
        h.answers = b.answers;
        let mut over = 0u32;
        for _ in 0..120 {
            let d = h.epoch();
            let (obs, _) = h.log.last().expect("an epoch decided");
            over = if obs.resident_pages > limit { over + 1 } else { 0 };
            if over >= b.sustained_epochs {
                prop_assert!(d.engage_backstop, "{b:?}: {d:?}");
                prop_assert!(
                    matches!(
                        d.state,
                        ManagerState::OverLimit { .. } | ManagerState::GuestUnresponsive { .. }
                    ),
                    "{b:?}: over the limit for {over} epochs but {:?}",
                    d.state
                );
            } else {
                prop_assert!(!d.engage_backstop, "{b:?}: {d:?}");
            }
        }
    }
}
