//! Builds the VM from a `VmConfig` and runs it until the guest powers off or reboots, a vCPU
//! fails, or the host asks ballast to stop.

use std::os::unix::thread::JoinHandleExt;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ballast_devices::balloon::{Balloon, BalloonError};
use ballast_devices::block::{Block, BlockError};
use ballast_devices::bus::{Bus, BusError};
use ballast_devices::legacy::acpi_pm::AcpiPmDevice;
use ballast_devices::legacy::i8042::{I8042, I8042_PORT_RANGE};
use ballast_devices::legacy::serial::{SerialDevice, SerialInput, SERIAL_PORT_RANGE};
use ballast_devices::legacy::EventFdTrigger;
use ballast_devices::vsock::{Vsock, VsockError};
use ballast_manager::host_enforce::HostEnforcer;
use ballast_manager::policy::PolicyConfig;
use ballast_manager::{ManagerConfig, ManagerParts, MemoryManager};
use ballast_virtio::VirtioDevice;
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_superio::I8042Device;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::Killable;

use crate::acpi::{create_acpi_tables, AcpiError, VirtioMmioInfo};
use crate::agent::{AgentService, AgentTimings, VsockDialer, AGENT_PORT};
use crate::api::handler::{ApiHandler, VmHandles};
use crate::api::server::ApiServer;
use crate::api_socket::{self, ApiSocketError};
use crate::boot::{self, BootError};
use crate::config::{self, ConfigError, VmConfig};
use crate::control::Control;
use crate::layout::{ACPI_PM_PORT, COM1_PORT, I8042_PORT, SERIAL_IRQ};
use crate::ports::BalloonPort;
use crate::signals;
use crate::virtio_mmio::{self, VirtioMmioError};
use crate::vstate::dirty_log::KvmDirtyLog;
use crate::vstate::exit::{ExitState, VmExit};
use crate::vstate::memory::{create_guest_memory, MemoryError};
use crate::vstate::vcpu::{kick_signal, Vcpu, VcpuPause};
use crate::vstate::vm::{open_kvm, Vm, VmError};

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
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}

fn eventfd() -> Result<EventFd, RunError> {
    EventFd::new(EFD_NONBLOCK).map_err(io("create an eventfd"))
}

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// A virtio device is both the transport's device and an event-loop subscriber.
trait VirtioSubscriber: VirtioDevice + MutEventSubscriber + Send {}
impl<T: VirtioDevice + MutEventSubscriber + Send> VirtioSubscriber for T {}

/// Runs the VM to its end and returns why it ended.
pub fn run(config: VmConfig) -> Result<VmExit, RunError> {
    // Before any thread exists, so every thread inherits the blocked signals.
    let signals = signals::termination_signalfd().map_err(io("watch SIGINT/SIGTERM"))?;
    signals::install_kick_handler().map_err(RunError::Signal)?;
    config::validate_memory(config.mem_size, config::host_memory_bytes())?;
    config::validate_limit(config.limit_pages, config.mem_size)?;
    // Before KVM and guest RAM exist: cgroup v2 charges memory where it was first touched and
    // never moves the charge, so everything ballast will hold must be touched in its cgroup.
    let host_enforcer = HostEnforcer::start(&config.host_enforce);
    // Declared before the VM, so dropped after it: ballast leaves its cgroup once KVM's thread
    // for the VM, which lives in the cgroup too, has ended.
    let _cgroup = host_enforcer.placement();

    let kvm = open_kvm()?;
    let num_vcpus = config::validate_vcpus(config.vcpus, kvm.get_max_vcpus() as u64)?;
    // Bound early, so a taken socket is refused before any VM is built; served once it runs.
    let api_listener = config
        .api_sock
        .as_deref()
        .map(api_socket::bind)
        .transpose()?;

    let mut vm = Vm::new(&kvm)?;
    let mem = create_guest_memory(config.mem_size)?;
    vm.register_memory(&mem)?;
    // The memory manager reads KVM's dirty log every epoch while a limit is set.
    let dirty_log = KvmDirtyLog::new(&vm).map_err(io("set up KVM's dirty log"))?;
    let kernel = boot::load_kernel(&mem, &config.kernel)?;
    let initrd = match &config.initrd {
        Some(path) => Some(boot::load_initrd(&mem, config.mem_size, &kernel, path)?),
        None => None,
    };

    let exit = Arc::new(ExitState::new().map_err(io("create the exit eventfd"))?);

    // Legacy devices on the port-I/O bus.
    let mut pio = Bus::new();
    let serial_irq = eventfd()?;
    vm.fd()
        .register_irqfd(&serial_irq, SERIAL_IRQ)
        .map_err(|source| RunError::Irq {
            what: "the serial port",
            source,
        })?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        EventFdTrigger(serial_irq),
        Box::new(std::io::stdout()),
    )));
    pio.insert(serial.clone(), COM1_PORT, SERIAL_PORT_RANGE)?;
    let i8042_reset = eventfd()?;
    let i8042 = I8042(I8042Device::new(EventFdTrigger(
        i8042_reset.try_clone().map_err(io("clone an eventfd"))?,
    )));
    pio.insert(Arc::new(Mutex::new(i8042)), I8042_PORT, I8042_PORT_RANGE)?;
    let (pm_poweroff, pm_reset) = (eventfd()?, eventfd()?);
    let pm = AcpiPmDevice::new(
        pm_poweroff.try_clone().map_err(io("clone an eventfd"))?,
        pm_reset.try_clone().map_err(io("clone an eventfd"))?,
    );
    pio.insert(Arc::new(Mutex::new(pm)), ACPI_PM_PORT, 1)?;

    // virtio devices on the MMIO bus.
    let mut mmio = Bus::new();
    let balloon = Arc::new(Mutex::new(Balloon::new(config.balloon)?));
    let mut virtio: Vec<Arc<Mutex<dyn VirtioSubscriber>>> = vec![balloon.clone()];
    for disk in &config.disks {
        virtio.push(Arc::new(Mutex::new(Block::new(disk.clone())?)));
    }
    // The guest agent is reached through the VMM's own end of the vsock device.
    let mut agent = None;
    if let Some(vsock) = &config.vsock {
        let vsock = Vsock::new(vsock.clone())?;
        agent = Some(vsock.local_connector());
        virtio.push(Arc::new(Mutex::new(vsock)));
    }
    let mut slots = Vec::with_capacity(virtio.len());
    for (index, device) in virtio.iter().enumerate() {
        let device: Arc<Mutex<dyn VirtioDevice>> = device.clone();
        slots.push(virtio_mmio::attach(
            vm.fd(),
            &mut mmio,
            &mem,
            device,
            index as u32,
        )?);
    }

    let acpi_devices: Vec<VirtioMmioInfo> = slots
        .iter()
        .map(|s| VirtioMmioInfo {
            base: s.base,
            size: s.size,
            irq: s.irq,
        })
        .collect();
    let rsdp = create_acpi_tables(&mem, num_vcpus, &acpi_devices)?;
    let mmio_cmdline: Vec<_> = slots.iter().map(|s| (s.base, s.size, s.irq)).collect();
    let cmdline = boot::build_cmdline(&config.cmdline, &mmio_cmdline)?;
    boot::write_boot_params(&mem, config.mem_size, &kernel, &cmdline, initrd, Some(rsdp))?;

    let mut events = EventManager::<Subscriber>::new().map_err(RunError::EventLoop)?;
    events.add_subscriber(Arc::new(Mutex::new(Control {
        exit: exit.clone(),
        poweroff: pm_poweroff,
        reset: vec![pm_reset, i8042_reset],
        signals,
        wake: exit.event().try_clone().map_err(io("clone an eventfd"))?,
    })));
    events.add_subscriber(Arc::new(Mutex::new(SerialInput::new(serial))));
    for device in virtio {
        let subscriber: Subscriber = device;
        events.add_subscriber(subscriber);
    }

    let vcpus = (0..num_vcpus)
        .map(|id| Vcpu::new(&kvm, &vm, id, num_vcpus, kernel.entry, config.tsc_deadline))
        .collect::<Result<Vec<_>, _>>()?;
    // The API's channel exists before the vCPUs run, so failing to make it fails the launch.
    let api = match (api_listener, &config.api_sock) {
        (Some(listener), Some(path)) => Some((
            listener,
            path.clone(),
            crate::api::channel().map_err(io("create the API channel"))?,
        )),
        _ => None,
    };
    let pause = Arc::new(VcpuPause::new());
    let started = Instant::now();
    let mut handles = Vec::with_capacity(vcpus.len());
    for vcpu in vcpus {
        match vcpu.start_pausable(pio.clone(), mmio.clone(), exit.clone(), pause.clone()) {
            Ok(h) => handles.push(h),
            Err(source) => {
                exit.request(VmExit::Failure(format!(
                    "cannot start a vCPU thread: {source}"
                )));
                break;
            }
        }
    }

    let agent = match agent {
        Some(connector) => Some(
            AgentService::start(
                VsockDialer {
                    connector,
                    port: AGENT_PORT,
                },
                AgentTimings::default(),
            )
            .map_err(io("start the guest agent service"))?,
        ),
        None => None,
    };

    let manager = MemoryManager::start(
        ManagerParts {
            ram: Box::new(mem.clone()),
            balloon: Box::new(BalloonPort(balloon.clone())),
            dirty_log: Box::new(dirty_log),
            agent: agent.as_ref().map(|a| Box::new(a.handle()) as _),
            host_enforcer,
        },
        ManagerConfig {
            sample_interval: config.sample_interval,
            limit_pages: config.limit_pages,
            policy: PolicyConfig::default(),
        },
    )
    .map_err(io("start the memory manager"))?;

    let api_server = match api {
        Some((listener, path, (sender, receiver))) => {
            let vm_handles = VmHandles {
                exit: exit.clone(),
                pause: pause.clone(),
                vcpu_threads: handles.iter().map(|h| h.as_pthread_t()).collect(),
                mem: mem.clone(),
                mem_size: config.mem_size,
                balloon: balloon.clone(),
                started,
                agent: agent.as_ref().map(AgentService::handle),
                manager: manager.handle(),
            };
            events.add_subscriber(Arc::new(Mutex::new(ApiHandler::new(receiver, vm_handles))));
            match ApiServer::start(listener, path, sender) {
                Ok(server) => Some(server),
                Err(source) => {
                    exit.request(VmExit::Failure(format!(
                        "cannot start the API server: {source}"
                    )));
                    None
                }
            }
        }
        _ => None,
    };

    while !exit.is_stopping() {
        if let Err(e) = events.run_with_timeout(500) {
            exit.request(VmExit::Failure(format!("event loop failed: {e:?}")));
        }
    }
    // Parked vCPUs wait on the pause, not in KVM_RUN: wake them so they see the stop.
    pause.release_for_stop();
    stop_vcpus(handles);
    // Dropping the event loop drops the API handler and its channel: requests still waiting are
    // answered "the VM has stopped" by the API thread, which then writes what is in flight.
    drop(events);
    if let Some(server) = api_server {
        server.shutdown();
    }
    Ok(exit.reason().unwrap_or(VmExit::Poweroff))
}

/// Kicks every vCPU thread out of KVM_RUN until it has seen the stop and ended.
fn stop_vcpus(handles: Vec<JoinHandle<()>>) {
    for handle in handles {
        while !handle.is_finished() {
            // The thread may be between its stop check and KVM_RUN; so kick until it is gone.
            let _ = handle.kill(kick_signal());
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = handle.join();
    }
}
