//! The request queue on the event loop: take each available chain (at most a run's budget),
//! validate it, answer a refused one at once, and hand an accepted one to the disk's I/O thread
//! (`worker.rs`); when the thread has carried it out, put the chain on the used ring and
//! interrupt the driver when it asked to be. The loop never reads, writes or syncs the image.
//!
//! Every chain goes back on the used ring, answered or not, so a driver is never left waiting on
//! a request the device refused. The used length is the number of bytes the device wrote to the
//! chain's buffers: the data of a successful read or GET_ID plus the status byte; just the
//! status byte for anything else; 0 if the chain has no usable status byte. Only a failure of
//! the queue itself (an available index the ring cannot hold, a used ring outside guest RAM)
//! marks the device as needing a reset.

use virtio_bindings::virtio_blk::VIRTIO_BLK_S_IOERR;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
use virtio_queue::{QueueOwnedT, QueueT};

use ballast_virtio::{check_chain, ChainRefusal, RunBudget};

use super::device::ActiveQueue;
use super::metrics::{report, BlockMetrics};
use super::request::{parse, Refusal, RefusalReason};
use super::worker::{answer, Job};
use super::{Block, QUEUE_SIZE};

/// The most chains taken off the ring per wake-up, good or bad. A driver that keeps the queue
/// full would otherwise keep the event loop (which also serves the API, the balloon and the
/// VM's shutdown) to itself; past this the device kicks itself and lets the loop serve the
/// others first.
pub(super) const CHAINS_PER_RUN: usize = QUEUE_SIZE as usize;
/// Requests handed to the I/O thread and not finished yet: at most one queue's worth. Past it
/// the device leaves chains on the ring until requests finish, so a guest that makes the same
/// heads available again before it got them back cannot grow the I/O thread's backlog.
pub(super) const MAX_IN_FLIGHT: usize = QUEUE_SIZE as usize;

enum Taken {
    /// The ring is empty.
    All,
    /// The budget ran out with chains left.
    MoreLeft,
    /// `MAX_IN_FLIGHT` requests are with the I/O thread.
    Full,
}

impl Block {
    /// Takes the requests the driver made available (up to the run's budget) and hands them to
    /// the I/O thread. Runs on the event loop.
    pub(crate) fn process_queue(&mut self) {
        if self.core.is_broken() {
            return;
        }
        let failure = match self.take_chains() {
            Ok(Taken::All | Taken::Full) => None,
            // Come back after the loop has served everyone else.
            Ok(Taken::MoreLeft) => self.active.as_ref().and_then(|active| {
                active.queue.event.write(1).err().map(|e| {
                    self.metrics.event_errors.inc();
                    format!("cannot re-kick the queue to finish the rest of the requests: {e}")
                })
            }),
            Err(e) => Some(format!("the request queue failed: {e}")),
        };
        if let Some(failure) = failure {
            self.core.mark_broken(&failure);
        }
    }

    /// Puts the requests the I/O thread finished on the used ring, then takes more (the ring
    /// may have been left alone while `MAX_IN_FLIGHT` requests were out). Runs on the event
    /// loop.
    pub(crate) fn complete_requests(&mut self) {
        let done = self.worker.completions.take();
        let generation = self.worker.generation();
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if self.core.is_broken() {
            return;
        }
        let mut used_any = false;
        let mut result = Ok(());
        for done in done.into_iter().filter(|d| d.generation == generation) {
            self.in_flight = self.in_flight.saturating_sub(1);
            result = active
                .queue
                .queue
                .add_used(&active.mem, done.head, done.len);
            if result.is_err() {
                break;
            }
            used_any = true;
        }
        if used_any && result.is_ok() {
            result = notify(active, &self.metrics, &self.core.label);
        }
        if let Err(e) = result {
            return self
                .core
                .mark_broken(&format_args!("the request queue failed: {e}"));
        }
        self.process_queue();
    }

    // Long on purpose: one pass over the ring, each chain checked, then refused or handed over,
    // in the order that keeps every chain accounted for.
    fn take_chains(&mut self) -> Result<Taken, virtio_queue::Error> {
        let limits = self.limits();
        let indirect = self.core.has_acked(VIRTIO_RING_F_INDIRECT_DESC);
        let Block {
            active,
            worker,
            metrics,
            core,
            in_flight,
            chains_per_run,
            ..
        } = self;
        let Some(active) = active.as_mut() else {
            return Ok(Taken::All);
        };
        let label = core.label.as_str();
        let mem = &active.mem;
        let queue = &mut active.queue.queue;
        let mut budget = RunBudget::new(*chains_per_run as u64);
        let mut used_any = false;
        let outcome = 'outer: loop {
            // With EVENT_IDX this does nothing (the driver kicks only when the available index
            // passes `avail_event`); without it, it asks the driver not to kick while we work.
            queue.disable_notification(mem)?;
            loop {
                if *in_flight >= MAX_IN_FLIGHT {
                    break 'outer Taken::Full;
                }
                if budget.is_spent() {
                    break 'outer Taken::MoreLeft;
                }
                let Some(chain) = queue.iter(mem)?.next() else {
                    break;
                };
                budget.spend(1);
                let head = chain.head_index();
                match check_chain(mem, queue, head, indirect) {
                    Ok(()) => {}
                    Err(refusal @ ChainRefusal::NoSuchHead { .. }) => {
                        // Nothing to read, and nothing the used ring may name.
                        report(
                            &metrics.invalid_requests,
                            label,
                            format_args!("{refusal}; skipped"),
                        );
                        continue;
                    }
                    Err(refusal) => {
                        report(
                            &metrics.invalid_requests,
                            label,
                            format_args!("request refused: {refusal}; given back unanswered"),
                        );
                        queue.add_used(mem, head, 0)?;
                        used_any = true;
                        continue;
                    }
                }
                match parse(mem, chain, limits) {
                    Ok(request) => {
                        let job = Job {
                            generation: worker.generation(),
                            head,
                            mem: mem.clone(),
                            request,
                        };
                        match worker.submit(job) {
                            Ok(()) => *in_flight += 1,
                            Err(job) => {
                                report(
                                    &metrics.io_errors,
                                    label,
                                    format_args!(
                                        "the disk's I/O thread has ended; a request fails"
                                    ),
                                );
                                let len =
                                    answer(mem, job.request.status, VIRTIO_BLK_S_IOERR as u8, 0);
                                queue.add_used(mem, head, len)?;
                                used_any = true;
                            }
                        }
                    }
                    Err(refusal) => {
                        let len = refuse(mem, refusal, metrics, label);
                        queue.add_used(mem, head, len)?;
                        used_any = true;
                    }
                }
            }
            // Re-enabling publishes `avail_event` (EVENT_IDX) or clears NO_NOTIFY; a chain that
            // arrived meanwhile would not be kicked, so look again.
            if !queue.enable_notification(mem)? {
                break Taken::All;
            }
        };
        if used_any {
            notify(active, metrics, label)?;
        }
        Ok(outcome)
    }
}

/// Answers a refused chain (if it has a status byte); returns the used length.
fn refuse(
    mem: &ballast_virtio::GuestMemoryMmap,
    Refusal { status, reason }: Refusal,
    metrics: &BlockMetrics,
    label: &str,
) -> u32 {
    let counter = match reason {
        RefusalReason::Unsupported(_) => &metrics.unsupported,
        RefusalReason::Invalid(_) => &metrics.invalid_requests,
    };
    let answered = if status.is_some() {
        ""
    } else {
        " (no status byte to answer in; given back unanswered)"
    };
    report(
        counter,
        label,
        format_args!("request refused: {reason}{answered}"),
    );
    status.map_or(0, |addr| answer(mem, addr, reason.status(), 0))
}

/// Raises the used-buffer interrupt unless the driver asked not to be told yet (EVENT_IDX).
fn notify(
    active: &mut ActiveQueue,
    metrics: &BlockMetrics,
    label: &str,
) -> Result<(), virtio_queue::Error> {
    if active.queue.queue.needs_notification(&active.mem)? {
        match active.interrupt.signal_used_queue() {
            Ok(()) => metrics.interrupts.inc(),
            Err(e) => report(
                &metrics.interrupt_errors,
                label,
                format_args!("cannot raise the used-buffer interrupt: {e}"),
            ),
        }
    }
    Ok(())
}

/// What the tests need of the device: the queue served and every request finished.
#[cfg(test)]
impl Block {
    /// `process_queue`, then waits (up to 5 s) until the I/O thread finished everything taken.
    pub(crate) fn run_queue(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        self.process_queue();
        while self.in_flight > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
            self.complete_requests();
        }
        assert_eq!(self.in_flight, 0, "requests still with the I/O thread");
    }
}
