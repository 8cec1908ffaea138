//! Reclaim episodes against the simulated guest: the order of the steps, the threshold, the
//! cap, and what is reported when nothing more can be taken.

use super::super::sim::{SimSpec, MIB};
use super::super::{Action, ManagerState, OverLimitCause, BALLOON_STALL_ROUNDS};
use super::*;

#[test]
fn order_is_file_then_anon_then_balloon() {
    for recheck in [false, true] {
        let mut h = Harness::new(busy_guest(), Some(192));
        h.recheck = recheck;
        h.epoch();
        let first = h.log[0].1.clone();
        // The file request takes the cache down to its floor (half the limit: 96 of 120 MiB),
        // anon the rest of the need; the balloon moves once the agent answered.
        assert_eq!(
            first.actions,
            [
                Action::DeactivateFile { pages: 6000 },
                Action::DeactivateAnon {
                    pages: 21_000,
                    urgent: false
                }
            ]
        );
        assert_eq!(first.state, ManagerState::Reclaiming);
        let balloon_next = if recheck { &h.log[1].1 } else { &h.epoch() };
        assert!(matches!(
            balloon_next.actions[..],
            [Action::SetBalloon { .. }]
        ));
        h.run_episode(100);

        let actions = h.actions();
        let last_file = actions
            .iter()
            .rposition(|a| matches!(a, Action::DeactivateFile { .. }))
            .unwrap();
        let first_balloon = actions
            .iter()
            .position(|a| matches!(a, Action::SetBalloon { .. }))
            .unwrap();
        assert_eq!(last_file, 0, "the file step comes first: {actions:?}");
        assert!(first_balloon > 1);
        let c = h.policy.counters();
        assert_eq!(
            (c.file.taken, c.file.asked_pages, c.file.claimed_pages),
            (1, 6000, 6000)
        );
        // Measured: the fall in residency over the rounds that asked, up to the claims.
        assert!(c.file.obtained_pages <= 6000);
        assert!(c.anon.obtained_pages <= c.anon.claimed_pages);
        assert!(c.anon.taken >= 1 && c.inflate.taken >= 1 && c.inflate.obtained_pages > 0);
        assert_eq!(c.episodes, 1);
        // The file step never asked below the cache's floor (the balloon's pressure may take
        // more: then the guest's own LRU chooses).
        assert!(c.file.asked_pages <= (120 - 96) * MIB);
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
    // Free page reporting, once on, returns what the file step freed: resident falls within T
    // before the (slow) balloon got what it was asked for.
    let spec = SimSpec {
        file_mib: 220,
        anon_hot_mib: 48,
        free_touched_mib: 20,
        balloon_rate_mib: 16,
        ..SimSpec::default()
    };
    let mut h = Harness::new(spec, Some(192));
    let first = h.epoch();
    assert!(matches!(first.actions[0], Action::DeactivateFile { .. }));
    let second = h.epoch();
    assert_eq!(
        second.actions,
        [Action::SetBalloon {
            target_pages: 128 * MIB
        }]
    );
    h.guest.free_page_reporting = true;
    h.guest.tick();
    assert!(h.guest.resident() <= h.threshold());
    let d = h.epoch();
    assert_eq!(d.state, ManagerState::WithinLimit);
    assert_eq!(
        d.actions,
        vec![Action::SetBalloon {
            target_pages: 32 * MIB
        }]
    );
    assert!(h.run(5).actions.is_empty());
    assert_eq!(h.guest.balloon, 32 * MIB);
    let c = h.policy.counters();
    assert_eq!(
        (c.inflate.asked_pages, c.inflate.obtained_pages),
        (128 * MIB, 32 * MIB)
    );
    assert_eq!((c.deflate.taken, c.deflate.asked_pages), (1, 96 * MIB));
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
    // The guest keeps its working set, its kernel's 8 MiB and the reserve.
    let cap = (512 - 200 - 8 - 16) * MIB;
    assert_eq!(h.guest.balloon_target, cap);
    assert_eq!(h.guest.anon_hot, 200 * MIB);
    // The harness checked every target against the cap; the reason says why it stopped.
    assert!(
        reason(&end.state).starts_with(
            "balloon at its cap (288 MiB): the guest's working set (200 MiB; 200 MiB on its \
             active lists), its kernel's own 8 MiB + reserve (16 MiB) leaves no room"
        ),
        "{end:?}"
    );
    assert!(reason(&end.state).contains("no swap"), "{end:?}");
    // It stays so, without asking again.
    let d = h.run(5);
    assert!(matches!(
        d.state,
        ManagerState::OverLimit {
            cause: OverLimitCause::WorkingSet,
            ..
        }
    ));
    assert!(d.actions.is_empty());
}

#[test]
fn impossible_limit_ends_over_limit_with_a_reason() {
    // Agent with swap, but nothing cold to give: it advises hot anon memory, which is back in
    // use at once, so its claims are not borne out; then the balloon reaches its cap.
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
    assert!(
        matches!(
            end.state,
            ManagerState::OverLimit {
                cause: OverLimitCause::AgentUnverified,
                ..
            }
        ),
        "{end:?}"
    );
    assert!(why.contains("balloon at its cap"), "{why}");
    assert!(why.contains("host residency fell 0 MiB"), "{why}");
    assert!(why.contains("threshold 56 MiB, limit 64 MiB"), "{why}");
    assert!(h.guest.resident() > 64 * MIB);
    let c = h.policy.counters();
    assert!(
        c.anon.claimed_pages > 0 && c.anon.obtained_pages == 0,
        "{c:?}"
    );
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
    assert_eq!(h.guest.balloon_target, (512 - 200 - 8 - 16) * MIB);
    assert!(
        reason(&end.state).contains("anon memory (200 MiB), its kernel's own 8 MiB + reserve"),
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
    // A VM without a vsock device has no agent to blame.
    h.guest.no_vsock = true;
    let why = reason(&h.epoch().state).to_string();
    assert!(
        why.contains("the VM has no guest agent (no vsock device: start it with --vsock-sock)"),
        "{why}"
    );
    h.guest.no_vsock = false;
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
    let d = h.run_episode(BALLOON_STALL_ROUNDS as usize * 3);
    let urgency: Vec<bool> = h
        .actions()
        .iter()
        .filter_map(|a| match a {
            Action::DeactivateAnon { urgent, .. } => Some(*urgent),
            _ => None,
        })
        .collect();
    // Paged out, the pages are free in the guest but still held by the host: two rounds whose
    // claims residency does not bear out end the agent's steps.
    assert_eq!(urgency, [false, true]);
    let why = reason(&d.state);
    assert!(why.starts_with("the balloon is stuck at 0 MiB"), "{why}");
    assert!(why.contains("its claims are not borne out"), "{why}");
    assert!(matches!(
        d.state,
        ManagerState::OverLimit {
            cause: OverLimitCause::AgentUnverified,
            ..
        }
    ));
    assert!(d.actions.is_empty());
}

#[test]
fn pages_isolated_for_free_page_reporting_do_not_shrink_the_balloons_cap() {
    // limit-reclaim-fpr: the file step frees the cache, the guest starts reporting the free
    // pages, and up to 128 MiB of them read as kernel memory while the host releases them.
    let spec = SimSpec {
        kernel_mib: 30,
        file_mib: 256,
        anon_hot_mib: 48,
        free_touched_mib: 120,
        free_page_reporting: true,
        ..Default::default()
    };
    let mut h = Harness::new(spec, Some(192));
    while h.guest.balloon_target == 0 {
        h.epoch();
    }
    h.guest.reporting_isolated = 128 * MIB;
    let end = h.run_episode(100);
    assert_eq!(end.state, ManagerState::WithinLimit, "{:?}", end.state);
    assert!(h.guest.resident() <= 168 * MIB);
}
