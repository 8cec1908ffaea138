//! What the driver puts on each balloon queue and how the device answers.
//!
//! | queue | buffers (device-readable unless noted) | device action | used length |
//! | --- | --- | --- | --- |
//! | inflate | arrays of le32 PFNs | release the pages on the host, add them to the balloon | 0 |
//! | deflate | arrays of le32 PFNs | take the pages out of the balloon | 0 |
//! | stats | packed (le16 tag, le64 value) records | keep them; hold the buffer until the next timer tick | 0 |
//! | reporting | guest RAM ranges (Linux makes them device-writable) | release them on the host | the buffer's length |
//!
//! A malformed descriptor is skipped and counted, and its chain is still completed so the driver
//! is not left waiting. Only a failure of the queue itself (an available index the ring cannot
//! hold, a used ring outside guest RAM) marks the device as needing a reset.

use std::sync::Arc;

use log::{debug, warn};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes};

use ballast_virtio::{
    check_chain, ChainRefusal, GuestMemoryMmap, QueueEvent, RunBudget, VirtioInterrupt,
};

use super::{
    release_guest_range, release_pfns, Balloon, BalloonBitmap, BalloonMetrics, BalloonStats,
    Counter, MAX_PFNS_PER_DESCRIPTOR, MAX_STATS_PER_DESCRIPTOR, STAT_SIZE,
    VIRTIO_BALLOON_F_FREE_PAGE_HINT, VIRTIO_BALLOON_F_REPORTING, VIRTIO_BALLOON_F_STATS_VQ,
};

const PFN_SIZE: usize = 4;
/// The most descriptors of one chain the device reads; the rest are skipped and counted. Linux
/// sends one descriptor per inflate, deflate or stats buffer and at most 32 per free page report
/// (`PAGE_REPORTING_CAPACITY`). With `MAX_PFNS_PER_DESCRIPTOR` this bounds one chain to 8192
/// PFNs. (Indirect tables, which could make a chain 65 535 descriptors long, are refused: the
/// balloon does not offer VIRTIO_RING_F_INDIRECT_DESC.)
const MAX_DESCRIPTORS_PER_CHAIN: usize = 32;
/// The most guest pages (PFNs inflated or deflated, 4 KiB pages of reported ranges) one queue
/// handles per wake-up of the event loop, which holds the balloon's lock meanwhile. Past this
/// the queue kicks itself and lets the loop serve the others first. 32 Ki pages is 128 MiB:
/// about 16 ms of `madvise` for contiguous PFNs on the project's machines, 80 ms shuffled.
pub(crate) const PAGES_PER_RUN: u64 = 32 * 1024;
/// A free page report's range longer than this is skipped (counted): Linux reports free blocks
/// of at most `MAX_ORDER` (4 MiB) each; the bound keeps one range within a run's budget.
const MAX_REPORTED_RANGE: u64 = 16 << 20;
const MAX_PFN_BUFFER: usize = MAX_PFNS_PER_DESCRIPTOR * PFN_SIZE;
const MAX_STATS_BUFFER: usize = MAX_STATS_PER_DESCRIPTOR * STAT_SIZE;

/// The balloon's queues, by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BalloonQueue {
    Inflate,
    Deflate,
    Stats,
    Reporting,
}

impl std::fmt::Display for BalloonQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BalloonQueue::Inflate => "inflate",
            BalloonQueue::Deflate => "deflate",
            BalloonQueue::Stats => "stats",
            BalloonQueue::Reporting => "reporting",
        })
    }
}

/// The queues the driver sets up for the negotiated features, in queue-index order. A queue
/// exists only if its feature was negotiated, and the ones after it move down (virtio 1.2,
/// 5.5.2): with REPORTING but not STATS_VQ, the reporting queue is queue 2.
pub(crate) fn negotiated_queues(acked_features: u64) -> Vec<Option<BalloonQueue>> {
    let acked = |feature: u32| acked_features & (1 << feature) != 0;
    let mut queues = vec![Some(BalloonQueue::Inflate), Some(BalloonQueue::Deflate)];
    if acked(VIRTIO_BALLOON_F_STATS_VQ) {
        queues.push(Some(BalloonQueue::Stats));
    }
    if acked(VIRTIO_BALLOON_F_FREE_PAGE_HINT) {
        // Never offered, so never acked; kept so the indices stay right if it ever is.
        queues.push(None);
    }
    if acked(VIRTIO_BALLOON_F_REPORTING) {
        queues.push(Some(BalloonQueue::Reporting));
    }
    queues
}

/// What the device owns between `activate` and `reset`.
pub(crate) struct ActiveQueues {
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) interrupt: Arc<VirtioInterrupt>,
    pub(crate) inflate: Option<QueueEvent>,
    pub(crate) deflate: Option<QueueEvent>,
    pub(crate) stats: Option<QueueEvent>,
    pub(crate) reporting: Option<QueueEvent>,
    /// Unused queues the driver set up for features the device does not implement; kept so
    /// their eventfds live as long as the others.
    pub(crate) unused: Vec<QueueEvent>,
}

impl ActiveQueues {
    pub(crate) fn new(mem: GuestMemoryMmap, interrupt: Arc<VirtioInterrupt>) -> Self {
        ActiveQueues {
            mem,
            interrupt,
            inflate: None,
            deflate: None,
            stats: None,
            reporting: None,
            unused: Vec::new(),
        }
    }

    pub(crate) fn insert(&mut self, which: Option<BalloonQueue>, queue: QueueEvent) {
        match which {
            Some(which) => *self.slot(which) = Some(queue),
            None => self.unused.push(queue),
        }
    }

    pub(crate) fn get(&self, which: BalloonQueue) -> Option<&QueueEvent> {
        match which {
            BalloonQueue::Inflate => self.inflate.as_ref(),
            BalloonQueue::Deflate => self.deflate.as_ref(),
            BalloonQueue::Stats => self.stats.as_ref(),
            BalloonQueue::Reporting => self.reporting.as_ref(),
        }
    }

    fn slot(&mut self, which: BalloonQueue) -> &mut Option<QueueEvent> {
        match which {
            BalloonQueue::Inflate => &mut self.inflate,
            BalloonQueue::Deflate => &mut self.deflate,
            BalloonQueue::Stats => &mut self.stats,
            BalloonQueue::Reporting => &mut self.reporting,
        }
    }

    /// The queues in use, by role.
    pub(crate) fn queues(&self) -> impl Iterator<Item = (BalloonQueue, &QueueEvent)> {
        [
            BalloonQueue::Inflate,
            BalloonQueue::Deflate,
            BalloonQueue::Stats,
            BalloonQueue::Reporting,
        ]
        .into_iter()
        .filter_map(|which| self.get(which).map(|q| (which, q)))
    }

    /// Gives up the queues, keeping the eventfds the event loop watches. The unused queues'
    /// eventfds were never registered: removing them would only fail and count an error.
    pub(crate) fn into_events(self) -> impl Iterator<Item = vmm_sys_util::eventfd::EventFd> {
        [self.inflate, self.deflate, self.stats, self.reporting]
            .into_iter()
            .flatten()
            .map(|q| q.event)
    }
}

impl Balloon {
    /// Handles every buffer the driver made available on `which`. Runs on the event loop.
    pub(crate) fn process_queue(&mut self, which: BalloonQueue) {
        if self.core.is_broken() {
            return;
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let ActiveQueues {
            mem,
            interrupt,
            inflate,
            deflate,
            stats,
            reporting,
            ..
        } = active;
        let metrics = &*self.metrics;
        let result = match which {
            BalloonQueue::Inflate => inflate.as_mut().map(|q| {
                let pages = &mut self.pages;
                drain(mem, interrupt, q, metrics, |head, chain| {
                    let spent = inflate_chain(mem, chain, pages, metrics);
                    (Some((head, 0)), spent)
                })
            }),
            BalloonQueue::Deflate => deflate.as_mut().map(|q| {
                let pages = &mut self.pages;
                drain(mem, interrupt, q, metrics, |head, chain| {
                    let spent = deflate_chain(mem, chain, pages, metrics);
                    (Some((head, 0)), spent)
                })
            }),
            BalloonQueue::Stats => stats.as_mut().map(|q| {
                let latest = &mut self.latest_stats;
                let held = &mut self.held_stats_buffer;
                drain(mem, interrupt, q, metrics, |head, chain| {
                    if let Some(stats) = read_stats_chain(mem, chain, metrics) {
                        *latest = Some(stats);
                    }
                    // Hold the buffer: giving it back is how the device asks for fresh
                    // statistics. A driver following the protocol never has two outstanding;
                    // if it does, the older one goes back now.
                    (held.replace(head).map(|previous| (previous, 0)), 1)
                })
            }),
            BalloonQueue::Reporting => reporting.as_mut().map(|q| {
                drain(mem, interrupt, q, metrics, |head, chain| {
                    let (len, spent) = report_chain(mem, chain, metrics);
                    (Some((head, len)), spent)
                })
            }),
        };
        if let Some(Err(e)) = result {
            self.core
                .mark_broken(&format_args!("the {which} queue failed: {e}"));
        }
    }

    /// Processes every queue in use (after activation, in case the driver kicked before the
    /// eventfds were registered).
    pub(crate) fn process_all_queues(&mut self) {
        for which in [
            BalloonQueue::Inflate,
            BalloonQueue::Deflate,
            BalloonQueue::Stats,
            BalloonQueue::Reporting,
        ] {
            self.process_queue(which);
        }
    }

    /// Asks the driver for fresh statistics by giving back the stats buffer the device holds.
    pub(crate) fn request_stats(&mut self) {
        if self.core.is_broken() {
            return;
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Some(stats) = active.stats.as_mut() else {
            return;
        };
        let Some(head) = self.held_stats_buffer.take() else {
            debug!("balloon: statistics are due but the driver has not sent a stats buffer");
            return;
        };
        let result = stats.queue.add_used(&active.mem, head, 0).and_then(|()| {
            notify_used(
                &active.mem,
                &active.interrupt,
                &mut stats.queue,
                &self.metrics,
            )
        });
        if let Err(e) = result {
            self.core
                .mark_broken(&format_args!("the stats queue failed: {e}"));
        }
    }
}

/// Takes the available chains off `queue`, lets `handle` act on each, and puts on the used ring
/// what `handle` says to give back: `(head index, bytes written)`, with the guest pages the
/// chain cost. Stops once the chains taken (each costs at least one page, good or bad) have
/// spent `PAGES_PER_RUN`, and then kicks the queue so the loop comes back after serving the
/// others. Signals the driver if anything was given back.
fn drain<'m>(
    mem: &'m GuestMemoryMmap,
    interrupt: &VirtioInterrupt,
    queue_event: &mut QueueEvent,
    metrics: &BalloonMetrics,
    mut handle: impl FnMut(u16, DescriptorChain<&'m GuestMemoryMmap>) -> (Option<(u16, u32)>, u64),
) -> Result<(), virtio_queue::Error> {
    let queue = &mut queue_event.queue;
    let mut budget = RunBudget::new(PAGES_PER_RUN);
    let mut used_any = false;
    while !budget.is_spent() {
        let Some(chain) = queue.iter(mem)?.next() else {
            break;
        };
        let head = chain.head_index();
        budget.spend(1);
        match check_chain(mem, queue, head, false) {
            Ok(()) => {}
            Err(refusal @ ChainRefusal::NoSuchHead { .. }) => {
                // Nothing to read and nothing the used ring may name.
                complain(&metrics.invalid_descriptors, format_args!("{refusal}"));
                continue;
            }
            Err(refusal) => {
                complain(
                    &metrics.invalid_descriptors,
                    format_args!("a chain was refused: {refusal}; given back unread"),
                );
                queue.add_used(mem, head, 0)?;
                used_any = true;
                continue;
            }
        }
        let (used, pages) = handle(head, chain);
        budget.spend(pages);
        if let Some((used_head, len)) = used {
            queue.add_used(mem, used_head, len)?;
            used_any = true;
        }
    }
    if budget.is_spent() {
        // Come back for the rest (if there is none, the next run finds the ring empty).
        if let Err(e) = queue_event.event.write(1) {
            metrics.event_errors.inc();
            log::error!("balloon: cannot re-kick a queue to finish its work: {e}");
        }
    }
    if used_any {
        notify_used(mem, interrupt, queue, metrics)?;
    }
    Ok(())
}

/// Raises the used-buffer interrupt unless the driver asked not to be told yet (EVENT_IDX).
fn notify_used(
    mem: &GuestMemoryMmap,
    interrupt: &VirtioInterrupt,
    queue: &mut Queue,
    metrics: &BalloonMetrics,
) -> Result<(), virtio_queue::Error> {
    if queue.needs_notification(mem)? {
        if let Err(e) = interrupt.signal_used_queue() {
            metrics.interrupt_errors.inc();
            log::error!("balloon: cannot raise the used-buffer interrupt: {e}");
        }
    }
    Ok(())
}

fn inflate_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    pages: &mut BalloonBitmap,
    metrics: &BalloonMetrics,
) -> u64 {
    pfn_arrays(mem, chain, BalloonQueue::Inflate, metrics, |pfns| {
        release_pfns(mem, pfns, pages, metrics)
    })
}

fn deflate_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    pages: &mut BalloonBitmap,
    metrics: &BalloonMetrics,
) -> u64 {
    pfn_arrays(mem, chain, BalloonQueue::Deflate, metrics, |pfns| {
        for &pfn in pfns {
            let pfn = u64::from(pfn);
            if !pages.is_guest_page(pfn) {
                metrics.invalid_pfns.inc();
                continue;
            }
            metrics.deflate_pfns.inc();
            // No host action: MUST_TELL_HOST is not offered, and the released page faults back
            // in (zeroed) when the guest touches it.
            if !pages.remove(pfn) {
                metrics.deflate_absent_pfns.inc();
            }
        }
    })
}

/// Hands each PFN array of `chain` (its descriptors bounded) to `each`; the PFNs read, which the
/// queue's run budget counts.
fn pfn_arrays(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    which: BalloonQueue,
    metrics: &BalloonMetrics,
    mut each: impl FnMut(&[u32]),
) -> u64 {
    let mut pfns = [0u32; MAX_PFNS_PER_DESCRIPTOR];
    let mut spent = 0;
    for desc in bounded(chain, which, metrics) {
        if let Some(count) = read_pfn_array(mem, &desc, &mut pfns, metrics, which) {
            each(&pfns[..count]);
            spent += count as u64;
        }
    }
    spent
}

/// The descriptors of `chain`, up to `MAX_DESCRIPTORS_PER_CHAIN`; a longer chain (only possible
/// through an indirect table) is cut there and counted as one invalid descriptor.
fn bounded<'c>(
    chain: DescriptorChain<&'c GuestMemoryMmap>,
    which: BalloonQueue,
    metrics: &'c BalloonMetrics,
) -> impl Iterator<Item = Descriptor> + 'c {
    let mut chain = chain;
    let mut left = MAX_DESCRIPTORS_PER_CHAIN;
    std::iter::from_fn(move || {
        let desc = chain.next()?;
        if left == 0 {
            complain(
                &metrics.invalid_descriptors,
                format_args!(
                    "{which} chain has more than {MAX_DESCRIPTORS_PER_CHAIN} descriptors; the rest are skipped"
                ),
            );
            return None;
        }
        left -= 1;
        Some(desc)
    })
}

/// Reads one inflate/deflate descriptor's PFN array into `pfns`; returns how many PFNs, or
/// `None` (counted) if the descriptor is not a readable array of at most 256 le32 PFNs.
fn read_pfn_array(
    mem: &GuestMemoryMmap,
    desc: &Descriptor,
    pfns: &mut [u32; MAX_PFNS_PER_DESCRIPTOR],
    metrics: &BalloonMetrics,
    which: BalloonQueue,
) -> Option<usize> {
    let len = desc.len() as usize;
    let problem = if desc.is_write_only() {
        Some("is device-writable, not readable")
    } else if len == 0 || !len.is_multiple_of(PFN_SIZE) {
        Some("is not a whole number of 4-byte PFNs")
    } else if len > MAX_PFN_BUFFER {
        Some("carries more than 256 PFNs")
    } else {
        None
    };
    if let Some(problem) = problem {
        complain_descriptor(metrics, which, desc, &problem);
        return None;
    }
    let mut bytes = [0u8; MAX_PFN_BUFFER];
    if let Err(e) = mem.read_slice(&mut bytes[..len], desc.addr()) {
        complain_descriptor(metrics, which, desc, &format_args!("cannot be read ({e})"));
        return None;
    }
    for (pfn, le) in pfns.iter_mut().zip(bytes[..len].chunks_exact(PFN_SIZE)) {
        *pfn = u32::from_le_bytes([le[0], le[1], le[2], le[3]]);
    }
    Some(len / PFN_SIZE)
}

/// Reads the statistics in one stats buffer (the readable descriptors of the chain, in order).
/// Returns `None` (counted) if the buffer is malformed; the caller holds it all the same, so
/// the protocol goes on.
fn read_stats_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    metrics: &BalloonMetrics,
) -> Option<BalloonStats> {
    let mut buffer = Vec::new();
    for desc in bounded(chain, BalloonQueue::Stats, metrics) {
        let len = desc.len() as usize;
        let problem = if desc.is_write_only() {
            Some("is device-writable, not readable")
        } else if buffer.len() + len > MAX_STATS_BUFFER {
            Some("carries more statistics than the device accepts")
        } else {
            None
        };
        if let Some(problem) = problem {
            complain_descriptor(metrics, BalloonQueue::Stats, &desc, &problem);
            return None;
        }
        let start = buffer.len();
        buffer.resize(start + len, 0);
        if let Err(e) = mem.read_slice(&mut buffer[start..], desc.addr()) {
            complain_descriptor(
                metrics,
                BalloonQueue::Stats,
                &desc,
                &format_args!("cannot be read ({e})"),
            );
            return None;
        }
    }
    if !buffer.len().is_multiple_of(STAT_SIZE) {
        complain(
            &metrics.invalid_descriptors,
            format_args!(
                "a stats buffer of {} bytes is not whole 10-byte records; skipped",
                buffer.len()
            ),
        );
        return None;
    }
    let (stats, unknown) = BalloonStats::parse(&buffer);
    metrics.stats_updates.inc();
    if unknown > 0 {
        debug!("balloon: skipped {unknown} statistics with unknown tags");
        metrics.stats_unknown_tags.add(unknown);
    }
    Some(stats)
}

/// Releases the guest ranges of one free page report. Returns the used length (the bytes the
/// driver handed over: the device writes nothing, but the spec has no better length to give)
/// and the guest pages released, for the run's budget.
fn report_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    metrics: &BalloonMetrics,
) -> (u32, u64) {
    let mut total: u32 = 0;
    let mut spent = 0;
    for desc in bounded(chain, BalloonQueue::Reporting, metrics) {
        // Both directions are accepted: Linux makes report buffers device-writable, and the
        // device neither reads nor writes their contents.
        total = total.saturating_add(desc.len());
        let len = u64::from(desc.len());
        if len > MAX_REPORTED_RANGE {
            complain_descriptor(
                metrics,
                BalloonQueue::Reporting,
                &desc,
                &"is longer than a free block the guest can report",
            );
            continue;
        }
        spent += len.div_ceil(super::GUEST_PAGE_SIZE);
        match release_guest_range(mem, desc.addr(), len, metrics) {
            Ok(bytes) => metrics.reported_bytes.add(bytes),
            Err(e) => complain_descriptor(metrics, BalloonQueue::Reporting, &desc, &e),
        }
    }
    (total, spent)
}

/// Counts and logs a descriptor that is skipped.
fn complain_descriptor(
    metrics: &BalloonMetrics,
    which: BalloonQueue,
    desc: &Descriptor,
    problem: &dyn std::fmt::Display,
) {
    complain(
        &metrics.invalid_descriptors,
        format_args!(
            "{which} descriptor at {:#x}+{:#x} {problem}; skipped",
            desc.addr().raw_value(),
            desc.len()
        ),
    );
}

/// Counts a guest mistake; the first of its kind is a warning, the rest are debug messages, so a
/// hostile guest cannot flood the log (the counter says how many there were).
fn complain(counter: &Counter, message: std::fmt::Arguments<'_>) {
    if counter.get() == 0 {
        warn!("balloon: {message} (further ones are logged at debug level)");
    } else {
        debug!("balloon: {message}");
    }
    counter.inc();
}
