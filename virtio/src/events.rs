//! A device's queues on the VMM event loop.
//!
//! `activate` and `reset` run on a vCPU thread and cannot touch the event loop's epoll set, so
//! they write the device's activation eventfd; the loop, watching it from the device's `init`,
//! then brings its registrations in line with the device's state: it removes the queue eventfds
//! of a reset activation and registers those of a new one. [`ActivationEvents`] is that eventfd
//! with the bookkeeping on both sides; the device keeps its own event tags and dispatch.
//!
//! `label` arguments name the device in log messages; `event_errors` counts what failed.

use std::io;

use event_manager::{EventOps, EventSet, Events};
use log::{error, warn};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::metrics::Counter;
use crate::ActivateError;

/// The activation eventfd, and which queue eventfds the event loop has in its epoll set.
#[derive(Debug)]
pub struct ActivationEvents {
    activate_evt: EventFd,
    /// Whether the loop registered (some of) the current activation's queue eventfds.
    registered: bool,
    /// Eventfds of a reset activation that are still in the epoll set.
    retired: Vec<EventFd>,
}

impl ActivationEvents {
    pub fn new() -> io::Result<Self> {
        Ok(ActivationEvents {
            activate_evt: EventFd::new(EFD_NONBLOCK)?,
            registered: false,
            retired: Vec::new(),
        })
    }

    // --- the vCPU side: `activate` and `reset` ---

    /// At the end of `activate`: the new activation's eventfds wait for the loop, which this
    /// wakes to register them.
    pub fn activated(&mut self) -> Result<(), ActivateError> {
        self.registered = false;
        self.activate_evt
            .write(1)
            .map_err(|e| ActivateError::Backend(format!("cannot wake the event loop: {e}")))
    }

    /// In `reset`, with the eventfds of the activation that ends: the ones the loop registered
    /// stay open until it removes them (closing them first would leave it dispatching a stale
    /// fd).
    pub fn retire(&mut self, events: impl IntoIterator<Item = EventFd>) {
        if self.registered {
            self.retired.extend(events);
        }
        self.registered = false;
    }

    /// Whether the loop has eventfds of a reset activation to remove.
    pub fn has_retired(&self) -> bool {
        !self.retired.is_empty()
    }

    /// At the end of `reset`: wakes the loop to remove what `retire` kept (and to do whatever
    /// else the device needs after a reset).
    pub fn wake_after_reset(&self, label: impl std::fmt::Display, event_errors: &Counter) {
        if let Err(e) = self.activate_evt.write(1) {
            event_errors.inc();
            error!("{label}: cannot wake the event loop after a reset: {e}");
        }
    }

    // --- the event loop side ---

    /// The `Events` for the activation eventfd under `tag`, for a device that registers it
    /// along with others of its own.
    pub fn events(&self, tag: u32) -> Events {
        Events::with_data(&self.activate_evt, tag, EventSet::IN)
    }

    /// In `init`: watches the activation eventfd under `tag`.
    pub fn watch(
        &self,
        ops: &mut EventOps,
        tag: u32,
        label: impl std::fmt::Display,
        event_errors: &Counter,
    ) {
        if let Err(e) = ops.add(self.events(tag)) {
            event_errors.inc();
            error!("{label}: cannot watch the activation eventfd: {e}");
        }
    }

    /// The activation eventfd fired: clears it. The count does not matter; the registrations
    /// follow the device's state.
    pub fn clear(&self) {
        let _ = self.activate_evt.read();
    }

    /// Removes the eventfds of reset activations from the epoll set and closes them.
    pub fn remove_retired(
        &mut self,
        ops: &mut EventOps,
        label: impl std::fmt::Display,
        event_errors: &Counter,
    ) {
        for event in self.retired.drain(..) {
            if let Err(e) = ops.remove(Events::empty(&event)) {
                event_errors.inc();
                warn!("{label}: cannot stop watching a reset queue's eventfd: {e}");
            }
        }
    }

    /// Whether the current activation's queue eventfds are registered (or were tried).
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// Registers (some of) the current activation's queue eventfds, each under its tag. All are
    /// tried; the error is the last failure. Once one is registered, all the activation's
    /// eventfds are retired at `reset`.
    pub fn register<'a>(
        &mut self,
        ops: &mut EventOps,
        queues: impl IntoIterator<Item = (&'a EventFd, u32)>,
    ) -> Result<(), event_manager::Error> {
        let mut failure = None;
        for (event, tag) in queues {
            match ops.add(Events::with_data(event, tag, EventSet::IN)) {
                Ok(()) => self.registered = true,
                Err(e) => failure = Some(e),
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

impl ActivationEvents {
    /// The device's registrations follow its state: removes the eventfds of a reset activation,
    /// and registers those of the current one, `queues` (`None` while not active), unless that
    /// was done. A device then calls this for its activation event, and from `init` (in case it
    /// was registered after activation). The error is the last registration that failed.
    pub fn sync<'a>(
        &mut self,
        ops: &mut EventOps,
        queues: Option<impl IntoIterator<Item = (&'a EventFd, u32)>>,
        label: impl std::fmt::Display,
        event_errors: &Counter,
    ) -> Result<(), event_manager::Error> {
        self.remove_retired(ops, label, event_errors);
        match queues {
            Some(queues) if !self.registered => self.register(ops, queues),
            _ => Ok(()),
        }
    }
}

/// Reads a queue's eventfd after it fired. An eventfd already read (by an earlier event or a
/// re-kick the device handled) is not an error.
pub fn read_queue_event(event: &EventFd) -> io::Result<()> {
    match event.read() {
        Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};

    use super::*;

    const ACTIVATE: u32 = 0;
    const QUEUE: u32 = 1;

    /// A device with one queue that counts its kicks.
    struct Device {
        events: ActivationEvents,
        queue: Option<EventFd>,
        kicks: usize,
        errors: Counter,
    }

    impl Device {
        fn activate(&mut self) -> EventFd {
            let queue = EventFd::new(EFD_NONBLOCK).unwrap();
            let kick = queue.try_clone().unwrap();
            self.queue = Some(queue);
            self.events.activated().unwrap();
            kick
        }

        fn reset(&mut self) {
            if let Some(queue) = self.queue.take() {
                self.events.retire([queue]);
            }
            if self.events.has_retired() {
                self.events.wake_after_reset("test", &self.errors);
            }
        }
    }

    impl MutEventSubscriber for Device {
        fn init(&mut self, ops: &mut EventOps) {
            self.events.watch(ops, ACTIVATE, "test", &self.errors);
        }

        fn process(&mut self, events: Events, ops: &mut EventOps) {
            match events.data() {
                ACTIVATE => {
                    self.events.clear();
                    self.events.remove_retired(ops, "test", &self.errors);
                    if let Some(queue) = &self.queue {
                        if !self.events.is_registered() {
                            self.events.register(ops, [(queue, QUEUE)]).unwrap();
                        }
                    }
                }
                QUEUE => {
                    read_queue_event(self.queue.as_ref().unwrap()).unwrap();
                    self.kicks += 1;
                }
                other => panic!("unexpected tag {other}"),
            }
        }
    }

    #[test]
    fn queues_are_registered_after_activation_and_removed_after_reset() {
        let device = Arc::new(Mutex::new(Device {
            events: ActivationEvents::new().unwrap(),
            queue: None,
            kicks: 0,
            errors: Counter::default(),
        }));
        let mut manager = EventManager::<Arc<Mutex<Device>>>::new().unwrap();
        manager.add_subscriber(device.clone());

        // A reset before anything was registered leaves nothing to remove.
        device.lock().unwrap().activate();
        device.lock().unwrap().reset();
        assert!(!device.lock().unwrap().events.has_retired());

        let kick = device.lock().unwrap().activate();
        assert_eq!(manager.run_with_timeout(0).unwrap(), 1);
        assert!(device.lock().unwrap().events.is_registered());
        kick.write(1).unwrap();
        assert_eq!(manager.run_with_timeout(0).unwrap(), 1);
        assert_eq!(device.lock().unwrap().kicks, 1);

        // Reset and activate again before the loop runs: the old eventfd goes, the new one comes.
        device.lock().unwrap().reset();
        assert!(device.lock().unwrap().events.has_retired());
        let kick_again = device.lock().unwrap().activate();
        assert_eq!(manager.run_with_timeout(0).unwrap(), 1);
        assert!(!device.lock().unwrap().events.has_retired());
        kick.write(1).unwrap();
        kick_again.write(1).unwrap();
        assert_eq!(manager.run_with_timeout(0).unwrap(), 1);
        assert_eq!(device.lock().unwrap().kicks, 2);
        assert_eq!(device.lock().unwrap().errors.get(), 0);
    }

    #[test]
    fn reading_a_queue_eventfd_that_was_already_read_is_not_an_error() {
        let event = EventFd::new(EFD_NONBLOCK).unwrap();
        event.write(1).unwrap();
        read_queue_event(&event).unwrap();
        read_queue_event(&event).unwrap();
    }
}
