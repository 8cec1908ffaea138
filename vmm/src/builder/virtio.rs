//! The virtio devices on the MMIO bus: the balloon (always), a block device per disk, a network
//! device per TAP, and the vsock device (whose in-process end the guest agent service dials).

use std::sync::{Arc, Mutex};

use ballast_devices::balloon::Balloon;
use ballast_devices::block::Block;
use ballast_devices::bus::Bus;
use ballast_devices::net::Net;
use ballast_devices::vsock::{LocalConnector, Vsock};
use ballast_virtio::VirtioDevice;
use event_manager::MutEventSubscriber;

use super::memory::Guest;
use super::{RunError, Subscriber};
use crate::config::VmConfig;
use crate::seccomp::{self, ThreadKind};
use crate::virtio_mmio::{self, MmioSlot};

/// A virtio device is both the transport's device and an event-loop subscriber.
trait VirtioSubscriber: VirtioDevice + MutEventSubscriber + Send {}
impl<T: VirtioDevice + MutEventSubscriber + Send> VirtioSubscriber for T {}

pub(super) struct Virtio {
    pub mmio: Bus,
    /// Where each device sits, for the ACPI tables and the command line.
    pub slots: Vec<MmioSlot>,
    pub balloon: Arc<Mutex<Balloon>>,
    pub agent_connector: Option<LocalConnector>,
    /// The network devices, for the API.
    pub net: Vec<Arc<Mutex<Net>>>,
    /// Every device, for the event loop.
    pub subscribers: Vec<Subscriber>,
}

pub(super) fn devices(config: &VmConfig, guest: &Guest) -> Result<Virtio, RunError> {
    let balloon = Arc::new(Mutex::new(Balloon::new(config.balloon)?));
    let mut devices: Vec<Arc<Mutex<dyn VirtioSubscriber>>> = vec![balloon.clone()];
    for disk in &config.disks {
        // The disk's I/O thread installs its filter before its first request.
        let setup = Box::new(|| seccomp::apply(ThreadKind::BlockIo).map_err(|e| e.to_string()));
        let block = Block::with_worker_setup(disk.clone(), Some(setup))?;
        devices.push(Arc::new(Mutex::new(block)));
    }
    let host = host_name();
    let mut net = Vec::with_capacity(config.net.len());
    for nic in &config.net {
        let device = Arc::new(Mutex::new(Net::new(nic, nic.mac_or_derived(&host))?));
        net.push(device.clone());
        devices.push(device);
    }
    // The guest agent is reached through the VMM's own end of the vsock device.
    let mut agent_connector = None;
    if let Some(vsock) = &config.vsock {
        let vsock = Vsock::new(vsock.clone())?;
        agent_connector = Some(vsock.local_connector());
        devices.push(Arc::new(Mutex::new(vsock)));
    }
    let mut mmio = Bus::new();
    let mut slots = Vec::with_capacity(devices.len());
    for (index, device) in devices.iter().enumerate() {
        let device: Arc<Mutex<dyn VirtioDevice>> = device.clone();
        slots.push(virtio_mmio::attach(
            guest.vm.fd(),
            &mut mmio,
            &guest.mem,
            device,
            index as u32,
        )?);
    }
    Ok(Virtio {
        mmio,
        slots,
        balloon,
        agent_connector,
        net,
        subscribers: devices.into_iter().map(|d| d as Subscriber).collect(),
    })
}

/// What a default MAC is derived from, with the TAP's name: this host's name, so the same VM
/// (the VM on that TAP) keeps its address across restarts, and VMs on other hosts differ.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}
