//! The tracker's cost per GiB of guest RAM per epoch, side by side in one run with the bare
//! syscall floor:
//! - `floor: mincore`: one `mincore` over the 1 GiB region, what residency alone must cost;
//! - `sample`: one `Tracker::sample` (residency, dirty log, vm-memory's bitmap, ages, working
//!   set) with a fake KVM dirty log that hands out a bitmap with 0 %, 1 % or 10 % of the pages
//!   set (its copy stands for KVM_GET_DIRTY_LOG's copy-out; the ioctl itself costs 2–6 µs on an
//!   untouched 1 GiB slot on these machines, see shared/nested-kvm.md), and with a quarter of
//!   RAM in the balloon in 1024 runs.
//!
//! Over 1 GiB that is fully resident (every page touched once, as a guest that has run a while)
//! and over 1 GiB never touched (a fresh guest). A paired summary at the end interleaves the
//! floor and the 1 % sample round by round and reports their medians.
//!
//! Run with `cargo bench -p ballast-manager --bench tracker`.

use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use vm_memory::{GuestAddress, GuestMemoryBackend};

use ballast_manager::tracker::{
    BalloonPages, DirtyLog, GuestMemoryMmap, GuestRam, Tracker, TrackerConfig,
};

const GIB: u64 = 1 << 30;
const PAGE: u64 = 4096;
const PAGES: u64 = GIB / PAGE;

/// Stands for KVM: the same dirty bitmap every epoch.
struct FakeDirtyLog {
    bitmap: Vec<u64>,
}

impl FakeDirtyLog {
    /// One page in `every` dirty, spread over the whole region (`every` 0: none).
    fn one_in(every: u64) -> Self {
        let mut bitmap = vec![0u64; (PAGES / 64) as usize];
        if every != 0 {
            for page in (0..PAGES).step_by(every as usize) {
                bitmap[(page / 64) as usize] |= 1 << (page % 64);
            }
        }
        FakeDirtyLog { bitmap }
    }
}

impl DirtyLog for FakeDirtyLog {
    fn take_dirty(&mut self, _region: usize, _pages: u64) -> io::Result<Vec<u64>> {
        Ok(self.bitmap.clone())
    }
}

fn guest_memory(resident: bool) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), GIB as usize)]).unwrap();
    if resident {
        let host = mem.get_host_address(GuestAddress(0)).unwrap();
        for page in 0..PAGES {
            // SAFETY: every page offset is inside the 1 GiB mapping `mem` owns.
            unsafe { host.add((page * PAGE) as usize).write_volatile(1) };
        }
    }
    mem
}

fn mincore(mem: &GuestMemoryMmap, vector: &mut [u8]) {
    let host = mem.get_host_address(GuestAddress(0)).unwrap();
    // SAFETY: the 1 GiB from `host` is `mem`'s live mapping and `vector` has a byte per page.
    let ret = unsafe { libc::mincore(host.cast(), GIB as usize, vector.as_mut_ptr()) };
    assert_eq!(ret, 0);
}

/// A quarter of guest RAM in the balloon, as 1024 runs of 64 pages, as the balloon device's
/// bitmap is copied for the driver. (Over resident RAM every one of them is a violation: the
/// worst case of the scan.)
fn quarter_ballooned(mem: &GuestMemoryMmap) -> BalloonPages {
    let runs: Vec<(u64, u64)> = (0..PAGES / 256).map(|run| (run * 256, 64)).collect();
    BalloonPages::from_runs(&mem.regions(), &runs)
}

fn tracking(c: &mut Criterion) {
    for (state, resident) in [("resident", true), ("untouched", false)] {
        let mem = guest_memory(resident);
        let empty = BalloonPages::new();
        let quarter = quarter_ballooned(&mem);

        let mut group = c.benchmark_group(format!("tracker_1GiB_{state}"));
        group
            .throughput(Throughput::Bytes(GIB))
            .sample_size(50)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));

        group.bench_function("floor: mincore", |b| {
            let mut vector = vec![0u8; PAGES as usize];
            b.iter(|| mincore(&mem, black_box(&mut vector)))
        });
        let cases = [
            ("sample: 0% dirty", 0, &empty),
            ("sample: 1% dirty", 100, &empty),
            ("sample: 10% dirty", 10, &empty),
            ("sample: 1% dirty, 25% ballooned", 100, &quarter),
        ];
        for (name, every, balloon) in cases {
            group.bench_function(name, |b| {
                let mut tracker = Tracker::new(&mem, TrackerConfig::default());
                let mut log = FakeDirtyLog::one_in(every);
                b.iter(|| tracker.sample(&mem, &mut log, balloon).unwrap())
            });
        }
        group.finish();
    }
}

/// The floor and the 1 % sample interleaved over resident RAM, so both see the same machine:
/// with an empty balloon, and with a quarter of RAM in it (released on the host, as an honest
/// guest's balloon is: the violation scan looks at every balloon word and finds nothing).
fn paired_summary() {
    let mem = guest_memory(true);
    paired(
        &mem,
        &BalloonPages::new(),
        "1 GiB resident, 1% dirty",
        PAGES,
    );
    let quarter = quarter_ballooned(&mem);
    let host = mem.get_host_address(GuestAddress(0)).unwrap();
    for run in 0..PAGES / 256 {
        // SAFETY: each 64-page run lies inside the 1 GiB mapping `mem` owns; dropping its pages
        // only makes the next access read zeros.
        let ret = unsafe {
            libc::madvise(
                host.add((run * 256 * PAGE) as usize).cast(),
                (64 * PAGE) as usize,
                libc::MADV_DONTNEED,
            )
        };
        assert_eq!(ret, 0);
    }
    paired(
        &mem,
        &quarter,
        "3/4 GiB resident, 1/4 in the balloon, 1% dirty",
        PAGES / 4 * 3,
    );
}

fn paired(mem: &GuestMemoryMmap, balloon: &BalloonPages, what: &str, resident: u64) {
    const ROUNDS: usize = 200;
    let mut tracker = Tracker::new(mem, TrackerConfig::default());
    let mut log = FakeDirtyLog::one_in(100);
    let mut vector = vec![0u8; PAGES as usize];
    let (mut floor, mut sample, mut reported) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let start = Instant::now();
        mincore(mem, &mut vector);
        floor.push(start.elapsed());
        let start = Instant::now();
        let s = tracker.sample(mem, &mut log, balloon).unwrap();
        sample.push(start.elapsed());
        reported.push(s.cost);
        assert_eq!(s.resident_pages, resident);
        assert_eq!(s.ballooned_resident_pages, 0);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (floor, sample, reported) = (
        median(&mut floor),
        median(&mut sample),
        median(&mut reported),
    );
    println!("\npaired summary: median of {ROUNDS} interleaved rounds, {what}");
    println!("  floor: mincore over 1 GiB      {:8.1} µs", micros(floor));
    println!("  tracker sample per GiB         {:8.1} µs", micros(sample));
    println!(
        "  Sample::cost (self-reported)   {:8.1} µs",
        micros(reported)
    );
    println!(
        "  sample / floor                 {:8.2}",
        sample.as_secs_f64() / floor.as_secs_f64()
    );
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

criterion_group!(benches, tracking);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Only in `cargo bench`, not when the bench target is merely run as a test.
    if std::env::args().any(|arg| arg == "--bench") {
        paired_summary();
    }
}
