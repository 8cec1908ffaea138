//! `--host-enforce`: the host's own memory limit behind the memory manager, for a guest that
//! ignores its agent and its balloon.
//!
//! At start ballast puts itself in a cgroup v2 of its own ([`place`]) with the memory controller
//! and `memory.high` at `max` — at start, because cgroup v2 charges a page to the cgroup that
//! faulted it in and never moves the charge: guest RAM touched before a later move would stay
//! outside the limit. Once resident guest RAM has stayed above the limit for
//! `--over-limit-after`, whatever the memory manager's state or the agent says, ballast writes
//! `memory.high` = limit + an overhead allowance (ballast's own memory, page tables, the page
//! cache of its disk images; 64 MiB by default, `--host-enforce-overhead`), and the host kernel
//! reclaims and throttles ballast above it. From then on `memory.high` follows the limit;
//! clearing the limit writes `max` again.
//!
//! Where the host allows none of this (no cgroup v2 with the memory controller, as on a cgroup
//! v1 host, or no permission), the state is `unavailable` with the reason: logged once, and in
//! `GET /vm/memory` and `ballast status`.
//!
//! | file | job |
//! | --- | --- |
//! | `mod.rs` | the enforcer: its state, and when `memory.high` changes |
//! | `place.rs` | which cgroup, and moving ballast in and out of it |
//! | `cgroup.rs` | the cgroup v2 files, under any root path (tests use a temporary directory) |
//! | `high.rs` | `memory.high`, kept open from the start, written with a retry and backoff |

pub mod cgroup;
mod high;
pub mod place;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use high::MemoryHigh;
pub use place::Target;
use place::{Host, Placement};

/// What ballast is allowed beyond its limit in `memory.high`, unless `--host-enforce-overhead`
/// says otherwise.
pub const DEFAULT_OVERHEAD: u64 = 64 << 20;

/// `--host-enforce[=PATH]` and `--host-enforce-overhead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEnforceConfig {
    /// `None`: off.
    pub target: Option<Target>,
    pub overhead_bytes: u64,
}

impl Default for HostEnforceConfig {
    fn default() -> Self {
        Self {
            target: None,
            overhead_bytes: DEFAULT_OVERHEAD,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostEnforceState {
    /// `--host-enforce` was not given.
    #[default]
    Off,
    /// Asked for, but the host does not allow it (`reason` says why).
    Unavailable,
    /// ballast is in its cgroup with `memory.high` at `max`: nothing is enforced yet.
    Standby,
    /// `memory.high` is at the limit plus the overhead allowance.
    Active,
}

/// The enforcer as `GET /vm/memory` shows it; the default is off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEnforceStatus {
    pub state: HostEnforceState,
    /// Why it is unavailable.
    pub reason: Option<String>,
    /// The cgroup ballast is in.
    pub cgroup: Option<PathBuf>,
    /// `memory.high` as written, while active.
    pub memory_high_bytes: Option<u64>,
    /// What the cgroup is charged for (its memory.current), at the memory manager's last epoch.
    pub memory_current_bytes: Option<u64>,
    /// What `memory.high` allows beyond the limit.
    pub overhead_bytes: u64,
}

impl HostEnforceStatus {
    pub fn off() -> Self {
        Self::default()
    }
}

/// Keeps ballast's cgroup's `memory.high` in step with the memory manager.
#[derive(Debug)]
pub struct HostEnforcer {
    placement: Option<Arc<Placement>>,
    /// Opened with the placement, kept open.
    high: Option<MemoryHigh>,
    status: HostEnforceStatus,
}

impl HostEnforcer {
    pub fn off() -> Self {
        Self {
            placement: None,
            high: None,
            status: HostEnforceStatus::off(),
        }
    }

    /// Places ballast for `config` on this host (/sys/fs/cgroup, /proc/self/cgroup).
    pub fn start(config: &HostEnforceConfig) -> Self {
        if config.target.is_none() {
            return Self::off();
        }
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Self::start_on(
            config,
            Host {
                root: Path::new(cgroup::DEFAULT_ROOT),
                proc_self_cgroup: &text,
                pid: std::process::id(),
            },
        )
    }

    /// Places process `host.pid` for `config`; the result, good or bad, is in the status.
    pub fn start_on(config: &HostEnforceConfig, host: Host<'_>) -> Self {
        let Some(target) = &config.target else {
            return Self::off();
        };
        let mut status = HostEnforceStatus {
            overhead_bytes: config.overhead_bytes,
            ..HostEnforceStatus::off()
        };
        let placed = place::place(target, host)
            .and_then(|placement| Ok((MemoryHigh::open(&placement.cgroup)?, placement)));
        match placed {
            Ok((high, placement)) => {
                log::info!(
                    "host enforce: ballast is in cgroup {} (memory.high max until the guest \
                     stays over its limit)",
                    placement.cgroup.display()
                );
                status.state = HostEnforceState::Standby;
                status.cgroup = Some(placement.cgroup.clone());
                Self {
                    placement: Some(Arc::new(placement)),
                    high: Some(high),
                    status,
                }
            }
            Err(e) => {
                log::warn!(
                    "host enforce: unavailable, a guest over its limit will not be held by the \
                     host: {e}"
                );
                status.state = HostEnforceState::Unavailable;
                status.reason = Some(e.to_string());
                Self {
                    placement: None,
                    high: None,
                    status,
                }
            }
        }
    }

    pub fn status(&self) -> &HostEnforceStatus {
        &self.status
    }

    /// ballast's place in its cgroup: ballast leaves the cgroup when the last holder drops it,
    /// which must come after the VM is gone (see [`Placement`]).
    pub fn placement(&self) -> Option<Arc<Placement>> {
        self.placement.clone()
    }

    /// Called at every epoch of the memory manager with the limit, and whether resident has
    /// been above it long enough to engage.
    pub fn update(&mut self, limit_bytes: Option<u64>, engage: bool) {
        self.update_at(limit_bytes, engage, Instant::now());
    }

    fn update_at(&mut self, limit_bytes: Option<u64>, engage: bool, now: Instant) {
        let (Some(placement), Some(file)) = (&self.placement, self.high.as_mut()) else {
            return;
        };
        let state = self.status.state;
        if state == HostEnforceState::Unavailable {
            return;
        }
        let high = match limit_bytes {
            None => None,
            Some(limit) if state == HostEnforceState::Active || engage => {
                Some(limit.saturating_add(self.status.overhead_bytes))
            }
            Some(_) => None,
        };
        if high != self.status.memory_high_bytes && file.due(now) {
            let retrying = self.status.reason.is_some();
            match file.write(high, now) {
                Ok(()) => {
                    match high {
                        Some(bytes) => log::warn!(
                            "host enforce: memory.high of {} set to {} MiB (limit + {} MiB)",
                            placement.cgroup.display(),
                            bytes >> 20,
                            self.status.overhead_bytes >> 20
                        ),
                        None => log::info!(
                            "host enforce: memory.high of {} back to max (no limit)",
                            placement.cgroup.display()
                        ),
                    }
                    self.status.reason = None;
                    self.status.memory_high_bytes = high;
                    self.status.state = if high.is_some() {
                        HostEnforceState::Active
                    } else {
                        HostEnforceState::Standby
                    };
                }
                Err(e) => {
                    let wait = file.retry_in(now).unwrap_or_default();
                    // Warned once per run of failures; the reason in the status says the rest.
                    if !retrying {
                        log::warn!("host enforce: {e}; trying again in {wait:?}");
                    } else {
                        log::debug!("host enforce: {e}; trying again in {wait:?}");
                    }
                    self.status.reason = Some(format!("{e}; trying again in {} s", wait.as_secs()));
                }
            }
        }
        self.status.memory_current_bytes = cgroup::memory_current(&placement.cgroup).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::cgroup::fake::FakeCgroupFs;
    use super::*;

    const MIB: u64 = 1 << 20;

    fn config(target: Target) -> HostEnforceConfig {
        HostEnforceConfig {
            target: Some(target),
            overhead_bytes: 64 * MIB,
        }
    }

    fn placed(fs: &FakeCgroupFs) -> (HostEnforcer, PathBuf) {
        let dir = fs.root.join("ballast-7");
        fs.cgroup(&dir, "memory", "");
        let enforcer = HostEnforcer::start_on(
            &config(Target::Auto),
            Host {
                root: &fs.root,
                proc_self_cgroup: "0::/\n",
                pid: 7,
            },
        );
        (enforcer, dir)
    }

    #[test]
    fn off_unless_asked() {
        let fs = FakeCgroupFs::new("memory");
        let mut enforcer = HostEnforcer::start_on(
            &HostEnforceConfig::default(),
            Host {
                root: &fs.root,
                proc_self_cgroup: "0::/\n",
                pid: 7,
            },
        );
        enforcer.update(Some(MIB), true);
        assert_eq!(enforcer.status(), &HostEnforceStatus::off());
        assert_eq!(fs.read(&fs.root.join("cgroup.procs")), "");
    }

    #[test]
    fn memory_high_follows_the_limit_once_the_guest_is_stuck() {
        let fs = FakeCgroupFs::new("memory");
        let (mut e, dir) = placed(&fs);
        let high = || fs.read(&dir.join("memory.high"));
        assert_eq!(e.status().state, HostEnforceState::Standby);
        assert_eq!(e.status().cgroup.as_deref(), Some(dir.as_path()));
        assert_eq!(high(), "max");

        // Within the limit, or reclaiming: nothing is written.
        e.update(Some(256 * MIB), false);
        assert_eq!(e.status().state, HostEnforceState::Standby);
        assert_eq!(e.status().memory_current_bytes, Some(4096));
        assert_eq!(high(), "max");

        e.update(Some(256 * MIB), true);
        assert_eq!(e.status().state, HostEnforceState::Active);
        assert_eq!(e.status().memory_high_bytes, Some(320 * MIB));
        assert_eq!(high(), (320 * MIB).to_string());

        // Active, it follows the limit up and down, stuck or not.
        e.update(Some(384 * MIB), false);
        assert_eq!(high(), (448 * MIB).to_string());
        e.update(Some(128 * MIB), false);
        assert_eq!(high(), (192 * MIB).to_string());
        assert_eq!(e.status().state, HostEnforceState::Active);

        // No limit: max, and standby until the next time.
        e.update(None, false);
        assert_eq!(high(), "max");
        assert_eq!(e.status().state, HostEnforceState::Standby);
        assert_eq!(e.status().memory_high_bytes, None);
        e.update(Some(256 * MIB), false);
        assert_eq!(high(), "max");

        // ballast leaves the cgroup when the last holder of its place lets go.
        let kept = e.placement().unwrap();
        drop(e);
        assert_eq!(fs.read(&dir.join("cgroup.procs")), "7");
        drop(kept);
        assert_eq!(fs.read(&fs.root.join("cgroup.procs")), "7", "moved back");
    }

    #[test]
    fn a_failed_write_is_tried_again_after_a_backoff() {
        let fs = FakeCgroupFs::new("memory");
        let (mut e, dir) = placed(&fs);
        // From now on every write fails (ENOSPC), until the file is put back: the descriptor
        // opened at start is swapped for one on /dev/full.
        let high = dir.join("memory.high");
        std::fs::remove_file(&high).unwrap();
        std::os::unix::fs::symlink("/dev/full", &high).unwrap();
        e.high = Some(MemoryHigh::open(&dir).unwrap());
        let t0 = Instant::now();
        e.update_at(Some(256 * MIB), true, t0);
        let status = e.status();
        assert_eq!(status.state, HostEnforceState::Standby, "not given up");
        assert!(status
            .reason
            .as_deref()
            .unwrap()
            .contains("trying again in 1 s"));
        assert_eq!(status.memory_high_bytes, None);
        // A second failure doubles the wait.
        let t1 = t0 + high::FIRST_BACKOFF;
        e.update_at(Some(256 * MIB), true, t1);
        assert!(e.status().reason.as_deref().unwrap().contains("in 2 s"));

        // The file is back: nothing is tried before the backoff has passed, then it works.
        std::fs::remove_file(&high).unwrap();
        std::fs::write(&high, "max").unwrap();
        e.update_at(Some(256 * MIB), true, t1 + high::FIRST_BACKOFF);
        assert_eq!(fs.read(&high), "max");
        e.update_at(Some(256 * MIB), true, t1 + 2 * high::FIRST_BACKOFF);
        let status = e.status();
        assert_eq!(status.state, HostEnforceState::Active);
        assert_eq!(status.reason, None);
        assert_eq!(fs.read(&high), (320 * MIB).to_string());
    }

    #[test]
    fn memory_high_is_written_through_the_descriptor_opened_at_start() {
        let fs = FakeCgroupFs::new("memory");
        let (mut e, dir) = placed(&fs);
        // Opening files fails from now on (as at EMFILE): the open descriptor still works.
        let high = dir.join("memory.high");
        let kept = dir.join("memory.high.kept");
        std::fs::hard_link(&high, &kept).unwrap();
        std::fs::remove_file(&high).unwrap();
        e.update(Some(256 * MIB), true);
        assert_eq!(e.status().state, HostEnforceState::Active);
        assert_eq!(fs.read(&kept), (320 * MIB).to_string());
    }

    #[test]
    fn no_cgroup_v2_is_unavailable_with_the_reason() {
        let fs = FakeCgroupFs::new("memory");
        let plain = fs.root.parent().unwrap().to_path_buf();
        let mut e = HostEnforcer::start_on(
            &config(Target::Auto),
            Host {
                root: &plain,
                proc_self_cgroup: "0::/\n",
                pid: 7,
            },
        );
        e.update(Some(MIB), true);
        let status = e.status();
        assert_eq!(status.state, HostEnforceState::Unavailable);
        assert!(status
            .reason
            .as_deref()
            .unwrap()
            .contains("is not in a cgroup v2 hierarchy"));
        assert_eq!(status.overhead_bytes, 64 * MIB);
        let json = serde_json::to_value(status).unwrap();
        assert_eq!(json["state"], "unavailable");
    }
}
