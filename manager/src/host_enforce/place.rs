//! Putting ballast in a cgroup v2 of its own, with the memory controller, and taking it out
//! again when the [`Placement`] drops. A failed step undoes the ones before it.
//!
//! Where: `--host-enforce` alone makes `ballast-<pid>` below ballast's current cgroup (from
//! /proc/self/cgroup) in the hierarchy mounted at /sys/fs/cgroup; `--host-enforce=PATH` uses the
//! cgroup directory PATH (created if missing) in whatever cgroup v2 hierarchy holds it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cgroup::{self, CgroupError};

/// Which cgroup to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `ballast-<pid>` below ballast's current cgroup.
    Auto,
    /// A cgroup directory the user named.
    At(PathBuf),
}

/// What placing needs to know of the host.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// Where the unified hierarchy is mounted (normally /sys/fs/cgroup).
    pub root: &'a Path,
    /// The text of /proc/self/cgroup.
    pub proc_self_cgroup: &'a str,
    pub pid: u32,
}

/// ballast in its cgroup, with memory.high at `max`. Dropping it moves ballast back where it
/// was and removes the cgroup if ballast made it; so it must outlive the VM: KVM runs a kernel
/// thread per VM in the cgroup of the process that made the VM, and a cgroup with a thread in
/// it cannot be removed.
#[derive(Debug)]
pub struct Placement {
    pub cgroup: PathBuf,
    /// Where ballast was, to go back to at exit.
    original: PathBuf,
    created: bool,
    pid: u32,
}

/// Places process `host.pid` in the `target` cgroup, memory controller on, memory.high `max`.
pub fn place(target: &Target, host: Host<'_>) -> Result<Placement, CgroupError> {
    let (root, dir) = match target {
        Target::Auto => {
            if !cgroup::is_unified(host.root) {
                return Err(CgroupError::NotUnified {
                    path: host.root.to_path_buf(),
                    hint: cgroup::v1_hint(host.root),
                });
            }
            let own = cgroup::own_cgroup(host.proc_self_cgroup)?;
            let dir = host.root.join(own).join(format!("ballast-{}", host.pid));
            (host.root.to_path_buf(), dir)
        }
        Target::At(path) => {
            let parent = path
                .parent()
                .filter(|_| path.is_absolute())
                .ok_or_else(|| CgroupError::NotAbsolute(path.clone()))?;
            let root = cgroup::hierarchy_root(parent).ok_or_else(|| CgroupError::NotUnified {
                path: parent.to_path_buf(),
                hint: cgroup::v1_hint(parent),
            })?;
            (root, path.clone())
        }
    };
    let parent = dir.parent().unwrap_or(&root).to_path_buf();
    let available = cgroup::controllers(&parent)?;
    if !available.iter().any(|c| c == "memory") {
        return Err(CgroupError::NoMemoryController {
            path: parent.clone(),
            available: available.join(" "),
            hint: if parent == root {
                " — the host binds the memory controller to cgroup v1 (a hybrid setup), so no \
                 cgroup v2 can limit memory here"
            } else {
                " — enable it in the cgroup.subtree_control of the cgroups above"
            },
        });
    }
    let original = root.join(cgroup::own_cgroup(host.proc_self_cgroup)?);
    let created = cgroup::create(&dir)?;
    let placement = Placement {
        cgroup: dir,
        original,
        created,
        pid: host.pid,
    };
    let steps = || {
        // In first: the parent may be ballast's own cgroup, which can hand controllers down
        // only once no process is left in it.
        cgroup::move_process(&placement.cgroup, host.pid)?;
        if !cgroup::memory_enabled_below(&parent)? {
            cgroup::enable_memory_below(&parent)?;
        }
        cgroup::set_memory_high(&placement.cgroup, None)
    };
    // On a failed step the placement drops, which undoes the steps before it.
    steps().map(|()| placement)
}

/// How long a removal waits for the cgroup to empty: a kernel thread of a VM that has just been
/// destroyed may still be on its way out.
const REMOVE_TRIES: u32 = 40;
const REMOVE_WAIT: Duration = Duration::from_millis(25);

impl Placement {
    fn release(&self) -> Result<(), CgroupError> {
        cgroup::move_process(&self.original, self.pid)?;
        if !self.created {
            return Ok(());
        }
        let mut tries = 0;
        loop {
            match cgroup::remove(&self.cgroup) {
                Err(CgroupError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::EBUSY) && tries < REMOVE_TRIES =>
                {
                    tries += 1;
                    std::thread::sleep(REMOVE_WAIT);
                }
                result => return result,
            }
        }
    }

    /// Whether ballast made the cgroup (rather than finding it).
    pub fn created(&self) -> bool {
        self.created
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        match self.release() {
            Ok(()) => log::debug!("host enforce: left {}", self.cgroup.display()),
            Err(e) => log::info!(
                "host enforce: cannot leave {} cleanly: {e}",
                self.cgroup.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::cgroup::fake::FakeCgroupFs;
    use super::*;

    fn host<'a>(root: &'a Path, proc_self_cgroup: &'a str) -> Host<'a> {
        Host {
            root,
            proc_self_cgroup,
            pid: 42,
        }
    }

    #[test]
    fn auto_goes_below_the_own_cgroup() {
        let fs = FakeCgroupFs::new("cpu memory");
        let own = fs.root.join("vms");
        fs.cgroup(&own, "memory", "");
        // The kernel would create the directory's files; the fake has them already.
        let dir = own.join("ballast-42");
        fs.cgroup(&dir, "memory", "");
        let placed = place(&Target::Auto, host(&fs.root, "0::/vms\n")).unwrap();
        assert_eq!(placed.cgroup, dir);
        assert!(!placed.created());
        assert_eq!(fs.read(&dir.join("cgroup.procs")), "42");
        assert_eq!(fs.read(&own.join("cgroup.subtree_control")), "+memory");
        assert_eq!(fs.read(&dir.join("memory.high")), "max");
        drop(placed);
        assert_eq!(fs.read(&own.join("cgroup.procs")), "42", "moved back");
        assert!(dir.exists(), "not ballast's to remove");
    }

    #[test]
    fn a_given_path_is_used_where_it_is() {
        let fs = FakeCgroupFs::new("cpu memory");
        std::fs::write(fs.root.join("cgroup.subtree_control"), "cpu memory").unwrap();
        let dir = fs.root.join("ballast-vm1");
        fs.cgroup(&dir, "memory", "");
        let placed = place(
            &Target::At(dir.clone()),
            host(Path::new("/nowhere"), "0::/\n"),
        )
        .unwrap();
        assert_eq!(placed.cgroup, dir);
        assert_eq!(
            fs.read(&fs.root.join("cgroup.subtree_control")),
            "cpu memory",
            "already enabled: left alone"
        );
        drop(placed);
        assert_eq!(fs.read(&fs.root.join("cgroup.procs")), "42");
    }

    #[test]
    fn a_failed_step_is_undone() {
        let fs = FakeCgroupFs::new("cpu memory");
        // A plain new directory has no cgroup.procs: moving in fails, the directory goes.
        let dir = fs.root.join("ballast-42");
        let err = place(&Target::Auto, host(&fs.root, "0::/\n")).unwrap_err();
        assert!(err.to_string().contains("cgroup.procs"), "{err}");
        assert!(!dir.exists());
    }

    #[test]
    fn refusals_say_why() {
        let fs = FakeCgroupFs::new("cpu hugetlb");
        let err = place(&Target::Auto, host(&fs.root, "0::/\n")).unwrap_err();
        assert!(
            matches!(err, CgroupError::NoMemoryController { .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("binds the memory controller to cgroup v1"),
            "{err}"
        );

        let err = place(
            &Target::At(PathBuf::from("relative/x")),
            host(&fs.root, "0::/\n"),
        )
        .unwrap_err();
        assert!(matches!(err, CgroupError::NotAbsolute(_)), "{err}");

        let outside = fs.root.parent().unwrap().join("x");
        let err = place(&Target::At(outside), host(&fs.root, "0::/\n")).unwrap_err();
        assert!(matches!(err, CgroupError::NotUnified { .. }), "{err}");

        let plain = fs.root.parent().unwrap();
        let err = place(&Target::Auto, host(plain, "0::/\n")).unwrap_err();
        assert!(err.to_string().contains("mount -t cgroup2"), "{err}");
    }

    /// This host's own answer. On a cgroup v1 (or hybrid) host, which the build machines are,
    /// placing must fail before it changes anything, with a reason that names cgroup v1. On a
    /// cgroup v2 host it would really move the test process, so it is not tried there.
    #[test]
    fn this_host_without_cgroup_v2_memory_is_refused() {
        let root = Path::new(cgroup::DEFAULT_ROOT);
        if cgroup::is_unified(root) {
            eprintln!("skipped: {} is a cgroup v2 hierarchy here", root.display());
            return;
        }
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let pid = std::process::id();
        let err = place(
            &Target::Auto,
            Host {
                root,
                proc_self_cgroup: &text,
                pid,
            },
        )
        .unwrap_err();
        assert!(matches!(err, CgroupError::NotUnified { .. }), "{err}");
        if root.join("memory").exists() {
            assert!(
                err.to_string().contains("this host uses cgroup v1"),
                "{err}"
            );
        }
        // A hybrid host's cgroup v2 mount has no memory controller to give.
        let unified = root.join("unified");
        if cgroup::is_unified(&unified)
            && !cgroup::controllers(&unified)
                .unwrap()
                .iter()
                .any(|c| c == "memory")
        {
            let dir = unified.join(format!("ballast-test-{pid}"));
            let err = place(
                &Target::At(dir.clone()),
                Host {
                    root,
                    proc_self_cgroup: &text,
                    pid,
                },
            )
            .unwrap_err();
            assert!(
                err.to_string()
                    .contains("binds the memory controller to cgroup v1"),
                "{err}"
            );
            assert!(!dir.exists());
        }
    }
}
