//! A listening Unix socket for a host program to reach the VM (the API's `--api-sock`, the vsock
//! device's `--vsock-sock`): created with mode 0600; a stale socket file is replaced, a live one
//! (another ballast answering on it) or any other kind of file is refused. Each caller words the
//! errors with its own option name.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{} is taken: another process is listening on it", .0.display())]
    Live(PathBuf),
    #[error("{} exists and is not a socket; choose another path or remove it", .0.display())]
    NotASocket(PathBuf),
    #[error("cannot remove the stale socket {}: {source}", path.display())]
    RemoveStale {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the socket {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(BindError::Live(path.into()));
            }
            std::fs::remove_file(path).map_err(|source| BindError::RemoveStale {
                path: path.into(),
                source,
            })?;
        }
        Ok(_) => return Err(BindError::NotASocket(path.into())),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(source) => {
            return Err(BindError::Bind {
                path: path.into(),
                source,
            })
        }
    }
    let bind_err = |source| BindError::Bind {
        path: path.into(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_is_replaced_live_and_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("ballast-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let live = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(bind(&path), Err(BindError::Live(_))));
        drop(live);
        // The file stays behind when the listener goes: stale.
        assert!(path.exists());
        let _again = bind(&path).unwrap();
        let file = dir.join("plain");
        std::fs::write(&file, b"x").unwrap();
        let err = bind(&file).unwrap_err();
        assert!(err.to_string().contains("is not a socket"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
