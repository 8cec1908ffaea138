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
