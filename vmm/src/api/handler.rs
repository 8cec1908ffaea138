//! The VMM side of the API: an event-loop subscriber that takes each `ApiRequest` off the channel
//! when the API's eventfd fires, answers it against the VM's real state, and sends the answer
//! back on the request's own channel. It never waits for the API thread.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ballast_devices::balloon::Balloon;
use ballast_devices::net::Net;
use ballast_manager::policy::ManagerState;
use ballast_manager::{pages, ManagerHandle, ManagerView};
use ballast_virtio::GuestMemoryMmap;
use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::residency::Residency;
use super::{
    AgentInfo, ApiError, ApiMessage, ApiReceiver, ApiReply, ApiRequest, ApiResult, BalloonInfo,
    BalloonStatistics, BalloonStatsUpdate, BalloonUpdate, GuestMemoryStats, MemoryInfo,
    MemoryLimitUpdate, MemoryState, NetDeviceInfo, VmAction, VmInfo, VmState, VmmMetrics,
};
use crate::agent::{AgentHandle, AgentState, AgentStatus};
use crate::vstate::exit::{ExitState, VmExit};
use crate::vstate::vcpu::VcpuPause;

/// How long a pause may wait for every vCPU to leave the guest. The event loop waits with it, so
/// it is short; vCPUs normally park within a few milliseconds of their kick.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the API acts on.
pub struct VmHandles {
    pub exit: Arc<ExitState>,
    pub pause: Arc<VcpuPause>,
    /// The vCPU threads, to kick them out of KVM_RUN on a pause.
    pub vcpu_threads: Vec<libc::pthread_t>,
    pub mem: GuestMemoryMmap,
    pub mem_size: u64,
    pub balloon: Arc<Mutex<Balloon>>,
    /// The network devices, in the guest's order.
    pub net: Vec<Arc<Mutex<Net>>>,
    /// When the vCPUs started.
    pub started: Instant,
    /// The guest agent service, when the VM has a vsock device.
    pub agent: Option<AgentHandle>,
    /// The memory manager: it owns the limit and the memory state; the API reads its view.
    pub manager: ManagerHandle,
}

pub struct ApiHandler {
    receiver: ApiReceiver,
    vm: VmHandles,
    residency: Residency,
}

impl ApiHandler {
    pub fn new(receiver: ApiReceiver, vm: VmHandles) -> Self {
        Self {
            receiver,
            vm,
            residency: Residency::default(),
        }
    }

    fn balloon(&self) -> MutexGuard<'_, Balloon> {
        self.vm.balloon.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn net(&self) -> impl Iterator<Item = MutexGuard<'_, Net>> {
        self.vm
            .net
            .iter()
            .map(|n| n.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn memory_mib(&self) -> u64 {
        self.vm.mem_size >> 20
    }

    /// Answers one request. Every check comes before any change, so a refused request changes
    /// nothing.
    pub fn handle(&mut self, request: ApiRequest) -> ApiResult {
        match request {
            ApiRequest::GetVm => Ok(ApiReply::Vm(self.vm_info())),
            ApiRequest::VmAction(action) => self.vm_action(action),
            ApiRequest::GetBalloon => Ok(ApiReply::Balloon(self.balloon_info())),
            ApiRequest::UpdateBalloon(update) => self.update_balloon(update),
            ApiRequest::GetBalloonStats => self.balloon_stats(),
            ApiRequest::UpdateBalloonStats(update) => self.update_balloon_stats(update),
            ApiRequest::SetMemoryLimit(update) => self.set_limit(update),
            ApiRequest::GetMemory => Ok(ApiReply::Memory(Box::new(self.memory_info()?))),
            ApiRequest::GetMetrics => self.metrics(),
        }
    }

    fn vm_state(&self) -> VmState {
        if self.vm.exit.is_stopping() {
            VmState::Stopped
        } else if self.vm.pause.is_paused() {
            VmState::Paused
        } else {
            VmState::Running
        }
    }

    fn vm_info(&self) -> VmInfo {
        VmInfo {
            state: self.vm_state(),
            vcpus: self.vm.vcpu_threads.len() as u32,
            memory_mib: self.memory_mib(),
            uptime_ms: self.vm.started.elapsed().as_millis() as u64,
            ballast_version: env!("CARGO_PKG_VERSION").to_string(),
            net: self
                .net()
                .map(|net| {
                    let info = net.info();
                    NetDeviceInfo {
                        tap: info.tap,
                        mac: info.mac.to_string(),
                        active: info.active,
                    }
                })
                .collect(),
        }
    }

    fn vm_action(&mut self, action: VmAction) -> ApiResult {
        match action {
            VmAction::Shutdown => {
                log::info!("shutdown requested through the API");
                self.vm
                    .exit
                    .request(VmExit::Stopped("the API's Shutdown action".into()));
            }
            _ if self.vm.exit.is_stopping() => return Err(ApiError::Stopping),
            VmAction::Pause => {
                let start = Instant::now();
                self.vm.pause.pause(&self.vm.vcpu_threads, PAUSE_TIMEOUT)?;
                log::info!(
                    "VM paused through the API ({} vCPUs parked in {} µs)",
                    self.vm.vcpu_threads.len(),
                    start.elapsed().as_micros()
                );
            }
            VmAction::Resume => {
                self.vm.pause.resume()?;
                log::info!("VM resumed through the API");
            }
        }
        Ok(ApiReply::Done)
    }

    fn balloon_info(&self) -> BalloonInfo {
        let balloon = self.balloon();
        let config = balloon.config();
        BalloonInfo {
            amount_mib: balloon_mib(balloon.target_pages()),
            deflate_on_oom: config.deflate_on_oom,
            stats_polling_interval_s: balloon.stats_interval(),
            free_page_reporting: config.free_page_reporting,
            actual_mib: balloon_mib(balloon.actual_pages()),
            actual_pages: balloon.actual_pages(),
        }
    }

    fn update_balloon(&mut self, update: BalloonUpdate) -> ApiResult {
        let memory_mib = self.memory_mib();
        if u64::from(update.amount_mib) > memory_mib {
            return Err(ApiError::BalloonTooBig {
                amount_mib: update.amount_mib,
                memory_mib,
            });
        }
        self.balloon().set_target_mib(update.amount_mib)?;
        // The manager keeps it when it gives balloon pages back after a limit.
        self.vm
            .manager
            .set_user_balloon_pages(pages::from_mib(update.amount_mib.into()));
        log::info!("balloon target set to {} MiB", update.amount_mib);
        Ok(ApiReply::Done)
    }

    fn balloon_stats(&self) -> ApiResult {
        let balloon = self.balloon();
        // Whether the device has a statistics queue at all is fixed at launch.
        if balloon.config().stats_polling_interval_s == 0 {
            return Err(ApiError::StatsNotEnabled);
        }
        Ok(ApiReply::BalloonStats(Box::new(BalloonStatistics::new(
            balloon.target_pages(),
            balloon.actual_pages(),
            balloon.latest_stats(),
        ))))
    }

    fn update_balloon_stats(&mut self, update: BalloonStatsUpdate) -> ApiResult {
        let mut balloon = self.balloon();
        // As Firecracker: the interval it already has is a no-op (also 0 on a balloon without
        // statistics); the statistics queue is negotiated at boot, so statistics can be
        // neither turned on nor off later; only a non-zero interval may change.
        if update.stats_polling_interval_s == balloon.stats_interval() {
            return Ok(ApiReply::Done);
        }
        if balloon.config().stats_polling_interval_s == 0 {
            return Err(ApiError::StatsCannotEnable);
        }
        if update.stats_polling_interval_s == 0 {
            return Err(ApiError::StatsCannotDisable);
        }
        balloon.set_stats_interval(update.stats_polling_interval_s)?;
        log::info!(
            "balloon statistics interval set to {} s",
            update.stats_polling_interval_s
        );
        Ok(ApiReply::Done)
    }

    /// The manager validates and keeps the limit; MiB are the API's unit, pages the manager's.
    fn set_limit(&mut self, update: MemoryLimitUpdate) -> ApiResult {
        self.vm
            .manager
            .set_limit(update.limit_mib.map(pages::from_mib))?;
        match update.limit_mib {
            Some(limit_mib) => log::info!("memory limit set to {limit_mib} MiB"),
            None => log::info!("memory limit removed"),
        }
        Ok(ApiReply::Done)
    }

    fn memory_info(&mut self) -> Result<MemoryInfo, ApiError> {
        let resident_bytes = self.residency.resident_bytes(&self.vm.mem)?;
        let (target_pages, actual_pages) = {
            let balloon = self.balloon();
            (balloon.target_pages(), balloon.actual_pages())
        };
        let view = self.vm.manager.view();
        let agent = self.vm.agent.as_ref().map(AgentHandle::status);
        let (state, state_reason) = memory_state(&view, resident_bytes, agent.as_ref());
        Ok(MemoryInfo {
            memory_mib: self.memory_mib(),
            limit_mib: view.limit_pages.map(pages::to_mib),
            resident_bytes,
            balloon_target_mib: balloon_mib(target_pages),
            balloon_actual_mib: balloon_mib(actual_pages),
            dirty_rate_bytes_per_s: view
                .dirty_rate_pages_per_s
                .map(|rate| (rate * pages::PAGE_SIZE as f64) as u64),
            working_set_bytes: view.working_set_pages.map(pages::to_bytes),
            working_set_dirty_bytes: view.dirty_working_set_pages.map(pages::to_bytes),
            working_set_guest_active_bytes: view.guest_active_pages.map(pages::to_bytes),
            host_idle_page_tracking: view.host_idle_tracking,
            guest: agent.as_ref().and_then(guest_stats),
            state_cause: state_cause(&state, &view.state),
            state,
            state_reason,
            max_overshoot_bytes: view
                .limit_pages
                .map(|_| pages::to_bytes(view.counters.max_overshoot_pages)),
            balloon_violation_bytes: pages::to_bytes(view.ballooned_resident_pages),
            agent: agent.as_ref().map(agent_info),
            host_enforce: view.host_enforce,
        })
    }

    fn metrics(&mut self) -> ApiResult {
        let memory = self.memory_info()?;
        let balloon = self.balloon();
        let metrics = VmmMetrics {
            vm: self.vm_info(),
            balloon_target_pages: balloon.target_pages(),
            balloon_actual_pages: balloon.actual_pages(),
            balloon: balloon.metrics().snapshot(),
            net: self
                .net()
                .map(|net| (net.tap_name().to_string(), net.metrics().snapshot()))
                .collect(),
            memory,
            manager: self.vm.manager.view(),
        };
        Ok(ApiReply::Metrics(Box::new(metrics)))
    }

    /// Answers every request waiting on the channel.
    fn drain(&mut self) {
        while let Ok(ApiMessage { request, reply }) = self.receiver.rx.try_recv() {
            log::debug!("API request {request:?}");
            let result = self.handle(request);
            if let Err(e) = &result {
                log::debug!("API request refused: {e}");
            }
            // The client may have gone; its answer is then dropped.
            let _ = reply.send(result);
        }
    }
}

/// Where the VM stands against its limit: the manager's state as of its last epoch, told what
/// comes next when the limit was cut since, and overruled by an agent that does not answer while
/// the VM is over its limit.
fn memory_state(
    view: &ManagerView,
    resident_bytes: u64,
    agent: Option<&AgentStatus>,
) -> (MemoryState, Option<String>) {
    let (mut state, mut reason) = match &view.state {
        ManagerState::WithinLimit => (MemoryState::WithinLimit, None),
        ManagerState::Reclaiming => (MemoryState::Reclaiming, None),
        ManagerState::OverLimit { reason, .. } => (MemoryState::OverLimit, Some(reason.clone())),
        ManagerState::GuestUnresponsive { reason } => {
            (MemoryState::GuestUnresponsive, Some(reason.clone()))
        }
    };
    let limit_bytes = view.limit_pages.map(pages::to_bytes);
    if state == MemoryState::WithinLimit && limit_bytes.is_some_and(|l| resident_bytes > l) {
        state = MemoryState::Reclaiming;
        reason = Some(format!(
            "{:.1} MiB of guest RAM is resident, above the {} MiB limit; the memory manager is \
             taking memory back",
            resident_bytes as f64 / (1 << 20) as f64,
            limit_bytes.unwrap_or(0) >> 20
        ));
    }
    // Within the limit, a silent agent changes nothing the limit is about (`agent.state` says
    // it); over it, the manager needs the agent, and the user needs to know it is not there.
    if let Some(a) =
        agent.filter(|a| a.state == AgentState::Unresponsive && state != MemoryState::WithinLimit)
    {
        state = MemoryState::GuestUnresponsive;
        reason = Some(format!(
            "the guest agent does not answer: {}",
            a.reason.as_deref().unwrap_or("no reason known")
        ));
    }
    (state, reason)
}

/// The short cause of an `over_limit` or `guest_unresponsive` state shown by the API.
fn state_cause(shown: &MemoryState, manager: &ManagerState) -> Option<String> {
    match (shown, manager) {
        (MemoryState::OverLimit, ManagerState::OverLimit { cause, .. }) => {
            Some(cause.as_str().to_string())
        }
        (MemoryState::GuestUnresponsive, _) => Some("guest_unresponsive".to_string()),
        _ => None,
    }
}

/// Balloon pages (4 KiB, as the guest driver counts them) in whole MiB.
fn balloon_mib(balloon_pages: u32) -> u32 {
    pages::to_mib(u64::from(balloon_pages)) as u32
}

/// The guest's memory as its agent last reported it, in bytes.
fn guest_stats(agent: &AgentStatus) -> Option<GuestMemoryStats> {
    let m = &agent.stats.as_ref()?.meminfo;
    Some(GuestMemoryStats {
        file_bytes: m.file_kib()? << 10,
        anon_bytes: m.anon_kib()? << 10,
        free_bytes: m.mem_free_kib? << 10,
        swap_total_bytes: m.swap_total_kib.unwrap_or(0) << 10,
    })
}

fn agent_info(agent: &AgentStatus) -> AgentInfo {
    AgentInfo {
        state: agent.state.as_str().to_string(),
        reason: agent.reason.clone(),
        stats_age_ms: agent.stats_at.map(|t| t.elapsed().as_millis() as u64),
        failures: agent.failures,
    }
}

impl MutEventSubscriber for ApiHandler {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new_raw(
            self.receiver.wake.as_raw_fd(),
            EventSet::IN,
        )) {
            // Without it no request would ever be answered; stop rather than hang clients.
            self.vm.exit.request(VmExit::Failure(format!(
                "cannot watch the API's eventfd: {e:?}"
            )));
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.receiver.wake.as_raw_fd() {
            // Reset the counter first: a request sent after this read wakes the loop again.
            let _ = self.receiver.wake.read();
            self.drain();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BalloonStatsUpdate, VmActionBody};
    use crate::vstate::memory::create_guest_memory;
    use crate::vstate::vcpu::PauseError;
    use ballast_devices::balloon::BalloonConfig;
    use ballast_manager::LimitError;

    /// A handler over real guest memory and a real balloon device, without KVM or vCPUs.
    fn handler(balloon: &str) -> (ApiHandler, crate::api::ApiSender) {
        let (sender, receiver) = crate::api::channel().unwrap();
        let config: BalloonConfig = balloon.parse().unwrap();
        let vm = VmHandles {
            exit: Arc::new(ExitState::new().unwrap()),
            pause: Arc::new(VcpuPause::new()),
            vcpu_threads: Vec::new(),
            mem: create_guest_memory(64 << 20).unwrap(),
            mem_size: 64 << 20,
            balloon: Arc::new(Mutex::new(Balloon::new(config).unwrap())),
            net: Vec::new(),
            started: Instant::now(),
            agent: None,
            manager: ManagerHandle::without_driver(pages::from_mib(64)),
        };
        (ApiHandler::new(receiver, vm), sender)
    }

    fn vm(h: &mut ApiHandler) -> VmInfo {
        match h.handle(ApiRequest::GetVm).unwrap() {
            ApiReply::Vm(info) => info,
            other => panic!("{other:?}"),
        }
    }

    fn memory(h: &mut ApiHandler) -> MemoryInfo {
        match h.handle(ApiRequest::GetMemory).unwrap() {
            ApiReply::Memory(info) => *info,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pause_resume_and_shutdown_follow_the_vm_state() {
        let (mut h, _sender) = handler("");
        assert_eq!(vm(&mut h).state, VmState::Running);
        let pause = ApiRequest::VmAction(VmAction::Pause);
        let resume = ApiRequest::VmAction(VmAction::Resume);
        h.handle(pause.clone()).unwrap();
        assert_eq!(vm(&mut h).state, VmState::Paused);
        assert!(matches!(
            h.handle(pause.clone()),
            Err(ApiError::Pause(PauseError::AlreadyPaused))
        ));
        h.handle(resume.clone()).unwrap();
        assert!(matches!(
            h.handle(resume),
            Err(ApiError::Pause(PauseError::NotPaused))
        ));
        h.handle(ApiRequest::VmAction(VmAction::Shutdown)).unwrap();
        assert!(h.vm.exit.is_stopping());
        assert_eq!(vm(&mut h).state, VmState::Stopped);
        assert!(matches!(h.handle(pause), Err(ApiError::Stopping)));
    }

    #[test]
    fn refused_balloon_and_limit_changes_change_nothing() {
        let (mut h, _sender) = handler("");
        h.handle(ApiRequest::UpdateBalloon(BalloonUpdate { amount_mib: 16 }))
            .unwrap();
        let err = h
            .handle(ApiRequest::UpdateBalloon(BalloonUpdate { amount_mib: 65 }))
            .unwrap_err();
        assert_eq!(err.status(), 400);
        assert_eq!(u64::from(h.balloon().target_pages()), pages::from_mib(16));
        // The accepted target is the user's own: the manager keeps it after a limit.
        assert_eq!(h.vm.manager.view().user_balloon_pages, pages::from_mib(16));

        let limit = |limit_mib| ApiRequest::SetMemoryLimit(MemoryLimitUpdate { limit_mib });
        h.handle(limit(Some(32))).unwrap();
        assert!(matches!(
            h.handle(limit(Some(0))),
            Err(ApiError::Limit(LimitError::TooSmall))
        ));
        assert!(matches!(
            h.handle(limit(Some(65))),
            Err(ApiError::Limit(LimitError::AboveMemory { .. }))
        ));
        let info = memory(&mut h);
        assert_eq!(info.limit_mib, Some(32));
        assert_eq!(info.balloon_target_mib, 16);
        assert_eq!(info.resident_bytes, 0, "nothing touched guest RAM");
        h.handle(limit(None)).unwrap();
        assert_eq!(memory(&mut h).limit_mib, None);
    }

    #[test]
    fn statistics_cannot_be_switched_on_or_off() {
        let (mut without, _s) = handler("");
        assert!(matches!(
            without.handle(ApiRequest::GetBalloonStats),
            Err(ApiError::StatsNotEnabled)
        ));
        let every = |s| {
            ApiRequest::UpdateBalloonStats(BalloonStatsUpdate {
                stats_polling_interval_s: s,
            })
        };
        assert!(matches!(
            without.handle(every(5)),
            Err(ApiError::StatsCannotEnable)
        ));
        // As Firecracker: asking for what is already so is a no-op.
        assert!(matches!(without.handle(every(0)), Ok(ApiReply::Done)));

        let (mut with, _s) = handler("stats_polling_interval_s=2");
        assert!(matches!(
            with.handle(every(0)),
            Err(ApiError::StatsCannotDisable)
        ));
        with.handle(every(7)).unwrap();
        assert_eq!(with.balloon().stats_interval(), 7);
        with.handle(every(7)).unwrap();
        assert!(matches!(
            with.handle(ApiRequest::GetBalloonStats),
            Ok(ApiReply::BalloonStats(_))
        ));
    }

    #[test]
    fn requests_cross_the_channel_and_come_back() {
        let (mut h, sender) = handler("");
        // The API side on a runtime of its own thread, as the server runs it.
        let api = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let body: VmActionBody =
                    serde_json::from_str(r#"{"action_type":"Pause"}"#).unwrap();
                let paused = sender.call(ApiRequest::VmAction(body.action_type)).await;
                let info = sender.call(ApiRequest::GetVm).await;
                (
                    paused.map(|_| ()).map_err(|e| e.to_string()),
                    info.map_err(|e| e.to_string()),
                )
            })
        });
        // The event loop's side: answer what arrives, woken by the eventfd.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !api.is_finished() && Instant::now() < deadline {
            if h.receiver.wake.read().is_ok() {
                h.drain();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let (paused, info) = api.join().unwrap();
        paused.unwrap();
        match info.unwrap() {
            ApiReply::Vm(vm) => assert_eq!(vm.state, VmState::Paused),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_to_a_gone_vmm_is_refused() {
        let (h, sender) = handler("");
        drop(h);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = runtime
            .block_on(sender.call(ApiRequest::GetVm))
            .unwrap_err();
        assert!(matches!(err, ApiError::VmmGone), "{err}");
        assert_eq!(err.status(), 409);
    }

    #[test]
    fn a_cut_limit_is_reclaiming_only_above_the_limit_until_the_manager_says() {
        let mut view = ManagerView::new(
            pages::from_mib(512),
            None,
            ballast_manager::HostEnforceStatus::off(),
        );
        assert_eq!(
            memory_state(&view, 100 << 20, None).0,
            MemoryState::WithinLimit
        );
        view.limit_pages = Some(pages::from_mib(64));
        assert_eq!(
            memory_state(&view, 64 << 20, None),
            (MemoryState::WithinLimit, None)
        );
        let (state, reason) = memory_state(&view, (64 << 20) + 4096, None);
        assert_eq!(state, MemoryState::Reclaiming);
        assert!(reason.unwrap().contains("above the 64 MiB limit"));
        view.state = ManagerState::OverLimit {
            reason: "balloon at its cap".into(),
            cause: ballast_manager::policy::OverLimitCause::BalloonAtCap,
        };
        let (state, reason) = memory_state(&view, 100 << 20, None);
        assert_eq!(state, MemoryState::OverLimit);
        assert_eq!(reason.as_deref(), Some("balloon at its cap"));
    }

    /// Under network load a guest can answer its agent's polls late for a while: inside the
    /// limit the VM stays `within_limit` (the agent's own state says the rest); over it, an
    /// agent that does not answer is what the user must hear.
    #[test]
    fn a_silent_agent_overrules_the_state_only_over_the_limit() {
        let mut view = ManagerView::new(
            pages::from_mib(512),
            Some(pages::from_mib(192)),
            ballast_manager::HostEnforceStatus::off(),
        );
        let silent = AgentStatus {
            state: AgentState::Unresponsive,
            reason: Some("stats did not answer within 2s".into()),
            ..AgentStatus::default()
        };
        assert_eq!(
            memory_state(&view, 160 << 20, Some(&silent)),
            (MemoryState::WithinLimit, None)
        );
        let (state, reason) = memory_state(&view, 200 << 20, Some(&silent));
        assert_eq!(state, MemoryState::GuestUnresponsive);
        assert!(reason.unwrap().contains("did not answer within 2s"));
        view.state = ManagerState::Reclaiming;
        assert_eq!(
            memory_state(&view, 160 << 20, Some(&silent)).0,
            MemoryState::GuestUnresponsive
        );
    }
}
