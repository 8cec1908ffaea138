//! The event-loop side of the VM's lifecycle: turns the guest's power-off and reset requests,
//! and the host's SIGINT/SIGTERM, into one recorded exit.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::signals::{signal_name, SignalFd};
use crate::vstate::exit::{ExitState, VmExit};

pub struct Control {
    pub exit: Arc<ExitState>,
    pub poweroff: EventFd,
    pub reset: Vec<EventFd>,
    pub signals: SignalFd,
    /// A clone of the exit state's eventfd: it only wakes the loop, which then sees the stop.
    pub wake: EventFd,
}

impl MutEventSubscriber for Control {
    fn init(&mut self, ops: &mut EventOps) {
        let mut fds = vec![
            self.poweroff.as_raw_fd(),
            self.signals.as_raw_fd(),
            self.wake.as_raw_fd(),
        ];
        fds.extend(self.reset.iter().map(|e| e.as_raw_fd()));
        for fd in fds {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                // Without these the VM could not be stopped; record it as a failure.
                self.exit.request(VmExit::Failure(format!(
                    "cannot watch lifecycle events: {e:?}"
                )));
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.signals.as_raw_fd() {
            if let Some(sig) = self.signals.read() {
                log::info!("{} received, stopping the VM", signal_name(sig));
                self.exit.request(VmExit::Stopped(signal_name(sig).into()));
            }
        } else if fd == self.poweroff.as_raw_fd() {
            let _ = self.poweroff.read();
            log::info!("the guest powered off");
            self.exit.request(VmExit::Poweroff);
        } else if fd == self.wake.as_raw_fd() {
            let _ = self.wake.read();
        } else if let Some(evt) = self.reset.iter().find(|e| e.as_raw_fd() == fd) {
            let _ = evt.read();
            log::info!("the guest rebooted");
            self.exit.request(VmExit::Reset);
        }
    }
}
