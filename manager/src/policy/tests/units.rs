//! The policy's arithmetic and bookkeeping, one piece at a time.

use super::super::balloon_plan::{balloon_cap, held_balloon_cap, Keep};
use super::super::file_step::{batch_request, fruitless};
use super::super::need_hold::Need;
use super::super::*;
use crate::pages::PAGES_PER_MIB;

#[test]
fn threshold_is_an_eighth_under_the_limit() {
    assert_eq!(threshold_for(0), 0);
    assert_eq!(threshold_for(7), 7);
    assert_eq!(threshold_for(8), 7);
    assert_eq!(threshold_for(192 * PAGES_PER_MIB), 168 * PAGES_PER_MIB);
    assert_eq!(threshold_for(u64::MAX), u64::MAX - u64::MAX / 8);
    let mut policy = Policy::new(PolicyConfig::default());
    assert_eq!(policy.threshold_pages(), None);
    policy.set_limit(Some(8000));
    assert_eq!(policy.limit_pages(), Some(8000));
    assert_eq!(policy.threshold_pages(), Some(7000));
}

#[test]
fn requests_are_whole_batches() {
    assert_eq!(batch_request(0), 0);
    assert_eq!(batch_request(1), DEACTIVATE_BATCH_PAGES);
    assert_eq!(batch_request(999), 1000);
    assert_eq!(batch_request(1000), 1000);
    assert_eq!(batch_request(1999), 1000);
    assert_eq!(batch_request(46_600), 46_000);
    assert_eq!(batch_request(u64::MAX), u64::MAX / 1000 * 1000);
}

#[test]
fn fruitless_is_under_ten_percent() {
    assert!(fruitless(1000, 99));
    assert!(!fruitless(1000, 100));
    assert!(!fruitless(1000, 5000));
    assert!(fruitless(u64::MAX, 0));
    assert!(fruitless(u64::MAX, u64::MAX / 10));
    assert!(!fruitless(u64::MAX, u64::MAX / 10 + 1));
    assert!(!fruitless(0, 0));
}

/// All of guest RAM resident: the guest's figures are believed in full.
fn obs(ram: u64, ws: Option<u64>, guest: Option<GuestView>) -> Observation {
    Observation {
        guest_ram_pages: ram,
        resident_pages: ram,
        working_set_pages: ws,
        guest,
        ..Default::default()
    }
}

#[test]
fn cap_leaves_the_working_set_and_reserve() {
    let config = PolicyConfig::default();
    let guest = GuestView {
        anon_pages: 20_000,
        ..Default::default()
    };
    assert_eq!(
        balloon_cap(&config, &obs(131_072, Some(12_288), Some(guest.clone()))),
        (
            131_072 - 12_288 - 4096,
            Keep::WorkingSet {
                working_set: 12_288,
                guest_hot: Some(0),
                keep: 16_384
            }
        )
    );
    // No working set yet: the guest's anon pages stand in for it.
    assert_eq!(
        balloon_cap(&config, &obs(131_072, None, Some(guest))).0,
        131_072 - 20_000 - 4096
    );
    // Nothing known: a quarter of RAM stays, or the reserve if that is more.
    assert_eq!(
        balloon_cap(&config, &obs(131_072, None, None)).0,
        131_072 - 32_768
    );
    assert_eq!(balloon_cap(&config, &obs(8000, None, None)).0, 8000 - 4096);
    // A guest that says more is hot than the host holds is believed up to what it holds.
    let liar = GuestView {
        active_anon_pages: 100_000,
        kernel_pages: 100_000,
        ..Default::default()
    };
    let o = Observation {
        resident_pages: 30_000,
        ..obs(131_072, Some(1000), Some(liar))
    };
    assert_eq!(balloon_cap(&config, &o).0, 131_072 - 30_000 - 30_000 - 4096);
}

#[test]
fn a_held_need_lowers_the_cap_and_never_raises_it() {
    let config = PolicyConfig::default();
    let squeezed = GuestView {
        active_file_pages: 5000,
        kernel_pages: 2000,
        ..Default::default()
    };
    let o = Observation {
        resident_pages: 20_000,
        ..obs(131_072, Some(1000), Some(squeezed))
    };
    let held = Need {
        working_set: 20_000,
        guest_hot: Some(20_000),
        kernel: 6000,
    };
    assert_eq!(
        held_balloon_cap(&config, &o, Some(held)),
        (
            131_072 - 26_000 - 4096,
            Keep::Held {
                need: held,
                keep: 30_096
            }
        )
    );
    // Less held than the guest shows now: the current figures rule.
    let small = Need {
        working_set: 10,
        guest_hot: None,
        kernel: 10,
    };
    assert_eq!(
        held_balloon_cap(&config, &o, Some(small)),
        balloon_cap(&config, &o)
    );
    assert_eq!(
        held_balloon_cap(&config, &o, None),
        balloon_cap(&config, &o)
    );
}

#[test]
fn cap_never_underflows() {
    let config = PolicyConfig {
        reserve_pages: u64::MAX,
        ..Default::default()
    };
    assert_eq!(balloon_cap(&config, &obs(1000, Some(u64::MAX), None)).0, 0);
    assert_eq!(balloon_cap(&config, &obs(0, None, None)).0, 0);
    let config = PolicyConfig::default();
    assert_eq!(balloon_cap(&config, &obs(1000, Some(5000), None)).0, 0);
    let hostile = GuestView {
        anon_pages: u64::MAX,
        ..Default::default()
    };
    assert_eq!(
        balloon_cap(&config, &obs(u64::MAX, None, Some(hostile))).0,
        0
    );
}

#[test]
fn agent_outcomes_are_charged_to_their_step_and_the_balloon_waits_for_them() {
    let mut policy = Policy::new(PolicyConfig::default());
    policy.set_limit(Some(10_000));
    let guest = GuestView {
        file_pages: 8000,
        anon_pages: 8000,
        swap_total_pages: 1000,
        ..Default::default()
    };
    let o = Observation {
        guest_ram_pages: 100_000,
        resident_pages: 20_000,
        guest: Some(guest.clone()),
        ..Default::default()
    };
    let d = policy.decide(&o);
    // need = 20 000 − 8750: the file request takes the cache to its floor (half the limit,
    // 5000), anon what fits in swap; the balloon waits for their answers.
    assert_eq!(
        d.actions,
        vec![
            Action::DeactivateFile { pages: 3000 },
            Action::DeactivateAnon {
                pages: 1000,
                urgent: false
            },
        ]
    );
    assert!(policy.agent_in_flight());
    // Nothing new while they run, however often the driver decides.
    assert!(policy.decide(&o).actions.is_empty());
    policy.record(&Outcome::AnonDeactivated {
        asked: 1000,
        deactivated: 1000,
    });
    policy.record(&Outcome::AgentFailed {
        step: Step::File,
        reason: "timed out".into(),
    });
    assert!(!policy.agent_in_flight());
    let d = policy.decide(&o);
    assert_eq!(
        d.actions,
        vec![Action::SetBalloon {
            target_pages: 11_250
        }]
    );
    policy.record(&Outcome::BalloonSet {
        target_pages: 11_250,
    });
    let c = policy.counters();
    assert_eq!(
        (c.file.taken, c.file.failed, c.file.asked_pages),
        (1, 1, 3000)
    );
    assert_eq!((c.anon.taken, c.anon.claimed_pages), (1, 1000));
    assert_eq!((c.inflate.taken, c.inflate.asked_pages), (1, 11_250));
    // The balloon took its pages, but resident did not fall: the anon claim obtained nothing.
    // The failed file step rests; anon carries on.
    let o = Observation {
        balloon_target_pages: 11_250,
        balloon_actual_pages: 11_250,
        ..o
    };
    let d = policy.decide(&o);
    assert!(
        matches!(d.actions[..], [Action::DeactivateAnon { pages: 1000, .. }]),
        "{d:?}"
    );
    let c = policy.counters();
    assert_eq!((c.anon.claimed_pages, c.anon.obtained_pages), (1000, 0));
    assert_eq!(c.inflate.obtained_pages, 11_250);
    // A failure goes to the request of its step still waiting; one with nothing waiting is
    // only logged.
    for reason in ["late", "later"] {
        policy.record(&Outcome::AgentFailed {
            step: Step::Anon,
            reason: reason.into(),
        });
    }
    assert_eq!(policy.counters().anon.failed, 1);
    assert_eq!(policy.counters().file.failed, 1);
}

#[test]
fn time_is_charged_to_its_step() {
    let mut policy = Policy::new(PolicyConfig::default());
    policy.add_time(Step::File, Duration::from_millis(1500));
    policy.add_time(Step::File, Duration::from_millis(500));
    policy.add_time(Step::Inflate, Duration::MAX);
    policy.add_time(Step::Inflate, Duration::from_secs(1));
    let c = policy.counters();
    assert_eq!(c.file.time, Duration::from_secs(2));
    assert_eq!(c.inflate.time, Duration::MAX, "saturates");
    assert_eq!(c.anon.time, Duration::ZERO);
    assert_eq!(
        Step::of(&Action::DeactivateAnon {
            pages: 1,
            urgent: false
        }),
        Some(Step::Anon)
    );
    assert_eq!(Step::of(&Action::SetBalloon { target_pages: 1 }), None);
}

/// Hostile or absurd numbers from the guest (and the driver) must never panic.
#[test]
fn extreme_observations_do_not_panic() {
    let values = [0, 1, 999, 1000, u64::MAX / 2, u64::MAX - 1, u64::MAX];
    let psis = [0.0, f64::NAN, f64::INFINITY, -1.0, 1e300];
    let limits = [None, Some(0), Some(1), Some(8000), Some(u64::MAX)];
    let configs = [
        PolicyConfig::default(),
        PolicyConfig {
            reserve_pages: u64::MAX,
            deflate_step_pages: u64::MAX,
            psi_full_starved_avg10: f64::NAN,
            psi_some_pressed_avg10: f64::NAN,
            refault_pages_per_epoch: u64::MAX,
            sustained_epochs: 0,
        },
        PolicyConfig {
            reserve_pages: 0,
            deflate_step_pages: 0,
            psi_full_starved_avg10: 0.0,
            psi_some_pressed_avg10: 0.0,
            refault_pages_per_epoch: 0,
            sustained_epochs: u32::MAX,
        },
    ];
    let mut rounds = 0u64;
    for config in configs {
        for limit in limits {
            let mut policy = Policy::new(config);
            policy.set_limit(limit);
            for (i, &a) in values.iter().enumerate() {
                for &b in &values {
                    for &c in &values {
                        let psi = psis[(i + rounds as usize) % psis.len()];
                        let o = Observation {
                            guest_ram_pages: a,
                            resident_pages: b,
                            balloon_violation_pages: c,
                            balloon_target_pages: c,
                            balloon_actual_pages: values[(rounds % 7) as usize],
                            working_set_pages: (!rounds.is_multiple_of(3)).then_some(c),
                            guest: (!rounds.is_multiple_of(4)).then_some(GuestView {
                                file_pages: b,
                                anon_pages: c,
                                free_pages: a,
                                swap_total_pages: b,
                                swap_used_pages: a,
                                psi_full_avg10: psi,
                                psi_some_avg10: psi,
                                active_file_pages: c,
                                active_anon_pages: a,
                                refaults: values[(rounds % 5) as usize],
                                kernel_pages: b,
                            }),
                            agent_absent: rounds.is_multiple_of(8),
                        };
                        let d = policy.decide(&o);
                        for action in &d.actions {
                            policy.record(&match *action {
                                Action::DeactivateFile { pages } => Outcome::FileDeactivated {
                                    asked: pages,
                                    freed: c,
                                },
                                Action::DeactivateAnon { pages, .. } => Outcome::AnonDeactivated {
                                    asked: pages,
                                    deactivated: b,
                                },
                                Action::SetBalloon { target_pages } => {
                                    Outcome::BalloonSet { target_pages }
                                }
                            });
                        }
                        rounds += 1;
                        if rounds.is_multiple_of(5) {
                            policy.set_limit(limits[(rounds / 5 % 5) as usize]);
                        }
                    }
                }
            }
        }
    }
    assert!(rounds > 1000);
}

#[test]
fn actions_and_outcomes_read_as_sentences_with_pages_and_mib() {
    let shown = |a: &dyn std::fmt::Display| a.to_string();
    assert_eq!(
        shown(&Action::SetBalloon {
            target_pages: 68_819
        }),
        "set the balloon target to 68819 pages (268.8 MiB)"
    );
    assert_eq!(
        shown(&Action::DeactivateAnon {
            pages: 256,
            urgent: true
        }),
        "ask the agent to page out 256 pages (1.0 MiB) of anon memory"
    );
    assert_eq!(
        shown(&Outcome::FileDeactivated {
            asked: 39_000,
            freed: 1
        }),
        "the agent claims 1 page (0.0 MiB) freed of 39000 asked"
    );
    let failed = Outcome::AgentFailed {
        step: Step::File,
        reason: "no answer within 4 s".into(),
    };
    assert_eq!(
        shown(&failed),
        "the agent did not carry out the file step: no answer within 4 s"
    );
}
