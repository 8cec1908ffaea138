//! The manager's thread: every epoch it samples the guest's residency and dirtiness (the
//! tracker), has balloon pages the host holds again checked and released, lets the over-limit
//! policy decide, carries the decision out through the ports — agent requests, balloon targets,
//! the host backstop — and publishes the view. It runs an epoch at once when the limit changes
//! or an agent request answers.
//!
//! It runs on a thread of its own, since a sample walks all of guest RAM; it never waits on the
//! guest: agent requests run beside it (`calls.rs`), so epochs keep their cadence and the policy
//! sees residency move while a request is under way. The balloon device is locked only to copy
//! its bitmap and to release pages again, never while the tracker measures.
//!
//! | file | job |
//! | --- | --- |
//! | `mod.rs` | the thread's loop and one epoch |
//! | `calls.rs` | agent requests under way: started, polled, reported |
//! | `hot_window.rs` | the guest's active lists and kernel memory, held over a window |
//! | `ports.rs` | the traits the driver acts through (balloon control, guest agent, dirty log, guest RAM) |
//! | `tests.rs` | the driver against fakes of every port |

mod calls;
mod hot_window;
pub mod ports;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::host_enforce::HostEnforcer;
use crate::pages;
use crate::policy::{Action, GuestView, Observation, Outcome, Policy, PolicyConfig, Step};
use crate::tracker::{Sample, Tracker, TrackerConfig};
use crate::{ManagerConfig, Shared};
use calls::Call;
use hot_window::HotWindow;
use ports::{
    AgentRequest, BalloonControl, DirtyLog, GuestAgent, GuestRam, NoDirtyLog, ResidentBalloonPages,
};

/// Agent statistics older than this do not describe the guest any more.
pub const STATS_FRESH: Duration = Duration::from_secs(5);
/// Epochs of dirty-log history before the working set means anything.
const WORKING_SET_EPOCHS: u64 = 3;
/// How often the thread looks for agent answers while a request is under way.
const ANSWER_POLL: Duration = Duration::from_millis(20);

/// What the manager works on, handed over by the VMM.
pub struct ManagerParts {
    pub ram: Box<dyn GuestRam + Send>,
    pub balloon: Box<dyn BalloonControl>,
    pub dirty_log: Box<dyn DirtyLog + Send>,
    /// The guest agent, when the VM has a vsock device.
    pub agent: Option<Box<dyn GuestAgent>>,
    /// `--host-enforce`: told at every epoch whether resident has been over the limit for long
    /// enough to engage it.
    pub host_enforcer: HostEnforcer,
}

impl ManagerParts {
    /// Guest RAM, in guest pages.
    pub fn guest_pages(&self) -> u64 {
        self.ram.regions().iter().map(|r| r.pages).sum()
    }
}

pub(crate) struct Driver {
    parts: ManagerParts,
    config: ManagerConfig,
    shared: Arc<Shared>,
    tracker: Tracker,
    policy: Policy,
    guest_ram_pages: u64,
    /// KVM dirty logging is on (only while a limit is set), and since which epoch.
    logging_since: Option<u64>,
    /// The balloon was moving towards its target (inflate or deflate) at the end of the last
    /// epoch, and when that was: the step is charged the time until the next epoch.
    balloon_moving: Option<(Step, Instant)>,
    /// Agent requests under way.
    calls: Vec<Call>,
    /// Where the agent's file answers say their pages came from.
    file_passes: crate::FilePassCounters,
    /// The guest's active lists and kernel memory, held at their largest over the dirty log's
    /// window (`hot_window.rs`).
    hot_window: HotWindow,
}

impl Driver {
    pub fn new(parts: ManagerParts, config: ManagerConfig, shared: Arc<Shared>) -> Self {
        let tracker = Tracker::new(parts.ram.as_ref(), TrackerConfig::default());
        let guest_ram_pages = parts.guest_pages();
        let mut policy = Policy::new(PolicyConfig {
            sustained_epochs: config.sustained_epochs(),
            ..config.policy
        });
        policy.set_limit(config.limit_pages);
        Self {
            parts,
            config,
            shared,
            tracker,
            policy,
            guest_ram_pages,
            logging_since: None,
            balloon_moving: None,
            calls: Vec::new(),
            file_passes: Default::default(),
            hot_window: HotWindow::new(u64::from(TrackerConfig::default().working_set_epochs)),
        }
    }

    pub fn run(mut self) {
        let mut next = Instant::now();
        while let Some((limit, user_balloon, answered)) = self.wait(next) {
            if limit != self.policy.limit_pages() {
                log::info!(
                    "memory manager: limit {}",
                    limit.map_or("removed".to_string(), |l| format!(
                        "set to {} MiB",
                        pages::to_mib(l)
                    ))
                );
                self.policy.set_limit(limit);
                if limit.is_none() {
                    self.hot_window.clear();
                }
            }
            self.policy.set_user_balloon_pages(user_balloon);
            // An epoch for an agent's answer keeps the cadence of the others.
            if !answered {
                next = Instant::now() + self.config.sample_interval;
            }
            self.epoch();
        }
    }

    /// Sleeps until `next`, a limit change, an agent's answer, or a stop (`None`); the limit and
    /// the balloon size the user set by hand to run with, and whether it woke for an answer.
    fn wait(&mut self, next: Instant) -> Option<(Option<u64>, u64, bool)> {
        let shared = self.shared.clone();
        let mut view = shared.view();
        let mut answered = false;
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return None;
            }
            if view.limit_pages != self.policy.limit_pages() {
                break;
            }
            if self.calls_pending() && self.collect_answers() {
                answered = true;
                break;
            }
            let mut left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if self.calls_pending() {
                left = left.min(ANSWER_POLL);
            }
            view = shared
                .changed
                .wait_timeout(view, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Some((view.limit_pages, view.user_balloon_pages, answered))
    }

    /// One epoch: sample, release what the guest took back from the balloon, decide, act,
    /// publish.
    pub(crate) fn epoch(&mut self) {
        self.follow_limit_with_logging();
        self.collect_answers();
        let sample = match self.sample() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("memory manager: cannot sample guest memory: {e}");
                return;
            }
        };
        let violations = self.release_violations(&sample);
        let observation = self.observe(&sample, violations.confirmed);
        let decision = self.policy.decide(&observation);
        for action in &decision.actions {
            self.act(action);
        }
        self.time_balloon();
        let limit_bytes = self.policy.limit_pages().map(pages::to_bytes);
        self.parts
            .host_enforcer
            .update(limit_bytes, decision.engage_backstop);
        self.publish(&sample, &observation, violations, decision.state);
    }

    /// Balloon pages the host holds again: checked under the device's lock and released.
    fn release_violations(&mut self, sample: &Sample) -> ResidentBalloonPages {
        if sample.ballooned_resident_pages == 0 {
            return ResidentBalloonPages::default();
        }
        let found = self
            .parts
            .balloon
            .release_resident(self.tracker.ballooned_resident_runs());
        if found.confirmed > 0 {
            log::debug!(
                "memory manager: {} balloon pages were resident again, {} released",
                found.confirmed,
                found.released
            );
        }
        found
    }

    /// KVM dirty logging is on only while a limit is set: it makes guest writes fault.
    fn follow_limit_with_logging(&mut self) {
        let want_logging = self.policy.limit_pages().is_some();
        if want_logging == self.logging_since.is_some() {
            return;
        }
        match self.parts.dirty_log.set_logging(want_logging) {
            Ok(()) => {
                self.logging_since = want_logging.then(|| self.tracker.epoch() + 1);
                log::info!(
                    "memory manager: dirty logging {}",
                    if want_logging { "on" } else { "off" }
                );
            }
            Err(e) => log::warn!("memory manager: cannot switch dirty logging: {e}"),
        }
    }

    fn sample(&mut self) -> std::io::Result<Sample> {
        // Copied before measuring, so no device lock is held while the tracker walks guest RAM.
        let balloon = self.parts.balloon.ballooned_pages();
        let dirty: &mut dyn DirtyLog = if self.logging_since.is_some() {
            self.parts.dirty_log.as_mut()
        } else {
            &mut NoDirtyLog
        };
        self.tracker
            .sample(self.parts.ram.as_ref(), dirty, &balloon)
    }

    fn publish(
        &self,
        sample: &Sample,
        observation: &Observation,
        violations: ResidentBalloonPages,
        state: crate::policy::ManagerState,
    ) {
        let mut view = self.shared.view();
        view.threshold_pages = self.policy.threshold_pages();
        view.resident_pages = Some(sample.resident_pages);
        view.ballooned_resident_pages = violations.confirmed;
        // The dirty log's working set and rate mean something only with the log, which is on
        // only while a limit is set.
        view.working_set_pages = observation.working_set();
        view.dirty_working_set_pages = observation.working_set_pages;
        view.guest_active_pages = observation.guest.as_ref().map(|g| g.hot_pages());
        view.dirty_rate_pages_per_s = self
            .logging_since
            .is_some()
            .then_some(sample.dirty_rate_pages_per_s);
        // The policy logs its own state changes; reasons carry numbers that move every epoch.
        view.state = state;
        view.counters = self.policy.counters().clone();
        view.epochs = sample.epoch;
        view.sample_cost = sample.cost;
        view.host_enforce = self.parts.host_enforcer.status().clone();
        view.file_passes = self.file_passes;
    }

    /// Charges the balloon's step the time since the last epoch if it was moving then, and
    /// notes whether it moves now.
    fn time_balloon(&mut self) {
        let now = Instant::now();
        if let Some((step, since)) = self.balloon_moving.take() {
            self.policy
                .add_time(step, now.saturating_duration_since(since));
        }
        let balloon = &self.parts.balloon;
        self.balloon_moving = match balloon.actual_pages().cmp(&balloon.target_pages()) {
            std::cmp::Ordering::Less => Some((Step::Inflate, now)),
            std::cmp::Ordering::Greater => Some((Step::Deflate, now)),
            std::cmp::Ordering::Equal => None,
        };
    }

    fn observe(&mut self, sample: &Sample, violation_pages: u64) -> Observation {
        let balloon = &self.parts.balloon;
        Observation {
            guest_ram_pages: self.guest_ram_pages,
            resident_pages: sample.resident_pages,
            balloon_violation_pages: violation_pages,
            balloon_target_pages: balloon.target_pages(),
            balloon_actual_pages: balloon.actual_pages(),
            // A working set needs a few epochs of dirty-log history before it means anything.
            working_set_pages: self
                .logging_since
                .is_some_and(|since| sample.epoch >= since + WORKING_SET_EPOCHS)
                .then_some(sample.working_set_pages),
            guest: self
                .guest_view()
                .map(|view| self.hot_window.hold(sample.epoch, view)),
            agent_absent: self.parts.agent.is_none(),
        }
    }

    /// The guest's own account of its memory, when the agent answered recently.
    fn guest_view(&self) -> Option<GuestView> {
        let (stats, at) = self.parts.agent.as_ref()?.latest_stats()?;
        if at.elapsed() > STATS_FRESH {
            return None;
        }
        let pages = |kib: Option<u64>| pages::from_kib(kib.unwrap_or(0));
        let m = &stats.meminfo;
        let v = &stats.vmstat;
        let psi = stats.psi.as_ref();
        Some(GuestView {
            file_pages: pages(m.file_kib()),
            // Shmem and tmpfs sit on the anon lists but only swap can move them: not the anon
            // step's to take.
            anon_pages: pages(m.anon_kib()).saturating_sub(pages(m.shmem_kib)),
            free_pages: pages(m.mem_free_kib),
            swap_total_pages: pages(m.swap_total_kib),
            swap_used_pages: pages(m.swap_used_kib()),
            psi_full_avg10: psi.and_then(|p| p.full.as_ref()).map_or(0.0, |f| f.avg10),
            psi_some_avg10: psi.map_or(0.0, |p| p.some.avg10),
            active_file_pages: pages(m.active_file_kib),
            active_anon_pages: pages(m.active_anon_kib),
            refaults: v
                .workingset_refault_file
                .unwrap_or(0)
                .saturating_add(v.workingset_refault_anon.unwrap_or(0)),
            kernel_pages: pages(m.mem_total_kib)
                .saturating_sub(pages(m.mem_free_kib))
                .saturating_sub(pages(m.file_kib()))
                .saturating_sub(pages(m.anon_kib())),
        })
    }

    /// A balloon target is set at once; an agent request is started and answers later.
    fn act(&mut self, action: &Action) {
        match *action {
            Action::SetBalloon { target_pages } => {
                let outcome = Outcome::BalloonSet {
                    target_pages: self.parts.balloon.set_target_pages(target_pages),
                };
                log::info!("memory manager: {action} -> {outcome}");
                self.policy.record(&outcome);
            }
            Action::DeactivateFile { pages } => self.start_call(AgentRequest::File { pages }),
            Action::DeactivateAnon { pages, urgent } => {
                self.start_call(AgentRequest::Anon { pages, urgent })
            }
        }
    }
}
