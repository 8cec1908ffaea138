//! `ballast limit set SIZE --wait`: sets the limit, then follows the VM until it is within it
//! (at or under the threshold once the memory manager had to take memory back), with one
//! progress line on stderr, or until it is `over_limit` / `guest_unresponsive`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::watch::{mib, state_name, Snapshot, StepEvent};
use super::{ApiClient, ClientError};
use crate::api::MemoryState;

/// How often the VM is asked while waiting.
const POLL: Duration = Duration::from_millis(250);
/// Epochs the memory manager must have run since the limit was set before "within its limit"
/// counts: the first may have started before the new limit arrived.
const SETTLE_EPOCHS: u64 = 2;

/// How a wait ended.
#[derive(Debug)]
pub enum WaitEnd {
    /// Within the limit: the last snapshot.
    Within(Box<Snapshot>),
    /// `over_limit` or `guest_unresponsive`, with the reason.
    OverLimit(Box<Snapshot>),
    TimedOut(Box<Snapshot>),
}

/// Follows the VM after its limit was set, until it is within the limit, cannot get there, or
/// `timeout` has passed. `before` is a snapshot taken before the limit was set.
pub fn follow(
    api: &ApiClient,
    before: &Snapshot,
    timeout: Duration,
    progress: &mut dyn Write,
) -> Result<WaitEnd, ClientError> {
    let deadline = Instant::now() + timeout;
    let tty = std::io::stderr().is_terminal();
    let mut last = before.clone();
    let mut last_step: Option<StepEvent> = None;
    let mut shown = String::new();
    loop {
        let now = Snapshot::take(api)?;
        if let Some(step) = now.steps_since(&last).pop() {
            last_step = Some(step);
        }
        let line = progress_line(&now, last_step.as_ref());
        // On a terminal the line is rewritten in place; in a log, one line per change.
        if line != shown {
            let _ = if tty {
                write!(progress, "\r\x1b[K{line}")
            } else {
                writeln!(progress, "{line}")
            };
            let _ = progress.flush();
            shown = line;
        }
        let settled = now.epochs >= before.epochs + SETTLE_EPOCHS;
        let end = match now.memory.state {
            MemoryState::OverLimit | MemoryState::GuestUnresponsive => {
                Some(WaitEnd::OverLimit(Box::new(now.clone())))
            }
            MemoryState::WithinLimit if settled && within(&now) => {
                Some(WaitEnd::Within(Box::new(now.clone())))
            }
            _ if Instant::now() >= deadline => Some(WaitEnd::TimedOut(Box::new(now.clone()))),
            _ => None,
        };
        if let Some(end) = end {
            if tty {
                let _ = writeln!(progress);
            }
            return Ok(end);
        }
        last = now;
        std::thread::sleep(POLL);
    }
}

/// Resident at or under the limit (the manager reclaims down to the threshold once over it).
fn within(now: &Snapshot) -> bool {
    now.memory
        .limit_mib
        .is_none_or(|l| now.memory.resident_bytes <= l << 20)
}

/// `resident 300.0 MiB -> 224.0 MiB (threshold of the 256 MiB limit), reclaiming; last step
/// inflate: asked ..., obtained ...`.
pub fn progress_line(now: &Snapshot, step: Option<&StepEvent>) -> String {
    let mut line = format!("resident {}", mib(now.memory.resident_bytes));
    if let (Some(threshold), Some(limit)) = (now.threshold_bytes(), now.memory.limit_mib) {
        line.push_str(&format!(
            " -> {} (threshold of the {limit} MiB limit)",
            mib(threshold)
        ));
    }
    line.push_str(&format!(", {}", state_name(now.memory.state)));
    if let Some(step) = step {
        line.push_str(&format!("; last step {}", step.describe()));
    }
    line
}

/// The final message and exit status of a wait.
pub fn outcome(end: &WaitEnd) -> (String, bool) {
    match end {
        WaitEnd::Within(s) => (
            format!(
                "within the {} MiB limit: resident {}",
                s.memory.limit_mib.unwrap_or(0),
                mib(s.memory.resident_bytes)
            ),
            true,
        ),
        WaitEnd::OverLimit(s) => (
            format!(
                "the VM is {} at resident {}: {}",
                state_name(s.memory.state),
                mib(s.memory.resident_bytes),
                s.memory
                    .state_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            ),
            false,
        ),
        WaitEnd::TimedOut(s) => (
            format!(
                "gave up waiting: resident {} is still above the limit ({})",
                mib(s.memory.resident_bytes),
                state_name(s.memory.state)
            ),
            false,
        ),
    }
}
