//! What `ballast top` and `ballast limit set --wait` watch: one snapshot of a VM (`GET /vm`,
//! `GET /vm/memory` and the memory manager's counters from `GET /metrics`), and the reclaim
//! steps that happened between two snapshots, read off the per-step counters.

use std::time::{Instant, SystemTime};

use hyper::Method;

use super::{ApiClient, ClientError};
use crate::api::metrics::text::{parse, Sample};
use crate::api::{MemoryInfo, MemoryState, VmInfo};

/// The steps of the over-limit handler, as the `step` label names them.
pub const STEPS: [&str; 4] = ["file", "anon", "inflate", "deflate"];

/// One step's counters since the VM started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTotals {
    pub actions: u64,
    pub asked_bytes: u64,
    pub obtained_bytes: u64,
    pub failures: u64,
    pub seconds: f64,
}

/// A VM as seen at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub wall: SystemTime,
    pub vm: VmInfo,
    pub memory: MemoryInfo,
    /// Per step, in the order of [`STEPS`].
    pub steps: [StepTotals; 4],
    /// The memory manager's epochs so far.
    pub epochs: u64,
}

/// What one step did between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct StepEvent {
    pub wall: SystemTime,
    pub step: &'static str,
    pub actions: u64,
    pub asked_bytes: u64,
    pub obtained_bytes: u64,
    pub failures: u64,
    pub seconds: f64,
}

impl Snapshot {
    /// Asks the VM for everything a snapshot holds.
    pub fn take(api: &ApiClient) -> Result<Self, ClientError> {
        let vm: VmInfo = api.get("/vm")?;
        let memory: MemoryInfo = api.get("/vm/memory")?;
        let metrics = api.call(Method::GET, "/metrics", None)?;
        let text = String::from_utf8_lossy(&metrics.body);
        let samples = parse(&text).map_err(|detail| ClientError::Decode {
            what: "GET /metrics".into(),
            detail,
        })?;
        Ok(Self::from_parts(vm, memory, &samples))
    }

    pub fn from_parts(vm: VmInfo, memory: MemoryInfo, samples: &[Sample]) -> Self {
        let value = |family: &str, step: Option<&str>| {
            samples
                .iter()
                .find(|s| {
                    s.family == family
                        && step.is_none_or(|step| {
                            s.labels.iter().any(|(k, v)| k == "step" && v == step)
                        })
                })
                .map_or(0.0, |s| s.value)
        };
        let steps = STEPS.map(|step| {
            let step = Some(step);
            StepTotals {
                actions: value("ballast_memory_reclaim_steps_total", step) as u64,
                asked_bytes: value("ballast_memory_reclaim_asked_bytes_total", step) as u64,
                obtained_bytes: value("ballast_memory_reclaim_obtained_bytes_total", step) as u64,
                failures: value("ballast_memory_reclaim_failures_total", step) as u64,
                seconds: value("ballast_memory_reclaim_seconds_total", step),
            }
        });
        Self {
            at: Instant::now(),
            wall: SystemTime::now(),
            vm,
            memory,
            steps,
            epochs: value("ballast_memory_epochs_total", None) as u64,
        }
    }

    /// Where reclaim stops: the limit less an eighth, as the memory manager counts it.
    pub fn threshold_bytes(&self) -> Option<u64> {
        self.memory.limit_mib.map(|l| {
            let limit = l << 20;
            limit - limit / 8
        })
    }

    /// The steps that acted since `earlier`, in the handler's order.
    pub fn steps_since(&self, earlier: &Snapshot) -> Vec<StepEvent> {
        STEPS
            .iter()
            .zip(self.steps.iter().zip(earlier.steps.iter()))
            .filter(|(_, (now, then))| now.actions > then.actions || now.failures > then.failures)
            .map(|(step, (now, then))| StepEvent {
                wall: self.wall,
                step,
                actions: now.actions.saturating_sub(then.actions),
                asked_bytes: now.asked_bytes.saturating_sub(then.asked_bytes),
                obtained_bytes: now.obtained_bytes.saturating_sub(then.obtained_bytes),
                failures: now.failures.saturating_sub(then.failures),
                seconds: (now.seconds - then.seconds).max(0.0),
            })
            .collect()
    }
}

/// The state as the API names it.
pub fn state_name(state: MemoryState) -> &'static str {
    match state {
        MemoryState::WithinLimit => "within_limit",
        MemoryState::Reclaiming => "reclaiming",
        MemoryState::OverLimit => "over_limit",
        MemoryState::GuestUnresponsive => "guest_unresponsive",
    }
}

/// Bytes as MiB with one decimal, the way every client view shows memory.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// `12:03:04` (UTC) for a log line.
pub fn clock(wall: SystemTime) -> String {
    let secs = wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

impl StepEvent {
    /// One line a person reads: `inflate: asked 64.0 MiB, obtained 31.2 MiB (2 actions, 1.3 s)`.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "{}: asked {}, obtained {} ({} action{}, {:.1} s",
            self.step,
            mib(self.asked_bytes),
            mib(self.obtained_bytes),
            self.actions,
            if self.actions == 1 { "" } else { "s" },
            self.seconds
        );
        if self.failures > 0 {
            line.push_str(&format!(", {} failed", self.failures));
        }
        line.push(')');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::metrics::text::Family;

    fn samples(actions: u64, asked: u64, obtained: u64, epochs: u64) -> Vec<Sample> {
        let mut out = String::new();
        for (name, value) in [
            ("ballast_memory_reclaim_steps_total", actions),
            ("ballast_memory_reclaim_asked_bytes_total", asked),
            ("ballast_memory_reclaim_obtained_bytes_total", obtained),
        ] {
            let mut family = Family::new(&mut out, name, "counter", "h");
            for step in STEPS {
                let v = if step == "inflate" { value } else { 0 };
                family.sample(&[("step", step)], v);
            }
        }
        Family::new(&mut out, "ballast_memory_epochs_total", "counter", "h").sample(&[], epochs);
        parse(&out).unwrap()
    }

    fn snapshot(samples: &[Sample]) -> Snapshot {
        let vm = VmInfo {
            state: crate::api::VmState::Running,
            vcpus: 1,
            memory_mib: 64,
            uptime_ms: 0,
            ballast_version: String::new(),
            net: Vec::new(),
        };
        let memory = MemoryInfo {
            memory_mib: 64,
            limit_mib: Some(32),
            state: MemoryState::Reclaiming,
            host_enforce: crate::api::HostEnforceStatus::off(),
            ..Default::default()
        };
        Snapshot::from_parts(vm, memory, samples)
    }

    #[test]
    fn steps_are_the_counters_that_moved() {
        let before = snapshot(&samples(1, 8 << 20, 4 << 20, 10));
        let after = snapshot(&samples(3, 72 << 20, 36 << 20, 12));
        assert_eq!(after.epochs, 12);
        assert_eq!(after.threshold_bytes(), Some(28 << 20));
        let events = after.steps_since(&before);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].step, "inflate");
        assert_eq!(
            events[0].describe(),
            "inflate: asked 64.0 MiB, obtained 32.0 MiB (2 actions, 0.0 s)"
        );
        assert!(after.steps_since(&after).is_empty());
        assert_eq!(
            clock(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(3_725)),
            "01:02:05"
        );
    }
}
