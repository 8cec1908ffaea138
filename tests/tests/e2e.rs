//! End-to-end scenarios: a real Linux guest booted by ballast, directly on this
//! host's KVM or inside the nested L1 test host (see tests/harness/run-scenario.sh).
//! They run with BALLAST_E2E=1 (`make test` sets it) and are skipped otherwise.
//!
//! The tests are registered from the folder list: every folder of `tests/scenarios` with a
//! `guest.sh` is a test of its name (`cargo test -p ballast-e2e --test e2e -- limit-reclaim`),
//! so adding a scenario needs no Rust change. Besides them: `scenarios_are_well_formed` (no
//! VM) and `scenarios_from_env` (the folders of `$BALLAST_SCENARIOS`).

use ballast_e2e::{read_expect, run_and_check, run_builtin, scenario_folders, scenarios_dir};
use libtest_mimic::{Arguments, Failed, Trial};
use std::path::PathBuf;

fn main() {
    let args = Arguments::from_args();
    let mut trials = vec![
        Trial::test("scenarios_are_well_formed", scenarios_are_well_formed),
        Trial::test("scenarios_from_env", scenarios_from_env),
    ];
    let folders = scenario_folders(&scenarios_dir()).unwrap_or_else(|e| panic!("{e}"));
    for dir in folders {
        let name = folder_name(&dir);
        let scenario = name.clone();
        trials.push(Trial::test(name, move || {
            run_builtin(&scenario);
            Ok(())
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}

fn folder_name(dir: &std::path::Path) -> String {
    dir.file_name()
        .expect("a scenario folder has a name")
        .to_string_lossy()
        .into_owned()
}

/// Every scenario folder in $BALLAST_SCENARIOS (anywhere on disk), in one run.
fn scenarios_from_env() -> Result<(), Failed> {
    let Some(dir) = std::env::var_os("BALLAST_SCENARIOS") else {
        eprintln!("skipped: set BALLAST_SCENARIOS=DIR to run the scenarios in DIR");
        return Ok(());
    };
    if !ballast_e2e::e2e_enabled() {
        return Ok(());
    }
    let dirs = scenario_folders(&PathBuf::from(&dir))?;
    if dirs.is_empty() {
        return Err(format!(
            "no scenario folder (with a guest.sh) in {}",
            dir.to_string_lossy()
        )
        .into());
    }
    run_and_check(&dirs)?;
    Ok(())
}

/// No VM needed: every built-in scenario is complete.
fn scenarios_are_well_formed() -> Result<(), Failed> {
    for dir in scenario_folders(&scenarios_dir())? {
        let name = folder_name(&dir);
        if !dir.join("ballast.args").is_file() {
            return Err(format!("{name}: no ballast.args").into());
        }
        let expect = read_expect(&dir)?;
        if expect.get("ballast_exit").is_none() {
            return Err(format!("{name}: expect.json does not check ballast_exit").into());
        }
        check_disks(&dir).map_err(|e| format!("{name}: disks: {e}"))?;
    }
    Ok(())
}

/// A scenario's `disks` file, as run-scenario.sh reads it: `NAME [readonly] [size=MIB]
/// [from=DIR] [gen=SCRIPT]` a line, NAME a shell variable name (after.sh gets
/// DISK_<NAME>), DIR and SCRIPT in the scenario folder.
fn check_disks(dir: &std::path::Path) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(dir.join("disks")) else {
        return Ok(());
    };
    let mut names = std::collections::HashSet::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        let valid = name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if !valid {
            return Err(format!("{name}: not a shell variable name"));
        }
        if !names.insert(name.to_ascii_uppercase()) {
            return Err(format!("{name}: named twice"));
        }
        for word in words {
            match word.split_once('=') {
                None if word == "readonly" => {}
                Some(("size", v)) if v.parse::<u32>().is_ok_and(|n| n > 0) => {}
                Some(("from", v)) if dir.join(v).is_dir() => {}
                Some(("gen", v)) if dir.join(v).is_file() => {}
                _ => return Err(format!("{name}: bad word {word}")),
            }
        }
    }
    Ok(())
}
