//! Giving memory back against the simulated guest: a raised or cleared limit, a starved guest.

use super::super::sim::{SimSpec, MIB};
use super::super::{Action, ManagerState, OverLimitCause, CALM_ROUNDS_FIRST, PRESSURE_STEP_ROUNDS};
use super::*;

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
    let taken_before = h.policy.counters().deflate.taken;
    h.run(40);
    let steps: Vec<&Action> = h.log[from..]
        .iter()
        .flat_map(|(_, d)| d.actions.iter())
        .collect();
    let expected = h.log[from].0.balloon_target_pages.div_ceil(64 * MIB);
    assert_eq!(steps.len() as u64, expected, "{steps:?}");
    assert_eq!(h.guest.balloon, 0);
    assert_eq!(h.policy.counters().deflate.taken - taken_before, expected);
    assert!(h.log[from..]
        .iter()
        .all(|(_, d)| d.state == ManagerState::WithinLimit));
}

#[test]
fn cleared_or_raised_limit_gives_back_only_the_managers_pages() {
    // The user set a 100 MiB balloon by hand before the limit; the manager inflates past it.
    let mut h = Harness::new(busy_guest(), Some(192));
    h.set_balloon_by_hand(100 * MIB);
    h.run_episode(100);
    assert!(h.guest.balloon > 100 * MIB);
    h.policy.set_limit(Some(512 * MIB));
    h.run(40);
    assert_eq!(
        h.guest.balloon,
        100 * MIB,
        "a raised limit keeps the user's balloon"
    );
    h.policy.set_limit(Some(192 * MIB));
    h.run_episode(100);
    h.policy.set_limit(None);
    h.run(40);
    assert_eq!(
        h.guest.balloon,
        100 * MIB,
        "a cleared limit keeps the user's balloon"
    );
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

    // Starved: a small step back, then a bigger one only once PSI's lagging average had time
    // to answer the first.
    h.guest.psi_full_avg10 = 42.0;
    let d = h.epoch();
    assert_eq!(
        d.actions,
        vec![Action::SetBalloon {
            target_pages: cap - 16 * MIB
        }]
    );
    assert!(reason(&d.state).starts_with("the guest is starved (memory PSI full avg10 42.0 %"));
    h.run(PRESSURE_STEP_ROUNDS as usize - 1);
    assert_eq!(
        h.guest.balloon_target,
        cap - 16 * MIB,
        "one step per few rounds"
    );
    let d = h.epoch();
    assert_eq!(
        d.actions,
        vec![Action::SetBalloon {
            target_pages: cap - 48 * MIB
        }]
    );
    assert!(matches!(
        d.state,
        ManagerState::OverLimit {
            cause: OverLimitCause::Starved,
            ..
        }
    ));
    let held = h.guest.balloon_target;

    // Calm again: the balloon stays where the starvation left it for a while...
    h.guest.psi_full_avg10 = 0.5;
    let d = h.run(CALM_ROUNDS_FIRST as usize - 1);
    assert_eq!(h.guest.balloon_target, held);
    assert!(reason(&d.state).starts_with("balloon held at"), "{d:?}");
    // ...then may grow again.
    let d = h.run(2);
    assert!(h.guest.balloon_target > held, "{d:?}");

    // Starved again: held longer this time (twice the calm rounds), not flapping.
    h.guest.psi_full_avg10 = 42.0;
    h.run(1);
    let held = h.guest.balloon_target;
    h.guest.psi_full_avg10 = 0.5;
    h.run(2 * CALM_ROUNDS_FIRST as usize - 1);
    assert_eq!(h.guest.balloon_target, held);
}

#[test]
fn starvation_without_a_limit_deflates_too() {
    let spec = SimSpec {
        anon_hot_mib: 100,
        ..Default::default()
    };
    let mut h = Harness::new(spec, None);
    // Someone set the balloon by hand.
    h.set_balloon_by_hand(200 * MIB);
    h.run(5);
    assert_eq!(h.guest.balloon, 200 * MIB);
    assert!(h.actions().is_empty());
    h.guest.psi_full_avg10 = 25.0;
    let d = h.epoch();
    assert_eq!(
        d.actions,
        vec![Action::SetBalloon {
            target_pages: 184 * MIB
        }]
    );
    assert_eq!(d.state, ManagerState::WithinLimit);
}
