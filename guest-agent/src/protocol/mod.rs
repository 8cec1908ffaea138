//! The agent protocol, shared by `ballast-agent` and the VMM.
//!
//! Newline-delimited JSON over a stream (vsock port 52 in a guest, a Unix socket in tests).
//! Every request is one JSON object on one line with an `id` and a `type`; the agent answers
//! every line with one reply line that echoes the `id`:
//!
//! ```text
//! → {"id":1,"type":"hello","protocol_version":1}
//! ← {"id":1,"result":{"type":"hello","protocol_version":1,"agent_version":"0.1.0",...}}
//! → {"id":2,"type":"deactivate_file","target_pages":8192}
//! ← {"id":2,"result":{"type":"deactivate_file","target_pages":8192,"freed_pages":8192,...}}
//! → {"id":3,"type":"frobnicate"}
//! ← {"id":3,"error":{"kind":"unknown_request","message":"..."}}
//! → not json
//! ← {"id":null,"error":{"kind":"malformed","message":"..."}}
//! ```
//!
//! Compatibility: new request types and new fields (always optional, with defaults) do not
//! change [`PROTOCOL_VERSION`]; anything a peer of the old version would misread does. Both
//! sides ignore fields they do not know.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Version of the agent protocol, exchanged in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The vsock port the agent listens on unless told otherwise.
pub const DEFAULT_PORT: u32 = 52;

/// Longest request line the agent accepts, without its newline. Longer lines get a
/// `line_too_long` error: a request never needs more, and the bound caps the agent's memory.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// Longest reply line the client accepts: replies are small, and a guest that sends more is
/// talking nonsense (the VMM must not let a guest make it buffer without end).
pub const MAX_REPLY_LINE: usize = 1024 * 1024;

/// Pages deactivated between two checks of the target: the container patch's
/// `DEACTIVATE_COUNT`.
pub const BATCH_PAGES: u64 = 1000;

/// Files with fewer cached pages, and processes with fewer anon pages, wait for the second pass:
/// the container patch's `PAGE_THRESHOLD_LIMIT`.
pub const BIG_THRESHOLD_PAGES: u64 = 50;

/// A request, without its `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Versions and capabilities; the first request of a connection, by convention.
    Hello {
        /// The protocol version the host speaks.
        #[serde(default = "default_protocol_version")]
        protocol_version: u32,
    },
    /// Memory statistics: /proc/meminfo, /proc/vmstat, memory PSI.
    Stats,
    /// Write back and drop clean page cache, big files first.
    DeactivateFile(DeactivateFile),
    /// Deactivate (or page out) anonymous memory, big processes first; only with swap.
    DeactivateAnon(DeactivateAnon),
}

fn default_protocol_version() -> u32 {
    PROTOCOL_VERSION
}

fn default_true() -> bool {
    true
}

/// Parameters of `deactivate_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeactivateFile {
    /// Pages of page cache to drop.
    pub target_pages: u64,
    /// How long the agent may work on it; the agent's default keeps it under the client's 2 s
    /// timeout. The write-back wait and the file walk have their own, smaller bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ms: Option<u64>,
    /// Whether the agent may fall back to a whole-guest file reclaim (cgroup `memory.reclaim`
    /// or `drop_caches`) when the per-file passes fall short of the target.
    #[serde(default = "default_true")]
    pub allow_fallback: bool,
}

impl DeactivateFile {
    /// A request for `target_pages` with the agent's defaults.
    pub fn new(target_pages: u64) -> Self {
        DeactivateFile {
            target_pages,
            budget_ms: None,
            allow_fallback: true,
        }
    }
}

/// Parameters of `deactivate_anon`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeactivateAnon {
    /// Pages of anonymous memory to deactivate.
    pub target_pages: u64,
    /// `MADV_PAGEOUT` (write to swap now) instead of `MADV_COLD` (move to the inactive list).
    #[serde(default)]
    pub urgent: bool,
    /// How long the agent may work on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ms: Option<u64>,
}

impl DeactivateAnon {
    /// A request for `target_pages` with the agent's defaults.
    pub fn new(target_pages: u64, urgent: bool) -> Self {
        DeactivateAnon {
            target_pages,
            urgent,
            budget_ms: None,
        }
    }
}

/// A successful reply's result; `type` names the request it answers.
// One value per request, moved once: not worth boxing the big variants.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Hello(Hello),
    Stats(Stats),
    DeactivateFile(FileReport),
    DeactivateAnon(AnonReport),
}

impl Response {
    /// The request type this result answers, as it appears on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            Response::Hello(_) => "hello",
            Response::Stats(_) => "stats",
            Response::DeactivateFile(_) => "deactivate_file",
            Response::DeactivateAnon(_) => "deactivate_anon",
        }
    }
}

/// One reply line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The request's id; `null` when the line could not be parsed far enough to find it.
    pub id: Option<u64>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What a reply carries: a result or an error.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Result(Response),
    Error(ErrorBody),
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
}

impl ErrorBody {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorBody {
            kind,
            message: message.into(),
        }
    }
}

/// Kinds of errors; a client must accept kinds it does not know (they read as `other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Not JSON, not an object, or no usable `id`.
    Malformed,
    /// Longer than [`MAX_REQUEST_LINE`].
    LineTooLong,
    /// A `type` this agent does not know.
    UnknownRequest,
    /// A known `type` with missing or wrong parameters.
    InvalidRequest,
    /// The agent could not do it (e.g. /proc unreadable).
    Failed,
    #[serde(other)]
    Other,
}

/// Reply to `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    pub agent_version: String,
    /// The guest's page size: every `*_pages` number in the protocol counts these.
    pub page_size: u64,
    pub capabilities: Capabilities,
}

/// What the guest kernel offers the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    /// `uname -r`.
    pub kernel_version: String,
    /// SwapTotal > 0: `deactivate_anon` does something.
    pub swap: bool,
    /// The cgroup v2 root has `memory.reclaim` (the preferred file fallback).
    pub memory_reclaim: bool,
    /// `cachestat(2)` (Linux 6.5+) counts cached pages; otherwise `mincore(2)` does.
    pub cachestat: bool,
    /// `process_madvise(2)` with `MADV_COLD` (Linux 5.10+).
    pub process_madvise: bool,
}

/// Reply to `stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub meminfo: MemInfo,
    pub vmstat: VmStat,
    /// `None` when the kernel has no PSI (CONFIG_PSI off, or `psi=0`).
    pub psi: Option<MemoryPressure>,
}

/// The /proc/meminfo fields the policy uses, in KiB as the kernel reports them; `None` for a
/// field this kernel does not report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemInfo {
    pub mem_total_kib: Option<u64>,
    pub mem_free_kib: Option<u64>,
    pub mem_available_kib: Option<u64>,
    pub buffers_kib: Option<u64>,
    pub cached_kib: Option<u64>,
    pub swap_cached_kib: Option<u64>,
    pub active_anon_kib: Option<u64>,
    pub inactive_anon_kib: Option<u64>,
    pub active_file_kib: Option<u64>,
    pub inactive_file_kib: Option<u64>,
    pub anon_pages_kib: Option<u64>,
    pub shmem_kib: Option<u64>,
    pub swap_total_kib: Option<u64>,
    pub swap_free_kib: Option<u64>,
    pub dirty_kib: Option<u64>,
    pub writeback_kib: Option<u64>,
}

impl MemInfo {
    /// Page cache on the file LRU lists (Active(file) + Inactive(file)): what dropping file
    /// cache can free. `Cached` also counts tmpfs/shmem, which only swap can move.
    pub fn file_kib(&self) -> Option<u64> {
        Some(
            self.active_file_kib?
                .saturating_add(self.inactive_file_kib?),
        )
    }

    /// Anonymous memory on the LRU lists (Active(anon) + Inactive(anon), shmem included).
    pub fn anon_kib(&self) -> Option<u64> {
        Some(
            self.active_anon_kib?
                .saturating_add(self.inactive_anon_kib?),
        )
    }

    /// Swap in use.
    pub fn swap_used_kib(&self) -> Option<u64> {
        Some(self.swap_total_kib?.saturating_sub(self.swap_free_kib?))
    }
}

/// The /proc/vmstat counters the policy uses (cumulative since boot); `None` for a counter this
/// kernel does not have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VmStat {
    pub pgscan_kswapd: Option<u64>,
    pub pgscan_direct: Option<u64>,
    pub pgsteal_kswapd: Option<u64>,
    pub pgsteal_direct: Option<u64>,
    pub pswpin: Option<u64>,
    pub pswpout: Option<u64>,
    pub pgmajfault: Option<u64>,
    /// `workingset_refault_anon` (5.9+).
    pub workingset_refault_anon: Option<u64>,
    /// `workingset_refault_file`, or `workingset_refault` on kernels before 5.9.
    pub workingset_refault_file: Option<u64>,
    pub workingset_activate_anon: Option<u64>,
    pub workingset_activate_file: Option<u64>,
    pub oom_kill: Option<u64>,
    /// Sum of `allocstall_*` over all zones (direct reclaim entries).
    pub allocstall: Option<u64>,
}

/// /proc/pressure/memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryPressure {
    /// Some task stalled on memory.
    pub some: Pressure,
    /// All non-idle tasks stalled on memory at once.
    pub full: Option<Pressure>,
}

/// One PSI line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pressure {
    /// Percent of the last 10 s.
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Total stall time in µs.
    pub total_us: u64,
}

/// How cached pages were counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheCounterKind {
    Cachestat,
    Mincore,
}

/// Reply to `deactivate_file`. Freed pages are measured (cached pages before minus after), not
/// asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReport {
    pub target_pages: u64,
    /// big + small + fallback.
    pub freed_pages: u64,
    pub reached_target: bool,
    pub cache_counter: CacheCounterKind,
    pub writeback: WritebackReport,
    pub candidates: CandidateReport,
    /// First pass: files with at least [`BIG_THRESHOLD_PAGES`] cached pages.
    pub big: PassReport,
    /// Second pass: the smaller files.
    pub small: PassReport,
    /// The whole-guest reclaim, when the passes fell short and the request allowed it.
    #[serde(default)]
    pub fallback: Option<FallbackReport>,
    pub elapsed_us: u64,
}

/// The write-back that precedes the passes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WritebackReport {
    /// The sync finished within its wait; when false, the passes ran anyway and skipped
    /// whatever was still dirty.
    pub synced: bool,
    /// `sync` for the whole guest, `syncfs` for scan roots, or `previous sync still running`
    /// (none started).
    pub scope: String,
    /// How long the sync took, or how long the request waited for it (it runs while the
    /// candidates are searched).
    pub elapsed_us: u64,
}

/// The candidate files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateReport {
    /// Distinct files with cached pages.
    pub files: u64,
    pub big_files: u64,
    pub small_files: u64,
    /// Of `files`, those some process has open or mapped.
    pub in_use_files: u64,
    /// Their cached pages when counted.
    pub cached_pages: u64,
    /// Files and directories looked at.
    pub examined: u64,
    /// False when the time or file bound stopped the search; the next request resumes the
    /// filesystem walk where this one stopped.
    pub complete: bool,
    pub elapsed_us: u64,
}

/// One pass over the candidates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassReport {
    pub freed_pages: u64,
    pub files_touched: u64,
    /// `posix_fadvise` calls, each over at most [`BATCH_PAGES`] pages.
    pub batches: u64,
    pub elapsed_us: u64,
}

/// The whole-guest file reclaim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackReport {
    pub method: FallbackMethod,
    pub asked_pages: u64,
    /// Drop of Active(file) + Inactive(file) in /proc/meminfo across the reclaim: guest-wide,
    /// so other activity blurs it.
    pub freed_pages: u64,
    /// Set when the method could not be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub elapsed_us: u64,
}

/// Which whole-guest file reclaim ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackMethod {
    /// `N` bytes written to the cgroup v2 root's `memory.reclaim` (with `swappiness=0` when
    /// the guest has swap, so it stays file-only).
    MemoryReclaim,
    /// `1` written to /proc/sys/vm/drop_caches: all clean page cache, whatever the target.
    DropCaches,
    #[serde(other)]
    Other,
}

/// Reply to `deactivate_anon`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnonReport {
    /// Why nothing was done (`"no swap"`); absent when the passes ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub target_pages: u64,
    pub urgent: bool,
    /// Anon pages in the ranges advised (from /proc/PID/smaps): an estimate of what was
    /// deactivated, since `MADV_COLD` does not say.
    pub deactivated_pages: u64,
    /// Processes with at least [`BIG_THRESHOLD_PAGES`] anon pages.
    pub big: AnonPassReport,
    pub small: AnonPassReport,
    /// Processes that vanished or refused (`process_madvise` errors).
    pub processes_failed: u64,
    /// Growth of swap use (SwapTotal - SwapFree) across the request, guest-wide: what
    /// `urgent` actually paged out.
    pub swapped_pages: u64,
    pub elapsed_us: u64,
}

/// One pass over processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnonPassReport {
    pub processes_touched: u64,
    pub deactivated_pages: u64,
    /// `process_madvise` calls.
    pub batches: u64,
    pub elapsed_us: u64,
}

/// A request line that could not be turned into a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// The id, when the line got that far.
    pub id: Option<u64>,
    pub error: ErrorBody,
}

impl RequestError {
    /// The reply that tells the host about it.
    pub fn into_reply(self) -> Reply {
        Reply {
            id: self.id,
            outcome: Outcome::Error(self.error),
        }
    }
}

const REQUEST_TYPES: &[&str] = &["hello", "stats", "deactivate_file", "deactivate_anon"];

/// Parses one request line (without its newline).
///
/// Done in two steps so that the error names the id whenever there is one: first any JSON
/// object with a numeric `id`, then the typed request.
pub fn parse_request(line: &[u8]) -> Result<(u64, Request), RequestError> {
    let malformed = |message: String| RequestError {
        id: None,
        error: ErrorBody::new(ErrorKind::Malformed, message),
    };
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| malformed(format!("the line is not JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(malformed(
            "a request is a JSON object like {\"id\":1,\"type\":\"hello\"}".into(),
        ));
    };
    let id = match object.remove("id") {
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    }
    .ok_or_else(|| malformed("a request needs an \"id\" that is a non-negative integer".into()))?;
    let with_id = |kind, message: String| RequestError {
        id: Some(id),
        error: ErrorBody::new(kind, message),
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        _ => {
            return Err(with_id(
                ErrorKind::InvalidRequest,
                format!(
                    "a request needs a \"type\", one of {}",
                    REQUEST_TYPES.join(", ")
                ),
            ))
        }
    };
    if !REQUEST_TYPES.contains(&kind.as_str()) {
        return Err(with_id(
            ErrorKind::UnknownRequest,
            format!(
                "unknown request type {kind:?}; this agent (protocol {PROTOCOL_VERSION}) knows {}",
                REQUEST_TYPES.join(", ")
            ),
        ));
    }
    let request = serde_json::from_value(Value::Object(object)).map_err(|e| {
        with_id(
            ErrorKind::InvalidRequest,
            format!("bad parameters for {kind}: {e}"),
        )
    })?;
    Ok((id, request))
}

/// One request as a line, newline included.
pub fn encode_request(id: u64, request: &Request) -> Vec<u8> {
    #[derive(Serialize)]
    struct Line<'a> {
        id: u64,
        #[serde(flatten)]
        request: &'a Request,
    }
    encode_line(&Line { id, request })
}

/// One reply as a line, newline included.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    encode_line(reply)
}

fn encode_line<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these types cannot fail: no maps with non-string keys, no failing Serialize
    // impls. The fallback keeps the stream line-framed even so.
    let mut line = serde_json::to_vec(value).unwrap_or_else(|e| {
        let mut error = Map::new();
        error.insert("id".into(), Value::Null);
        error.insert(
            "error".into(),
            serde_json::json!({"kind": "failed", "message": format!("cannot encode: {e}")}),
        );
        Value::Object(error).to_string().into_bytes()
    });
    line.push(b'\n');
    line
}

/// Parses one reply line (without its newline).
pub fn parse_reply(line: &[u8]) -> Result<Reply, serde_json::Error> {
    serde_json::from_slice(line)
}

#[cfg(test)]
mod tests;
