//! The rx and tx queues: guest packets from tx chains go to the muxer, the muxer's packets for
//! the guest go into rx buffers. Every tx chain goes back on the used ring, valid or not; an rx
//! buffer is used only when there is a packet for it (or it is unusable, and goes back empty).
//! Only a failure of a queue itself (an available index the ring cannot hold, a ring outside
//! guest RAM) marks the device as needing a reset.

use std::time::Instant;

use virtio_queue::{QueueOwnedT, QueueT};
use virtio_vsock::packet::VsockPacket;
use vm_memory::Bytes;

use ballast_virtio::{check_chain, ChainRefusal, RunBudget, VirtioInterrupt};

use super::device::ActiveQueues;
use super::metrics::{report, VsockMetrics};
use super::packet::{read_tx, HEADER_SIZE};
use super::{Vsock, MAX_PKT_LEN, QUEUE_SIZE};

/// The most tx chains, and rx buffers, taken per wake-up (good or bad), so a busy or hostile
/// guest cannot keep the event loop (which also serves the API, the balloon and the VM's
/// shutdown) to itself; past this the device kicks itself and lets the loop serve the others
/// first.
pub(super) const MAX_PER_RUN: usize = QUEUE_SIZE as usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxRun {
    /// The queue is empty.
    Done,
    /// The budget ran out with chains left.
    MoreLeft,
    /// Waiting for the guest to take the resets already queued.
    Stalled,
}

struct RxRun {
    delivered: usize,
    more_left: bool,
}

impl Vsock {
    /// Takes the guest's tx packets and fills its rx buffers. Runs on the event loop.
    pub(super) fn pump(&mut self, now: Instant) {
        const ROUNDS: usize = 4;
        for round in 1..=ROUNDS {
            if self.core.is_broken() || self.active.is_none() {
                return;
            }
            let tx = match self.process_tx(now) {
                Ok(run) => run,
                Err(e) => {
                    return self
                        .core
                        .mark_broken(&format_args!("the tx queue failed: {e}"))
                }
            };
            let rx = match self.process_rx(now) {
                Ok(run) => run,
                Err(e) => {
                    return self
                        .core
                        .mark_broken(&format_args!("the rx queue failed: {e}"))
                }
            };
            // A stalled tx queue goes on as soon as the guest took the resets in its way.
            let unstalled =
                tx == TxRun::Stalled && rx.delivered > 0 && !self.muxer.rst_backlog_full();
            if unstalled && round < ROUNDS {
                continue;
            }
            if tx == TxRun::Stalled && !unstalled {
                self.metrics.tx_stalls.inc();
            }
            // Come back after the loop has served everyone else.
            if tx == TxRun::MoreLeft || unstalled {
                self.kick(|a| &a.tx.event);
            }
            if rx.more_left {
                self.kick(|a| &a.rx.event);
            }
            return;
        }
    }

    fn kick(&self, event: fn(&ActiveQueues) -> &vmm_sys_util::eventfd::EventFd) {
        if let Some(active) = &self.active {
            if let Err(e) = event(active).write(1) {
                report(
                    &self.metrics.event_errors,
                    &self.core.label,
                    format_args!("cannot re-kick a queue to finish its work: {e}"),
                );
            }
        }
    }

    fn process_tx(&mut self, now: Instant) -> Result<TxRun, virtio_queue::Error> {
        let per_run = self.muxer.limits().chains_per_run;
        let Some(active) = self.active.as_mut() else {
            return Ok(TxRun::Done);
        };
        let mem = &active.mem;
        let queue = &mut active.tx.queue;
        // Every chain taken off the ring counts, good or bad: a guest recycling bad chains
        // must not keep the loop here any longer than one sending good ones.
        let mut budget = RunBudget::new(per_run as u64);
        let mut used_any = false;
        let run = 'outer: loop {
            // With EVENT_IDX this does nothing (the driver kicks only when the available index
            // passes `avail_event`); without it, it asks the driver not to kick while we work.
            queue.disable_notification(mem)?;
            loop {
                if self.muxer.rst_backlog_full() {
                    break 'outer TxRun::Stalled;
                }
                if budget.is_spent() {
                    break 'outer TxRun::MoreLeft;
                }
                let Some(chain) = queue.iter(mem)?.next() else {
                    break;
                };
                budget.spend(1);
                let head = chain.head_index();
                self.metrics.tx_packets.inc();
                match check_chain(mem, queue, head, false) {
                    Ok(()) => match read_tx(mem, chain, &mut self.scratch) {
                        Ok(hdr) => {
                            let data = &self.scratch[..hdr.len as usize];
                            self.muxer.handle_tx(&hdr, data, now);
                        }
                        Err(refusal) => self.muxer.refuse_malformed(refusal.header, &refusal.error),
                    },
                    // No such descriptor: nothing to read, and nothing the used ring may name.
                    Err(refusal @ ChainRefusal::NoSuchHead { .. }) => {
                        report(
                            &self.metrics.malformed_tx,
                            &self.core.label,
                            format_args!("{refusal}; skipped"),
                        );
                        continue;
                    }
                    Err(refusal) => report(
                        &self.metrics.malformed_tx,
                        &self.core.label,
                        format_args!("a tx chain was refused: {refusal}"),
                    ),
                }
                // The device writes nothing into tx buffers.
                queue.add_used(mem, head, 0)?;
                used_any = true;
            }
            // Re-enabling publishes `avail_event` (EVENT_IDX) or clears NO_NOTIFY; a chain that
            // arrived meanwhile would not be kicked, so look again.
            if !queue.enable_notification(mem)? {
                break TxRun::Done;
            }
        };
        if used_any && queue.needs_notification(mem)? {
            signal(&active.interrupt, &self.metrics, &self.core.label);
        }
        Ok(run)
    }

    // Long on purpose: one pass over the rx queue, in the order the bounds are checked (a
    // buffer, then its header, then what the muxer may put in it); split up, the checks would
    // lose the order that makes them safe.
    fn process_rx(&mut self, now: Instant) -> Result<RxRun, virtio_queue::Error> {
        let per_run = self.muxer.limits().chains_per_run;
        let mut run = RxRun {
            delivered: 0,
            more_left: false,
        };
        let Some(active) = self.active.as_mut() else {
            return Ok(run);
        };
        let mem = &active.mem;
        let queue = &mut active.rx.queue;
        let mut used_any = false;
        // Every buffer taken off the ring counts, usable or not: a guest handing back one bad
        // buffer over and over must not keep the loop here while the muxer has packets for it.
        let mut budget = RunBudget::new(per_run as u64);
        while self.muxer.has_rx() {
            if budget.is_spent() {
                run.more_left = true;
                break;
            }
            let Some(mut chain) = queue.iter(mem)?.next() else {
                // Out of buffers: ask the driver to kick when it adds some (EVENT_IDX publishes
                // the index to kick at), and look once more in case it just did.
                if queue.enable_notification(mem)? {
                    continue;
                }
                break;
            };
            budget.spend(1);
            let head = chain.head_index();
            match check_chain(mem, queue, head, false) {
                Ok(()) => {}
                Err(refusal @ ChainRefusal::NoSuchHead { .. }) => {
                    report(
                        &self.metrics.bad_rx_buffers,
                        &self.core.label,
                        format_args!("{refusal}; skipped"),
                    );
                    continue;
                }
                Err(refusal) => {
                    report(
                        &self.metrics.bad_rx_buffers,
                        &self.core.label,
                        format_args!("returned an unusable rx buffer empty: {refusal}"),
                    );
                    queue.add_used(mem, head, 0)?;
                    used_any = true;
                    continue;
                }
            }
            // Any data buffer size is fine: the device fills at most MAX_PKT_LEN of it.
            let mut pkt = match VsockPacket::from_rx_virtq_chain(mem, &mut chain, u32::MAX) {
                Ok(pkt) => pkt,
                Err(e) => {
                    report(
                        &self.metrics.bad_rx_buffers,
                        &self.core.label,
                        format_args!("returned an unusable rx buffer empty: {e}"),
                    );
                    queue.add_used(mem, head, 0)?;
                    used_any = true;
                    continue;
                }
            };
            let capacity = pkt.data_slice().map_or(0, |d| d.len()).min(MAX_PKT_LEN);
            let Some(hdr) = self.muxer.next_rx(capacity, &mut self.scratch, now) else {
                // Nothing after all, or nothing that fits this buffer: it stays the driver's.
                queue.go_to_previous_position();
                break;
            };
            let len = hdr.len as usize;
            let filled = match pkt.data_slice() {
                Some(data) if len > 0 => data
                    .write_slice(&self.scratch[..len], 0)
                    .map_err(|e| e.to_string()),
                None if len > 0 => Err("no data buffer".to_string()),
                _ => Ok(()),
            }
            .and_then(|()| {
                pkt.set_header_from_raw(&hdr.to_bytes())
                    .map_err(|e| e.to_string())
            });
            match filled {
                Ok(()) => {
                    queue.add_used(mem, head, (HEADER_SIZE + len) as u32)?;
                    self.metrics.rx_packets.inc();
                    run.delivered += 1;
                }
                Err(e) => {
                    // Validated when parsed, so this should not happen; the data read from the
                    // host is lost either way, and so is the connection.
                    report(
                        &self.metrics.bad_rx_buffers,
                        &self.core.label,
                        format_args!("cannot fill an rx buffer with {hdr:?}: {e}"),
                    );
                    self.muxer.lost_rx(&hdr);
                    queue.add_used(mem, head, 0)?;
                }
            }
            used_any = true;
        }
        if used_any && queue.needs_notification(mem)? {
            signal(&active.interrupt, &self.metrics, &self.core.label);
        }
        Ok(run)
    }
}

fn signal(interrupt: &VirtioInterrupt, metrics: &VsockMetrics, label: &str) {
    match interrupt.signal_used_queue() {
        Ok(()) => metrics.interrupts.inc(),
        Err(e) => report(
            &metrics.interrupt_errors,
            label,
            format_args!("cannot raise the used-buffer interrupt: {e}"),
        ),
    }
}
