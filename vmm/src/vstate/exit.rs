//! Why the VM stopped, reported once by whichever thread saw it first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off (ACPI S5).
    Poweroff,
    /// The guest rebooted (i8042 reset, ACPI reset register, or a triple fault).
    Reset,
    /// The host asked ballast to stop (SIGINT / SIGTERM, or the API).
    Stopped(String),
    /// A vCPU could not go on.
    Failure(String),
}

impl VmExit {
    /// ballast's exit status: 0 for an orderly end, 1 for a failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            VmExit::Failure(_) => 1,
            _ => 0,
        }
    }
}

/// Shared by the vCPU threads and the event loop.
pub struct ExitState {
    reason: Mutex<Option<VmExit>>,
    stopping: AtomicBool,
    evt: EventFd,
}

impl ExitState {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            reason: Mutex::new(None),
            stopping: AtomicBool::new(false),
            evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Records `reason` unless an earlier one is already recorded, and wakes the event loop.
    pub fn request(&self, reason: VmExit) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        self.stopping.store(true, Ordering::SeqCst);
        // A full eventfd counter already wakes the loop, so a failed write loses nothing.
        let _ = self.evt.write(1);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn reason(&self) -> Option<VmExit> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Readable when an exit was requested.
    pub fn event(&self) -> &EventFd {
        &self.evt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins() {
        let state = ExitState::new().unwrap();
        assert!(!state.is_stopping());
        state.request(VmExit::Poweroff);
        state.request(VmExit::Failure("late".into()));
        assert!(state.is_stopping());
        assert_eq!(state.reason(), Some(VmExit::Poweroff));
        assert_eq!(state.event().read().unwrap(), 2);
        assert_eq!(VmExit::Failure(String::new()).exit_code(), 1);
    }
}
