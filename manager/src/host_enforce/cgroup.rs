//! cgroup v2 file operations: one cgroup directory at a time, named by its path. Nothing here
//! assumes where the hierarchy is mounted, so the tests run against a temporary directory laid
//! out like one (the kernel's own files created by hand).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where the unified (v2) hierarchy is mounted on a cgroup v2 host.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "{path} is not in a cgroup v2 hierarchy (it has no cgroup.controllers){hint}; \
         mount cgroup2 there (mount -t cgroup2 none {path}) or give --host-enforce=PATH \
         inside a cgroup v2 hierarchy with the memory controller"
    )]
    NotUnified { path: PathBuf, hint: &'static str },
    #[error(
        "the memory controller is not available to {path} (cgroup.controllers: {available:?}){hint}"
    )]
    NoMemoryController {
        path: PathBuf,
        available: String,
        hint: &'static str,
    },
    #[error("/proc/self/cgroup has no cgroup v2 line (`0::/path`), so ballast does not know its own cgroup")]
    NoOwnCgroup,
    #[error("--host-enforce={0}: give an absolute path to a cgroup directory, e.g. /sys/fs/cgroup/ballast-vm1")]
    NotAbsolute(PathBuf),
    #[error("{0} exists but is not a cgroup (no cgroup.procs)")]
    NotACgroup(PathBuf),
    #[error(
        "cannot enable the memory controller for the children of {parent}: other processes live \
         in it, and cgroup v2 gives no controllers to the children of a cgroup with processes; \
         give --host-enforce=PATH in a cgroup whose parent has `memory` in cgroup.subtree_control \
         (e.g. a systemd slice with Delegate=yes)"
    )]
    SubtreeBusy { parent: PathBuf },
    #[error("{path} has no memory.high: the memory controller is not enabled for it")]
    NoMemoryHigh { path: PathBuf },
    #[error("{path} holds {value:?}, not a number of bytes or `max`")]
    BadValue { path: PathBuf, value: String },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `dir` is a cgroup v2 directory: every one, the root included, has cgroup.controllers.
pub fn is_unified(dir: &Path) -> bool {
    dir.join("cgroup.controllers").is_file()
}

/// A hint for a directory that is not a cgroup v2 one: on a cgroup v1 host, the v1 memory
/// controller is mounted below it.
pub fn v1_hint(dir: &Path) -> &'static str {
    if dir.join("memory").join("memory.limit_in_bytes").exists() {
        " — this host uses cgroup v1 (the memory controller is mounted at memory/), and a process \
         cannot be put under a cgroup v2 memory limit from a v1 host"
    } else {
        ""
    }
}

/// The root of the hierarchy `dir` belongs to: its highest ancestor (or itself) that is a
/// cgroup v2 directory.
pub fn hierarchy_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .take_while(|d| is_unified(d))
        .last()
        .map(Path::to_path_buf)
}

/// This process's cgroup, relative to the hierarchy's root, from the text of /proc/self/cgroup
/// (the v2 line is `0::/some/path`).
pub fn own_cgroup(proc_self_cgroup: &str) -> Result<PathBuf, CgroupError> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| PathBuf::from(p.trim().trim_start_matches('/')))
        .ok_or(CgroupError::NoOwnCgroup)
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(io_err("read", path))
}

/// Writes `value` in one `write(2)`, as the kernel wants cgroup files written, to a file that
/// must exist (cgroupfs creates its own files; a missing one means a missing controller).
fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(io_err("open", path))?;
    file.write_all(value.as_bytes())
        .map_err(io_err("write to", path))
}

/// The controllers a cgroup can use (its cgroup.controllers).
pub fn controllers(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let path = dir.join("cgroup.controllers");
    Ok(read(&path)?.split_whitespace().map(String::from).collect())
}

/// Whether the memory controller is available to `dir`'s children (it is available to `dir`
/// and `dir` hands it down).
pub fn memory_enabled_below(dir: &Path) -> Result<bool, CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    Ok(read(&path)?.split_whitespace().any(|c| c == "memory"))
}

/// Makes the memory controller available to `dir`'s children.
pub fn enable_memory_below(dir: &Path) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    write(&path, "+memory").map_err(|e| match e {
        CgroupError::Io { source, .. } if source.raw_os_error() == Some(libc::EBUSY) => {
            CgroupError::SubtreeBusy {
                parent: dir.to_path_buf(),
            }
        }
        e => e,
    })
}

/// Creates the cgroup `dir`; whether it was created (false: it existed already).
pub fn create(dir: &Path) -> Result<bool, CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if dir.join("cgroup.procs").is_file() {
                Ok(false)
            } else {
                Err(CgroupError::NotACgroup(dir.to_path_buf()))
            }
        }
        Err(e) => Err(io_err("create the cgroup", dir)(e)),
    }
}

/// Removes an empty cgroup.
pub fn remove(dir: &Path) -> Result<(), CgroupError> {
    std::fs::remove_dir(dir).map_err(io_err("remove the cgroup", dir))
}

/// Moves process `pid`, all its threads, into `dir`.
pub fn move_process(dir: &Path, pid: u32) -> Result<(), CgroupError> {
    write(&dir.join("cgroup.procs"), &pid.to_string())
}

/// Sets `dir`'s memory.high: bytes, or `max` for none.
pub fn set_memory_high(dir: &Path, bytes: Option<u64>) -> Result<(), CgroupError> {
    let path = dir.join("memory.high");
    if !path.exists() {
        return Err(CgroupError::NoMemoryHigh {
            path: dir.to_path_buf(),
        });
    }
    write(&path, &bytes.map_or("max".to_string(), |b| b.to_string()))
}

/// A memory file holding bytes or `max` (`None`).
fn read_bytes(path: &Path) -> Result<Option<u64>, CgroupError> {
    let text = read(path)?;
    let value = text.trim();
    if value == "max" {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| CgroupError::BadValue {
        path: path.to_path_buf(),
        value: value.to_string(),
    })
}

/// `dir`'s memory.high: bytes, or `None` for `max`.
pub fn memory_high(dir: &Path) -> Result<Option<u64>, CgroupError> {
    read_bytes(&dir.join("memory.high"))
}

/// What `dir` is charged for now (memory.current).
pub fn memory_current(dir: &Path) -> Result<u64, CgroupError> {
    let path = dir.join("memory.current");
    read_bytes(&path)?.ok_or(CgroupError::BadValue {
        path,
        value: "max".into(),
    })
}

#[cfg(test)]
pub(crate) mod fake {
    //! A directory laid out like a cgroup v2 hierarchy, for tests.

    use std::path::{Path, PathBuf};

    use vmm_sys_util::tempdir::TempDir;

    pub struct FakeCgroupFs {
        _dir: TempDir,
        pub root: PathBuf,
    }

    impl FakeCgroupFs {
        /// A hierarchy whose root offers `controllers` (e.g. "cpu memory").
        pub fn new(controllers: &str) -> Self {
            let dir = TempDir::new_with_prefix("/tmp/ballast-cgroup-").unwrap();
            let root = dir.as_path().join("cgroup");
            std::fs::create_dir(&root).unwrap();
            let fs = FakeCgroupFs { _dir: dir, root };
            fs.cgroup(&fs.root.clone(), controllers, "");
            fs
        }

        /// Makes `dir` a cgroup (the files the kernel would create), with `controllers`
        /// available and `subtree` handed down.
        pub fn cgroup(&self, dir: &Path, controllers: &str, subtree: &str) {
            std::fs::create_dir_all(dir).unwrap();
            let files = [
                ("cgroup.controllers", controllers),
                ("cgroup.subtree_control", subtree),
                ("cgroup.procs", ""),
            ];
            for (name, text) in files {
                std::fs::write(dir.join(name), text).unwrap();
            }
            if controllers.split_whitespace().any(|c| c == "memory") {
                std::fs::write(dir.join("memory.high"), "max\n").unwrap();
                std::fs::write(dir.join("memory.current"), "4096\n").unwrap();
            }
        }

        pub fn read(&self, path: &Path) -> String {
            std::fs::read_to_string(path).unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeCgroupFs;
    use super::*;

    #[test]
    fn own_cgroup_is_the_v2_line() {
        let text = "9:name=systemd:/\n4:memory:/x/y\n0::/user.slice/session-1.scope\n";
        assert_eq!(
            own_cgroup(text).unwrap(),
            PathBuf::from("user.slice/session-1.scope")
        );
        assert_eq!(own_cgroup("0::/\n").unwrap(), PathBuf::new());
        assert!(matches!(
            own_cgroup("4:memory:/x\n"),
            Err(CgroupError::NoOwnCgroup)
        ));
    }

    #[test]
    fn the_root_is_the_highest_v2_directory() {
        let fs = FakeCgroupFs::new("cpu memory");
        let child = fs.root.join("a/b");
        fs.cgroup(&fs.root.join("a"), "memory", "memory");
        fs.cgroup(&child, "memory", "");
        assert_eq!(hierarchy_root(&child), Some(fs.root.clone()));
        assert_eq!(hierarchy_root(&fs.root), Some(fs.root.clone()));
        assert_eq!(hierarchy_root(fs.root.parent().unwrap()), None);
    }

    #[test]
    fn files_are_read_and_written() {
        let fs = FakeCgroupFs::new("cpu memory");
        assert_eq!(controllers(&fs.root).unwrap(), ["cpu", "memory"]);
        assert!(!memory_enabled_below(&fs.root).unwrap());
        enable_memory_below(&fs.root).unwrap();
        assert_eq!(fs.read(&fs.root.join("cgroup.subtree_control")), "+memory");

        let child = fs.root.join("ballast-1");
        assert!(create(&child).unwrap());
        // The kernel would have filled it; a plain directory is not a cgroup.
        assert!(matches!(create(&child), Err(CgroupError::NotACgroup(_))));
        fs.cgroup(&child, "memory", "");
        assert!(!create(&child).unwrap(), "an existing cgroup is reused");
        move_process(&child, 42).unwrap();
        assert_eq!(fs.read(&child.join("cgroup.procs")), "42");

        assert_eq!(memory_high(&child).unwrap(), None);
        set_memory_high(&child, Some(256 << 20)).unwrap();
        assert_eq!(memory_high(&child).unwrap(), Some(256 << 20));
        set_memory_high(&child, None).unwrap();
        assert_eq!(fs.read(&child.join("memory.high")), "max");
        assert_eq!(memory_current(&child).unwrap(), 4096);

        std::fs::write(child.join("memory.high"), "lots\n").unwrap();
        let err = memory_high(&child).unwrap_err().to_string();
        assert!(err.contains("\"lots\", not a number"), "{err}");
    }

    #[test]
    fn no_memory_high_without_the_controller() {
        let fs = FakeCgroupFs::new("cpu");
        let child = fs.root.join("c");
        fs.cgroup(&child, "cpu", "");
        let err = set_memory_high(&child, Some(1)).unwrap_err();
        assert!(matches!(err, CgroupError::NoMemoryHigh { .. }), "{err}");
        assert!(err.to_string().contains("memory controller is not enabled"));
    }

    #[test]
    fn a_v1_host_is_named() {
        let fs = FakeCgroupFs::new("cpu");
        let v1 = fs.root.parent().unwrap().join("v1");
        std::fs::create_dir_all(v1.join("memory")).unwrap();
        std::fs::write(v1.join("memory/memory.limit_in_bytes"), "max").unwrap();
        assert!(!is_unified(&v1));
        assert!(v1_hint(&v1).contains("this host uses cgroup v1"));
        assert_eq!(v1_hint(&fs.root), "");
    }
}
