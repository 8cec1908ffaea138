//! The manager's thread: sample, decide, act, report — once per epoch, and at once when the
//! limit changes.

use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_agent::protocol::{DeactivateAnon, DeactivateFile};
use ballast_agent::AgentClient;
use ballast_balloon::manager::policy::{
    Action, GuestView, ManagerState, Observation, Outcome, Policy, Step,
};
use ballast_balloon::manager::tracker::{DirtyLog, NoDirtyLog, Tracker, TrackerConfig};
use ballast_balloon::Balloon;
use ballast_virtio::GuestMemoryMmap;

use super::{ManagerConfig, Shared, PAGE_SIZE};
use crate::agent::{AgentDialer, AgentState, AgentStatus, REQUEST_TIMEOUT};
use crate::host_enforce::HostEnforcer;

/// Agent statistics older than this do not describe the guest any more.
const STATS_FRESH: Duration = Duration::from_secs(5);
/// Time for one deactivation request: the agent's own budget is 1.5 s.
const DEACTIVATE_TIMEOUT: Duration = Duration::from_secs(4);

/// What the manager works on, handed over by the runner.
pub struct ManagerParts {
    pub mem: GuestMemoryMmap,
    pub balloon: Arc<Mutex<Balloon>>,
    pub dirty_log: Box<dyn DirtyLog + Send>,
    /// The agent link's status (guest statistics), when the VM has a vsock device.
    pub agent_status: Option<Arc<Mutex<AgentStatus>>>,
    /// How the manager opens its own connection to the agent for deactivation requests.
    pub agent_dialer: Option<Box<dyn AgentDialer>>,
    /// `--host-enforce`: told at every epoch whether the guest is over its limit for good.
    pub host_enforcer: HostEnforcer,
}

pub(super) struct Driver {
    parts: ManagerParts,
    config: ManagerConfig,
    shared: Arc<Shared>,
    tracker: Tracker,
    policy: Policy,
    agent: Option<AgentClient<UnixStream>>,
    guest_ram_pages: u64,
    /// KVM dirty logging is on (only while a limit is set), and since which epoch.
    logging_since: Option<u64>,
    /// The balloon was moving towards its target (inflate or deflate) at the end of the last
    /// epoch, and when that was: the step is charged the time until the next epoch.
    balloon_moving: Option<(Step, Instant)>,
}

impl Driver {
    pub fn new(parts: ManagerParts, config: ManagerConfig, shared: Arc<Shared>) -> Self {
        let tracker = Tracker::new(&parts.mem, TrackerConfig::default());
        let guest_ram_pages = vm_memory::GuestMemoryBackend::iter(&parts.mem)
            .map(|r| vm_memory::GuestMemoryRegion::len(r) / PAGE_SIZE)
            .sum();
        let mut policy = Policy::new(config.policy);
        policy.set_limit(config.limit_pages);
        Self {
            parts,
            config,
            shared,
            tracker,
            policy,
            agent: None,
            guest_ram_pages,
            logging_since: None,
            balloon_moving: None,
        }
    }

    pub fn run(mut self) {
        let mut next = Instant::now();
        loop {
            // Sleep until the next epoch, a limit change, or a stop.
            let limit = {
                let mut view = self.shared.view.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if self.shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if view.limit_pages != self.policy.limit_pages() {
                        break;
                    }
                    let left = next.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    view = self
                        .shared
                        .changed
                        .wait_timeout(view, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                view.limit_pages
            };
            if limit != self.policy.limit_pages() {
                log::info!(
                    "memory manager: limit {}",
                    limit.map_or("removed".to_string(), |l| format!(
                        "set to {} MiB",
                        (l * PAGE_SIZE) >> 20
                    ))
                );
                self.policy.set_limit(limit);
            }
            next = Instant::now() + self.config.sample_interval;
            self.epoch();
        }
    }

    fn epoch(&mut self) {
        let want_logging = self.policy.limit_pages().is_some();
        if want_logging != self.logging_since.is_some() {
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
        let sample = {
            let balloon = self.parts.balloon.lock().unwrap_or_else(|e| e.into_inner());
            let dirty: &mut dyn DirtyLog = if self.logging_since.is_some() {
                self.parts.dirty_log.as_mut()
            } else {
                &mut NoDirtyLog
            };
            self.tracker
                .sample(&self.parts.mem, dirty, balloon.ballooned())
        };
        let sample = match sample {
            Ok(s) => s,
            Err(e) => {
                log::warn!("memory manager: cannot sample guest memory: {e}");
                return;
            }
        };
        let observation = self.observe(
            sample.resident_pages,
            sample.working_set_pages,
            sample.epoch,
        );
        let decision = self.policy.decide(&observation);
        for action in &decision.actions {
            let started = Instant::now();
            let outcome = self.act(action);
            self.policy.record(&outcome);
            if let Some(step) = Step::of(action) {
                self.policy.add_time(step, started.elapsed());
            }
        }
        self.time_balloon();
        let stuck = matches!(
            decision.state,
            ManagerState::OverLimit { .. } | ManagerState::GuestUnresponsive { .. }
        );
        let limit_bytes = self.policy.limit_pages().map(|p| p * PAGE_SIZE);
        self.parts.host_enforcer.update(limit_bytes, stuck);
        let mut view = self.shared.view.lock().unwrap_or_else(|e| e.into_inner());
        view.threshold_pages = self.policy.threshold_pages();
        view.resident_pages = Some(sample.resident_pages);
        // Both mean something only with KVM's dirty log, which is on only while a limit is set.
        view.working_set_pages = observation.working_set_pages;
        view.dirty_rate_pages_per_s = self
            .logging_since
            .is_some()
            .then_some(sample.dirty_rate_pages_per_s);
        // The policy logs its own state changes; reasons carry numbers that move every epoch.
        view.state = decision.state;
        view.counters = self.policy.counters().clone();
        view.epochs = sample.epoch;
        view.sample_cost = sample.cost;
        view.host_enforce = self.parts.host_enforcer.status().clone();
    }

    /// Charges the balloon's step the time since the last epoch if it was moving then, and
    /// notes whether it moves now.
    fn time_balloon(&mut self) {
        let now = Instant::now();
        if let Some((step, since)) = self.balloon_moving.take() {
            self.policy
                .add_time(step, now.saturating_duration_since(since));
        }
        let balloon = self.parts.balloon.lock().unwrap_or_else(|e| e.into_inner());
        let (target, actual) = (balloon.target_pages(), balloon.actual_pages());
        self.balloon_moving = match actual.cmp(&target) {
            std::cmp::Ordering::Less => Some((Step::Inflate, now)),
            std::cmp::Ordering::Greater => Some((Step::Deflate, now)),
            std::cmp::Ordering::Equal => None,
        };
    }

    fn observe(&self, resident_pages: u64, working_set_pages: u64, epoch: u64) -> Observation {
        let (target, actual) = {
            let balloon = self.parts.balloon.lock().unwrap_or_else(|e| e.into_inner());
            (
                u64::from(balloon.target_pages()),
                u64::from(balloon.actual_pages()),
            )
        };
        Observation {
            guest_ram_pages: self.guest_ram_pages,
            resident_pages,
            balloon_target_pages: target,
            balloon_actual_pages: actual,
            // A working set needs a few epochs of dirty-log history before it means anything.
            working_set_pages: self
                .logging_since
                .is_some_and(|since| epoch >= since + 3)
                .then_some(working_set_pages),
            guest: self.guest_view(),
        }
    }

    /// The guest's own account of its memory, when the agent answered recently.
    fn guest_view(&self) -> Option<GuestView> {
        let status = self.parts.agent_status.as_ref()?;
        let status = status.lock().unwrap_or_else(|e| e.into_inner());
        if status.state != AgentState::Ready
            || status.stats_at.is_none_or(|t| t.elapsed() > STATS_FRESH)
        {
            return None;
        }
        let stats = status.stats.as_ref()?;
        let pages = |kib: Option<u64>| kib.unwrap_or(0) / (PAGE_SIZE / 1024);
        let m = &stats.meminfo;
        Some(GuestView {
            file_pages: pages(m.file_kib()),
            anon_pages: pages(m.anon_kib()),
            free_pages: pages(m.mem_free_kib),
            swap_total_pages: pages(m.swap_total_kib),
            psi_full_avg10: stats
                .psi
                .as_ref()
                .and_then(|p| p.full.as_ref())
                .map_or(0.0, |f| f.avg10),
        })
    }

    fn act(&mut self, action: &Action) -> Outcome {
        let started = Instant::now();
        let outcome = match *action {
            Action::SetBalloon { target_pages } => {
                let pages = u32::try_from(target_pages).unwrap_or(u32::MAX);
                self.parts
                    .balloon
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .set_target_pages(pages);
                Outcome::BalloonSet {
                    target_pages: u64::from(pages),
                }
            }
            Action::DeactivateFile { pages } => {
                match self.agent_request(|c| c.deactivate_file(DeactivateFile::new(pages))) {
                    Ok(report) => Outcome::FileDeactivated {
                        asked: pages,
                        freed: report.freed_pages,
                    },
                    Err(reason) => Outcome::AgentFailed { reason },
                }
            }
            Action::DeactivateAnon { pages, urgent } => {
                match self.agent_request(|c| c.deactivate_anon(DeactivateAnon::new(pages, urgent)))
                {
                    Ok(report) => Outcome::AnonDeactivated {
                        asked: pages,
                        deactivated: report.deactivated_pages,
                    },
                    Err(reason) => Outcome::AgentFailed { reason },
                }
            }
        };
        log::info!(
            "memory manager: {action:?} -> {outcome:?} in {} ms",
            started.elapsed().as_millis()
        );
        outcome
    }

    /// One request on the manager's own agent connection, (re)made as needed.
    fn agent_request<T>(
        &mut self,
        request: impl FnOnce(&mut AgentClient<UnixStream>) -> Result<T, ballast_agent::ClientError>,
    ) -> Result<T, String> {
        if self.agent.is_none() {
            let dialer = self
                .parts
                .agent_dialer
                .as_mut()
                .ok_or("the VM has no vsock device, so no guest agent")?;
            let stream = dialer.dial(REQUEST_TIMEOUT)?;
            self.agent = Some(AgentClient::new(stream).with_timeout(DEACTIVATE_TIMEOUT));
        }
        let client = self.agent.as_mut().expect("connected above");
        request(client).map_err(|e| {
            // A failed connection is not reused: the next request dials again.
            self.agent = None;
            e.to_string()
        })
    }
}
