//! `deactivate_file` end to end on this machine: the agent over its socket, real files on a
//! disk-backed filesystem, the page cache measured with mincore.

mod common;

use std::path::PathBuf;

use ballast_agent::protocol::DeactivateFile;
use common::{cached_pages, not_disk_backed, write_cached_file, Agent, TestDir, PAGE};

const BIG_FILES: usize = 4;
const BIG_PAGES: u64 = 8 << 20 >> 12; // 8 MiB
const SMALL_FILES: usize = 200;
const SMALL_PAGES: u64 = 8 << 10 >> 12; // 8 KiB

fn total(files: &[PathBuf]) -> u64 {
    files.iter().map(|f| cached_pages(f)).sum()
}

#[test]
fn big_files_first_then_small_ones_stopping_at_the_target() {
    assert_eq!(
        PAGE,
        ballast_agent::page_size(),
        "the test assumes 4 KiB pages"
    );
    let dir = TestDir::new("deactivate-file");
    if let Some(why) = not_disk_backed(dir.path()) {
        eprintln!("skipped: {why}; page cache there cannot be dropped");
        return;
    }
    let big: Vec<PathBuf> = (0..BIG_FILES)
        .map(|i| dir.path().join(format!("big-{i}")))
        .collect();
    let small: Vec<PathBuf> = (0..SMALL_FILES)
        .map(|i| dir.path().join(format!("small/{i:03}")))
        .collect();
    std::fs::create_dir(dir.path().join("small")).unwrap();
    for f in &big {
        write_cached_file(f, BIG_PAGES);
    }
    for f in &small {
        write_cached_file(f, SMALL_PAGES);
    }
    let big_total = BIG_FILES as u64 * BIG_PAGES;
    let small_total = SMALL_FILES as u64 * SMALL_PAGES;
    if total(&big) < big_total || total(&small) < small_total {
        eprintln!("skipped: the files did not stay cached (memory pressure on this machine?)");
        return;
    }

    let dir_arg = dir.path().to_str().unwrap();
    let agent = Agent::start(&["--scan-root", dir_arg]);
    let mut client = agent.client();

    // 1. A target the size of the big files: they go, the small ones stay.
    let first = client
        .deactivate_file(DeactivateFile {
            target_pages: big_total,
            budget_ms: Some(10_000),
            allow_fallback: false,
        })
        .unwrap();
    eprintln!("first: {}", serde_json::to_string_pretty(&first).unwrap());
    assert_eq!(first.candidates.big_files, BIG_FILES as u64);
    assert_eq!(first.candidates.small_files, SMALL_FILES as u64);
    assert!(first.candidates.complete);
    assert!(first.writeback.synced);
    assert_eq!(first.big.freed_pages, big_total);
    assert_eq!(first.big.files_touched, BIG_FILES as u64);
    assert_eq!(first.small.freed_pages, 0);
    assert_eq!(first.small.files_touched, 0);
    assert!(first.reached_target);
    assert!(first.fallback.is_none());
    for f in &big {
        assert_eq!(cached_pages(f), 0, "{} still cached", f.display());
    }
    assert_eq!(
        total(&small),
        small_total,
        "small files were dropped too early"
    );

    // 2. A larger target: the small files go too; the candidates cannot reach it, and the
    // request forbids the whole-guest fallback (this test must not drop the host's cache).
    let second = client
        .deactivate_file(DeactivateFile {
            target_pages: small_total + 1000,
            budget_ms: Some(10_000),
            allow_fallback: false,
        })
        .unwrap();
    eprintln!("second: {}", serde_json::to_string_pretty(&second).unwrap());
    assert_eq!(second.big.freed_pages, 0);
    assert_eq!(second.small.freed_pages, small_total);
    assert_eq!(second.small.files_touched, SMALL_FILES as u64);
    assert!(!second.reached_target);
    assert!(second.fallback.is_none());
    assert_eq!(total(&small), 0);
}

#[test]
fn a_target_below_the_big_files_leaves_some_of_them() {
    let dir = TestDir::new("deactivate-file-partial");
    if let Some(why) = not_disk_backed(dir.path()) {
        eprintln!("skipped: {why}");
        return;
    }
    let files: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("f{i}"))).collect();
    for f in &files {
        write_cached_file(f, 1024);
    }
    write_cached_file(&dir.path().join("tiny"), 1);
    if total(&files) < 3 * 1024 {
        eprintln!("skipped: the files did not stay cached");
        return;
    }
    let agent = Agent::start(&["--scan-root", dir.path().to_str().unwrap()]);
    let report = agent
        .client()
        .deactivate_file(DeactivateFile {
            target_pages: 1500,
            budget_ms: Some(10_000),
            allow_fallback: false,
        })
        .unwrap();
    // 1500 pages: one whole file and about half of another (to the large-folio grain).
    let freed = report.big.freed_pages;
    assert!((1500..1500 + 512).contains(&freed), "{report:?}");
    assert_eq!(total(&files), 3 * 1024 - freed);
    assert_eq!(cached_pages(&dir.path().join("tiny")), 1);
    assert_eq!(report.small.batches, 0);
}

#[test]
fn the_inventory_made_while_idle_serves_a_request_with_no_time_to_search() {
    use ballast_agent::reclaim::candidates::CandidateConfig;
    use ballast_agent::reclaim::file::{FileReclaim, FileReclaimConfig};
    use std::time::Duration;

    let dir = TestDir::new("inventory");
    if let Some(why) = not_disk_backed(dir.path()) {
        eprintln!("skipped: {why}; page cache there cannot be dropped");
        return;
    }
    let files: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("cold-{i}")))
        .collect();
    for f in &files {
        write_cached_file(f, BIG_PAGES);
    }
    if total(&files) < 2 * BIG_PAGES {
        eprintln!("skipped: the files did not stay cached (memory pressure on this machine?)");
        return;
    }
    let mut config = FileReclaimConfig::detect();
    config.candidates = CandidateConfig {
        scan_roots: vec![dir.path().canonicalize().unwrap()],
        ..CandidateConfig::default()
    };
    let mut reclaim = FileReclaim::new(config);
    // While idle, with the time to search.
    reclaim.refresh_inventory();
    // Then a request whose search has no time at all: the inventory is what it works from.
    reclaim.config.candidates.budget = Duration::ZERO;
    let report = reclaim.deactivate(
        &DeactivateFile {
            target_pages: BIG_PAGES,
            budget_ms: None,
            allow_fallback: false,
        },
        Duration::from_secs(10),
    );
    assert!(report.big.freed_pages >= BIG_PAGES / 2, "{report:?}");
    assert!(report.fallback.is_none());
}
