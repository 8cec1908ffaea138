//! End-to-end scenarios: a real Linux guest booted by ballast, directly on this
//! host's KVM or inside the nested L1 test host (see tests/harness/run-scenario.sh).
//! They run with BALLAST_E2E=1 (`make test` sets it) and are skipped otherwise.

use ballast_e2e::{read_expect, run_and_check, run_builtin, scenario_folders, scenarios_dir};
use std::path::PathBuf;

#[test]
fn boot_1_vcpu() {
    run_builtin("boot-1-vcpu");
}

#[test]
fn boot_2_vcpus() {
    run_builtin("boot-2-vcpus");
}

#[test]
fn virtio_mmio_discovery() {
    run_builtin("virtio-mmio-discovery");
}

#[test]
fn demo() {
    run_builtin("demo");
}

/// Issue 3: inflating by 64 MiB lowers ballast's RSS by at least 85 % of it and the guest's
/// MemTotal by 64 MiB; deflating gives it back.
#[test]
fn balloon_inflate() {
    run_builtin("balloon-inflate");
}

/// Issue 3: with the balloon large, an allocation beyond free memory deflates it (OOM path)
/// and the guest survives.
#[test]
fn balloon_deflate_on_oom() {
    run_builtin("balloon-deflate-on-oom");
}

/// Issue 3: freed guest memory goes back to the host without any inflate.
#[test]
fn balloon_free_page_reporting() {
    run_builtin("balloon-free-page-reporting");
}

/// Issue 3: the statistics follow an inflate and a guest allocation.
#[test]
fn balloon_stats() {
    run_builtin("balloon-stats");
}

/// Every scenario folder in $BALLAST_SCENARIOS (anywhere on disk), in one run.
#[test]
fn scenarios_from_env() {
    let Some(dir) = std::env::var_os("BALLAST_SCENARIOS") else {
        eprintln!("skipped: set BALLAST_SCENARIOS=DIR to run the scenarios in DIR");
        return;
    };
    if !ballast_e2e::e2e_enabled() {
        return;
    }
    let dirs = scenario_folders(&PathBuf::from(&dir)).unwrap();
    assert!(
        !dirs.is_empty(),
        "no scenario folder (with a guest.sh) in {}",
        dir.to_string_lossy()
    );
    if let Err(e) = run_and_check(&dirs) {
        panic!("{e}");
    }
}

/// No VM needed: every built-in scenario is complete and has a test above.
#[test]
fn builtin_scenarios_are_well_formed() {
    let source = include_str!("e2e.rs");
    for dir in scenario_folders(&scenarios_dir()).unwrap() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            dir.join("ballast.args").is_file(),
            "{name}: no ballast.args"
        );
        let expect = read_expect(&dir).unwrap();
        assert!(
            expect.get("ballast_exit").is_some(),
            "{name}: expect.json does not check ballast_exit"
        );
        assert!(
            source.contains(&format!("run_builtin(\"{name}\")")),
            "{name}: no #[test] runs it"
        );
    }
}
