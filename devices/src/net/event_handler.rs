//! The network device on the VMM event loop.
//!
//! From `init` on, the device watches its activation eventfd and the TAP (edge-triggered: a
//! frame arriving says so once, and the device reads until the TAP is empty or its run budget
//! is spent). `activate` and `reset` run on a vCPU thread and cannot touch the epoll set, so
//! they write the activation eventfd; the loop then registers the queues' eventfds of a new
//! activation and removes those of a reset one (see `ballast_virtio::events`), and sets the
//! TAP's offloads to what the driver negotiated before the first frame is read.

use std::os::fd::{AsRawFd, RawFd};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::warn;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
};

use super::metrics::report;
use super::Net;

// Event data tags: which source an event came from.
const ACTIVATE: u32 = 0;
const RX_QUEUE: u32 = 1;
const TX_QUEUE: u32 = 2;
const TAP: u32 = 3;

impl MutEventSubscriber for Net {
    fn init(&mut self, ops: &mut EventOps) {
        self.core.watch_activation(ops, ACTIVATE);
        if let Err(e) = ops.add(Events::with_data(&self.tap, TAP, self.tap_interest())) {
            self.metrics.event_errors.inc();
            log::error!("{}: cannot watch the TAP: {e}", self.core.label);
        }
        self.tap_watched_for_writing = self.tx.blocked;
        // Registered after activation (unusual, but harmless): catch up now.
        self.sync_registrations(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            ACTIVATE => {
                self.core.events.clear();
                self.sync_registrations(ops);
                self.apply_offloads();
                // The driver may have queued frames and buffers before the eventfds were watched.
                self.process_tx();
                self.process_rx();
            }
            RX_QUEUE => {
                if self.read_queue_event(events.fd()) {
                    self.process_rx();
                }
            }
            TX_QUEUE => {
                if self.read_queue_event(events.fd()) {
                    self.process_tx();
                }
            }
            TAP => {
                let set = events.event_set();
                if set.contains(EventSet::OUT) && self.tx.blocked {
                    self.tx.blocked = false;
                    self.process_tx();
                }
                if set.intersects(EventSet::IN | EventSet::ERROR | EventSet::HANG_UP) {
                    // An error shows on the next read, which reports it.
                    self.rx.tap_readable = true;
                    self.process_rx();
                }
            }
            other => warn!(
                "{}: event with unknown tag {other} on fd {}",
                self.core.label,
                events.fd()
            ),
        }
        self.sync_tap_interest(ops);
    }
}

impl Net {
    /// Makes the event loop watch exactly the current activation's queue eventfds.
    fn sync_registrations(&mut self, ops: &mut EventOps) {
        let queues = self
            .active
            .as_ref()
            .map(|a| [(&a.rx.event, RX_QUEUE), (&a.tx.event, TX_QUEUE)]);
        self.core.sync_queues(ops, queues, "a queue's eventfd");
    }

    /// The TAP is always watched for frames; for room too while a guest frame waits for it.
    fn tap_interest(&self) -> EventSet {
        let mut set = EventSet::IN | EventSet::EDGE_TRIGGERED;
        if self.tx.blocked {
            set |= EventSet::OUT;
        }
        set
    }

    fn sync_tap_interest(&mut self, ops: &mut EventOps) {
        if self.tap_watched_for_writing == self.tx.blocked {
            return;
        }
        match ops.modify(Events::with_data(&self.tap, TAP, self.tap_interest())) {
            Ok(()) => self.tap_watched_for_writing = self.tx.blocked,
            Err(e) => report(
                &self.metrics.event_errors,
                &self.core.label,
                format_args!("cannot change what the TAP is watched for: {e}"),
            ),
        }
    }

    /// Reads the eventfd of a current queue; false for one of a reset activation (removed when
    /// the loop handles the activation eventfd).
    fn read_queue_event(&mut self, fd: RawFd) -> bool {
        let Some(active) = self.active.as_ref() else {
            return false;
        };
        let Some(event) = [&active.rx.event, &active.tx.event]
            .into_iter()
            .find(|e| e.as_raw_fd() == fd)
        else {
            return false;
        };
        if let Err(e) = ballast_virtio::events::read_queue_event(event) {
            report(
                &self.metrics.event_errors,
                &self.core.label,
                format_args!("cannot read a queue's eventfd: {e}"),
            );
        }
        true
    }

    /// Once per activation, before any frame is read for it: the host kernel sends partial
    /// checksums and big segments only if the driver takes them. A TAP that refuses leaves
    /// the device broken rather than sending the guest what it cannot take.
    pub(super) fn apply_offloads(&mut self) {
        let acked = self.acked();
        let Some(active) = self.active.as_mut().filter(|a| !a.offloads_set) else {
            return;
        };
        let has = |bit: u32| acked & (1 << bit) != 0;
        let mut flags = 0;
        // Segmentation offloads need the checksum one (virtio 1.2, 5.1.3.1).
        if has(VIRTIO_NET_F_GUEST_CSUM) {
            flags |= libc::TUN_F_CSUM;
            if has(VIRTIO_NET_F_GUEST_TSO4) {
                flags |= libc::TUN_F_TSO4;
            }
            if has(VIRTIO_NET_F_GUEST_TSO6) {
                flags |= libc::TUN_F_TSO6;
            }
        }
        match self.tap.set_offloads(flags) {
            Ok(()) => active.offloads_set = true,
            Err(e) => self.core.mark_broken(&format_args!(
                "cannot set the TAP's offloads to {flags:#x}: {e}"
            )),
        }
    }
}
