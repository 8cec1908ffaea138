//! Host setup: what must happen before KVM and guest RAM exist.

use ballast_devices::unix_socket::BoundSocket;
use ballast_manager::host_enforce::HostEnforcer;
use kvm_ioctls::Kvm;

use super::{io, RunError};
use crate::api_socket;
use crate::config::{self, VmConfig};
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
    // Before any thread exists, so every thread inherits the blocked signals.
    let signals = signals::termination_signalfd().map_err(io("watch SIGINT/SIGTERM"))?;
    signals::install_kick_handler().map_err(RunError::Signal)?;
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
