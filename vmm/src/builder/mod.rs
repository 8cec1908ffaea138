//! Builds the VM from a `VmConfig` and runs it until the guest powers off or reboots, a vCPU
//! fails, or the host asks ballast to stop — in named phases, in the order Firecracker's
//! `builder.rs` builds a microVM: host setup, memory, buses, virtio devices, boot tables, vCPUs,
//! services, the event loop, and teardown. Each thread installs its seccomp filter once its own
//! setup is done (`crate::seccomp`); the main thread installs the event loop's before it runs.
//!
//! | file | job |
//! | --- | --- |
//! | `mod.rs` | `run`: the phases in order, the event loop and teardown, and `RunError` |
//! | `host.rs` | host setup: signals, the open-files limit, the seccomp filters compiled, checks against the host, `--host-enforce`'s cgroup, KVM, the API socket |
//! | `memory.rs` | the VM, guest RAM, KVM's dirty log, the kernel and initrd |
//! | `buses.rs` | the legacy devices on the port-I/O bus, and the guest's power-off and reset eventfds |
//! | `virtio.rs` | the balloon, disks, network devices and vsock on the MMIO bus |
//! | `boot_tables.rs` | ACPI tables, the command line and boot parameters |
//! | `vcpus.rs` | creating, starting and stopping the vCPU threads |
//! | `services.rs` | the guest agent service, the memory manager, and the API |

mod boot_tables;
mod buses;
mod host;
mod memory;
mod services;
mod vcpus;
mod virtio;

use std::sync::{Arc, Mutex};

use ballast_devices::balloon::BalloonError;
use ballast_devices::block::BlockError;
use ballast_devices::bus::BusError;
use ballast_devices::net::NetError;
use ballast_devices::vsock::VsockError;
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::acpi::AcpiError;
use crate::api_socket::ApiSocketError;
use crate::boot::BootError;
use crate::config::{ConfigError, VmConfig};
use crate::control::Control;
use crate::seccomp::{self, ThreadKind};
use crate::virtio_mmio::VirtioMmioError;
use crate::vstate::exit::{ExitState, VmExit};
use crate::vstate::memory::MemoryError;
use crate::vstate::vm::VmError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Kvm(#[from] VmError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    ApiSocket(#[from] ApiSocketError),
    #[error("cannot set up ACPI tables: {0}")]
    Acpi(#[from] AcpiError),
    #[error("cannot set up the balloon device: {0}")]
    Balloon(#[from] BalloonError),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Vsock(#[from] VsockError),
    #[error("cannot attach a virtio device: {0}")]
    VirtioMmio(#[from] VirtioMmioError),
    #[error("cannot place a device: {0}")]
    Bus(#[from] BusError),
    #[error("cannot {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot register the in-kernel interrupt for {what}: {source}")]
    Irq {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("event loop failed: {0:?}")]
    EventLoop(event_manager::Error),
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}

fn eventfd() -> Result<EventFd, RunError> {
    EventFd::new(EFD_NONBLOCK).map_err(io("create an eventfd"))
}

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Runs the VM to its end and returns why it ended.
pub fn run(config: VmConfig) -> Result<VmExit, RunError> {
    let mut host = host::setup(&config)?;
    // Declared before the VM, so dropped after it: ballast leaves its cgroup once KVM's thread
    // for the VM, which lives in the cgroup too, has ended.
    let _cgroup = host.host_enforcer.placement();
    let mut guest = memory::build(&host.kvm, &config)?;
    let exit = Arc::new(ExitState::new().map_err(io("create the exit eventfd"))?);
    let legacy = buses::legacy_devices(&guest.vm, &exit)?;
    let virtio = virtio::devices(&config, &guest)?;
    boot_tables::write(&config, &guest, host.num_vcpus, &virtio.slots)?;

    let mut events = EventManager::<Subscriber>::new().map_err(RunError::EventLoop)?;
    events.add_subscriber(Arc::new(Mutex::new(Control {
        exit: exit.clone(),
        poweroff: legacy.poweroff,
        reset: legacy.resets,
        signals: host.signals,
        wake: exit.event().try_clone().map_err(io("clone an eventfd"))?,
    })));
    events.add_subscriber(legacy.serial_input);
    for device in virtio.subscribers {
        events.add_subscriber(device);
    }

    let api = services::prepare_api(host.api_listener.take())?;
    let buses = (&legacy.pio, &virtio.mmio);
    let vcpus = vcpus::start(&config, &host.kvm, host.num_vcpus, &guest, buses, &exit)?;
    let services = services::start(
        services::Parts {
            config: &config,
            guest: &mut guest,
            balloon: &virtio.balloon,
            net: &virtio.net,
            agent_connector: virtio.agent_connector,
            host_enforcer: host.host_enforcer,
            api,
            vcpus: &vcpus,
            exit: &exit,
        },
        &mut events,
    )?;

    // Everything the loop serves is built: from here the main thread runs under its filter.
    // The VM is announced only once confined (the event loop's list has the datagram socket
    // that tells systemd `READY=1`).
    match seccomp::apply(ThreadKind::EventLoop) {
        Ok(()) => crate::ready::announce(&config),
        Err(e) => exit.request(VmExit::Failure(e.to_string())),
    }
    event_loop(&mut events, &exit);
    teardown(vcpus, events, services);
    Ok(exit.reason().unwrap_or(VmExit::Poweroff))
}

/// Serves devices, the API and the lifecycle events until the VM is stopping.
fn event_loop(events: &mut EventManager<Subscriber>, exit: &ExitState) {
    while !exit.is_stopping() {
        if let Err(e) = events.run_with_timeout(500) {
            exit.request(VmExit::Failure(format!("event loop failed: {e:?}")));
        }
    }
}

/// Stops the vCPUs, then the event loop, then the services.
fn teardown(vcpus: vcpus::Vcpus, events: EventManager<Subscriber>, services: services::Services) {
    vcpus.stop();
    // Dropping the event loop drops the API handler and its channel: requests still waiting are
    // answered "the VM has stopped" by the API thread, which then writes what is in flight.
    drop(events);
    services.stop();
}
