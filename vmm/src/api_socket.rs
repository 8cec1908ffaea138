//! The API's Unix socket (`--api-sock`), bound with the devices' socket rules: mode 0600 from
//! the start, a stale socket file replaced, a live one, a symlink or any other kind of file
//! refused, and removed at exit only if the path still names the socket that was bound.

use std::path::{Path, PathBuf};

use ballast_devices::unix_socket::{self, BindError, BoundSocket};

#[derive(Debug, thiserror::Error)]
pub enum ApiSocketError {
    #[error("--api-sock {0} is taken: another process is listening on it")]
    Live(PathBuf),
    #[error("--api-sock {0} exists and is not a socket; choose another path or remove it")]
    NotASocket(PathBuf),
    #[error("cannot remove the stale socket {path}: {source}")]
    RemoveStale {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the API socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn bind(path: &Path) -> Result<BoundSocket, ApiSocketError> {
    unix_socket::bind(path).map_err(|e| match e {
        BindError::Live(path) => ApiSocketError::Live(path),
        BindError::NotASocket(path) => ApiSocketError::NotASocket(path),
        BindError::RemoveStale { path, source } => ApiSocketError::RemoveStale { path, source },
        BindError::Bind { path, source } => ApiSocketError::Bind { path, source },
    })
}
