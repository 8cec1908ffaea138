//! The working set against the simulated guest: reads count (the guest's active lists), a limit
//! below what the guest uses is reported rather than enforced by thrashing, and the balloon
//! breathes — it gives pages back when the guest needs them and follows a deflate on OOM.

use super::super::sim::{SimSpec, MIB};
use super::super::{Action, ManagerState, OverLimitCause};
use super::{cause, reason, Harness};

/// A guest whose hot data is read, not written: 200 MiB of cache it keeps re-reading, 40 MiB of
/// cold cache, 48 MiB of busy anon memory. The dirty log sees only the 48 MiB.
fn read_hot_guest() -> SimSpec {
    SimSpec {
        file_mib: 240,
        file_hot_mib: 200,
        anon_hot_mib: 48,
        ..SimSpec::default()
    }
}

#[test]
fn a_read_hot_guest_under_a_limit_below_its_working_set_is_over_limit_without_thrashing() {
    let mut h = Harness::new(read_hot_guest(), Some(192));
    let end = h.run_episode(100);
    assert_eq!(
        cause(&end.state),
        Some(OverLimitCause::WorkingSet),
        "{end:?}"
    );
    assert!(
        reason(&end.state).contains("200 MiB on its active lists") || {
            reason(&end.state).contains("working set (248 MiB")
        },
        "{end:?}"
    );
    // The cold cache went, the hot stayed: nothing was read back.
    assert_eq!(h.guest.refaults, 0);
    assert_eq!(h.guest.file_hot, 200 * MIB);
    let c = h.policy.counters();
    assert!(c.file.asked_pages <= 40 * MIB, "{c:?}");
    let quiet = h.run(30);
    assert_eq!(cause(&quiet.state), Some(OverLimitCause::WorkingSet));
    assert_eq!(h.guest.refaults, 0);
}

/// `limit-hot-file`: a 512 MiB guest re-reading a 64 MiB file beside 192 MiB of cold cache,
/// whose active lists shrink as the balloon grows, as a real guest's do under the squeeze.
fn squeezed_hot_file_guest() -> SimSpec {
    SimSpec {
        kernel_mib: 24,
        file_mib: 256,
        file_hot_mib: 64,
        anon_hot_mib: 16,
        active_lists_squeezed: true,
        ..SimSpec::default()
    }
}

#[test]
fn a_guest_whose_active_lists_shrink_under_the_squeeze_is_not_ballooned_past_its_hot_set() {
    let mut h = Harness::new(squeezed_hot_file_guest(), Some(192));
    let end = h.run_episode(200);
    assert_eq!(end.state, ManagerState::WithinLimit, "{end:?}");
    // Cut below the hot set, and long past any window of recent epochs.
    h.policy.set_limit(Some(96 * MIB));
    let end = h.run_episode(200);
    assert_eq!(
        cause(&end.state),
        Some(OverLimitCause::WorkingSet),
        "{end:?}"
    );
    let quiet = h.run(100);
    assert_eq!(cause(&quiet.state), Some(OverLimitCause::WorkingSet));
    // Kernel, hot file, hot anon and the reserve stay the guest's, whatever its lists say now.
    let most = h.guest.ram - (24 + 64 + 16 + 16) * MIB;
    for (obs, d) in &h.log {
        for a in &d.actions {
            if let Action::SetBalloon { target_pages } = *a {
                assert!(target_pages <= most, "{a:?} past the hot set, at {obs:?}");
            }
        }
    }
    assert!(
        reason(&quiet.state).contains("before the balloon squeezed it"),
        "{quiet:?}"
    );
    assert_eq!(h.guest.refaults, 0, "{:?}", h.guest);
    assert_eq!(h.guest.file_hot, 64 * MIB);
    // Their squeezed lists are what the guest reports now: far below what it needs.
    let lists = h.guest.observe().guest.unwrap().hot_pages();
    assert!(lists < 40 * MIB, "{lists}");
}

#[test]
fn what_was_held_is_let_go_once_the_balloon_is_empty() {
    let mut h = Harness::new(squeezed_hot_file_guest(), Some(96));
    h.run_episode(200);
    h.policy.set_limit(None);
    h.run(20);
    assert_eq!((h.guest.balloon, h.guest.balloon_target), (0, 0));
    // The guest stopped reading the file: under the same limit the balloon may take it now.
    h.guest.file_hot = 0;
    h.policy.set_limit(Some(96 * MIB));
    let end = h.run_episode(200);
    assert_eq!(end.state, ManagerState::WithinLimit, "{end:?}");
}

#[test]
fn refaults_stop_the_balloon_when_the_guest_hides_its_hot_set() {
    // Its active lists say nothing: the balloon takes hot cache, the guest reads it back, and
    // the policy gives a step back and holds rather than thrash it.
    let spec = SimSpec {
        hot_unreported: true,
        ..read_hot_guest()
    };
    let mut h = Harness::new(spec, Some(192));
    // Epochs with refaults, per 50 epochs.
    let mut refaulting = [0; 4];
    let mut last_refaults = 0;
    for epoch in 0..200 {
        h.epoch();
        if h.guest.refaults > last_refaults {
            refaulting[epoch / 50] += 1;
        }
        last_refaults = h.guest.refaults;
    }
    let end = &h.log.last().unwrap().1;
    assert_eq!(
        cause(&end.state),
        Some(OverLimitCause::WorkingSet),
        "{end:?}"
    );
    assert!(h.policy.counters().working_set_backoffs >= 1);
    // Refaults while it finds out, then fewer and fewer: each time the ceiling lifts and the
    // balloon tries again, it waits twice as long before the next try.
    assert!(refaulting[3] < refaulting[0], "{refaulting:?}");
    assert!(refaulting[2..].iter().sum::<u32>() <= 25, "{refaulting:?}");
    assert!(h.guest.file_hot >= 150 * MIB, "{:?}", h.guest);
}

#[test]
fn a_guest_whose_need_rises_inside_the_limit_gets_its_balloon_back() {
    let spec = SimSpec {
        file_mib: 160,
        anon_hot_mib: 48,
        ..SimSpec::default()
    };
    let mut h = Harness::new(spec, Some(192));
    let end = h.run_episode(100);
    assert_eq!(end.state, ManagerState::WithinLimit);
    let balloon = h.guest.balloon_target;
    assert!(balloon > 0);
    let threshold = h.threshold();

    // The guest freed some memory (free page reporting gives it back), then stalls on memory:
    // PSI some rises and stays up.
    h.guest.free_page_reporting = true;
    h.guest.anon_hot -= 16 * MIB;
    h.guest.free_touched += 16 * MIB;
    h.run(1);
    h.guest.psi_some_floor = 40.0;
    let from = h.log.len();
    h.run(12);
    let gave_back: Vec<_> = h.log[from..]
        .iter()
        .flat_map(|(o, d)| d.actions.iter().map(move |a| (o, a)))
        .filter_map(|(o, a)| match *a {
            Action::SetBalloon { target_pages } if target_pages < o.balloon_target_pages => {
                Some((o.resident_pages, o.balloon_target_pages - target_pages))
            }
            _ => None,
        })
        .collect();
    assert!(!gave_back.is_empty(), "no deflate");
    for (resident, step) in gave_back {
        assert!(resident + step <= threshold, "gave back past T");
    }
    assert!(h.guest.balloon_target < balloon);
    assert!(h.log[from..]
        .iter()
        .all(|(_, d)| d.state == ManagerState::WithinLimit));
}

#[test]
fn a_deflate_on_oom_is_noticed_and_the_target_follows() {
    let spec = SimSpec {
        file_mib: 160,
        anon_hot_mib: 48,
        ..SimSpec::default()
    };
    let mut h = Harness::new(spec, Some(192));
    h.run_episode(100);
    h.run(3);
    let balloon = h.guest.balloon;
    assert_eq!(h.guest.balloon_target, balloon);

    // The guest ran out of memory and took 32 MiB back itself.
    h.guest.balloon -= 32 * MIB;
    h.guest.free_untouched += 32 * MIB;
    let d = h.epoch();
    assert_eq!(
        d.actions,
        vec![Action::SetBalloon {
            target_pages: balloon - 32 * MIB
        }]
    );
    assert_eq!(h.policy.counters().balloon_oom_deflates, 1);
    // And it is not inflated straight back.
    h.run(3);
    assert_eq!(h.guest.balloon_target, balloon - 32 * MIB);
}

#[test]
fn a_deflate_on_oom_leaves_a_hand_set_target_alone() {
    let spec = SimSpec {
        anon_hot_mib: 48,
        ..SimSpec::default()
    };
    let mut h = Harness::new(spec, None);
    // Someone set the balloon by hand, with no limit.
    h.set_balloon_by_hand(160 * MIB);
    h.run(5);
    assert_eq!(h.guest.balloon, 160 * MIB);

    // The guest ran out of memory and took 32 MiB back itself.
    h.guest.balloon -= 32 * MIB;
    h.guest.free_untouched += 32 * MIB;
    let d = h.epoch();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(h.policy.counters().balloon_oom_deflates, 1);
    assert_eq!(h.guest.balloon_target, 160 * MIB);
}
