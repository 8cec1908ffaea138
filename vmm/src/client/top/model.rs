//! What `ballast top` knows of each VM: its latest snapshot, a window of history for the chart,
//! and a log of reclaim steps and state changes, newest last.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::client::watch::{clock, state_name, Snapshot};
use crate::client::ApiClient;

/// How much history the chart shows.
pub const WINDOW: Duration = Duration::from_secs(120);
/// Log lines kept per VM.
const LOG_LINES: usize = 200;

/// One point of the chart, in MiB, at `t` seconds since `ballast top` started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub t: f64,
    pub limit: Option<f64>,
    pub threshold: Option<f64>,
    pub resident: f64,
    pub working_set: Option<f64>,
    pub balloon: f64,
}

/// One VM being watched.
pub struct VmWatch {
    pub name: String,
    api: ApiClient,
    pub latest: Option<Snapshot>,
    /// Why the last refresh failed, if it did.
    pub error: Option<String>,
    pub history: VecDeque<Point>,
    pub log: VecDeque<String>,
}

fn to_mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

impl VmWatch {
    pub fn new(socket: &Path) -> Self {
        let name = socket.file_name().map_or_else(
            || socket.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Self {
            name,
            api: ApiClient::new(socket),
            latest: None,
            error: None,
            history: VecDeque::new(),
            log: VecDeque::new(),
        }
    }

    /// Asks the VM again; `started` is time 0 of the chart.
    pub fn refresh(&mut self, started: Instant) {
        match Snapshot::take(&self.api) {
            Ok(now) => {
                if self.error.take().is_some() {
                    self.push_log(format!("{} the API answers again", clock(now.wall)));
                }
                self.record(now, started);
            }
            Err(e) => {
                let message = e.to_string();
                if self.error.as_deref() != Some(message.as_str()) {
                    self.push_log(format!("{} {message}", clock(std::time::SystemTime::now())));
                }
                self.error = Some(message);
            }
        }
    }

    /// Adds a snapshot: a chart point, and log lines for what changed since the previous one.
    pub fn record(&mut self, now: Snapshot, started: Instant) {
        let memory = &now.memory;
        let mut lines = Vec::new();
        if let Some(previous) = &self.latest {
            if previous.memory.limit_mib != memory.limit_mib {
                let limit = memory
                    .limit_mib
                    .map_or_else(|| "removed".to_string(), |l| format!("set to {l} MiB"));
                lines.push(format!("{} limit {limit}", clock(now.wall)));
            }
            for step in now.steps_since(previous) {
                lines.push(format!("{} {}", clock(step.wall), step.describe()));
            }
        }
        let state_changed = self.latest.as_ref().is_none_or(|p| {
            p.memory.state != memory.state || p.memory.state_reason != memory.state_reason
        });
        for line in lines {
            self.push_log(line);
        }
        if state_changed {
            let reason = memory
                .state_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            self.push_log(format!(
                "{} state {}{reason}",
                clock(now.wall),
                state_name(memory.state)
            ));
        }
        let point = Point {
            t: now.at.saturating_duration_since(started).as_secs_f64(),
            limit: memory.limit_mib.map(|l| l as f64),
            threshold: now.threshold_bytes().map(to_mib),
            resident: to_mib(memory.resident_bytes),
            working_set: memory.working_set_bytes.map(to_mib),
            balloon: f64::from(memory.balloon_actual_mib),
        };
        self.history.push_back(point);
        while self
            .history
            .front()
            .is_some_and(|p| point.t - p.t > WINDOW.as_secs_f64())
        {
            self.history.pop_front();
        }
        self.latest = Some(now);
    }

    fn push_log(&mut self, line: String) {
        self.log.push_back(line);
        while self.log.len() > LOG_LINES {
            self.log.pop_front();
        }
    }
}

/// The API sockets to watch: one, or every socket in a directory (sorted by name).
pub fn sockets(one: Option<&Path>, dir: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    use std::os::unix::fs::FileTypeExt;
    match (one, dir) {
        (Some(sock), _) => Ok(vec![sock.to_path_buf()]),
        (None, Some(dir)) => {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| format!("cannot read the directory {}: {e}", dir.display()))?;
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(format!("no API sockets (*.sock) in {}", dir.display()));
            }
            Ok(found)
        }
        (None, None) => Err(
            "give the VM's API socket with --api-sock PATH (or BALLAST_API_SOCK), or a directory \
             of them with --dir DIR"
                .to_string(),
        ),
    }
}
