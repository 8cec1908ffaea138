//! What the driver acts on, as traits the VMM implements (and the driver's tests fake): the
//! balloon device, the guest agent, and — from the tracker — KVM's dirty log and guest RAM. The
//! manager crate knows no device, no KVM and no vsock.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ballast_agent::protocol::Stats;
use ballast_agent::AgentError;

pub use crate::tracker::{BalloonPages, DirtyLog, GuestRam, NoDirtyLog};

/// What a check of resident balloon pages found ([`BalloonControl::release_resident`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResidentBalloonPages {
    /// Pages still in the balloon and still resident when checked under the device's lock:
    /// the guest touched pages it gave away.
    pub confirmed: u64,
    /// Of those, pages the host released again.
    pub released: u64,
}

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
    /// A copy of the guest pages in the balloon: the device's lock is held for the copy only.
    fn ballooned_pages(&self) -> BalloonPages;
    /// Of `runs` (`(first PFN, count)`: pages the tracker saw resident while in the balloon's
    /// copy), releases again on the host those still in the balloon and still resident, checked
    /// and released under the device's lock so that the guest cannot have taken them back in
    /// between. The work is bounded by `runs`, which the tracker bounds.
    fn release_resident(&mut self, runs: &[(u64, u64)]) -> ResidentBalloonPages;
}

/// A request to the guest agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentRequest {
    /// Drop up to `pages` of clean page cache, big files first.
    File { pages: u64 },
    /// Deactivate (or, `urgent`, page out) up to `pages` of anon memory, big processes first.
    Anon { pages: u64, urgent: bool },
}

impl std::fmt::Display for AgentRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            AgentRequest::File { pages } => {
                write!(f, "file request for {}", crate::pages::Shown(pages))
            }
            AgentRequest::Anon { pages, urgent } => write!(
                f,
                "anon request ({}) for {}",
                crate::policy::anon_verb(urgent),
                crate::pages::Shown(pages)
            ),
        }
    }
}

/// What the agent answered: the pages it claims it freed or deactivated, and for a file request
/// which of its passes freed them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentAnswer {
    pub claimed_pages: u64,
    pub file_passes: Option<FilePasses>,
}

impl AgentAnswer {
    pub fn claimed(pages: u64) -> Self {
        Self {
            claimed_pages: pages,
            file_passes: None,
        }
    }
}

/// Where a `deactivate_file`'s pages came from, as the agent reports it: big files, small
/// files, and the whole-guest fallback (which ran or not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilePasses {
    pub big_pages: u64,
    pub small_pages: u64,
    pub fallback_pages: u64,
    pub fallback_ran: bool,
}

/// The answer to an [`AgentRequest`], on its way: the driver polls it every epoch (and more
/// often while it waits), so that sampling goes on while the guest works.
#[derive(Debug)]
pub struct AgentReply {
    answer: mpsc::Receiver<Result<AgentAnswer, AgentError>>,
    deadline: Instant,
    timeout: Duration,
}

impl AgentReply {
    /// A reply that comes through the returned sender within `timeout`, or counts as failed.
    pub fn channel(
        timeout: Duration,
    ) -> (mpsc::Sender<Result<AgentAnswer, AgentError>>, AgentReply) {
        let (tx, answer) = mpsc::channel();
        let reply = AgentReply {
            answer,
            deadline: Instant::now() + timeout,
            timeout,
        };
        (tx, reply)
    }

    /// A reply that is already there (an agent that cannot be asked, a test's fake).
    pub fn ready(result: Result<AgentAnswer, AgentError>) -> AgentReply {
        let (tx, reply) = Self::channel(Duration::ZERO);
        let _ = tx.send(result);
        reply
    }

    /// The answer once it is there:
    /// `None` while the request runs; an error once the deadline passed or the sender is gone.
    pub fn poll(&self) -> Option<Result<AgentAnswer, AgentError>> {
        match self.answer.try_recv() {
            Ok(result) => Some(result),
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(AgentError::Stopped)),
            Err(mpsc::TryRecvError::Empty) if Instant::now() >= self.deadline => {
                Some(Err(AgentError::ServiceTimeout(self.timeout)))
            }
            Err(mpsc::TryRecvError::Empty) => None,
        }
    }
}

/// The guest agent (`ballast-agent`), as the over-limit handler asks it.
pub trait GuestAgent: Send {
    /// The agent's latest statistics and when they arrived, while the agent answers (`None`
    /// while it is connecting or unresponsive).
    fn latest_stats(&self) -> Option<(Stats, Instant)>;
    /// Starts a request without waiting for it: its answer comes through the reply.
    fn start(&mut self, request: AgentRequest) -> AgentReply;
}
