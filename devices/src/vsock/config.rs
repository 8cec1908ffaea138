//! The vsock device's launch options, `--vsock-cid` and `--vsock-sock`, what is wrong with them,
//! and binding the host socket they name.

use std::io;
use std::path::{Path, PathBuf};

use log::warn;

use crate::unix_socket::{self, BindError, BoundSocket};

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The longest `_P` suffix of a guest connection's socket path (`_4294967295`).
const MAX_PORT_SUFFIX: usize = 11;

/// `--vsock-cid` and `--vsock-sock`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's CID (3 or more).
    pub guest_cid: u64,
    /// The host Unix socket host programs connect to; guest connections to host port P go to
    /// `<uds_path>_P`.
    pub uds_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error(
        "--vsock-cid {0} is reserved (0 is the hypervisor, 1 loopback, 2 the host); give the \
         guest 3 or more"
    )]
    ReservedCid(u64),
    #[error(
        "--vsock-cid {0} is too large: CIDs are 32-bit and {max} is the largest a guest can have",
        max = u32::MAX - 1
    )]
    CidTooLarge(u64),
    #[error(
        "--vsock-sock {} is {len} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH}: \
         choose a shorter path",
        path.display()
    )]
    PathTooLong { path: PathBuf, len: usize },
    #[error(
        "--vsock-sock {} is taken: another process (another ballast?) is listening on it; choose \
         another path",
        .0.display()
    )]
    SocketLive(PathBuf),
    #[error(
        "--vsock-sock {} exists and is not a socket; choose another path or remove it",
        .0.display()
    )]
    NotASocket(PathBuf),
    #[error("cannot remove the stale vsock socket {}: {source}", path.display())]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot create the vsock socket {}: {source} (does its directory exist and is it \
         writable?)",
        path.display()
    )]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the vsock device: cannot {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

pub(super) fn bind(path: &Path) -> Result<BoundSocket, VsockError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(VsockError::PathTooLong {
            path: path.into(),
            len,
        });
    }
    if len + MAX_PORT_SUFFIX > MAX_SOCKET_PATH {
        warn!(
            "--vsock-sock {} is {len} bytes: guest connections to high host ports would need \
             socket paths longer than {MAX_SOCKET_PATH} bytes and fail; a shorter path avoids it",
            path.display()
        );
    }
    // The socket rules the API socket follows too: a stale file is replaced, a live socket or another file refused.
    unix_socket::bind(path).map_err(|e| match e {
        BindError::Live(path) => VsockError::SocketLive(path),
        BindError::NotASocket(path) => VsockError::NotASocket(path),
        BindError::RemoveStale { path, source } => VsockError::RemoveStale { path, source },
        BindError::Bind { path, source } => VsockError::Bind { path, source },
    })
}
