//! `ballast-agent`: runs inside the guest, answers ballast over vsock.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use log::{error, info, warn, LevelFilter, Log, Metadata, Record};

use ballast_agent::agent::{Agent, AgentConfig};
use ballast_agent::limits;
use ballast_agent::protocol::{DEFAULT_PORT, PROTOCOL_VERSION};
use ballast_agent::server::{self, Listener};

/// ballast's guest agent: memory statistics, and page cache and anonymous memory
/// deactivation on request of the VMM.
#[derive(Debug, Parser)]
#[command(name = "ballast-agent", version)]
struct Cli {
    /// vsock port to listen on.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u32,

    /// Listen on this Unix socket instead of vsock (for tests on a host without vsock).
    #[arg(long, value_name = "PATH")]
    listen_unix: Option<PathBuf>,

    /// Only files under this directory are page cache candidates, and only it is walked
    /// (repeatable). Default: every file processes have open or mapped, and every disk-backed
    /// filesystem.
    #[arg(long, value_name = "DIR")]
    scan_root: Vec<PathBuf>,

    /// Time for finding candidate files, per request, in ms.
    #[arg(long, default_value_t = 200)]
    walk_budget_ms: u64,

    /// Files and directories looked at per request, at most.
    #[arg(long, default_value_t = 100_000)]
    max_files: u64,

    /// Time for a reclaim request that does not say, in ms (keep it under the VMM's timeout).
    #[arg(long, default_value_t = 1500)]
    request_budget_ms: u64,

    /// Longest wait for dirty pages to be written back before dropping cache, in ms.
    #[arg(long, default_value_t = 500)]
    writeback_wait_ms: u64,

    /// Host connections served at once; a new one beyond this closes the oldest.
    #[arg(long, default_value_t = 4)]
    max_connections: usize,

    /// Address space limit of the agent in MiB (RLIMIT_AS); 0 for none.
    #[arg(long, default_value_t = 256)]
    max_memory_mib: u64,

    /// Nice value of the agent.
    #[arg(long, default_value_t = 10)]
    nice: i32,

    /// Log level: error, warn, info, debug, trace.
    #[arg(long, default_value = "info", value_parser = parse_level)]
    log_level: LevelFilter,
}

/// Listens on vsock, retrying until it works: the guest's init starts the agent without a
/// supervisor, possibly before the vsock transport is up, and an agent that gave up would leave
/// the host without file and anon deactivation until the next boot.
fn listen_vsock(port: u32) -> Listener {
    let mut attempts = 0u64;
    loop {
        match Listener::vsock(port) {
            Ok(listener) => return listener,
            Err(e) => {
                // Once, then once a minute.
                if attempts.is_multiple_of(60) {
                    warn!("{e}; retrying every second");
                }
                attempts += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn parse_level(level: &str) -> Result<LevelFilter, String> {
    level
        .parse()
        .map_err(|_| format!("{level:?} is not one of off, error, warn, info, debug, trace"))
}

/// Logs to stderr, one line per record; the guest's init sends stderr to the console or
/// /dev/kmsg, where the timestamps come from.
struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            eprintln!("ballast-agent: {}: {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(cli.log_level);
    }
    limits::apply(cli.max_memory_mib.saturating_mul(1 << 20), cli.nice);

    let mut scan_roots = Vec::new();
    for root in &cli.scan_root {
        match root.canonicalize() {
            Ok(root) => scan_roots.push(root),
            Err(e) => {
                error!("--scan-root {}: {e}", root.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let agent = Arc::new(Agent::new(AgentConfig {
        scan_roots,
        walk_budget: Duration::from_millis(cli.walk_budget_ms),
        max_examined: cli.max_files,
        default_budget: Duration::from_millis(cli.request_budget_ms),
        writeback_wait: Duration::from_millis(cli.writeback_wait_ms),
    }));
    let hello = agent.hello();
    info!(
        "version {} (protocol {PROTOCOL_VERSION}), kernel {}, swap {}, memory.reclaim {}, cachestat {}, process_madvise {}",
        hello.agent_version,
        hello.capabilities.kernel_version,
        hello.capabilities.swap,
        hello.capabilities.memory_reclaim,
        hello.capabilities.cachestat,
        hello.capabilities.process_madvise
    );

    let listener = match &cli.listen_unix {
        Some(path) => match Listener::unix(path) {
            Ok(listener) => listener,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        },
        None => listen_vsock(cli.port),
    };
    match &cli.listen_unix {
        Some(path) => info!("listening on {}", path.display()),
        None => info!("listening on vsock port {}", cli.port),
    }
    // Candidates ready before a request comes: the file inventory is refreshed while idle.
    if let Err(e) = agent.start_inventory(Duration::from_secs(10)) {
        warn!("no background file inventory: {e}");
    }
    if let Err(e) = server::run(listener, agent, cli.max_connections) {
        error!("cannot accept connections any more: {e}");
        return ExitCode::FAILURE;
    }
    warn!("the server stopped");
    ExitCode::SUCCESS
}
