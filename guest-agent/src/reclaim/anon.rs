//! `deactivate_anon`: make anonymous memory the kernel's first reclaim victim, in the
//! container patch's order: only if the guest has swap (otherwise anon pages cannot leave
//! memory, and deactivating them only costs refaults), processes with at least 50 anon pages
//! first, biggest first, then the small ones.
//!
//! `process_madvise(MADV_COLD)` moves a process's anon pages to the inactive list;
//! `MADV_PAGEOUT` (urgent) writes them to swap now. Never the agent itself, never a kernel
//! thread, and never a signal: a process only gets slower to touch memory it left idle.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use log::{debug, info};

use super::{micros_since, Deadline};
use crate::proc::status::ProcessMemory;
use crate::proc::{self, maps, meminfo, status};
use crate::protocol::{
    AnonPassReport, AnonReport, DeactivateAnon, BATCH_PAGES, BIG_THRESHOLD_PAGES,
};
use crate::{kib_to_pages, page_size};

/// The most ranges one `process_madvise` call takes (`UIO_MAXIOV`).
const MAX_IOV: usize = 1024;

/// Which processes, and whether swap is required; the defaults are what the agent does.
#[derive(Debug, Clone)]
pub struct AnonOptions {
    /// Only these processes (the tests use it to leave the host's processes alone); `None`
    /// for every process.
    pub pids: Option<Vec<i32>>,
    /// Skip the whole request without swap.
    pub require_swap: bool,
}

impl Default for AnonOptions {
    fn default() -> Self {
        AnonOptions {
            pids: None,
            require_swap: true,
        }
    }
}

/// Runs `deactivate_anon` within about `budget`.
pub fn deactivate_anon(
    request: &DeactivateAnon,
    options: &AnonOptions,
    budget: Duration,
) -> io::Result<AnonReport> {
    let start = Instant::now();
    let deadline = Deadline::after(budget);
    let mut report = AnonReport {
        target_pages: request.target_pages,
        urgent: request.urgent,
        ..AnonReport::default()
    };
    let before = meminfo::read()?;
    if options.require_swap && before.swap_total_kib.unwrap_or(0) == 0 {
        report.skipped = Some("no swap".into());
        report.elapsed_us = micros_since(start);
        return Ok(report);
    }

    let own = std::process::id() as i32;
    let pids = match &options.pids {
        Some(pids) => pids.clone(),
        None => proc::pids()?,
    };
    let processes: Vec<ProcessMemory> = pids
        .into_iter()
        .filter(|&pid| pid != own)
        .filter_map(|pid| status::read(pid).ok().flatten())
        .collect();
    let (big, small) = passes(processes);

    let advice = if request.urgent {
        libc::MADV_PAGEOUT
    } else {
        libc::MADV_COLD
    };
    let mut remaining = request.target_pages;
    let mut failed = 0;
    report.big = run_pass(&big, advice, &mut remaining, deadline, &mut failed);
    report.small = run_pass(&small, advice, &mut remaining, deadline, &mut failed);
    report.processes_failed = failed;
    report.deactivated_pages = report.big.deactivated_pages + report.small.deactivated_pages;
    if let (Some(before), Ok(after)) = (before.swap_used_kib(), meminfo::read()) {
        report.swapped_pages =
            kib_to_pages(after.swap_used_kib().unwrap_or(0).saturating_sub(before));
    }
    report.elapsed_us = micros_since(start);
    info!(
        "deactivate_anon: target {} pages, deactivated about {} ({} processes), swapped {} in {} µs",
        report.target_pages,
        report.deactivated_pages,
        report.big.processes_touched + report.small.processes_touched,
        report.swapped_pages,
        report.elapsed_us
    );
    Ok(report)
}

/// The two passes: processes with at least [`BIG_THRESHOLD_PAGES`] anon pages, then the
/// others; biggest first in each.
fn passes(mut processes: Vec<ProcessMemory>) -> (Vec<ProcessMemory>, Vec<ProcessMemory>) {
    processes.sort_by_key(|p| std::cmp::Reverse(p.anon_kib));
    processes
        .into_iter()
        .partition(|p| kib_to_pages(p.anon_kib) >= BIG_THRESHOLD_PAGES)
}

fn run_pass(
    processes: &[ProcessMemory],
    advice: libc::c_int,
    remaining: &mut u64,
    deadline: Deadline,
    failed: &mut u64,
) -> AnonPassReport {
    let start = Instant::now();
    let mut report = AnonPassReport::default();
    for process in processes {
        if *remaining == 0 || deadline.passed() {
            break;
        }
        match advise_process(process.pid, advice, remaining, deadline, &mut report) {
            Ok(true) => report.processes_touched += 1,
            Ok(false) => {}
            Err(e) => {
                debug!("process {}: {e}", process.pid);
                *failed += 1;
            }
        }
    }
    report.elapsed_us = micros_since(start);
    report
}

/// Advises one process's anon ranges, in calls of about [`BATCH_PAGES`] pages, until
/// `remaining` is 0. Returns whether anything was advised.
fn advise_process(
    pid: i32,
    advice: libc::c_int,
    remaining: &mut u64,
    deadline: Deadline,
    report: &mut AnonPassReport,
) -> io::Result<bool> {
    // The pidfd pins the process's identity: if the PID is reused meanwhile, the advice fails
    // with ESRCH instead of reaching a stranger.
    let pidfd = pidfd_open(pid)?;
    let ranges = maps::anon_ranges(pid)?;
    let page = page_size();
    let mut batch: Vec<libc::iovec> = Vec::new();
    let mut batch_pages = 0u64;
    let mut touched = false;
    'ranges: for range in ranges {
        let mut start = range.start;
        let mut pages_left = kib_to_pages(range.anon_kib).max(1);
        while start < range.end && pages_left > 0 {
            let room = (BATCH_PAGES - batch_pages).min(remaining.saturating_sub(batch_pages));
            if room == 0 || deadline.passed() {
                break 'ranges;
            }
            // A range with more anon pages than fit is cut in proportion: smaps says how many
            // pages a range has, not where they are.
            let take = pages_left.min(room);
            let len = if take == pages_left {
                range.end - start
            } else {
                let share =
                    u128::from(range.end - start) * u128::from(take) / u128::from(pages_left);
                ((share as u64).div_ceil(page).max(1) * page).min(range.end - start)
            };
            batch.push(libc::iovec {
                iov_base: start as usize as *mut libc::c_void,
                iov_len: len as usize,
            });
            batch_pages += take;
            pages_left -= take;
            start += len;
            if batch_pages >= BATCH_PAGES.min(*remaining) || batch.len() == MAX_IOV {
                flush(
                    &pidfd,
                    advice,
                    &mut batch,
                    &mut batch_pages,
                    remaining,
                    report,
                )?;
                touched = true;
            }
        }
    }
    if !batch.is_empty() {
        flush(
            &pidfd,
            advice,
            &mut batch,
            &mut batch_pages,
            remaining,
            report,
        )?;
        touched = true;
    }
    Ok(touched)
}

fn flush(
    pidfd: &OwnedFd,
    advice: libc::c_int,
    batch: &mut Vec<libc::iovec>,
    batch_pages: &mut u64,
    remaining: &mut u64,
    report: &mut AnonPassReport,
) -> io::Result<()> {
    let asked: u64 = batch.iter().map(|v| v.iov_len as u64).sum();
    let advised = process_madvise(pidfd, batch, advice);
    let pages = *batch_pages;
    batch.clear();
    *batch_pages = 0;
    let advised = advised?;
    // A partial result means the kernel stopped at a range (it went away meanwhile): count
    // the pages in proportion.
    let pages = if advised >= asked || asked == 0 {
        pages
    } else {
        (u128::from(pages) * u128::from(advised) / u128::from(asked)) as u64
    };
    report.batches += 1;
    report.deactivated_pages += pages;
    *remaining = remaining.saturating_sub(pages);
    Ok(())
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags by value and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Returns the bytes advised.
fn process_madvise(
    pidfd: &OwnedFd,
    ranges: &[libc::iovec],
    advice: libc::c_int,
) -> io::Result<u64> {
    // SAFETY: `ranges` is a live slice of iovecs for the duration of the call; the kernel reads
    // them and treats their addresses as the target process's, never touching ours.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_process_madvise,
            pidfd.as_raw_fd(),
            ranges.as_ptr(),
            ranges.len(),
            advice,
            0 as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret as u64)
}

/// Whether this kernel has `process_madvise` with `MADV_COLD` (5.10+): an empty call on
/// ourselves succeeds where it does.
pub fn process_madvise_available() -> bool {
    let Ok(pidfd) = pidfd_open(std::process::id() as i32) else {
        return false;
    };
    process_madvise(&pidfd, &[], libc::MADV_COLD).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_swap_means_skipped_and_nothing_done() {
        let swap = meminfo::read().unwrap().swap_total_kib.unwrap_or(0);
        let report = deactivate_anon(
            &DeactivateAnon::new(1000, true),
            &AnonOptions {
                pids: Some(vec![]),
                require_swap: true,
            },
            Duration::from_secs(1),
        )
        .unwrap();
        if swap == 0 {
            assert_eq!(report.skipped.as_deref(), Some("no swap"));
        } else {
            assert_eq!(report.skipped, None);
        }
        assert_eq!(report.deactivated_pages, 0);
    }

    #[test]
    fn never_ourselves_nor_kernel_threads() {
        let mut pids = vec![std::process::id() as i32];
        if std::fs::read("/proc/2/stat").is_ok_and(|s| s.windows(10).any(|w| w == b"(kthreadd)")) {
            pids.push(2);
        }
        let report = deactivate_anon(
            &DeactivateAnon::new(1_000_000, false),
            &AnonOptions {
                pids: Some(pids),
                require_swap: false,
            },
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            report.big.processes_touched + report.small.processes_touched,
            0
        );
        assert_eq!(report.processes_failed, 0);
    }

    #[test]
    fn big_processes_first_biggest_first() {
        let kib_per_page = page_size() / 1024;
        let p = |pid, pages| ProcessMemory {
            pid,
            anon_kib: pages * kib_per_page,
        };
        let (big, small) = passes(vec![
            p(1, 10),
            p(2, 50),
            p(3, 49),
            p(4, 5000),
            p(5, 0),
            p(6, 60),
        ]);
        let pids = |v: &[ProcessMemory]| v.iter().map(|p| p.pid).collect::<Vec<_>>();
        assert_eq!(pids(&big), [4, 6, 2]);
        assert_eq!(pids(&small), [3, 1, 5]);
    }

    #[test]
    fn probe_matches_the_kernel() {
        // Every kernel this agent meets in tests is newer than 5.10.
        assert!(process_madvise_available());
    }
}
