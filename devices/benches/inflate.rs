//! The host side of inflation: GiB of guest RAM released per second of VMM time, for a stream of
//! 256-PFN inflate arrays (what Linux's driver sends) over 256 MiB of touched guest RAM.
//!
//! Side by side in one run:
//! - `floor`: one `madvise` per 4 KiB guest page, what a device that does not coalesce pays;
//! - `release_pfns/contiguous` and `release_pfns/shuffled`: the device's inflate code path for
//!   arrays of consecutive PFNs and for the same PFNs in random order;
//! - `device/contiguous`: the whole device on the event loop: 256 descriptors on the inflate
//!   queue, one kick, until the event loop has put them all on the used ring;
//! - `limit`: one `madvise` over the whole 256 MiB.
//!
//! Only the release is timed: every iteration first touches all 256 MiB again (untimed), since
//! releasing memory that is not resident costs next to nothing.
//!
//! Run with `cargo bench -p ballast-devices --bench inflate`.

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use event_manager::{EventManager, SubscriberOps};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use ballast_devices::balloon::{
    release_pfns, Balloon, BalloonBitmap, BalloonConfig, BalloonMetrics,
};
use ballast_virtio::{Activation, GuestMemoryMmap, QueueEvent, VirtioDevice, VirtioInterrupt};

const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;
/// The guest RAM released in each iteration.
const RAM: u64 = 256 * MIB;
const PAGES: u32 = (RAM / PAGE) as u32;
/// PFNs per inflate array, as Linux sends them (VIRTIO_BALLOON_ARRAY_PFNS_MAX).
const PFNS_PER_ARRAY: usize = 256;
/// Where the device benchmark keeps its queues and PFN arrays: RAM outside the released range.
const DRIVER_AREA: u64 = 1 << 30;
const DRIVER_AREA_SIZE: u64 = 2 * MIB;

fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), RAM as usize),
        (GuestAddress(DRIVER_AREA), DRIVER_AREA_SIZE as usize),
    ])
    .unwrap()
}

/// Makes the host back every page of the released range again.
fn touch(mem: &GuestMemoryMmap) {
    for page in 0..u64::from(PAGES) {
        mem.write_obj(1u8, GuestAddress(page * PAGE)).unwrap();
    }
}

/// Times `release` only, touching the memory before each run.
fn timed(iters: u64, mem: &GuestMemoryMmap, mut release: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        touch(mem);
        let start = Instant::now();
        release();
        total += start.elapsed();
    }
    total
}

fn madvise(host: *mut u8, len: u64) {
    // SAFETY: callers pass ranges inside the benchmark's own guest RAM mapping, whose contents
    // nothing here needs to keep.
    let ret = unsafe { libc::madvise(host.cast(), len as usize, libc::MADV_DONTNEED) };
    assert_eq!(ret, 0);
}

/// A deterministic shuffle (xorshift64 + Fisher-Yates): no randomness crate needed.
fn shuffled(mut pfns: Vec<u32>) -> Vec<u32> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..pfns.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        pfns.swap(i, (state % (i as u64 + 1)) as usize);
    }
    pfns
}

fn inflate(c: &mut Criterion) {
    let mem = guest_memory();
    let host = mem.get_host_address(GuestAddress(0)).unwrap();
    let contiguous: Vec<u32> = (0..PAGES).collect();
    let random = shuffled(contiguous.clone());

    let mut group = c.benchmark_group("inflate_256MiB");
    group
        .throughput(Throughput::Bytes(RAM))
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));

    group.bench_function("floor: madvise per 4 KiB page", |b| {
        b.iter_custom(|iters| {
            timed(iters, &mem, || {
                for page in 0..u64::from(PAGES) {
                    madvise(host.wrapping_add((page * PAGE) as usize), PAGE);
                }
            })
        })
    });

    for (name, pfns) in [("contiguous", &contiguous), ("shuffled", &random)] {
        group.bench_function(format!("release_pfns/{name}"), |b| {
            let metrics = BalloonMetrics::default();
            b.iter_custom(|iters| {
                let mut bitmap = BalloonBitmap::new(&mem);
                timed(iters, &mem, || {
                    bitmap.clear();
                    for array in pfns.chunks(PFNS_PER_ARRAY) {
                        release_pfns(&mem, black_box(array), &mut bitmap, &metrics);
                    }
                })
            });
            assert_eq!(metrics.madvise_errors.get(), 0);
        });
    }

    group.bench_function("device/contiguous", |b| {
        let mut device = DeviceOnEventLoop::new(&mem, &contiguous);
        b.iter_custom(|iters| timed(iters, &mem, || device.inflate_all()));
        assert_eq!(
            device.balloon.lock().unwrap().ballooned_pages(),
            u64::from(PAGES)
        );
    });

    group.bench_function("limit: one madvise over 256 MiB", |b| {
        b.iter_custom(|iters| timed(iters, &mem, || madvise(host, RAM)))
    });

    group.finish();
}

/// An activated balloon on an event loop, and a driver that keeps one queue's worth (256) of
/// 256-PFN arrays covering the whole released range ready to offer again.
struct DeviceOnEventLoop<'m> {
    mem: &'m GuestMemoryMmap,
    balloon: Arc<Mutex<Balloon>>,
    manager: EventManager<Arc<Mutex<Balloon>>>,
    inflate: MockSplitQueue<'m, GuestMemoryMmap>,
    /// Where the inflate queue's used ring really is (see `used_ring_after`).
    inflate_used: GuestAddress,
    kick: EventFd,
    avail_idx: u16,
}

impl<'m> DeviceOnEventLoop<'m> {
    fn new(mem: &'m GuestMemoryMmap, pfns: &[u32]) -> Self {
        const QUEUE_SIZE: u16 = 256;
        let arrays = pfns.len() / PFNS_PER_ARRAY;
        assert_eq!(
            arrays,
            usize::from(QUEUE_SIZE),
            "one descriptor per array, one queue's worth"
        );

        let inflate = MockSplitQueue::create(mem, GuestAddress(DRIVER_AREA), QUEUE_SIZE);
        let deflate = MockSplitQueue::create(mem, GuestAddress(DRIVER_AREA + 0x1_0000), QUEUE_SIZE);
        let array_area = DRIVER_AREA + MIB;
        for (i, array) in pfns.chunks(PFNS_PER_ARRAY).enumerate() {
            let bytes: Vec<u8> = array.iter().flat_map(|pfn| pfn.to_le_bytes()).collect();
            let addr = array_area + (i * PFNS_PER_ARRAY * 4) as u64;
            mem.write_slice(&bytes, GuestAddress(addr)).unwrap();
            let desc = Descriptor::new(addr, bytes.len() as u32, 0, 0);
            inflate
                .desc_table()
                .store(i as u16, RawDescriptor::from(desc))
                .unwrap();
        }

        let balloon = Arc::new(Mutex::new(Balloon::new(BalloonConfig::default()).unwrap()));
        let mut manager = EventManager::<Arc<Mutex<Balloon>>>::new().unwrap();
        manager.add_subscriber(balloon.clone());
        let inflate_event = EventFd::new(EFD_NONBLOCK).unwrap();
        let kick = inflate_event.try_clone().unwrap();
        let mut inflate_queue = inflate.create_queue::<Queue>().unwrap();
        let inflate_used = used_ring_after(mem, &inflate, &mut inflate_queue);
        let mut deflate_queue = deflate.create_queue::<Queue>().unwrap();
        used_ring_after(mem, &deflate, &mut deflate_queue);
        let queues = vec![
            QueueEvent {
                queue: inflate_queue,
                event: inflate_event,
            },
            QueueEvent {
                queue: deflate_queue,
                event: EventFd::new(EFD_NONBLOCK).unwrap(),
            },
        ];
        let interrupt = Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        {
            let mut device = balloon.lock().unwrap();
            let features = device.avail_features();
            device.set_acked_features(features);
            device
                .activate(Activation::new(mem.clone(), interrupt, queues))
                .unwrap();
        }
        manager.run_with_timeout(0).unwrap();
        DeviceOnEventLoop {
            mem,
            balloon,
            manager,
            inflate,
            inflate_used,
            kick,
            avail_idx: 0,
        }
    }

    /// Offers all 256 arrays, kicks, and runs the event loop until the device has used them.
    fn inflate_all(&mut self) {
        let avail = self.inflate.avail_addr();
        for head in 0..256u16 {
            let slot = avail.unchecked_add(4 + 2 * u64::from(head));
            self.mem.write_obj(head, slot).unwrap();
        }
        self.avail_idx = self.avail_idx.wrapping_add(256);
        self.mem
            .write_obj(self.avail_idx, avail.unchecked_add(2))
            .unwrap();
        self.kick.write(1).unwrap();
        let used_idx = self.inflate_used.unchecked_add(2);
        while self.mem.read_obj::<u16>(used_idx).unwrap() != self.avail_idx {
            self.manager.run_with_timeout(1000).unwrap();
        }
    }
}

/// virtio-queue 0.18's mock puts the used ring `size` bytes after the available ring, which is
/// 6 + 2 * size bytes long: the device's used entries would overwrite available entries it has
/// not read yet. Moves `queue`'s used ring after the available ring; returns where.
fn used_ring_after(
    mem: &GuestMemoryMmap,
    mock: &MockSplitQueue<'_, GuestMemoryMmap>,
    queue: &mut Queue,
) -> GuestAddress {
    let size = u64::from(queue.max_size());
    let used = mock
        .avail_addr()
        .unchecked_add(6 + 2 * size)
        .unchecked_align_up(4);
    mem.write_slice(&vec![0u8; 6 + 8 * size as usize], used)
        .unwrap();
    queue.try_set_used_ring_address(used).unwrap();
    used
}

/// The same variants measured in turns, round after round, so that load from the rest of the
/// machine falls on all of them alike; prints each one's median rate and the ratio that issue 3
/// sets a goal for (contiguous at least half the limit).
fn paired_summary() {
    const ROUNDS: usize = 21;
    let mem = guest_memory();
    let host = mem.get_host_address(GuestAddress(0)).unwrap();
    let contiguous: Vec<u32> = (0..PAGES).collect();
    let random = shuffled(contiguous.clone());
    let metrics = BalloonMetrics::default();
    let mut bitmap = BalloonBitmap::new(&mem);
    let mut device = DeviceOnEventLoop::new(&mem, &contiguous);
    let release = |bitmap: &mut BalloonBitmap, pfns: &[u32]| {
        bitmap.clear();
        for array in pfns.chunks(PFNS_PER_ARRAY) {
            release_pfns(&mem, array, bitmap, &metrics);
        }
    };

    let names = [
        "floor (madvise per page)",
        "release_pfns contiguous",
        "release_pfns shuffled",
        "device contiguous",
        "limit (one madvise)",
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    for round in 0..ROUNDS {
        for k in 0..names.len() {
            let variant = (round + k) % names.len();
            let elapsed = timed(1, &mem, || match variant {
                0 => (0..u64::from(PAGES))
                    .for_each(|page| madvise(host.wrapping_add((page * PAGE) as usize), PAGE)),
                1 => release(&mut bitmap, &contiguous),
                2 => release(&mut bitmap, &random),
                3 => device.inflate_all(),
                _ => madvise(host, RAM),
            });
            samples[variant].push(elapsed);
        }
    }
    let gib_per_s = |samples: &mut Vec<Duration>| {
        samples.sort();
        (RAM as f64 / (1u64 << 30) as f64) / samples[samples.len() / 2].as_secs_f64()
    };
    let rates: Vec<f64> = samples.iter_mut().map(gib_per_s).collect();
    println!("\npaired summary: median of {ROUNDS} interleaved rounds over 256 MiB");
    for (name, rate) in names.iter().zip(&rates) {
        println!("  {name:<26} {rate:6.2} GiB/s");
    }
    println!(
        "  contiguous / limit: release_pfns {:.2}, device {:.2} (goal: at least 0.50)",
        rates[1] / rates[4],
        rates[3] / rates[4]
    );
}

criterion_group!(benches, inflate);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Only in `cargo bench`, not when the bench target is merely run as a test.
    if std::env::args().any(|arg| arg == "--bench") {
        paired_summary();
    }
}
