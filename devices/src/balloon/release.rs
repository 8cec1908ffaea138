//! Giving guest pages back to the host: the heart of inflation and free page reporting.
//!
//! The guest promises not to touch a page it gave to the balloon (or reported free) until it
//! takes it back, so the host may drop the memory behind it; the next guest access faults in a
//! zeroed page. How the memory is dropped depends on what backs guest RAM:
//!
//! | backing | call | why |
//! | --- | --- | --- |
//! | private anonymous (the default) | `madvise(MADV_DONTNEED)` | frees the pages; the range reads as zeros |
//! | shared anonymous | `madvise(MADV_REMOVE)` | the pages live in shmem, which `MADV_DONTNEED` would only unmap |
//! | shared file (memfd, hugetlbfs, a file) | `fallocate(PUNCH_HOLE)` | frees the file's pages, which also unmaps them |
//! | private file (a snapshot) | `mmap(MAP_FIXED)` anonymous memory over the range | `MADV_DONTNEED` would bring back the file's old contents, and punching the file would destroy it |

use std::io;
use std::os::fd::AsRawFd;

use log::{error, warn};
use vm_memory::{
    Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress,
};

use ballast_virtio::GuestMemoryMmap;

use super::{BalloonBitmap, BalloonMetrics, GUEST_PAGE_SIZE, VIRTIO_BALLOON_PFN_SHIFT};

/// One mapped region of guest RAM.
type Region = <GuestMemoryMmap as GuestMemoryBackend>::R;

/// Releases on the host the guest pages named by `pfns` (one inflate descriptor's worth) and
/// puts them in the balloon.
///
/// The PFNs are sorted and coalesced into runs of consecutive guest pages, each released with
/// one host call, split where guest RAM changes regions. A PFN outside guest RAM is skipped and
/// counted; a PFN already in the balloon is released again, which is harmless, and counted as a
/// repeat. A failed host call is counted; the pages still go into the balloon, because the guest
/// gave them up whatever the host managed to do with them.
pub fn release_pfns(
    mem: &GuestMemoryMmap,
    pfns: &[u32],
    bitmap: &mut BalloonBitmap,
    metrics: &BalloonMetrics,
) {
    // Sorting lets a driver that hands out pages in descending or mixed order still get whole
    // runs; it costs little next to one system call per run.
    let mut sorted: Vec<u64> = pfns.iter().map(|&pfn| u64::from(pfn)).collect();
    sorted.sort_unstable();
    sorted.dedup();

    let mut valid = 0;
    let mut inserted = 0;
    let mut i = 0;
    while i < sorted.len() {
        let first = sorted[i];
        let Some((region, end_pfn)) = region_of_guest_page(mem, first) else {
            metrics.invalid_pfns.inc();
            i += 1;
            continue;
        };
        let mut count = 1;
        while i + count < sorted.len()
            && sorted[i + count] == first + count as u64
            && first + (count as u64) < end_pfn
        {
            count += 1;
        }
        let count_u64 = count as u64;
        let offset = (first << VIRTIO_BALLOON_PFN_SHIFT) - region.start_addr().raw_value();
        let bytes = count_u64 * GUEST_PAGE_SIZE;
        if discard_counted(region, offset, bytes, metrics) {
            metrics.released_bytes.add(bytes);
        }
        inserted += bitmap.insert_run(first, count_u64);
        valid += count_u64;
        i += count;
    }
    metrics.inflate_pfns.add(valid);
    metrics.inflate_repeat_pfns.add(valid - inserted);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseRangeError {
    #[error("guest range {addr:#x}+{len:#x} is empty or not aligned to 4 KiB guest pages")]
    Unaligned { addr: u64, len: u64 },
    #[error("guest range {addr:#x}+{len:#x} is not all guest RAM")]
    OutsideRam { addr: u64, len: u64 },
}

/// Releases on the host the guest range `[addr, addr + len)`, which must be whole guest pages
/// and lie wholly in guest RAM (it may span adjacent regions); otherwise nothing is released.
/// Returns the bytes released, fewer than `len` if a host call failed (counted in `metrics`).
/// The balloon bitmap is not touched: the guest still owns the pages.
pub fn release_guest_range(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    len: u64,
    metrics: &BalloonMetrics,
) -> Result<u64, ReleaseRangeError> {
    let start = addr.raw_value();
    if len == 0 || !start.is_multiple_of(GUEST_PAGE_SIZE) || !len.is_multiple_of(GUEST_PAGE_SIZE) {
        return Err(ReleaseRangeError::Unaligned { addr: start, len });
    }
    let outside = ReleaseRangeError::OutsideRam { addr: start, len };
    let end = start.checked_add(len).ok_or(outside)?;

    // Check the whole range before releasing any of it, so a range reaching into a hole is
    // refused whole rather than half done.
    let mut pieces: Vec<(&Region, u64, u64)> = Vec::new();
    let mut cursor = start;
    while cursor < end {
        let region = mem.find_region(GuestAddress(cursor)).ok_or(outside)?;
        let region_start = region.start_addr().raw_value();
        let piece_end = end.min(region_start + region.len());
        pieces.push((region, cursor - region_start, piece_end - cursor));
        cursor = piece_end;
    }

    Ok(pieces
        .into_iter()
        .filter(|&(region, offset, bytes)| discard_counted(region, offset, bytes, metrics))
        .map(|(_, _, bytes)| bytes)
        .sum())
}

/// The region holding the whole guest page `pfn`, and the PFN just past that region's last
/// whole page.
fn region_of_guest_page(mem: &GuestMemoryMmap, pfn: u64) -> Option<(&Region, u64)> {
    let addr = pfn.checked_mul(GUEST_PAGE_SIZE)?;
    let region = mem.find_region(GuestAddress(addr))?;
    let end = region.start_addr().raw_value() + region.len();
    // The page's last byte must be in the region too (a region's end need not be page aligned).
    (addr.checked_add(GUEST_PAGE_SIZE)? <= end).then_some((region, end / GUEST_PAGE_SIZE))
}

fn discard_counted(region: &Region, offset: u64, len: u64, metrics: &BalloonMetrics) -> bool {
    match discard(region, offset, len) {
        Ok(()) => {
            metrics.release_calls.inc();
            true
        }
        Err(e) => {
            metrics.madvise_errors.inc();
            error!(
                "balloon: cannot release guest range {:#x}+{len:#x} on the host: {e}",
                region.start_addr().raw_value() + offset
            );
            false
        }
    }
}

/// Drops the host memory behind `len` bytes at `offset` in `region`.
fn discard(region: &Region, offset: u64, len: u64) -> io::Result<()> {
    let inside = offset
        .checked_add(len)
        .is_some_and(|end| end <= region.len());
    if !inside {
        // Callers only pass ranges inside the region; refuse rather than touch anything else.
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let host = region
        .get_host_address(MemoryRegionAddress(offset))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let shared = region.flags() & libc::MAP_SHARED != 0;
    match region.file_offset() {
        Some(file) if shared => {
            let file_offset = file.start() + offset;
            // SAFETY: fallocate only changes the file behind this region; the range is inside
            // the region's part of the file, and the guest gave up these pages.
            let ret = unsafe {
                libc::fallocate(
                    file.file().as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    file_offset as libc::off_t,
                    len as libc::off_t,
                )
            };
            check(ret)
        }
        Some(_) => {
            warn_once_private_file();
            // SAFETY: `[host, host + len)` lies inside this region's mapping (checked above), so
            // MAP_FIXED replaces only guest RAM the guest gave up, with zeroed memory of the same
            // protection; the region's own munmap on drop still covers it.
            let ret = unsafe {
                libc::mmap(
                    host.cast(),
                    len,
                    region.prot(),
                    libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if ret == libc::MAP_FAILED {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
        None => {
            let advice = if shared {
                libc::MADV_REMOVE
            } else {
                libc::MADV_DONTNEED
            };
            // SAFETY: `[host, host + len)` lies inside this region's mapping (checked above);
            // the guest gave up these pages, and no host code holds references into guest RAM
            // across this call (all access goes through vm-memory's volatile slices).
            check(unsafe { libc::madvise(host.cast(), len, advice) })
        }
    }
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn warn_once_private_file() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        warn!("balloon: guest RAM is a private file mapping; released pages are remapped as anonymous memory");
    });
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::fd::FromRawFd;

    use vm_memory::bitmap::AtomicBitmap;
    use vm_memory::{Bytes, FileOffset, GuestRegionMmap, MmapRegion};

    use super::*;
    use crate::balloon::tests::util::{all_resident, fill, none_resident, reads_as, MIB, PAGE};

    const SIZE: usize = 4 * MIB as usize;

    fn memory_of(region: MmapRegion<AtomicBitmap>) -> GuestMemoryMmap {
        let region = GuestRegionMmap::new(region, GuestAddress(0)).unwrap();
        GuestMemoryMmap::from_regions(vec![region]).unwrap()
    }

    fn memfd(len: usize) -> File {
        // SAFETY: memfd_create takes a NUL-terminated name and returns a new descriptor or -1.
        let fd = unsafe { libc::memfd_create(c"ballast-balloon-test".as_ptr(), 0) };
        assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len as u64).unwrap();
        file
    }

    /// Fills 16 pages with a pattern, releases the middle 8, and checks they were dropped and
    /// read back as zeros while their neighbours kept the pattern.
    fn check_release_scrubs(mem: &GuestMemoryMmap) {
        let metrics = BalloonMetrics::default();
        fill(mem, MIB, 16, 0xa5);
        assert!(all_resident(mem, MIB, 16));
        let released = release_guest_range(mem, GuestAddress(MIB + 4 * PAGE), 8 * PAGE, &metrics);
        assert_eq!(released, Ok(8 * PAGE));
        assert_eq!(metrics.madvise_errors.get(), 0);
        assert!(none_resident(mem, MIB + 4 * PAGE, 8));
        assert!(all_resident(mem, MIB, 4));
        assert!(all_resident(mem, MIB + 12 * PAGE, 4));
        assert!(reads_as(mem, MIB + 4 * PAGE, 8 * PAGE, 0));
        assert!(reads_as(mem, MIB, 4 * PAGE, 0xa5));
        assert!(reads_as(mem, MIB + 12 * PAGE, 4 * PAGE, 0xa5));
    }

    #[test]
    fn private_anonymous_ram_is_released() {
        check_release_scrubs(&GuestMemoryMmap::from_ranges(&[(GuestAddress(0), SIZE)]).unwrap());
    }

    #[test]
    fn shared_anonymous_ram_is_released() {
        let region = MmapRegion::build(
            None,
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        )
        .unwrap();
        check_release_scrubs(&memory_of(region));
    }

    #[test]
    fn shared_file_ram_is_released() {
        let mem = GuestMemoryMmap::from_ranges_with_files([(
            GuestAddress(0),
            SIZE,
            Some(FileOffset::new(memfd(SIZE), 0)),
        )])
        .unwrap();
        check_release_scrubs(&mem);
    }

    #[test]
    fn private_file_ram_is_released_without_touching_the_file() {
        let mut file = memfd(SIZE);
        file.write_all(&vec![0x5a; SIZE]).unwrap();
        let region = MmapRegion::build(
            Some(FileOffset::new(file.try_clone().unwrap(), 0)),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .unwrap();
        let mem = memory_of(region);
        check_release_scrubs(&mem);

        // The snapshot file keeps its contents.
        let mut contents = vec![0u8; SIZE];
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_exact(&mut contents).unwrap();
        assert!(contents.iter().all(|&b| b == 0x5a));
        // The remapped pages are guest RAM like any other.
        mem.write_obj(0x77u8, GuestAddress(MIB + 5 * PAGE)).unwrap();
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(MIB + 5 * PAGE)).unwrap(),
            0x77
        );
    }

    #[test]
    fn a_run_across_adjacent_regions_is_split_at_the_boundary() {
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), MIB as usize),
            (GuestAddress(MIB), MIB as usize),
        ])
        .unwrap();
        let metrics = BalloonMetrics::default();
        let mut bitmap = BalloonBitmap::new(&mem);
        fill(&mem, 250 * PAGE, 12, 0xa5);
        let pfns: Vec<u32> = (250..262).collect();
        release_pfns(&mem, &pfns, &mut bitmap, &metrics);
        assert_eq!(metrics.release_calls.get(), 2);
        assert_eq!(metrics.released_bytes.get(), 12 * PAGE);
        assert_eq!(bitmap.len(), 12);
        assert!(none_resident(&mem, 250 * PAGE, 6));
        assert!(none_resident(&mem, MIB, 6));

        // A reported range may cross the boundary as well.
        fill(&mem, 250 * PAGE, 12, 0xa5);
        assert_eq!(
            release_guest_range(&mem, GuestAddress(250 * PAGE), 12 * PAGE, &metrics),
            Ok(12 * PAGE)
        );
        assert!(none_resident(&mem, 250 * PAGE, 6));
        assert!(none_resident(&mem, MIB, 6));
    }

    #[test]
    fn the_x86_layout_around_the_mmio_gap() {
        // 3 GiB below the gap and 16 MiB above 4 GiB; NORESERVE, so only touched pages cost.
        let below = 3 << 30;
        let above = 1u64 << 32;
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), below as usize),
            (GuestAddress(above), 16 * MIB as usize),
        ])
        .unwrap();
        let metrics = BalloonMetrics::default();
        let mut bitmap = BalloonBitmap::new(&mem);
        let last_below = (below / PAGE - 1) as u32;
        let first_above = (above / PAGE) as u32;
        fill(&mem, u64::from(last_below) * PAGE, 1, 0xa5);
        fill(&mem, above, 5, 0xa5);

        release_pfns(
            &mem,
            &[
                last_below,
                last_below + 1,  // the gap's first page
                first_above - 1, // the gap's last page
                first_above,
                first_above + 1,
                first_above + 4096, // just past the end of RAM
            ],
            &mut bitmap,
            &metrics,
        );
        assert_eq!(metrics.invalid_pfns.get(), 3);
        assert_eq!(bitmap.len(), 3);
        assert_eq!(metrics.release_calls.get(), 2);
        assert!(none_resident(&mem, u64::from(last_below) * PAGE, 1));
        assert!(none_resident(&mem, above, 2));
        assert!(all_resident(&mem, above + 2 * PAGE, 3));
    }
}
