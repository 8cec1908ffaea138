//! How long `deactivate_file` takes per 1000 pages, on this machine's disk.
//!
//! `cargo bench -p ballast-agent` prints a table: per pass (big files, small files) and per
//! counter (`cachestat`, `mincore`), the median over several rounds of the pass time divided
//! by the pages it freed, plus the fixed costs (candidate search, write-back). The page cache
//! is refilled between rounds by reading the files again (readahead folios), or by writing
//! them again (the large folios a fresh write leaves).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ballast_agent::cache::CacheCounter;
use ballast_agent::page_size;
use ballast_agent::protocol::{DeactivateFile, FileReport};
use ballast_agent::reclaim::candidates::CandidateConfig;
use ballast_agent::reclaim::fallback::FallbackTargets;
use ballast_agent::reclaim::file::{deactivate_file, FileReclaimConfig};

const BIG_FILES: usize = 16;
const BIG_BYTES: usize = 8 << 20;
const SMALL_FILES: usize = 2000;
const SMALL_BYTES: usize = 8 << 10;
const ROUNDS: usize = 7;

fn main() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-deactivate-{}", std::process::id()));
    let big_dir = dir.join("big");
    let small_dir = dir.join("small");
    std::fs::create_dir_all(&big_dir).unwrap();
    std::fs::create_dir_all(&small_dir).unwrap();
    let big: Vec<PathBuf> = (0..BIG_FILES)
        .map(|i| big_dir.join(i.to_string()))
        .collect();
    let small: Vec<PathBuf> = (0..SMALL_FILES)
        .map(|i| small_dir.join(i.to_string()))
        .collect();
    write_all(&big, BIG_BYTES);
    write_all(&small, SMALL_BYTES);
    let page = page_size();
    let big_pages = (BIG_FILES * BIG_BYTES) as u64 / page;
    let small_pages = (SMALL_FILES * SMALL_BYTES) as u64 / page;

    println!(
        "deactivate_file on {} ({} pages of {page} B): {BIG_FILES} files of {} MiB, {SMALL_FILES} of {} KiB; median of {ROUNDS} rounds",
        dir.display(),
        big_pages + small_pages,
        BIG_BYTES >> 20,
        SMALL_BYTES >> 10
    );
    println!("| counter | cache filled by | pass | µs per 1000 pages | pass µs | pages freed | search µs (files) | write-back µs |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut counters = vec![CacheCounter::Mincore];
    if CacheCounter::detect() == CacheCounter::Cachestat {
        counters.insert(0, CacheCounter::Cachestat);
    }
    for counter in counters {
        let config = FileReclaimConfig {
            candidates: CandidateConfig {
                scan_roots: vec![dir.canonicalize().unwrap()],
                budget: Duration::from_secs(5),
                max_examined: 1_000_000,
            },
            counter,
            fallback: FallbackTargets {
                memory_reclaim: None,
                drop_caches: dir.join("unused"),
            },
            writeback_wait: Duration::from_secs(5),
        };
        for (fill, rewrite) in [("read", false), ("write", true)] {
            let mut big_runs = Vec::new();
            let mut small_runs = Vec::new();
            for _ in 0..ROUNDS {
                if rewrite {
                    write_all(&big, BIG_BYTES);
                    write_all(&small, SMALL_BYTES);
                } else {
                    read_all(&big);
                    read_all(&small);
                }
                big_runs.push(run(&config, big_pages));
                small_runs.push(run(&config, small_pages));
            }
            report(counter, fill, "big", &mut big_runs, |r| {
                (r.big.elapsed_us, r.big.freed_pages)
            });
            report(counter, fill, "small", &mut small_runs, |r| {
                (r.small.elapsed_us, r.small.freed_pages)
            });
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn run(config: &FileReclaimConfig, target_pages: u64) -> FileReport {
    let request = DeactivateFile {
        target_pages,
        budget_ms: None,
        allow_fallback: false,
    };
    deactivate_file(&request, config, Duration::from_secs(60))
}

fn report(
    counter: CacheCounter,
    fill: &str,
    pass: &str,
    runs: &mut [FileReport],
    of: impl Fn(&FileReport) -> (u64, u64),
) {
    let per_1000 = |r: &FileReport| {
        let (us, pages) = of(r);
        us as f64 * 1000.0 / pages.max(1) as f64
    };
    runs.sort_by(|a, b| per_1000(a).total_cmp(&per_1000(b)));
    let median = &runs[runs.len() / 2];
    let (us, pages) = of(median);
    println!(
        "| {counter:?} | {fill} | {pass} | {:.0} | {us} | {pages} | {} ({}) | {} |",
        per_1000(median),
        median.candidates.elapsed_us,
        median.candidates.files,
        median.writeback.elapsed_us
    );
}

fn write_all(files: &[PathBuf], bytes: usize) {
    let data = vec![0x42u8; bytes];
    for path in files {
        let mut f = File::create(path).unwrap();
        f.write_all(&data).unwrap();
    }
    for path in files {
        File::open(path).unwrap().sync_all().unwrap();
    }
}

fn read_all(files: &[PathBuf]) {
    for path in files {
        std::fs::read(path).unwrap();
    }
}
