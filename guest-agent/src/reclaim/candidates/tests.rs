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
    let found = gather(&cfg, CacheCounter::detect(), &mut SearchState::default());
    assert!(!found.report.complete);
    assert!(found.files.len() <= 5);
    cfg.max_examined = 1000;
    cfg.budget = Duration::ZERO;
    assert!(
        !gather(&cfg, CacheCounter::detect(), &mut SearchState::default())
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
    loop {
        rounds += 1;
        assert!(rounds < 50, "the walk never finished");
        let round = gather(&cfg, CacheCounter::detect(), &mut state);
        found.extend(round.files.into_iter().map(|c| c.path));
        if round.report.complete {
            break;
        }
    }
    assert!(rounds >= 4, "{rounds} rounds for 30 files, 8 at a time");
    assert_eq!(found, all);
    // A finished walk starts over.
    cfg.max_examined = 1000;
    assert_eq!(
        gather(&cfg, CacheCounter::detect(), &mut state).files.len(),
        30
    );
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
    let first = gather(&cfg, CacheCounter::detect(), &mut state);
    state.remember(first.files);
    cfg.max_examined = 1;
    let found = gather(&cfg, CacheCounter::detect(), &mut state);
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
