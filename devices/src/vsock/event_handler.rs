//! The vsock device on the VMM event loop.
//!
//! From `init` on, the device watches its activation eventfd, the host Unix listener, the
//! in-process connection queue's eventfd and a timer. `activate` and `reset` run on a vCPU thread
//! and cannot touch the epoll set, so they write the activation eventfd; the loop then registers
//! the queues' eventfds of a new activation and removes those of a reset one (see
//! `ballast_virtio::events`). Host streams come and go as connections do. After every event the
//! device takes the guest's tx packets, fills its rx buffers, brings the epoll set in line with
//! what each host stream waits for, and arms the timer for the next timeout.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::{error, warn};

use super::metrics::report;
use super::Vsock;

// Event data tags: which source an event came from.
const ACTIVATE: u32 = 0;
const RX_QUEUE: u32 = 1;
const TX_QUEUE: u32 = 2;
const EVENT_QUEUE: u32 = 3;
/// The host socket (registered by the muxer, which pauses it when accepting fails).
pub(super) const LISTENER: u32 = 4;
const LOCAL: u32 = 5;
const TIMER: u32 = 6;
/// A host stream: a connection's, or one still sending its `CONNECT` line.
pub(super) const STREAM: u32 = 7;

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        let sources = [
            ("the activation eventfd", self.core.events.events(ACTIVATE)),
            (
                "the in-process connection eventfd",
                Events::with_data(&self.local.event, LOCAL, EventSet::IN),
            ),
            (
                "the timer",
                Events::with_data(&self.timer, TIMER, EventSet::IN),
            ),
        ];
        for (what, events) in sources {
            if let Err(e) = ops.add(events) {
                self.metrics.event_errors.inc();
                error!("{}: cannot watch {what}: {e}", self.core.label);
            }
        }
        // Registered after activation (unusual, but harmless): catch up now.
        self.sync_queue_registrations(ops);
        self.after_event(ops, Instant::now());
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let now = Instant::now();
        match events.data() {
            ACTIVATE => {
                self.core.events.clear();
                self.sync_queue_registrations(ops);
            }
            // The queues are looked at after every event anyway.
            RX_QUEUE | TX_QUEUE | EVENT_QUEUE => self.read_queue_event(events.fd()),
            LISTENER => self.muxer.accept(now),
            LOCAL => self.muxer.take_local(now),
            TIMER => {
                // Disarming also clears the expiry that made the timer readable (so this does not
                // block on a read); `arm_timer` sets it again for the next deadline.
                if let Err(e) = self.timer.clear() {
                    report(
                        &self.metrics.event_errors,
                        &self.core.label,
                        format_args!("cannot disarm the timer: {e}"),
                    );
                }
                self.timer_deadline = None;
            }
            STREAM => self
                .muxer
                .on_stream_event(events.fd(), events.event_set(), now),
            other => warn!(
                "{}: event with unknown tag {other} on fd {}",
                self.core.label,
                events.fd()
            ),
        }
        self.after_event(ops, now);
    }
}

impl Vsock {
    fn after_event(&mut self, ops: &mut EventOps, now: Instant) {
        self.muxer.sweep(now);
        self.pump(now);
        self.muxer.sync(ops);
        self.arm_timer(now);
    }

    /// Makes the event loop watch exactly the current activation's queue eventfds.
    fn sync_queue_registrations(&mut self, ops: &mut EventOps) {
        let queues = self.active.as_ref().map(|a| {
            [
                (&a.rx.event, RX_QUEUE),
                (&a.tx.event, TX_QUEUE),
                (&a.event.event, EVENT_QUEUE),
            ]
        });
        self.core.sync_queues(ops, queues, "a queue's eventfd");
    }

    fn read_queue_event(&mut self, fd: RawFd) {
        let Some(active) = self.active.as_ref() else {
            // A reset activation's eventfd, removed when the loop handles the activation eventfd.
            return;
        };
        let Some(event) = [&active.rx.event, &active.tx.event, &active.event.event]
            .into_iter()
            .find(|e| e.as_raw_fd() == fd)
        else {
            return;
        };
        if let Err(e) = ballast_virtio::events::read_queue_event(event) {
            report(
                &self.metrics.event_errors,
                &self.core.label,
                format_args!("cannot read a queue's eventfd: {e}"),
            );
        }
    }

    /// Arms the timer for the muxer's next deadline, or disarms it if there is none.
    fn arm_timer(&mut self, now: Instant) {
        let next = self.muxer.next_deadline();
        if next == self.timer_deadline {
            return;
        }
        let result = match next {
            // A zero duration would disarm the timer instead.
            Some(at) => self.timer.reset(
                at.saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
                None,
            ),
            None => self.timer.clear(),
        };
        match result {
            Ok(()) => self.timer_deadline = next,
            Err(e) => report(
                &self.metrics.event_errors,
                &self.core.label,
                format_args!("cannot arm the timer; timeouts may be late: {e}"),
            ),
        }
    }
}
