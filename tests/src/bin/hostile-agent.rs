//! `hostile-agent`: a guest agent that lies, for the end-to-end tests of issue 13. It speaks the
//! agent protocol on vsock port 52 like `ballast-agent`, and
//! - claims every `deactivate_file` and `deactivate_anon` freed all it was asked, doing nothing;
//! - reports 256 MiB of cold file cache more than there is, growing by `--grow-mib` MiB at every
//!   `stats`, and empty swap;
//! - says hello with an agent and a kernel version full of terminal escapes and forged log
//!   lines, far longer than any version (the VMM must cut and escape them).
//!
//! The guest keeps its memory meanwhile (the scenario's own busy process), so the host sees
//! resident stay where it was: `GET /vm/memory` must end `over_limit`, naming the agent.
//! Built static for the guest by `tests/harness/build-ballast.sh`; a scenario names it in its
//! `agent` file to have it start instead of `ballast-agent`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ballast_agent::agent::{Agent, AgentConfig};
use ballast_agent::protocol::{
    AnonReport, CacheCounterKind, ErrorBody, FileReport, PassReport, Request, Response,
    DEFAULT_PORT,
};
use ballast_agent::server::{self, Handler, Listener};

/// A version string no honest agent sends: escapes that clear a terminal and move its cursor,
/// a forged log line, and 64 KiB of filler.
fn hostile_text(what: &str) -> String {
    format!(
        "{what}\x1b[2J\x1b[H\nballast: INFO: all is well, limit removed\r\n{}",
        "A".repeat(64 * 1024)
    )
}

struct Liar {
    real: Agent,
    grow_kib: u64,
    stats_calls: AtomicU64,
}

impl Handler for Liar {
    fn handle(&self, request: Request) -> Result<Response, ErrorBody> {
        match request {
            Request::Hello { .. } => {
                let mut hello = self.real.hello();
                hello.agent_version = hostile_text("6.6.6");
                hello.capabilities.kernel_version = hostile_text("0.0.0-liar");
                // With swap the anon step is asked too, and lied to.
                hello.capabilities.swap = true;
                Ok(Response::Hello(hello))
            }
            Request::Stats => {
                let mut stats = self.real.stats()?;
                let calls = self.stats_calls.fetch_add(1, Ordering::SeqCst) + 1;
                let extra = self.grow_kib.saturating_mul(calls);
                // Cold cache the file step may take (the active list would be its floor), and
                // empty swap for the anon step.
                let m = &mut stats.meminfo;
                let inactive = m.inactive_file_kib.unwrap_or(0);
                m.inactive_file_kib =
                    Some(inactive.saturating_add(256 << 10).saturating_add(extra));
                m.swap_total_kib = Some(m.swap_total_kib.unwrap_or(0).max(256 << 10));
                m.swap_free_kib = m.swap_total_kib;
                Ok(Response::Stats(stats))
            }
            Request::DeactivateFile(params) => Ok(Response::DeactivateFile(FileReport {
                target_pages: params.target_pages,
                freed_pages: params.target_pages,
                reached_target: true,
                cache_counter: CacheCounterKind::Mincore,
                writeback: Default::default(),
                candidates: Default::default(),
                big: PassReport {
                    freed_pages: params.target_pages,
                    ..Default::default()
                },
                small: Default::default(),
                fallback: None,
                elapsed_us: 1,
            })),
            Request::DeactivateAnon(params) => Ok(Response::DeactivateAnon(AnonReport {
                target_pages: params.target_pages,
                urgent: params.urgent,
                deactivated_pages: params.target_pages,
                swapped_pages: params.target_pages,
                ..Default::default()
            })),
        }
    }
}

fn main() {
    let mut grow_mib = 24u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--grow-mib", Some(mib)) => grow_mib = mib,
            _ => {
                eprintln!("usage: hostile-agent [--grow-mib MIB]");
                std::process::exit(2);
            }
        }
    }
    let liar = Arc::new(Liar {
        real: Agent::new(AgentConfig::default()),
        grow_kib: grow_mib << 10,
        stats_calls: AtomicU64::new(0),
    });
    eprintln!("hostile-agent: lying on vsock port {DEFAULT_PORT}");
    let listener = loop {
        match Listener::vsock(DEFAULT_PORT) {
            Ok(listener) => break listener,
            Err(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
        }
    };
    if let Err(e) = server::run(listener, liar, 4) {
        eprintln!("hostile-agent: cannot accept connections any more: {e}");
        std::process::exit(1);
    }
}
