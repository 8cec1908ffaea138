//! Layer 2: the memory manager's tracker on a real vCPU. A tiny long-mode payload writes one word
//! into each of a known set of pages, in two batches with a sample between them, and the tracker,
//! reading KVM's dirty log through `KvmDirtyLog`, must report exactly those pages, with the ages
//! and the working set that follow from the two epochs.
//!
//! Besides the payload's own writes, the only pages written are known in advance:
//! - by the VMM before the run (through vm-memory, so its bitmap has them): the GDT/IDT page,
//!   the three page-table pages and the payload's code page;
//! - by the CPU itself: the accessed/dirty bits of the page-table entries it walks (see
//!   `PAGE_TABLES`).
//!
//! The payload uses no stack and takes no interrupt, so nothing else may appear.

#[path = "support/one_vcpu.rs"]
mod one_vcpu;
use one_vcpu::run_one_vcpu;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use ballast::layout::{BOOT_GDT_START, HIMEM_START, PDE_START, PDPTE_START, PML4_START};
use ballast::vstate::dirty_log::{ClearMode, KvmDirtyLog};
use ballast::vstate::exit::VmExit;
use ballast::vstate::memory::create_guest_memory;
use ballast::vstate::regs::write_boot_structures;
use ballast::vstate::vm::{open_kvm, Vm};
use ballast_devices::balloon::BalloonBitmap;
use ballast_devices::bus::{Bus, BusDevice};
use ballast_manager::tracker::{BalloonPages, DirtyLog, Sample, Tracker, TrackerConfig};
use ballast_virtio::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

const PAGE: u64 = 4096;
const MEM_SIZE: u64 = 16 << 20;
const PAGES: u64 = MEM_SIZE / PAGE;

/// The payload's out to this port ends epoch 1: the sampler device samples right there, on the
/// vCPU thread, while the vCPU waits in the exit.
const SAMPLE_PORT: u16 = 0x510;
/// Any write here is a power-off.
const POWEROFF_PORT: u16 = 0x600;

/// Batch 1: 64 pages, every third page from 2 MiB.
const BATCH1: Batch = Batch {
    base: 0x20_0000,
    count: 64,
    stride: 3 * PAGE as u32,
};
/// Batch 2: 32 new pages, every other page from 6 MiB (another 2 MiB page-table entry) ...
const BATCH2: Batch = Batch {
    base: 0x60_0000,
    count: 32,
    stride: 2 * PAGE as u32,
};
/// ... and the first 8 pages of batch 1 again.
const REWRITE: Batch = Batch { count: 8, ..BATCH1 };

/// The VMM's writes before the run: GDT + IDT, PML4, PDPT, PD, the payload.
const VMM_WRITTEN: [u64; 5] = [
    BOOT_GDT_START / PAGE,
    PML4_START / PAGE,
    PDPTE_START / PAGE,
    PDE_START / PAGE,
    HIMEM_START / PAGE,
];
/// The page tables: PML4 -> PDPT -> PD of 2 MiB pages, entries written without accessed/dirty
/// bits. The CPU's first walk sets the accessed bit in the PML4 and PDPT entries and the accessed
/// and dirty bits in each PD entry it writes through: all three pages in epoch 1, and in epoch 2
/// only the PD again, for the entry of the 2 MiB page batch 2 opens.
const PAGE_TABLES: [u64; 3] = [PML4_START / PAGE, PDPTE_START / PAGE, PDE_START / PAGE];
const PD: u64 = PDE_START / PAGE;

#[derive(Clone, Copy)]
struct Batch {
    base: u32,
    count: u32,
    stride: u32,
}

impl Batch {
    fn pfns(self) -> BTreeSet<u64> {
        (0..u64::from(self.count))
            .map(|i| (u64::from(self.base) + i * u64::from(self.stride)) / PAGE)
            .collect()
    }

    /// `mov [rdi], ecx` into `count` pages, `stride` bytes apart from `base`.
    fn code(self) -> Vec<u8> {
        let mut code = vec![0xbf]; // mov edi, base
        code.extend(self.base.to_le_bytes());
        code.push(0xb9); // mov ecx, count
        code.extend(self.count.to_le_bytes());
        code.extend([0x89, 0x0f]); // loop: mov [rdi], ecx
        code.extend([0x48, 0x81, 0xc7]); // add rdi, stride
        code.extend(self.stride.to_le_bytes());
        code.extend([0xff, 0xc9]); // dec ecx
        code.extend([0x75, 0xf3]); // jnz loop (back 13 bytes)
        code
    }
}

/// `mov dx, port; out dx, al`
fn out(port: u16) -> Vec<u8> {
    let mut code = vec![0x66, 0xba];
    code.extend(port.to_le_bytes());
    code.push(0xee);
    code
}

fn payload() -> Vec<u8> {
    let mut code = BATCH1.code();
    code.extend(out(SAMPLE_PORT));
    code.extend(BATCH2.code());
    code.extend(REWRITE.code());
    code.extend(out(POWEROFF_PORT));
    code.extend([0xeb, 0xfe]); // jmp $ (the VMM stops the vCPU)
    code
}

/// The tracker with its inputs, and what each sample found.
struct Epochs {
    mem: GuestMemoryMmap,
    tracker: Tracker,
    log: KvmDirtyLog,
    balloon: BalloonBitmap,
    /// Each sample, and the pages it found dirtied (age 0).
    samples: Vec<(Sample, BTreeSet<u64>)>,
}

impl Epochs {
    fn sample(&mut self) {
        let sample = self
            .tracker
            .sample(&self.mem, &mut self.log, &balloon_pages(&self.balloon))
            .expect("sample");
        let dirtied = (0..PAGES)
            .filter(|&pfn| self.tracker.age(pfn) == Some(0))
            .collect();
        self.samples.push((sample, dirtied));
    }
}

/// The device's bitmap as the memory manager copies it.
fn balloon_pages(bitmap: &BalloonBitmap) -> BalloonPages {
    let mut pages = BalloonPages::new();
    for (first, count, words) in bitmap.regions() {
        pages.push_region(first, count, words);
    }
    pages
}

/// The payload's `out` to `SAMPLE_PORT` ends epoch 1.
impl BusDevice for Epochs {
    fn read(&mut self, _: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _: u64, _: &[u8]) {
        self.sample();
    }
}

/// One page is resident per touched page, whatever the host's transparent huge page setting.
fn no_huge_pages(mem: &GuestMemoryMmap) {
    for region in mem.iter() {
        let host = region.get_host_address(Default::default()).unwrap();
        // SAFETY: the region is a live mapping owned by `mem`; the advice only changes how the
        // kernel backs it.
        let ret =
            unsafe { libc::madvise(host.cast(), region.len() as usize, libc::MADV_NOHUGEPAGE) };
        assert_eq!(ret, 0);
    }
}

/// Runs the two-batch payload with the log read in `mode`; checks every sample.
// Long on purpose: one guest run told step by step, each step checked where it happens.
fn two_epochs(mode: ClearMode) {
    let kvm = open_kvm().expect("/dev/kvm");
    let mut vm = Vm::new(&kvm).unwrap();
    let mem = create_guest_memory(MEM_SIZE).unwrap();
    no_huge_pages(&mem);
    vm.register_memory(&mem).unwrap();
    write_boot_structures(&mem).unwrap();
    mem.write_slice(&payload(), GuestAddress(HIMEM_START))
        .unwrap();
    vm.set_dirty_logging(true).unwrap();
    let log = KvmDirtyLog::with_clear_mode(&vm, mode).unwrap();
    assert_eq!(log.clear_mode(), mode);

    let epochs = Arc::new(Mutex::new(Epochs {
        tracker: Tracker::new(
            &mem,
            TrackerConfig {
                working_set_epochs: 2,
            },
        ),
        balloon: BalloonBitmap::new(&mem),
        mem: mem.clone(),
        log,
        samples: Vec::new(),
    }));

    // Epoch 0, before the vCPU runs: only the VMM's writes, which KVM's log never sees.
    epochs.lock().unwrap().sample();
    {
        let e = epochs.lock().unwrap();
        let (sample, dirtied) = &e.samples[0];
        assert_eq!(*dirtied, BTreeSet::from(VMM_WRITTEN));
        assert_eq!(sample.dirtied_pages, 5);
        assert_eq!(sample.resident_pages, 5);
    }

    let mut pio = Bus::new();
    pio.insert(epochs.clone(), u64::from(SAMPLE_PORT), 1)
        .unwrap();
    let exit = run_one_vcpu(&kvm, &vm, pio, u64::from(POWEROFF_PORT));
    assert_eq!(exit, Some(VmExit::Poweroff));

    // Two pages go into the balloon before epoch 2: one of each batch.
    let ballooned_1 = *BATCH1.pfns().last().unwrap();
    let ballooned_2 = *BATCH2.pfns().first().unwrap();
    let mut e = epochs.lock().unwrap();
    e.balloon.insert_run(ballooned_1, 1);
    e.balloon.insert_run(ballooned_2, 1);
    e.sample();

    // Epoch 1: exactly batch 1, plus the page-table pages the CPU set accessed/dirty bits in.
    let (sample1, dirtied1) = e.samples[1].clone();
    let mut expected1 = BATCH1.pfns();
    expected1.extend(PAGE_TABLES);
    assert_eq!(dirtied1, expected1);
    assert_eq!(sample1.epoch, 2);
    assert_eq!(sample1.dirtied_pages, 64 + 3);

    // Epoch 2: batch 2 and the rewritten pages, without the ballooned page; batch 1's other
    // pages were read and cleared in epoch 1 and must not come back.
    let (sample2, dirtied2) = e.samples[2].clone();
    let mut expected2 = BATCH2.pfns();
    expected2.extend(REWRITE.pfns());
    expected2.remove(&ballooned_2);
    expected2.insert(PD);
    assert_eq!(dirtied2, expected2);
    assert_eq!(sample2.dirtied_pages, 31 + 8 + 1);

    // Ages after epoch 2.
    let tracker = &e.tracker;
    for pfn in REWRITE.pfns() {
        assert_eq!(tracker.age(pfn), Some(0), "rewritten pfn {pfn}");
    }
    for pfn in BATCH1.pfns().difference(&REWRITE.pfns()) {
        let expected = if *pfn == ballooned_1 { None } else { Some(1) };
        assert_eq!(tracker.age(*pfn), expected, "batch 1 pfn {pfn}");
    }
    for pfn in BATCH2.pfns() {
        let expected = if pfn == ballooned_2 { None } else { Some(0) };
        assert_eq!(tracker.age(pfn), expected, "batch 2 pfn {pfn}");
    }
    assert_eq!(tracker.age(BOOT_GDT_START / PAGE), Some(2));
    assert_eq!(tracker.age(HIMEM_START / PAGE), Some(2));
    assert_eq!(tracker.age(PML4_START / PAGE), Some(1));
    assert_eq!(tracker.age(PDPTE_START / PAGE), Some(1));
    assert_eq!(tracker.age(PD), Some(0));
    let known: BTreeSet<u64> = BATCH1
        .pfns()
        .union(&BATCH2.pfns())
        .chain(&VMM_WRITTEN)
        .copied()
        .collect();
    for pfn in (0..PAGES).filter(|pfn| !known.contains(pfn)) {
        assert_eq!(tracker.age(pfn), None, "pfn {pfn} was never written");
    }

    // The working set (2 epochs): both batches but the ballooned pages, and the page tables the
    // CPU wrote in epochs 1 and 2; not the GDT or code pages, last written in epoch 0.
    assert_eq!(sample2.working_set_pages, 63 + 31 + 3);

    // Residency: every written page is resident, the two in the balloon too (the host holds
    // them: the guest wrote them, which is what the balloon's pages are not for), and they are
    // reported as such.
    for pfn in &known {
        assert!(tracker.is_resident_pfn(*pfn), "pfn {pfn} is not resident");
    }
    assert_eq!(sample2.resident_pages, known.len() as u64);
    assert_eq!(sample2.ballooned_resident_pages, 2);
}

#[test]
fn tracker_reports_exactly_the_pages_a_payload_wrote_with_manual_clear() {
    let kvm = open_kvm().expect("/dev/kvm");
    let vm = Vm::new(&kvm).unwrap();
    if KvmDirtyLog::new(&vm).unwrap().clear_mode() != ClearMode::Manual {
        eprintln!("KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: skipped");
        return;
    }
    two_epochs(ClearMode::Manual);
}

#[test]
fn tracker_reports_exactly_the_pages_a_payload_wrote_with_clear_on_get() {
    two_epochs(ClearMode::OnGet);
}

#[test]
fn the_log_says_when_dirty_logging_is_off() {
    let kvm = open_kvm().expect("/dev/kvm");
    let mut vm = Vm::new(&kvm).unwrap();
    let mem = create_guest_memory(MEM_SIZE).unwrap();
    vm.register_memory(&mem).unwrap();
    let mut log = KvmDirtyLog::new(&vm).unwrap();
    let err = log.take_dirty(0, PAGES).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(
        log.take_dirty(1, PAGES).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    assert_eq!(
        log.take_dirty(0, PAGES - 1).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    vm.set_dirty_logging(true).unwrap();
    assert_eq!(
        log.take_dirty(0, PAGES).unwrap(),
        vec![0; PAGES as usize / 64]
    );
}
