//! The block device on the VMM event loop.
//!
//! Before activation the device watches only its `activate_evt`. `activate` and `reset` run on a
//! vCPU thread and cannot touch the event loop's epoll set, so they write `activate_evt`; the
//! loop then brings its registrations in line with the device's state: it removes the eventfd of
//! a reset activation and registers the queue's eventfd of a new one. Requests are processed
//! here, on the event loop thread, when the queue's eventfd fires.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::{error, warn};

use super::Block;

// Event data tags: which source an event came from.
const ACTIVATE: u32 = 0;
const QUEUE: u32 = 1;

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        let activate = Events::with_data(&self.activate_evt, ACTIVATE, EventSet::IN);
        if let Err(e) = ops.add(activate) {
            self.metrics.event_errors.inc();
            error!(
                "virtio-blk {}: cannot watch the activation eventfd: {e}",
                self.label
            );
        }
        // Registered after activation (unusual, but harmless): catch up now.
        self.sync_registrations(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            ACTIVATE => {
                // The count does not matter; `sync_registrations` looks at the device's state.
                let _ = self.activate_evt.read();
                self.sync_registrations(ops);
                // The driver may have queued requests before the eventfd was watched.
                self.process_queue();
            }
            QUEUE => self.on_queue_event(events.fd()),
            other => warn!(
                "virtio-blk {}: event with unknown tag {other} on fd {}",
                self.label,
                events.fd()
            ),
        }
    }
}

impl Block {
    /// Makes the event loop watch exactly the current activation's queue eventfd.
    fn sync_registrations(&mut self, ops: &mut EventOps) {
        for event in self.retired_events.drain(..) {
            if let Err(e) = ops.remove(Events::empty(&event)) {
                self.metrics.event_errors.inc();
                warn!(
                    "virtio-blk {}: cannot stop watching a reset queue's eventfd: {e}",
                    self.label
                );
            }
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if active.registered {
            return;
        }
        let event = Events::with_data(&active.queue.event, QUEUE, EventSet::IN);
        let result = ops.add(event);
        active.registered = result.is_ok();
        if let Err(e) = result {
            // The device cannot hear the driver: better the driver learns it needs a reset than
            // waits forever.
            self.metrics.event_errors.inc();
            self.mark_broken(&format_args!("cannot watch the queue's eventfd: {e}"));
        }
    }

    fn on_queue_event(&mut self, fd: RawFd) {
        let Some(active) = self.active.as_ref() else {
            // A reset activation's eventfd, removed when the loop handles `activate_evt`.
            return;
        };
        if active.queue.event.as_raw_fd() != fd {
            return;
        }
        if let Err(e) = active.queue.event.read() {
            if e.kind() != io::ErrorKind::WouldBlock {
                self.metrics.event_errors.inc();
                warn!(
                    "virtio-blk {}: cannot read the queue's eventfd: {e}",
                    self.label
                );
            }
        }
        self.process_queue();
    }
}
