//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4): VM and memory
//! gauges, the balloon device's counters, and the API's own request counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use super::{MemoryState, VmState, VmmMetrics};

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

/// Writes one metric family: its HELP and TYPE lines, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family {
            out,
            name: name.to_string(),
        }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) -> &mut Self {
        let _ = write!(self.out, "{}", self.name);
        if !labels.is_empty() {
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    Family::new(out, name, "gauge", help).sample(&[], value);
}

/// The whole `GET /metrics` body.
pub fn render(vmm: &VmmMetrics, requests: &[(RequestKey, u64)]) -> String {
    let mut out = String::new();
    let vm = &vmm.vm;
    let mem = &vmm.memory;

    Family::new(&mut out, "ballast_info", "gauge", "ballast's version.")
        .sample(&[("version", &vm.ballast_version)], 1);
    let mut states = Family::new(
        &mut out,
        "ballast_vm_state",
        "gauge",
        "1 for the VM's current state, 0 for the others.",
    );
    for (state, name) in [
        (VmState::Running, "running"),
        (VmState::Paused, "paused"),
        (VmState::Stopped, "stopped"),
    ] {
        states.sample(&[("state", name)], u8::from(vm.state == state));
    }
    gauge(&mut out, "ballast_vm_vcpus", "vCPUs of the VM.", vm.vcpus);
    gauge(
        &mut out,
        "ballast_vm_uptime_seconds",
        "Seconds since the vCPUs started.",
        vm.uptime_ms as f64 / 1000.0,
    );

    gauge(
        &mut out,
        "ballast_memory_guest_bytes",
        "Guest RAM size.",
        mem.memory_mib << 20,
    );
    if let Some(limit) = mem.limit_mib {
        gauge(
            &mut out,
            "ballast_memory_limit_bytes",
            "The VM's memory limit (absent when there is none).",
            limit << 20,
        );
    }
    gauge(
        &mut out,
        "ballast_memory_resident_bytes",
        "Guest RAM resident on the host, measured with mincore.",
        mem.resident_bytes,
    );
    let mut states = Family::new(
        &mut out,
        "ballast_memory_state",
        "gauge",
        "1 for the VM's current memory state against its limit, 0 for the others.",
    );
    for (state, name) in [
        (MemoryState::WithinLimit, "within_limit"),
        (MemoryState::Reclaiming, "reclaiming"),
        (MemoryState::OverLimit, "over_limit"),
        (MemoryState::GuestUnresponsive, "guest_unresponsive"),
    ] {
        states.sample(&[("state", name)], u8::from(mem.state == state));
    }

    gauge(
        &mut out,
        "ballast_balloon_target_bytes",
        "The balloon size the host asked for.",
        u64::from(vmm.balloon_target_pages) * 4096,
    );
    gauge(
        &mut out,
        "ballast_balloon_actual_bytes",
        "The balloon size the guest driver reports.",
        u64::from(vmm.balloon_actual_pages) * 4096,
    );
    // Every balloon counter, by its field name, so counters the device adds show up here too.
    if let Ok(serde_json::Value::Object(counters)) = serde_json::to_value(&vmm.balloon) {
        for (field, value) in counters {
            if let Some(value) = value.as_u64() {
                let name = format!("ballast_balloon_{field}_total");
                let help = format!("Balloon device counter {field}.");
                Family::new(&mut out, &name, "counter", &help).sample(&[], value);
            }
        }
    }

    let mut family = Family::new(
        &mut out,
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MemoryInfo, VmInfo};

    fn sample_metrics() -> VmmMetrics {
        VmmMetrics {
            vm: VmInfo {
                state: VmState::Paused,
                vcpus: 2,
                memory_mib: 512,
                uptime_ms: 1500,
                ballast_version: "0.1.0".into(),
            },
            memory: MemoryInfo {
                memory_mib: 512,
                limit_mib: Some(256),
                resident_bytes: 12345,
                balloon_target_mib: 1,
                balloon_actual_mib: 0,
                dirty_rate_bytes_per_s: None,
                working_set_bytes: None,
                guest: None,
                agent: None,
                state: MemoryState::WithinLimit,
                state_reason: None,
            },
            balloon_target_pages: 256,
            balloon_actual_pages: 0,
            balloon: Default::default(),
        }
    }

    #[test]
    fn every_line_is_a_comment_or_a_sample() {
        let counters = RequestCounters::default();
        counters.record("GET", "/vm", 200);
        counters.record("GET", "/vm", 200);
        counters.record("PUT", "unmatched", 404);
        let text = render(&sample_metrics(), &counters.snapshot());
        for line in text.lines() {
            if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
                continue;
            }
            let (name, value) = line.rsplit_once(' ').expect(line);
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(name.starts_with("ballast_"), "{line}");
        }
        assert!(text.contains("ballast_vm_state{state=\"paused\"} 1\n"));
        assert!(text.contains("ballast_vm_uptime_seconds 1.5\n"));
        assert!(text.contains("ballast_memory_limit_bytes 268435456\n"));
        assert!(text.contains("ballast_balloon_target_bytes 1048576\n"));
        assert!(text.contains("ballast_balloon_inflate_pfns_total 0\n"));
        assert!(text.contains(
            "ballast_api_requests_total{method=\"GET\",route=\"/vm\",status=\"200\"} 2\n"
        ));
        assert!(text.contains("# TYPE ballast_api_requests_total counter\n"));
    }

    #[test]
    fn no_limit_no_limit_gauge() {
        let mut metrics = sample_metrics();
        metrics.memory.limit_mib = None;
        assert!(!render(&metrics, &[]).contains("ballast_memory_limit_bytes"));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
