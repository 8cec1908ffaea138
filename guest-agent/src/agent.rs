//! What the agent does for each request.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use log::warn;

use crate::cache::CacheCounter;
use crate::limits;
use crate::page_size;
use crate::proc::{meminfo, psi, vmstat};
use crate::protocol::{
    Capabilities, ErrorBody, ErrorKind, Hello, Request, Response, Stats, PROTOCOL_VERSION,
};
use crate::reclaim::anon::{self, AnonOptions};
use crate::reclaim::candidates::CandidateConfig;
use crate::reclaim::fallback::FallbackTargets;
use crate::reclaim::file::{FileReclaim, FileReclaimConfig};
use crate::server::Handler;

/// The agent's settings (from its command line).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// See [`CandidateConfig::scan_roots`].
    pub scan_roots: Vec<PathBuf>,
    /// Time for finding candidate files.
    pub walk_budget: Duration,
    /// Files and directories looked at per request, at most.
    pub max_examined: u64,
    /// Time for a reclaim request that names no `budget_ms`: under the client's default 2 s
    /// timeout, with room for the reply to travel.
    pub default_budget: Duration,
    /// Longest wait for the write-back of dirty pages.
    pub writeback_wait: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            scan_roots: Vec::new(),
            walk_budget: Duration::from_millis(200),
            max_examined: 100_000,
            default_budget: Duration::from_millis(1500),
            writeback_wait: Duration::from_millis(500),
        }
    }
}

/// The longest budget a request may ask for: a host asking for more is confused, and the
/// agent's work must stay bounded.
const MAX_BUDGET: Duration = Duration::from_secs(60);

/// The request handler of `ballast-agent`.
pub struct Agent {
    config: AgentConfig,
    /// Also the lock that makes reclaims run one at a time, whatever the number of
    /// connections: it bounds the agent's CPU use, and two reclaims at once would only measure
    /// each other's work.
    reclaim: Mutex<FileReclaim>,
    cachestat: bool,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Agent {
        let file = FileReclaimConfig {
            candidates: CandidateConfig {
                scan_roots: config.scan_roots.clone(),
                budget: config.walk_budget,
                max_examined: config.max_examined,
            },
            counter: CacheCounter::detect(),
            fallback: FallbackTargets::detect(),
            writeback_wait: config.writeback_wait,
        };
        Agent {
            config,
            cachestat: file.counter == CacheCounter::Cachestat,
            reclaim: Mutex::new(FileReclaim::new(file)),
        }
    }

    /// Refreshes the file inventory every `every` while no request holds the reclaim lock
    /// (it never waits for one), on a thread of its own at the agent's idle priority.
    pub fn start_inventory(self: &std::sync::Arc<Self>, every: Duration) -> std::io::Result<()> {
        let agent = std::sync::Arc::downgrade(self);
        std::thread::Builder::new()
            .name("inventory".into())
            .stack_size(512 << 10)
            .spawn(move || loop {
                // The first soon after start: a limit may be cut any moment.
                std::thread::sleep(every / 5);
                let Some(strong) = agent.upgrade() else {
                    return;
                };
                strong.refresh_inventory();
                drop(strong);
                std::thread::sleep(every - every / 5);
            })
            .map(|_| ())
    }

    /// One inventory refresh, unless a request holds the reclaim lock (never waits for it).
    fn refresh_inventory(&self) {
        if let Ok(mut reclaim) = self.reclaim.try_lock() {
            reclaim.refresh_inventory();
        }
    }

    fn budget(&self, budget_ms: Option<u64>) -> Duration {
        budget_ms
            .map(Duration::from_millis)
            .unwrap_or(self.config.default_budget)
            .min(MAX_BUDGET)
    }

    pub fn hello(&self) -> Hello {
        let swap = meminfo::read()
            .ok()
            .and_then(|m| m.swap_total_kib)
            .is_some_and(|kib| kib > 0);
        Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            page_size: page_size(),
            capabilities: Capabilities {
                kernel_version: kernel_version(),
                swap,
                memory_reclaim: FallbackTargets::detect().memory_reclaim.is_some(),
                cachestat: self.cachestat,
                process_madvise: anon::process_madvise_available(),
            },
        }
    }

    pub fn stats(&self) -> Result<Stats, ErrorBody> {
        let failed = |what: &str, e: std::io::Error| {
            ErrorBody::new(
                ErrorKind::Failed,
                format!("cannot read {what}: {e} (is /proc mounted in the guest?)"),
            )
        };
        Ok(Stats {
            meminfo: meminfo::read().map_err(|e| failed("/proc/meminfo", e))?,
            vmstat: vmstat::read().map_err(|e| failed("/proc/vmstat", e))?,
            psi: psi::read().unwrap_or_else(|e| {
                warn!("cannot read /proc/pressure/memory: {e}");
                None
            }),
        })
    }
}

impl Handler for Agent {
    fn handle(&self, request: Request) -> Result<Response, ErrorBody> {
        match request {
            Request::Hello { .. } => Ok(Response::Hello(self.hello())),
            Request::Stats => self.stats().map(Response::Stats),
            Request::DeactivateFile(params) => {
                let mut reclaim = self.reclaim.lock().unwrap_or_else(|e| e.into_inner());
                let _priority = limits::NormalPriority::enter();
                let budget = self.budget(params.budget_ms);
                Ok(Response::DeactivateFile(
                    reclaim.deactivate(&params, budget),
                ))
            }
            Request::DeactivateAnon(params) => {
                let _one_at_a_time = self.reclaim.lock().unwrap_or_else(|e| e.into_inner());
                let _priority = limits::NormalPriority::enter();
                let budget = self.budget(params.budget_ms);
                anon::deactivate_anon(&params, &AnonOptions::default(), budget)
                    .map(Response::DeactivateAnon)
                    .map_err(|e| {
                        ErrorBody::new(
                            ErrorKind::Failed,
                            format!("cannot read /proc/meminfo or the process list: {e}"),
                        )
                    })
            }
        }
    }
}

/// `uname -r`.
fn kernel_version() -> String {
    let mut name = std::mem::MaybeUninit::<libc::utsname>::uninit();
    // SAFETY: `name` is writable memory of the right type, filled by uname on success.
    if unsafe { libc::uname(name.as_mut_ptr()) } != 0 {
        return String::new();
    }
    // SAFETY: uname succeeded, so `name` is initialised and `release` is NUL-terminated.
    let name = unsafe { name.assume_init() };
    // SAFETY: `release` is a NUL-terminated C string inside `name`, which outlives this use.
    unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_describes_this_kernel() {
        let hello = Agent::new(AgentConfig::default()).hello();
        assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
        assert_eq!(hello.page_size, page_size());
        assert!(hello
            .capabilities
            .kernel_version
            .starts_with(|c: char| c.is_ascii_digit()));
    }

    #[test]
    fn budgets_are_capped() {
        let agent = Agent::new(AgentConfig::default());
        assert_eq!(agent.budget(None), Duration::from_millis(1500));
        assert_eq!(agent.budget(Some(10)), Duration::from_millis(10));
        assert_eq!(agent.budget(Some(u64::MAX)), MAX_BUDGET);
    }
}
