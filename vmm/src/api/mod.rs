//! The REST API: what the API thread may ask of the VMM, and what it gets back.
//!
//! Every HTTP request becomes one [`ApiRequest`]; the API thread sends it with a per-request reply
//! channel over an `mpsc` channel and wakes the VMM event loop through an `EventFd`
//! ([`ApiSender`]). The event loop answers it against the real VM state ([`handler::ApiHandler`])
//! and sends an [`ApiResult`] back. The API thread never touches VM state itself, and the event
//! loop never waits for the API thread.
//!
//! | file | job |
//! | --- | --- |
//! | `mod.rs` | the request enum, request bodies, replies and errors: the whole surface |
//! | `server.rs` | HTTP/1.1 on the Unix socket, on its own thread: routes, limits, timeouts |
//! | `body.rs` | request bodies: size, time, one JSON object, no unknown or repeated field |
//! | `fault_io.rs` | a `fault_message` body for the answers hyper makes itself (400, 414, 431) |
//! | `firecracker.rs` | Firecracker's routes for what ballast has (`PUT /actions`, `PATCH /vm`, `PUT /balloon`) |
//! | `handler.rs` | the VMM side: an event-loop subscriber that answers each request |
//! | `residency.rs` | how much of guest RAM is resident on the host (`mincore`) |
//! | `metrics/` | the Prometheus text of `GET /metrics` |
//!
//! The routes are described in `vmm/openapi.yaml`.

pub mod body;
pub mod fault_io;
pub mod firecracker;
pub mod handler;
pub mod metrics;
pub mod residency;
pub mod server;

use std::sync::mpsc;
use std::time::Duration;

use ballast_devices::balloon::{BalloonError, BalloonMetricsSnapshot, BalloonStats};
use ballast_devices::net::NetMetricsSnapshot;
use ballast_manager::{pages, LimitError, ManagerView};
use serde::{Deserialize, Deserializer, Serialize};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::vstate::vcpu::PauseError;

pub use ballast_manager::{HostEnforceState, HostEnforceStatus};

/// One action the API asks of the VMM: the whole surface between the API thread and the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRequest {
    /// `GET /vm`: state, vCPUs, memory, uptime, version, network devices.
    GetVm,
    /// `PUT /vm/actions`: pause, resume or shut down the VM.
    VmAction(VmAction),
    /// `GET /balloon`: the balloon's target and configuration.
    GetBalloon,
    /// `PATCH /balloon`: a new balloon target.
    UpdateBalloon(BalloonUpdate),
    /// `GET /balloon/statistics`: the guest's latest memory statistics.
    GetBalloonStats,
    /// `PATCH /balloon/statistics`: a new statistics polling interval.
    UpdateBalloonStats(BalloonStatsUpdate),
    /// `PUT /vm/memory/limit`: set or clear the VM's memory limit.
    SetMemoryLimit(MemoryLimitUpdate),
    /// `GET /vm/memory`: limit, host residency, balloon, and the memory state.
    GetMemory,
    /// `GET /metrics`: the VMM's gauges and counters (the API thread adds its own).
    GetMetrics,
}

/// `PUT /vm/actions` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmActionBody {
    pub action_type: VmAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmAction {
    /// Every vCPU leaves the guest and waits until `Resume`.
    Pause,
    Resume,
    /// Ends the VM; ballast exits with status 0.
    Shutdown,
}

/// `PATCH /balloon` body (Firecracker's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonUpdate {
    /// The balloon's target size in MiB.
    pub amount_mib: u32,
}

/// `PATCH /balloon/statistics` body (Firecracker's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonStatsUpdate {
    pub stats_polling_interval_s: u16,
}

/// `PUT /vm/memory/limit` body. `limit_mib` must be given: a number sets the limit, `null`
/// removes it (an empty body is refused rather than read as "no limit").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryLimitUpdate {
    #[serde(deserialize_with = "present_or_null")]
    pub limit_mib: Option<u64>,
}

/// With `deserialize_with`, serde reports a missing field instead of defaulting it to `None`.
fn present_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<u64>::deserialize(d)
}

/// What the VMM answers.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiReply {
    /// The action was carried out; nothing to return.
    Done,
    Vm(VmInfo),
    Balloon(BalloonInfo),
    BalloonStats(Box<BalloonStatistics>),
    Memory(Box<MemoryInfo>),
    Metrics(Box<VmmMetrics>),
}

pub type ApiResult = Result<ApiReply, ApiError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Running,
    Paused,
    /// The VM is ending (a shutdown, a guest power-off, a vCPU failure, a signal).
    Stopped,
}

/// `GET /vm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmInfo {
    pub state: VmState,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub uptime_ms: u64,
    pub ballast_version: String,
    /// The network devices, in the order the guest sees them.
    #[serde(default)]
    pub net: Vec<NetDeviceInfo>,
}

/// A network device in `GET /vm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetDeviceInfo {
    /// The host's TAP interface behind it.
    pub tap: String,
    /// The guest's MAC address.
    pub mac: String,
    /// Whether the guest's driver has set the device up.
    pub active: bool,
}

/// `GET /balloon`: Firecracker's fields first, then the driver's side of the balloon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonInfo {
    /// The target the host set, in MiB.
    pub amount_mib: u32,
    pub deflate_on_oom: bool,
    pub stats_polling_interval_s: u16,
    pub free_page_reporting: bool,
    /// What the guest driver says the balloon holds.
    pub actual_mib: u32,
    pub actual_pages: u32,
}

/// `GET /balloon/statistics`, with Firecracker's field names; a statistic the guest has not sent
/// is left out. Memory amounts are in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonStatistics {
    pub target_pages: u32,
    pub actual_pages: u32,
    pub target_mib: u32,
    pub actual_mib: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_out: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_faults: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor_faults: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_caches: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_allocations: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_failures: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kill: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloc_stall: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_scan: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_scan: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_reclaim: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_reclaim: Option<u64>,
}

impl BalloonStatistics {
    pub fn new(target_pages: u32, actual_pages: u32, guest: Option<&BalloonStats>) -> Self {
        let mib = |balloon_pages: u32| pages::to_mib(u64::from(balloon_pages)) as u32;
        let g = guest.cloned().unwrap_or_default();
        Self {
            target_pages,
            actual_pages,
            target_mib: mib(target_pages),
            actual_mib: mib(actual_pages),
            swap_in: g.swap_in,
            swap_out: g.swap_out,
            major_faults: g.major_faults,
            minor_faults: g.minor_faults,
            free_memory: g.free_memory,
            total_memory: g.total_memory,
            available_memory: g.available_memory,
            disk_caches: g.disk_caches,
            hugetlb_allocations: g.hugetlb_allocations,
            hugetlb_failures: g.hugetlb_failures,
            oom_kill: g.oom_kills,
            alloc_stall: g.alloc_stalls,
            async_scan: g.async_scans,
            direct_scan: g.direct_scans,
            async_reclaim: g.async_reclaims,
            direct_reclaim: g.direct_reclaims,
        }
    }
}

/// Where the VM stands against its memory limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryState {
    /// Resident guest RAM is at or below the limit, or there is no limit.
    #[default]
    WithinLimit,
    /// Over the limit and taking memory back (set by the memory manager).
    Reclaiming,
    /// Over the limit, and nothing more is being taken back.
    OverLimit,
    /// Over the limit and the guest answers neither its agent nor the balloon (memory manager).
    GuestUnresponsive,
}

/// The guest's own account of its memory, from the guest agent's last `stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestMemoryStats {
    pub file_bytes: u64,
    pub anon_bytes: u64,
    pub free_bytes: u64,
    pub swap_total_bytes: u64,
}

/// `GET /vm/memory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryInfo {
    /// Guest RAM size.
    pub memory_mib: u64,
    /// The limit, or `null` for none.
    pub limit_mib: Option<u64>,
    /// Guest RAM pages resident on the host, measured now.
    pub resident_bytes: u64,
    pub balloon_target_mib: u32,
    pub balloon_actual_mib: u32,
    /// Filled by the memory manager; `null` until then.
    pub dirty_rate_bytes_per_s: Option<u64>,
    /// The working set the memory manager keeps (the larger of its sources); `null` until one
    /// is known.
    pub working_set_bytes: Option<u64>,
    /// Its sources: guest pages written in the last epochs (KVM's dirty log), and the guest's
    /// active LRU lists (reads too, from the agent); each `null` while unknown.
    #[serde(default)]
    pub working_set_dirty_bytes: Option<u64>,
    #[serde(default)]
    pub working_set_guest_active_bytes: Option<u64>,
    /// Whether this host's kernel has idle page tracking (not a source yet).
    #[serde(default)]
    pub host_idle_page_tracking: bool,
    /// Filled by the memory manager; `null` until then.
    pub guest: Option<GuestMemoryStats>,
    pub state: MemoryState,
    /// Why the state is what it is, when it is not `within_limit`.
    pub state_reason: Option<String>,
    /// The memory manager's short name for why, while `over_limit` or `guest_unresponsive`:
    /// `balloon_at_cap`, `balloon_stuck`, `starved`, `balloon_violated`, `agent_unverified`,
    /// `sustained`, `guest_unresponsive`.
    #[serde(default)]
    pub state_cause: Option<String>,
    /// The most resident guest RAM was above the limit at one epoch since the limit was last
    /// set (`null` without a limit).
    #[serde(default)]
    pub max_overshoot_bytes: Option<u64>,
    /// Balloon pages found resident at the last epoch: the guest touched pages it gave the
    /// balloon (they are released again).
    #[serde(default)]
    pub balloon_violation_bytes: u64,
    /// The guest agent link: `null` when the VM has no vsock device.
    pub agent: Option<AgentInfo>,
    /// `--host-enforce`: ballast's cgroup v2 and its memory.high (state `off` without it).
    pub host_enforce: HostEnforceStatus,
}

/// What the VMM knows of the guest agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    /// `connecting` (the guest is booting), `ready` or `unresponsive`.
    pub state: String,
    pub reason: Option<String>,
    /// Age of the guest statistics in `guest`, when there are any.
    pub stats_age_ms: Option<u64>,
    pub failures: u64,
}

/// The VMM's part of `GET /metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct VmmMetrics {
    pub vm: VmInfo,
    pub memory: MemoryInfo,
    pub balloon_target_pages: u32,
    pub balloon_actual_pages: u32,
    pub balloon: BalloonMetricsSnapshot,
    /// Each network device's counters, by its TAP's name.
    pub net: Vec<(String, NetMetricsSnapshot)>,
    /// The memory manager's view.
    pub manager: ManagerView,
}

/// Why the VMM refused or failed a request. A refused request changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Pause(#[from] PauseError),
    #[error("the VM is stopping; it no longer takes actions")]
    Stopping,
    #[error(
        "a balloon of {amount_mib} MiB is more than the guest's {memory_mib} MiB of memory; give at most {memory_mib} MiB"
    )]
    BalloonTooBig { amount_mib: u32, memory_mib: u64 },
    #[error(
        "balloon statistics are not enabled: start ballast with --balloon stats_polling_interval_s=N (N > 0) to have them"
    )]
    StatsNotEnabled,
    #[error(
        "balloon statistics cannot be enabled after boot: start ballast with --balloon stats_polling_interval_s=N (N > 0)"
    )]
    StatsCannotEnable,
    #[error(
        "balloon statistics cannot be disabled after boot: give a stats_polling_interval_s above 0"
    )]
    StatsCannotDisable,
    #[error("balloon: {0}")]
    Balloon(#[from] BalloonError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("cannot measure resident guest RAM: {0}")]
    Residency(#[from] residency::ResidencyError),
    #[error("the VM has stopped and ballast is exiting")]
    VmmGone,
    #[error("the VMM did not answer within {} s", .0.as_secs())]
    VmmTimeout(Duration),
    #[error("cannot wake the VMM event loop: {0}")]
    Wake(std::io::Error),
}

impl ApiError {
    /// The HTTP status that tells the client what kind of failure this is.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Pause(PauseError::AlreadyPaused | PauseError::NotPaused) => 409,
            ApiError::Pause(PauseError::Timeout { .. }) => 500,
            ApiError::Stopping | ApiError::VmmGone => 409,
            ApiError::BalloonTooBig { .. }
            | ApiError::StatsNotEnabled
            | ApiError::StatsCannotEnable
            | ApiError::StatsCannotDisable
            | ApiError::Limit(_) => 400,
            ApiError::Balloon(
                BalloonError::TargetTooLarge { .. } | BalloonError::StatsDisabled,
            ) => 400,
            ApiError::Balloon(_)
            | ApiError::Residency(_)
            | ApiError::VmmTimeout(_)
            | ApiError::Wake(_) => 500,
        }
    }
}

/// One request on its way to the VMM, with the channel its answer goes back on.
pub struct ApiMessage {
    pub request: ApiRequest,
    pub reply: tokio::sync::oneshot::Sender<ApiResult>,
}

/// How long the API thread waits for the event loop's answer before giving up on a request.
pub const VMM_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The API thread's end: sends requests and wakes the event loop.
pub struct ApiSender {
    tx: mpsc::Sender<ApiMessage>,
    wake: EventFd,
}

/// The event loop's end: the requests and the eventfd that says some are waiting.
pub struct ApiReceiver {
    pub(crate) rx: mpsc::Receiver<ApiMessage>,
    pub(crate) wake: EventFd,
}

/// A connected pair: requests sent on the `ApiSender` come out of the `ApiReceiver`.
pub fn channel() -> std::io::Result<(ApiSender, ApiReceiver)> {
    let (tx, rx) = mpsc::channel();
    let wake = EventFd::new(EFD_NONBLOCK)?;
    let sender = ApiSender {
        tx,
        wake: wake.try_clone()?,
    };
    Ok((sender, ApiReceiver { rx, wake }))
}

impl ApiSender {
    /// Sends `request` to the VMM and waits (asynchronously) for its answer.
    pub async fn call(&self, request: ApiRequest) -> ApiResult {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(ApiMessage { request, reply })
            .map_err(|_| ApiError::VmmGone)?;
        // Non-blocking: a full counter (never in practice) still leaves the loop woken.
        self.wake.write(1).map_err(ApiError::Wake)?;
        match tokio::time::timeout(VMM_REPLY_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            // The event loop dropped the request unanswered: it has ended.
            Ok(Err(_)) => Err(ApiError::VmmGone),
            Err(_) => Err(ApiError::VmmTimeout(VMM_REPLY_TIMEOUT)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_must_be_given_but_may_be_null() {
        let set: MemoryLimitUpdate = serde_json::from_str(r#"{"limit_mib": 256}"#).unwrap();
        assert_eq!(set.limit_mib, Some(256));
        let clear: MemoryLimitUpdate = serde_json::from_str(r#"{"limit_mib": null}"#).unwrap();
        assert_eq!(clear.limit_mib, None);
        let err = serde_json::from_str::<MemoryLimitUpdate>("{}").unwrap_err();
        assert!(
            err.to_string().contains("missing field `limit_mib`"),
            "{err}"
        );
    }

    #[test]
    fn bodies_refuse_unknown_fields_and_wrong_types() {
        let err = serde_json::from_str::<BalloonUpdate>(r#"{"amount_mib": 1, "x": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `x`"), "{err}");
        let err = serde_json::from_str::<BalloonUpdate>(r#"{"amount_mib": "64"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid type"), "{err}");
        let err = serde_json::from_str::<VmActionBody>(r#"{"action_type": "Reboot"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `Reboot`"), "{err}");
        let ok: VmActionBody = serde_json::from_str(r#"{"action_type": "Pause"}"#).unwrap();
        assert_eq!(ok.action_type, VmAction::Pause);
    }

    #[test]
    fn statistics_use_firecracker_names_and_skip_missing_tags() {
        let guest = BalloonStats {
            free_memory: Some(4096),
            oom_kills: Some(2),
            ..Default::default()
        };
        let stats = BalloonStatistics::new(512, 256, Some(&guest));
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["target_mib"], 2);
        assert_eq!(json["actual_mib"], 1);
        assert_eq!(json["free_memory"], 4096);
        assert_eq!(json["oom_kill"], 2);
        assert!(json.get("swap_in").is_none());
    }

    #[test]
    fn statuses() {
        assert_eq!(ApiError::from(PauseError::AlreadyPaused).status(), 409);
        assert_eq!(ApiError::Limit(LimitError::TooSmall).status(), 400);
        assert_eq!(ApiError::StatsNotEnabled.status(), 400);
        assert_eq!(ApiError::VmmTimeout(VMM_REPLY_TIMEOUT).status(), 500);
    }
}
