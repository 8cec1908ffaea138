//! The protocol between ballast and `ballast-agent` inside the guest.

/// Version of the agent protocol; the agent itself arrives with its issue.
pub const PROTOCOL_VERSION: u32 = 1;
