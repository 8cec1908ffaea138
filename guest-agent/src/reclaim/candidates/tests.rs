//! Tests of the candidate search: what it finds, what it skips, and its bounds.

use super::*;
use crate::page_size;
use crate::testutil::TempDir;
use std::io::{Read, Write};

fn write_cached(path: &Path, pages: u64) {
    let mut f = File::create(path).unwrap();
    f.write_all(&vec![1u8; (pages * page_size()) as usize])
        .unwrap();
    f.sync_all().unwrap();
    let mut sink = Vec::new();
    File::open(path).unwrap().read_to_end(&mut sink).unwrap();
}

fn config(root: &Path) -> CandidateConfig {
    CandidateConfig {
        scan_roots: vec![root.canonicalize().unwrap()],
        ..CandidateConfig::default()
    }
}

#[test]
fn finds_files_under_the_root_only_and_counts_them() {
    let dir = TempDir::new("candidates");
    if !dir.disk_backed() {
        return;
    }
    fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
    write_cached(&dir.path().join("big"), 64);
    write_cached(&dir.path().join("sub/deeper/small"), 2);
    File::create(dir.path().join("empty")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
    let found = gather(
        &config(dir.path()),
        CacheCounter::detect(),
        &mut SearchState::default(),
        Purpose::Request,
    );
    let mut names: Vec<_> = found
        .files
        .iter()
        .map(|c| c.path.file_name().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["big", "small"]);
    assert!(found.report.complete);
    assert_eq!(found.report.big_files, 1);
    assert_eq!(found.report.small_files, 1);
    let big = found.files.iter().find(|c| c.is_big()).unwrap();
    assert!(big.cached_pages >= 60);
}

#[test]
fn an_open_file_is_in_use() {
    let dir = TempDir::new("candidates-open");
    if !dir.disk_backed() {
        return;
    }
    let path = dir.path().join("held");
    write_cached(&path, 4);
    // Held open by a child process (our own descriptors are never looked at).
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .stdin(File::open(&path).unwrap())
        .spawn()
        .unwrap();
    let found = gather(
        &config(dir.path()),
        CacheCounter::detect(),
        &mut SearchState::default(),
        Purpose::Request,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(found.files.len(), 1);
    assert!(found.files[0].in_use);
}

#[test]
fn bounds_stop_the_search() {
    let dir = TempDir::new("candidates-bound");
    if !dir.disk_backed() {
        return;
    }
    for i in 0..20 {
        write_cached(&dir.path().join(format!("f{i}")), 1);
    }
    let mut cfg = config(dir.path());
    cfg.max_examined = 5;
    let found = gather(
        &cfg,
        CacheCounter::detect(),
        &mut SearchState::default(),
        Purpose::Request,
    );
    assert!(!found.report.complete);
    assert!(found.files.len() <= 5);
    cfg.max_examined = 1000;
    cfg.budget = Duration::ZERO;
    assert!(
        !gather(
            &cfg,
            CacheCounter::detect(),
            &mut SearchState::default(),
            Purpose::Request,
        )
        .report
        .complete
    );
}

#[test]
fn the_walk_resumes_where_it_stopped() {
    let dir = TempDir::new("candidates-resume");
    if !dir.disk_backed() {
        return;
    }
    let mut all = std::collections::BTreeSet::new();
    for sub in ["a", "b", "c/d"] {
        fs::create_dir_all(dir.path().join(sub)).unwrap();
        for i in 0..10 {
            let path = dir.path().join(sub).join(format!("f{i}"));
            write_cached(&path, 1);
            all.insert(path.canonicalize().unwrap());
        }
    }
    let mut cfg = config(dir.path());
    cfg.max_examined = 8;
    let mut state = SearchState::default();
    let mut found = std::collections::BTreeSet::new();
    let mut rounds = 0;
    // The inventory resumes its walk whatever came into the cache meanwhile (this machine's
    // other work moves the counters, so whether the end counts as complete is not asked here).
    loop {
        rounds += 1;
        assert!(rounds < 50, "the walk never finished");
        let round = gather(&cfg, CacheCounter::detect(), &mut state, Purpose::Inventory);
        found.extend(round.files.into_iter().map(|c| c.path));
        if state.walk.is_none() {
            break;
        }
    }
    assert!(rounds >= 4, "{rounds} rounds for 30 files, 8 at a time");
    assert_eq!(found, all);
    // A finished walk starts over.
    cfg.max_examined = 1000;
    let again = gather(&cfg, CacheCounter::detect(), &mut state, Purpose::Request);
    assert_eq!(again.files.len(), 30);
    assert!(again.report.complete);
}

#[test]
fn remembered_files_are_looked_at_first() {
    let dir = TempDir::new("candidates-remember");
    if !dir.disk_backed() {
        return;
    }
    fs::create_dir_all(dir.path().join("deep/er")).unwrap();
    for i in 0..5 {
        write_cached(&dir.path().join(format!("other{i}")), 1);
    }
    let path = dir.path().join("deep/er/cached");
    write_cached(&path, 64);
    let mut cfg = config(dir.path());
    let mut state = SearchState::default();
    let first = gather(&cfg, CacheCounter::detect(), &mut state, Purpose::Request);
    state.remember(first.files);
    cfg.max_examined = 1;
    let found = gather(&cfg, CacheCounter::detect(), &mut state, Purpose::Request);
    assert_eq!(found.files.len(), 1);
    assert_eq!(found.files[0].path, path.canonicalize().unwrap());
}

#[test]
fn open_regular_refuses_what_is_not_a_regular_file() {
    assert!(open_regular(Path::new("/dev/null"), false).is_err());
    assert!(open_regular(Path::new("/"), false).is_err());
    let dir = TempDir::new("candidates-link");
    if !dir.disk_backed() {
        return;
    }
    let link = dir.path().join("link");
    std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
    assert!(open_regular(&link, false).is_err());
}

/// Drops the file's (clean) page cache.
fn drop_cache(path: &Path) {
    let file = File::open(path).unwrap();
    // SAFETY: the descriptor is open for the life of `file`; fadvise touches no user memory.
    let err = unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    assert_eq!(err, 0);
}

/// A walk paused across new cache, and the files it is about.
struct PausedWalk {
    _dir: TempDir,
    cfg: CandidateConfig,
    state: SearchState,
    all: std::collections::BTreeSet<PathBuf>,
}

/// 12 files of 8 pages are written to the disk and dropped from the cache; an inventory
/// refresh's walk passes 6 of them (none cached) and pauses; then the guest reads every file,
/// from the disk. `None` where the cache cannot be dropped.
fn walk_half_then_read(name: &str) -> Option<PausedWalk> {
    let dir = TempDir::new(name);
    if !dir.disk_backed() {
        return None;
    }
    let counter = CacheCounter::detect();
    let mut all = std::collections::BTreeSet::new();
    for i in 0..12 {
        let path = dir.path().join(format!("f{i}"));
        write_cached(&path, 8);
        drop_cache(&path);
        all.insert(path.canonicalize().unwrap());
    }
    let cached = |path: &PathBuf| counter.count_file(&File::open(path).unwrap()).unwrap();
    if all.iter().any(|path| cached(path) > 0) {
        eprintln!("skipped: the files' cache could not be dropped");
        return None;
    }
    let mut cfg = config(dir.path());
    cfg.max_examined = 6;
    let mut state = SearchState::default();
    let idle = gather(&cfg, counter, &mut state, Purpose::Inventory);
    assert!(idle.files.is_empty(), "{:?}", idle.report);
    assert!(state.walk.is_some(), "the walk should have paused halfway");
    for path in &all {
        fs::read(path).unwrap();
    }
    cfg.max_examined = 1000;
    Some(PausedWalk {
        _dir: dir,
        cfg,
        state,
        all,
    })
}

/// agent-deactivate-file, nested: the inventory's walk (2 s after the agent started) passed
/// part of the files while the guest was still reading them, found them empty and forgot them;
/// the request resumed that walk, finished the rest and called the search complete, so the
/// big pass missed two of the four big files and the whole-guest fallback ran.
#[test]
fn files_cached_after_the_walk_passed_them_are_found() {
    let Some(mut paused) = walk_half_then_read("candidates-stale") else {
        return;
    };
    let state = &mut paused.state;
    let request = gather(&paused.cfg, CacheCounter::detect(), state, Purpose::Request);
    let found: std::collections::BTreeSet<_> =
        request.files.iter().map(|c| c.path.clone()).collect();
    assert_eq!(found, paused.all, "{:?}", request.report);
    assert!(request.report.complete, "{:?}", request.report);
    // It saw everything: the paused walk has nothing to add.
    assert!(state.walk.is_none());
}

/// The inventory does resume such a walk (to carry it over a big filesystem), but its end
/// does not make the search complete.
#[test]
fn a_walk_paused_across_new_cache_is_not_complete() {
    let Some(mut paused) = walk_half_then_read("candidates-stale-inventory") else {
        return;
    };
    let state = &mut paused.state;
    let idle = gather(
        &paused.cfg,
        CacheCounter::detect(),
        state,
        Purpose::Inventory,
    );
    assert_eq!(idle.files.len(), 6, "{:?}", idle.report);
    assert!(!idle.report.complete, "{:?}", idle.report);
    assert!(state.walk.is_none(), "the walk reached its end");
}
