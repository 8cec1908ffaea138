//! Host setup: what must happen before KVM and guest RAM exist.

use ballast_devices::unix_socket::BoundSocket;
use ballast_manager::host_enforce::HostEnforcer;
use kvm_ioctls::Kvm;

use super::{io, RunError};
use crate::api_socket;
use crate::config::{self, VmConfig};
use crate::seccomp;
use crate::signals::{self, SignalFd};
use crate::vstate::vm::open_kvm;

/// What the later phases get from the host.
pub(super) struct Host {
    pub signals: SignalFd,
    pub host_enforcer: HostEnforcer,
    pub kvm: Kvm,
    pub num_vcpus: u8,
    /// The API socket, bound but not yet served.
    pub api_listener: Option<BoundSocket>,
}

pub(super) fn setup(config: &VmConfig) -> Result<Host, RunError> {
    // Every connection, disk and eventfd is a descriptor: the soft limit (often 1024) goes up to
    // the hard one, so the guest's share (capped by the vsock device) never starves the API.
    match raise_open_files_limit() {
        Ok(limit) => log::debug!("open files: up to {limit}"),
        Err(e) => log::warn!("cannot raise the open-files limit (RLIMIT_NOFILE): {e}"),
    }
    // Before any thread exists, so every thread inherits the blocked signals.
    let signals = signals::termination_signalfd().map_err(io("watch SIGINT/SIGTERM"))?;
    signals::install_kick_handler().map_err(RunError::Signal)?;
    // Compiled before the first thread that installs one (a disk's I/O thread) starts.
    seccomp::prepare(config.seccomp)?;
    config::validate_memory(config.mem_size, config::host_memory_bytes())?;
    config::validate_limit(config.limit_pages, config.mem_size)?;
    // Before KVM and guest RAM exist: cgroup v2 charges memory where it was first touched and
    // never moves the charge, so everything ballast will hold must be touched in its cgroup.
    let host_enforcer = HostEnforcer::start(&config.host_enforce);
    let kvm = open_kvm()?;
    let num_vcpus = config::validate_vcpus(config.vcpus, kvm.get_max_vcpus() as u64)?;
    // Bound early, so a taken socket is refused before any VM is built; served once it runs.
    let api_listener = config
        .api_sock
        .as_deref()
        .map(api_socket::bind)
        .transpose()?;
    Ok(Host {
        signals,
        host_enforcer,
        kvm,
        num_vcpus,
        api_listener,
    })
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force.
pub(crate) fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit`, which `limit` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads one `rlimit`, which `limit` is.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_open_files_limit_goes_up_to_the_hard_one() {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise_open_files_limit`; nextest runs each test in its own process.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        let hard = limit.rlim_max;
        limit.rlim_cur = 64.min(hard);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        assert_eq!(super::raise_open_files_limit().unwrap(), hard);
        // SAFETY: as above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        assert_eq!(limit.rlim_cur, hard);
    }
}
