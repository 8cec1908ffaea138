//! A listening Unix socket for a host program to reach the VM (the API's `--api-sock`, the vsock
//! device's `--vsock-sock`). Each caller words the errors with its own option name.
//!
//! - The socket file is created with mode 0600 from the start: `bind` runs under a umask of
//!   0177, so there is no moment when another user could connect (a connection made in such a
//!   window would stay authorised), and no `chmod` that could follow a symlink put in its place.
//! - A stale socket file is replaced; a live one (another ballast answering on it), a symlink or
//!   any other kind of file is refused. Nothing here follows a symlink.
//! - The socket remembers the device and inode of the file it bound, and removes the path at
//!   the end only if it still names that file: a socket some other process bound there since is
//!   left alone.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// The socket file a listener was bound to: its path and the (device, inode) it had then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the path still names the file that was bound (not following a symlink).
    pub fn is_ours(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id)
    }

    /// Removes the socket file if the path still names the one that was bound; another
    /// process's socket there (a later `ballast run` on the same path) is left alone.
    pub fn remove_if_ours(&self) -> bool {
        self.is_ours() && std::fs::remove_file(&self.path).is_ok()
    }
}

/// A listener and the socket file it was bound to.
#[derive(Debug)]
pub struct BoundSocket {
    pub listener: UnixListener,
    pub file: SocketFile,
}

/// `umask` is per process: two binds at once would restore each other's mask.
static UMASK: Mutex<()> = Mutex::new(());

/// Binds a listening socket at `path` (mode 0600); see the module documentation.
pub fn bind(path: &Path) -> Result<BoundSocket, BindError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(BindError::Live(path.into()));
            }
            // `remove_file` unlinks the path itself, never what a symlink points at.
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
    let listener = {
        let _one_at_a_time = UMASK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: umask only swaps the process's file mode mask; it cannot fail. The mask is
        // restored right after the bind. ballast binds its sockets before it starts any thread
        // that creates files, so no other file gets this mask.
        let previous = unsafe { libc::umask(0o177) };
        // bind(2) refuses a path that exists in any form (a symlink included): it never follows.
        let result = UnixListener::bind(path);
        // SAFETY: as above.
        unsafe { libc::umask(previous) };
        result.map_err(bind_err)?
    };
    let meta = std::fs::symlink_metadata(path).map_err(bind_err)?;
    Ok(BoundSocket {
        listener,
        file: SocketFile {
            path: path.into(),
            id: (meta.dev(), meta.ino()),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use vmm_sys_util::tempdir::TempDir;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn stale_is_replaced_live_and_files_are_refused() {
        let dir = TempDir::new_with_prefix("/tmp/ballast-sock-").unwrap();
        let path = dir.as_path().join("api.sock");
        let live = bind(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(matches!(bind(&path), Err(BindError::Live(_))));
        drop(live);
        // The file stays behind when the listener goes: stale.
        assert!(path.exists());
        let _again = bind(&path).unwrap();
        let file = dir.as_path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let err = bind(&file).unwrap_err();
        assert!(err.to_string().contains("is not a socket"), "{err}");
    }

    #[test]
    fn the_socket_is_0600_from_the_start_whatever_the_umask() {
        let dir = TempDir::new_with_prefix("/tmp/ballast-sock-").unwrap();
        let path = dir.as_path().join("s");
        // SAFETY: swaps the process's mask; restored below.
        let previous = unsafe { libc::umask(0) };
        let bound = bind(&path);
        // SAFETY: as above.
        unsafe { libc::umask(previous) };
        bound.unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_symlink_is_refused_and_its_target_untouched() {
        let dir = TempDir::new_with_prefix("/tmp/ballast-sock-").unwrap();
        let target = dir.as_path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.as_path().join("link.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(bind(&link), Err(BindError::NotASocket(_))));
        // A symlink to a stale socket is not replaced either.
        let stale = dir.as_path().join("stale.sock");
        drop(bind(&stale).unwrap());
        let link_to_socket = dir.as_path().join("link2.sock");
        std::os::unix::fs::symlink(&stale, &link_to_socket).unwrap();
        assert!(matches!(
            bind(&link_to_socket),
            Err(BindError::NotASocket(_))
        ));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(mode(&target), 0o644);
        assert!(stale.exists());
    }

    #[test]
    fn only_the_socket_that_was_bound_is_removed() {
        let dir = TempDir::new_with_prefix("/tmp/ballast-sock-").unwrap();
        let path = dir.as_path().join("s");
        let first = bind(&path).unwrap();
        drop(first.listener);
        // Kept linked, so the other socket cannot get the same inode number.
        std::fs::hard_link(&path, dir.as_path().join("first")).unwrap();
        // Another process replaced the stale socket with its own.
        let second = bind(&path).unwrap();
        assert!(!first.file.is_ours());
        assert!(!first.file.remove_if_ours());
        assert!(path.exists(), "the other socket stays");
        assert!(second.file.remove_if_ours());
        assert!(!path.exists());
    }
}
