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

/// The `make demo` scenario (a limit cut with the reclaim shown).
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

/// Issue 3: a guest process fills nearly all free memory with a pattern and exits; once the
/// balloon inflates over it, ballast's guest RAM (read through /proc/PID/mem) holds the pattern
/// at most in the pages the guest kept, and it does not come back with the deflate; the guest
/// then reads back zeros.
#[test]
fn balloon_scrub() {
    run_builtin("balloon-scrub");
}

/// The host side of a scenario: host.sh gets ballast's PID, API socket (pause/resume),
/// the console as a file and a line to the guest's console.
#[test]
fn host_script() {
    run_builtin("host-script");
}

/// virtio-blk: the guest mounts an ext4 disk built from generated files and reads them back.
#[test]
fn block_ext4_read() {
    run_builtin("block-ext4-read");
}

/// virtio-blk: files written and synced in the guest are in the images afterwards, each
/// on the right disk.
#[test]
fn block_write_sync() {
    run_builtin("block-write-sync");
}

/// virtio-blk: a read-only disk refuses every write and the image stays byte for byte.
#[test]
fn block_readonly() {
    run_builtin("block-readonly");
}

/// virtio-blk: reading 200 MiB of files fills the guest's page cache by as much.
#[test]
fn block_page_cache() {
    run_builtin("block-page-cache");
}

/// The guest init switches root to a disk (ballast.root=/dev/vda).
#[test]
fn block_root() {
    run_builtin("block-root");
}

/// Issue 6: the guest reads 100 MiB from its disk; the VMM's agent link reports the agent
/// ready with guest stats; a host tool reaches the agent through the hybrid vsock socket
/// (CONNECT 52) and a `deactivate_file` of 96 MiB drops the big files, not the small ones.
#[test]
fn agent_deactivate_file() {
    run_builtin("agent-deactivate-file");
}

/// Issue 6: with zram swap (`ballast.zram=128M`), a process holds 64 MiB of anon memory;
/// `deactivate_anon` of 32 MiB with MADV_COLD swaps nothing, urgently (MADV_PAGEOUT) it moves
/// them to swap; the process lives on and reads its data back intact.
#[test]
fn agent_deactivate_anon() {
    run_builtin("agent-deactivate-anon");
}

/// Issue 7: a 512 MiB guest with 256 MiB of page cache and a busy 48 MiB anon working set;
/// `ballast limit set 192M` brings resident to the limit and 12.5 % under it, the file step
/// before the balloon step, the busy process keeps its working set; raising the limit deflates.
#[test]
fn limit_reclaim() {
    run_builtin("limit-reclaim");
}

/// Four limit cuts and clears in one boot of a guest that re-reads its page cache and keeps
/// 48 MiB of anon memory busy: every cut reaches the threshold, every clear empties the balloon,
/// and the guest survives them all.
#[test]
fn limit_cycles() {
    run_builtin("limit-cycles");
}

/// Issue 7, `--host-enforce`: ballast starts in its own cgroup v2 (the L1 test host mounts
/// cgroup2) with memory.high max; a guest without agent or balloon driver stays over a 96 MiB
/// limit (guest_unresponsive), so memory.high becomes the limit + 64 MiB; clearing the limit
/// writes max again; at exit ballast leaves the cgroup and removes it.
#[test]
fn limit_host_enforce() {
    run_builtin("limit-host-enforce");
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
        if let Err(e) = check_disks(&dir) {
            panic!("{name}: disks: {e}");
        }
    }
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
