//! The balloon on the VMM event loop.
//!
//! Before activation the device watches only its activation eventfd. `activate` and `reset` run
//! on a vCPU thread and cannot touch the event loop's epoll set, so they write that eventfd; the
//! loop then brings its registrations in line with the device's state (see
//! `ballast_virtio::events`): it removes the eventfds of a reset activation, and registers the
//! queues' eventfds and the statistics timer of a new one.

use std::os::fd::{AsRawFd, RawFd};

use ballast_virtio::events::read_queue_event;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::warn;

use super::queue::BalloonQueue;
use super::Balloon;

// Event data tags: which source an event came from.
const ACTIVATE: u32 = 0;
const INFLATE: u32 = 1;
const DEFLATE: u32 = 2;
const STATS: u32 = 3;
const REPORTING: u32 = 4;
const STATS_TIMER: u32 = 5;

fn tag(which: BalloonQueue) -> u32 {
    match which {
        BalloonQueue::Inflate => INFLATE,
        BalloonQueue::Deflate => DEFLATE,
        BalloonQueue::Stats => STATS,
        BalloonQueue::Reporting => REPORTING,
    }
}

impl MutEventSubscriber for Balloon {
    fn init(&mut self, ops: &mut EventOps) {
        self.core.watch_activation(ops, ACTIVATE);
        // Registered after activation (unusual, but harmless): catch up now.
        self.sync_registrations(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            ACTIVATE => {
                self.core.events.clear();
                self.sync_registrations(ops);
                self.process_all_queues();
            }
            INFLATE => self.on_queue_event(BalloonQueue::Inflate, events.fd()),
            DEFLATE => self.on_queue_event(BalloonQueue::Deflate, events.fd()),
            STATS => self.on_queue_event(BalloonQueue::Stats, events.fd()),
            REPORTING => self.on_queue_event(BalloonQueue::Reporting, events.fd()),
            STATS_TIMER => self.on_stats_timer(),
            other => warn!(
                "balloon: event with unknown tag {other} on fd {}",
                events.fd()
            ),
        }
    }
}

impl Balloon {
    /// Makes the event loop watch exactly the current activation's eventfds (and the stats timer
    /// if statistics were negotiated).
    fn sync_registrations(&mut self, ops: &mut EventOps) {
        self.core.remove_retired(ops);

        let wants_timer = self
            .active
            .as_ref()
            .is_some_and(|active| active.stats.is_some());
        if self.timer_registered && !wants_timer {
            if let Some(timer) = &self.stats_timer {
                if let Err(e) = ops.remove(Events::empty(timer)) {
                    self.metrics.event_errors.inc();
                    warn!("balloon: cannot stop watching the statistics timer: {e}");
                }
            }
            self.timer_registered = false;
        }

        let Some(active) = self.active.as_ref() else {
            return;
        };
        if self.core.events.is_registered() {
            return;
        }
        let mut failure: Option<String> = None;
        for (which, queue) in active.queues() {
            if let Err(e) = self.core.events.register(ops, [(&queue.event, tag(which))]) {
                failure = Some(format!("cannot watch the {which} queue's eventfd: {e}"));
            }
        }

        if wants_timer && !self.timer_registered {
            if let Some(timer) = &self.stats_timer {
                match ops.add(Events::with_data(timer, STATS_TIMER, EventSet::IN)) {
                    Ok(()) => self.timer_registered = true,
                    Err(e) => failure = Some(format!("cannot watch the statistics timer: {e}")),
                }
            }
        }
        if self.timer_registered {
            if let Err(e) = self.arm_stats_timer() {
                failure = Some(format!("cannot arm the statistics timer: {e}"));
            }
        }

        if let Some(failure) = failure {
            // The device cannot hear the driver: better the driver learns it needs a reset than
            // waits forever.
            self.metrics.event_errors.inc();
            self.core.mark_broken(&failure);
        }
    }

    fn on_queue_event(&mut self, which: BalloonQueue, fd: RawFd) {
        let Some(queue) = self.active.as_ref().and_then(|active| active.get(which)) else {
            // A reset activation's eventfd, removed when the loop handles the activation eventfd.
            return;
        };
        if queue.event.as_raw_fd() != fd {
            return;
        }
        if let Err(e) = read_queue_event(&queue.event) {
            self.metrics.event_errors.inc();
            warn!("balloon: cannot read the {which} queue's eventfd: {e}");
        }
        self.process_queue(which);
    }

    fn on_stats_timer(&mut self) {
        if let Some(timer) = self.stats_timer.as_mut() {
            // Non-blocking: the timer may have been re-armed since epoll saw it expire, and
            // then there is nothing to read and no statistics are due.
            match timer.wait() {
                Ok(_) => {}
                Err(e) if e.errno() == libc::EAGAIN => return,
                Err(e) => {
                    self.metrics.event_errors.inc();
                    warn!("balloon: cannot read the statistics timer: {e}");
                    return;
                }
            }
        }
        self.request_stats();
    }
}
