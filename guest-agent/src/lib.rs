//! ballast's guest agent and its protocol.
//!
//! `ballast-agent` runs inside the guest and answers the VMM over vsock: memory statistics, and
//! the first two steps of the over-limit handler, taken in the container patch's order:
//! [`reclaim::file`] drops page cache (big files first, then small ones), [`reclaim::anon`]
//! deactivates anonymous memory (big processes first; only with swap). The VMM talks to it
//! with [`client::AgentClient`] using the types of [`protocol`].

pub mod agent;
pub mod cache;
pub mod client;
pub mod guest_text;
pub mod limits;
pub mod line;
pub mod proc;
pub mod protocol;
pub mod reclaim;
pub mod server;
pub mod vsock;

#[cfg(test)]
mod testutil;

pub use client::{
    read_hybrid_ack, AgentClient, AgentError, AgentStream, ClientError, ReplyDecoder,
};
pub use protocol::{Request, Response, PROTOCOL_VERSION};

/// The kernel's page size, in bytes.
pub fn page_size() -> u64 {
    static PAGE_SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE_SIZE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
    })
}

/// KiB (as /proc reports) to pages, rounded down.
pub fn kib_to_pages(kib: u64) -> u64 {
    kib / (page_size() / 1024).max(1)
}
