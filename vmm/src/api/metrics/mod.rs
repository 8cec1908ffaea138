//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4): VM and memory
//! gauges, the memory manager's gauges and per-step counters, `--host-enforce`'s state, the
//! balloon device's counters, each network device's counters, and the API's own request
//! counters.
//!
//! | file | job |
//! | --- | --- |
//! | `mod.rs` | the whole body, and the API's request counters |
//! | `memory.rs` | the memory manager's and `--host-enforce`'s families |
//! | `text.rs` | the exposition format: writing families, and a strict reader for tests |

mod memory;
pub mod text;

use std::collections::BTreeMap;
use std::sync::Mutex;

use ballast_devices::net::NetMetricsSnapshot;
use ballast_manager::pages;

use super::{MemoryInfo, MemoryState, VmInfo, VmState, VmmMetrics};
use text::{gauge, state_gauge, Family};

/// The content type Prometheus expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Requests the API answered, per method, route and status. Routes are the route templates
/// (`/vm/memory`), or `unmatched` for paths that are not routes, so a client sending random
/// paths cannot grow this without bound.
#[derive(Debug, Default)]
pub struct RequestCounters {
    counts: Mutex<BTreeMap<RequestKey, u64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestKey {
    pub method: String,
    pub route: String,
    pub status: u16,
}

impl RequestCounters {
    pub fn record(&self, method: &str, route: &str, status: u16) {
        let key = RequestKey {
            method: method.to_string(),
            route: route.to_string(),
            status,
        };
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> Vec<(RequestKey, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// The whole `GET /metrics` body.
pub fn render(vmm: &VmmMetrics, requests: &[(RequestKey, u64)]) -> String {
    let mut out = String::new();
    vm(&mut out, &vmm.vm);
    memory(&mut out, &vmm.memory);
    memory::manager(&mut out, &vmm.manager);
    memory::host_enforce(&mut out, &vmm.memory.host_enforce);
    balloon(&mut out, vmm);
    net(&mut out, &vmm.net);
    api_requests(&mut out, requests);
    out
}

fn vm(out: &mut String, vm: &VmInfo) {
    Family::new(out, "ballast_info", "gauge", "ballast's version.")
        .sample(&[("version", &vm.ballast_version)], 1);
    state_gauge(
        out,
        "ballast_vm_state",
        "1 for the VM's current state, 0 for the others.",
        &vm.state,
        &[
            (VmState::Running, "running"),
            (VmState::Paused, "paused"),
            (VmState::Stopped, "stopped"),
        ],
    );
    gauge(out, "ballast_vm_vcpus", "vCPUs of the VM.", vm.vcpus);
    gauge(
        out,
        "ballast_vm_uptime_seconds",
        "Seconds since the vCPUs started.",
        vm.uptime_ms as f64 / 1000.0,
    );
}

/// What the API measures itself: guest RAM, the limit, residency, the memory state.
fn memory(out: &mut String, mem: &MemoryInfo) {
    gauge(
        out,
        "ballast_memory_guest_bytes",
        "Guest RAM size.",
        mem.memory_mib << 20,
    );
    if let Some(limit) = mem.limit_mib {
        gauge(
            out,
            "ballast_memory_limit_bytes",
            "The VM's memory limit (absent when there is none).",
            limit << 20,
        );
    }
    gauge(
        out,
        "ballast_memory_resident_bytes",
        "Guest RAM resident on the host, measured with mincore.",
        mem.resident_bytes,
    );
    state_gauge(
        out,
        "ballast_memory_state",
        "1 for the VM's current memory state against its limit, 0 for the others.",
        &mem.state,
        &[
            (MemoryState::WithinLimit, "within_limit"),
            (MemoryState::Reclaiming, "reclaiming"),
            (MemoryState::OverLimit, "over_limit"),
            (MemoryState::GuestUnresponsive, "guest_unresponsive"),
        ],
    );
}

fn balloon(out: &mut String, vmm: &VmmMetrics) {
    gauge(
        out,
        "ballast_balloon_target_bytes",
        "The balloon size the host asked for.",
        pages::to_bytes(u64::from(vmm.balloon_target_pages)),
    );
    gauge(
        out,
        "ballast_balloon_actual_bytes",
        "The balloon size the guest driver reports.",
        pages::to_bytes(u64::from(vmm.balloon_actual_pages)),
    );
    // Every balloon counter, by its field name, so counters the device adds show up here too.
    if let Ok(serde_json::Value::Object(counters)) = serde_json::to_value(&vmm.balloon) {
        for (field, value) in counters {
            if let Some(value) = value.as_u64() {
                let name = format!("ballast_balloon_{field}_total");
                let help = format!("Balloon device counter {field}.");
                Family::new(out, &name, "counter", &help).sample(&[], value);
            }
        }
    }
}

/// Every network device counter, by its field name, one sample per device labelled with its
/// TAP's name (`ballast_net_rx_packets_total{tap="tap0"}`).
fn net(out: &mut String, devices: &[(String, NetMetricsSnapshot)]) {
    let devices: Vec<(&str, serde_json::Map<String, serde_json::Value>)> = devices
        .iter()
        .filter_map(|(tap, snapshot)| match serde_json::to_value(snapshot) {
            Ok(serde_json::Value::Object(counters)) => Some((tap.as_str(), counters)),
            _ => None,
        })
        .collect();
    let Some((_, first)) = devices.first() else {
        return;
    };
    for field in first.keys() {
        let name = format!("ballast_net_{field}_total");
        let help = format!("Network device counter {field}, per TAP interface.");
        let mut family = Family::new(out, &name, "counter", &help);
        for (tap, counters) in &devices {
            if let Some(value) = counters.get(field).and_then(|v| v.as_u64()) {
                family.sample(&[("tap", tap)], value);
            }
        }
    }
}

fn api_requests(out: &mut String, requests: &[(RequestKey, u64)]) {
    let mut family = Family::new(
        out,
        "ballast_api_requests_total",
        "counter",
        "API requests answered, by method, route and HTTP status.",
    );
    for (key, count) in requests {
        family.sample(
            &[
                ("method", &key.method),
                ("route", &key.route),
                ("status", &key.status.to_string()),
            ],
            count,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ballast_manager::policy::{ManagerState, OverLimitCause, StepCounters};

    use super::text::{parse, Sample};
    use super::*;
    use crate::api::{HostEnforceState, HostEnforceStatus, MemoryInfo, VmInfo};
    use ballast_manager::ManagerView;

    const MIB: u64 = 1 << 20;

    /// A VM over its 256 MiB limit with the balloon at its cap, after some reclaim.
    fn manager_view() -> ManagerView {
        let mut view = ManagerView::new(512 * 256, Some(256 * 256), HostEnforceStatus::off());
        view.threshold_pages = Some(224 * 256);
        view.resident_pages = Some(300 * 256);
        view.working_set_pages = Some(100 * 256);
        view.dirty_working_set_pages = Some(60 * 256);
        view.guest_active_pages = Some(100 * 256);
        view.file_passes.big_pages = 2000;
        view.file_passes.fallbacks = 1;
        view.dirty_rate_pages_per_s = Some(2.5);
        view.state = ManagerState::OverLimit {
            reason: "balloon at its cap".into(),
            cause: OverLimitCause::BalloonAtCap,
        };
        view.counters.file = StepCounters {
            taken: 3,
            asked_pages: 3000,
            obtained_pages: 2500,
            claimed_pages: 3000,
            failed: 1,
            time: Duration::from_millis(1250),
        };
        view.counters.inflate = StepCounters {
            taken: 2,
            asked_pages: 256,
            obtained_pages: 128,
            claimed_pages: 0,
            failed: 0,
            time: Duration::from_secs(4),
        };
        view.counters.episodes = 1;
        view.counters.balloon_violation_pages = 300;
        view.counters.max_overshoot_pages = 44 * 256;
        view.epochs = 42;
        view.sample_cost = Duration::from_micros(500);
        view.host_enforce = HostEnforceStatus {
            state: HostEnforceState::Active,
            reason: None,
            cgroup: Some("/sys/fs/cgroup/ballast-1".into()),
            memory_high_bytes: Some(320 * MIB),
            memory_current_bytes: Some(310 * MIB),
            overhead_bytes: 64 * MIB,
        };
        view
    }

    fn sample_metrics() -> VmmMetrics {
        let view = manager_view();
        VmmMetrics {
            vm: VmInfo {
                state: VmState::Paused,
                vcpus: 2,
                memory_mib: 512,
                uptime_ms: 1500,
                ballast_version: "0.1.0".into(),
                net: Vec::new(),
            },
            memory: MemoryInfo {
                memory_mib: 512,
                limit_mib: Some(256),
                resident_bytes: 12345,
                balloon_target_mib: 1,
                state: MemoryState::OverLimit,
                state_cause: Some("balloon_at_cap".into()),
                max_overshoot_bytes: Some(44 * MIB),
                host_enforce: view.host_enforce.clone(),
                ..Default::default()
            },
            balloon_target_pages: 256,
            balloon_actual_pages: 0,
            balloon: Default::default(),
            net: vec![
                (
                    "tap0".into(),
                    NetMetricsSnapshot {
                        rx_packets: 7,
                        tx_bytes: 1500,
                        tx_refused_chains: 2,
                        ..Default::default()
                    },
                ),
                ("tap1".into(), Default::default()),
            ],
            manager: view,
        }
    }

    /// The value of one series: `name` with exactly `labels`.
    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        samples
            .iter()
            .find(|s| s.family == name && s.labels == labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
            .value
    }

    #[test]
    fn the_body_is_valid_exposition_text() {
        let counters = RequestCounters::default();
        counters.record("GET", "/vm", 200);
        counters.record("GET", "/vm", 200);
        counters.record("PUT", "unmatched", 404);
        let text = render(&sample_metrics(), &counters.snapshot());
        let samples = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(samples.iter().all(|s| s.family.starts_with("ballast_")));
        let v = |name, labels: &[(&str, &str)]| value(&samples, name, labels);
        assert_eq!(v("ballast_vm_state", &[("state", "paused")]), 1.0);
        assert_eq!(v("ballast_vm_uptime_seconds", &[]), 1.5);
        assert_eq!(v("ballast_memory_limit_bytes", &[]), (256 * MIB) as f64);
        assert_eq!(v("ballast_balloon_target_bytes", &[]), MIB as f64);
        assert_eq!(v("ballast_balloon_inflate_pfns_total", &[]), 0.0);
        assert_eq!(
            v(
                "ballast_api_requests_total",
                &[("method", "GET"), ("route", "/vm"), ("status", "200")]
            ),
            2.0
        );
        assert!(text.contains("# TYPE ballast_api_requests_total counter\n"));
        let tap = |t| [("tap", t)];
        assert_eq!(v("ballast_net_rx_packets_total", &tap("tap0")), 7.0);
        assert_eq!(v("ballast_net_tx_bytes_total", &tap("tap0")), 1500.0);
        assert_eq!(v("ballast_net_tx_refused_chains_total", &tap("tap0")), 2.0);
        assert_eq!(v("ballast_net_rx_dropped_total", &tap("tap1")), 0.0);
    }

    #[test]
    fn the_memory_manager_is_in_the_metrics() {
        let text = render(&sample_metrics(), &[]);
        let samples = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let v = |name, labels: &[(&str, &str)]| value(&samples, name, labels);
        assert_eq!(v("ballast_memory_threshold_bytes", &[]), (224 * MIB) as f64);
        assert_eq!(v("ballast_memory_working_set_known", &[]), 1.0);
        assert_eq!(
            v("ballast_memory_working_set_bytes", &[]),
            (100 * MIB) as f64
        );
        assert_eq!(
            v("ballast_memory_dirty_rate_bytes_per_second", &[]),
            2.5 * 4096.0
        );
        assert_eq!(
            v(
                "ballast_memory_working_set_source_bytes",
                &[("source", "dirty_log")]
            ),
            (60 * MIB) as f64
        );
        assert_eq!(
            v(
                "ballast_memory_working_set_source_bytes",
                &[("source", "guest_active")]
            ),
            (100 * MIB) as f64
        );
        assert_eq!(
            v("ballast_agent_file_freed_bytes_total", &[("pass", "big")]),
            2000.0 * 4096.0
        );
        assert_eq!(
            v(
                "ballast_agent_file_freed_bytes_total",
                &[("pass", "fallback")]
            ),
            0.0
        );
        assert_eq!(v("ballast_agent_file_fallbacks_total", &[]), 1.0);
        assert_eq!(v("ballast_memory_over_limit", &[]), 1.0);
        for (cause, on) in [
            ("balloon_at_cap", 1.0),
            ("balloon_stuck", 0.0),
            ("starved", 0.0),
            ("balloon_violated", 0.0),
            ("working_set", 0.0),
            ("agent_unverified", 0.0),
            ("sustained", 0.0),
            ("guest_unresponsive", 0.0),
        ] {
            assert_eq!(
                v("ballast_memory_over_limit_cause", &[("cause", cause)]),
                on
            );
        }
        assert_eq!(v("ballast_memory_reclaim_episodes_total", &[]), 1.0);
        assert_eq!(v("ballast_memory_epochs_total", &[]), 42.0);
        assert_eq!(v("ballast_memory_sample_seconds", &[]), 0.0005);
        let file = [("step", "file")];
        assert_eq!(v("ballast_memory_reclaim_steps_total", &file), 3.0);
        assert_eq!(
            v("ballast_memory_reclaim_asked_bytes_total", &file),
            3000.0 * 4096.0
        );
        assert_eq!(
            v("ballast_memory_reclaim_obtained_bytes_total", &file),
            2500.0 * 4096.0
        );
        assert_eq!(
            v("ballast_memory_reclaim_claimed_bytes_total", &file),
            3000.0 * 4096.0
        );
        assert_eq!(v("ballast_memory_reclaim_failures_total", &file), 1.0);
        assert_eq!(
            v("ballast_memory_max_overshoot_bytes", &[]),
            (44 * MIB) as f64
        );
        assert_eq!(v("ballast_balloon_resident_violations_total", &[]), 300.0);
        assert_eq!(v("ballast_memory_reclaim_seconds_total", &file), 1.25);
        let inflate = [("step", "inflate")];
        assert_eq!(
            v("ballast_memory_reclaim_obtained_bytes_total", &inflate),
            (MIB / 2) as f64
        );
        assert_eq!(v("ballast_memory_reclaim_seconds_total", &inflate), 4.0);
        for step in ["anon", "deflate"] {
            assert_eq!(
                v("ballast_memory_reclaim_steps_total", &[("step", step)]),
                0.0
            );
        }

        assert_eq!(v("ballast_host_enforce_state", &[("state", "active")]), 1.0);
        assert_eq!(v("ballast_host_enforce_state", &[("state", "off")]), 0.0);
        assert_eq!(
            v("ballast_host_enforce_memory_high_bytes", &[]),
            (320 * MIB) as f64
        );
        assert_eq!(
            v("ballast_host_enforce_memory_current_bytes", &[]),
            (310 * MIB) as f64
        );
    }

    #[test]
    fn what_is_not_known_is_absent() {
        let mut metrics = sample_metrics();
        metrics.memory.limit_mib = None;
        metrics.memory.host_enforce = HostEnforceStatus::off();
        let view = &mut metrics.manager;
        view.limit_pages = None;
        view.working_set_pages = None;
        view.dirty_rate_pages_per_s = None;
        view.state = ManagerState::WithinLimit;
        metrics.net.clear();
        let text = render(&metrics, &[]);
        let samples = parse(&text).unwrap();
        for absent in [
            "ballast_memory_limit_bytes",
            "ballast_memory_threshold_bytes",
            "ballast_memory_working_set_bytes",
            "ballast_memory_dirty_rate_bytes_per_second",
            "ballast_host_enforce_memory_high_bytes",
            "ballast_net_",
        ] {
            assert!(!text.contains(absent), "{absent}");
        }
        assert_eq!(
            value(&samples, "ballast_memory_working_set_known", &[]),
            0.0
        );
        assert_eq!(value(&samples, "ballast_memory_over_limit", &[]), 0.0);
        assert_eq!(
            value(&samples, "ballast_host_enforce_state", &[("state", "off")]),
            1.0
        );
        assert!(text.contains("ballast_memory_resident_bytes 12345\n"));
    }
}
