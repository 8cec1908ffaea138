//! The block device on the VMM event loop.
//!
//! Before activation the device watches only its activation eventfd. `activate` and `reset` run
//! on a vCPU thread and cannot touch the event loop's epoll set, so they write that eventfd; the
//! loop then brings its registrations in line with the device's state (see
//! `ballast_virtio::events`): it removes the eventfd of a reset activation and registers the
//! queue's eventfd of a new one. Chains are taken here when the queue's eventfd fires, and
//! completed when the eventfd of the disk's I/O thread says requests finished.

use std::os::fd::{AsRawFd, RawFd};

use ballast_virtio::events::read_queue_event;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::warn;

use super::Block;

// Event data tags: which source an event came from.
const ACTIVATE: u32 = 0;
const QUEUE: u32 = 1;
const COMPLETION: u32 = 2;

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        self.core.watch_activation(ops, ACTIVATE);
        let completions =
            Events::with_data(&self.worker.completions.event, COMPLETION, EventSet::IN);
        if let Err(e) = ops.add(completions) {
            // Without it no request would ever be completed: the driver had better reset.
            self.metrics.event_errors.inc();
            self.core
                .mark_broken(&format_args!("cannot watch the I/O thread's eventfd: {e}"));
        }
        // Registered after activation (unusual, but harmless): catch up now.
        self.sync_registrations(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            ACTIVATE => {
                self.core.events.clear();
                self.sync_registrations(ops);
                // The driver may have queued requests before the eventfd was watched.
                self.process_queue();
            }
            QUEUE => self.on_queue_event(events.fd()),
            COMPLETION => self.complete_requests(),
            other => warn!(
                "{}: event with unknown tag {other} on fd {}",
                self.core.label,
                events.fd()
            ),
        }
    }
}

impl Block {
    /// Makes the event loop watch exactly the current activation's queue eventfd.
    fn sync_registrations(&mut self, ops: &mut EventOps) {
        let queue = self.active.as_ref().map(|a| [(&a.queue.event, QUEUE)]);
        self.core.sync_queues(ops, queue, "the queue's eventfd");
    }

    fn on_queue_event(&mut self, fd: RawFd) {
        let Some(active) = self.active.as_ref() else {
            // A reset activation's eventfd, removed when the loop handles the activation eventfd.
            return;
        };
        if active.queue.event.as_raw_fd() != fd {
            return;
        }
        if let Err(e) = read_queue_event(&active.queue.event) {
            self.metrics.event_errors.inc();
            warn!("{}: cannot read the queue's eventfd: {e}", self.core.label);
        }
        self.process_queue();
    }
}
