//! What the driver acts on, as traits the VMM implements (and the driver's tests fake): the
//! balloon device, the guest agent, and — from the tracker — KVM's dirty log and guest RAM. The
//! manager crate knows no device, no KVM and no vsock.

use std::time::Instant;

use ballast_agent::protocol::Stats;
use ballast_agent::AgentError;

pub use crate::tracker::{DirtyLog, GuestRam, NoDirtyLog};

/// The balloon device, as the over-limit handler moves it. Sizes are guest pages. Each call is
/// short: an implementation locks the device for the call only, so the manager never holds a
/// device lock while it measures.
pub trait BalloonControl: Send {
    /// The target the host set.
    fn target_pages(&self) -> u64;
    /// What the guest driver says the balloon holds.
    fn actual_pages(&self) -> u64;
    /// Sets a new target (bigger inflates, smaller deflates); returns the target as set, which
    /// the device may have clamped to what it can hold.
    fn set_target_pages(&mut self, pages: u64) -> u64;
    /// The guest pages in the balloon, as `(first PFN, count)` runs.
    fn ballooned_runs(&self) -> Vec<(u64, u64)>;
}

/// The guest agent (`ballast-agent`), as the over-limit handler asks it.
pub trait GuestAgent: Send {
    /// The agent's latest statistics and when they arrived, while the agent answers (`None`
    /// while it is connecting or unresponsive).
    fn latest_stats(&self) -> Option<(Stats, Instant)>;
    /// Drops up to `pages` of clean page cache, big files first; the pages freed.
    fn deactivate_file(&mut self, pages: u64) -> Result<u64, AgentError>;
    /// Deactivates (or, `urgent`, pages out) up to `pages` of anon memory, big processes first;
    /// the pages deactivated.
    fn deactivate_anon(&mut self, pages: u64, urgent: bool) -> Result<u64, AgentError>;
}
