//! The transport driven the way Linux's virtio_mmio driver drives it, against a fake device
//! that records what the transport told it, plus a hostile driver.

mod features;
mod queues;
mod registers;

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueT;
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::regs::*;
use super::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FAILED, FEATURES_OK, NEEDS_RESET};
use super::{MmioError, MmioTransport};
use crate::interrupt::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use crate::{
    ActivateError, Activation, DeviceCore, GuestMemoryMmap, QueueEvent, VirtioDevice,
    VirtioInterrupt,
};

const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
const EVENT_IDX: u64 = 1 << VIRTIO_RING_F_EVENT_IDX;
/// A device-specific feature in the low word, like a balloon's STATS_VQ.
const DEVICE_BIT: u64 = 1 << 1;
const FEATURES: u64 = VERSION_1 | EVENT_IDX | DEVICE_BIT;
const MEM_SIZE: usize = 0x8000;
const TYPE: u32 = 5;

/// Records what the transport told it; answers every `VirtioDevice` method itself rather than
/// from its core.
struct FakeDevice {
    core: DeviceCore,
    max_sizes: Vec<u16>,
    features: u64,
    acked: Option<u64>,
    config: [u8; 8],
    activated: Option<Vec<QueueEvent>>,
    activations: usize,
    fail_activate: bool,
    resets: usize,
    refuse_reset: bool,
    broken: bool,
}

impl Default for FakeDevice {
    fn default() -> Self {
        FakeDevice {
            core: DeviceCore::new("fake", TYPE, Vec::new(), 0, Vec::new(), Default::default())
                .unwrap(),
            max_sizes: Vec::new(),
            features: 0,
            acked: None,
            config: [0; 8],
            activated: None,
            activations: 0,
            fail_activate: false,
            resets: 0,
            refuse_reset: false,
            broken: false,
        }
    }
}

impl VirtioDevice for FakeDevice {
    fn core(&self) -> &DeviceCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut DeviceCore {
        &mut self.core
    }

    fn device_type(&self) -> u32 {
        TYPE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }

    fn avail_features(&self) -> u64 {
        self.features
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked = Some(features);
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::device_core::read_config(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            if let Some(slot) = at.and_then(|at| self.config.get_mut(at)) {
                *slot = *byte;
            }
        }
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let (_mem, _interrupt, queues) = activation.into_parts();
        self.activations += 1;
        if self.fail_activate {
            return Err(ActivateError::Backend("told to fail".into()));
        }
        self.activated = Some(queues);
        Ok(())
    }

    fn needs_reset(&self) -> bool {
        self.broken
    }

    fn reset(&mut self) -> bool {
        self.resets += 1;
        if self.refuse_reset {
            return false;
        }
        self.activated = None;
        true
    }
}

/// Where the driver puts queue `index`'s rings: one page per queue, from 0x1000.
fn rings(index: u32) -> (u64, u64, u64) {
    let base = 0x1000 * (u64::from(index) + 1);
    (base, base + 0x400, base + 0x800)
}

const LIVE: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;

struct Harness {
    transport: MmioTransport,
    device: Arc<Mutex<FakeDevice>>,
    interrupt: Arc<VirtioInterrupt>,
}

impl Harness {
    fn new(max_sizes: &[u16], features: u64) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let device = Arc::new(Mutex::new(FakeDevice {
            max_sizes: max_sizes.to_vec(),
            features,
            config: *b"abcdefgh",
            ..Default::default()
        }));
        let interrupt = Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        let events = max_sizes
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let transport = MmioTransport::new(mem, device.clone(), interrupt.clone(), events);
        Self {
            transport,
            device,
            interrupt,
        }
    }

    fn read(&mut self, offset: u64) -> u32 {
        let mut data = [0xaa; 4];
        self.transport.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn write(&mut self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    fn status(&mut self) -> u32 {
        self.read(STATUS)
    }

    /// Linux's `virtio_add_status`: read Status, write it back with `bit` added.
    fn add_status(&mut self, bit: u32) {
        let status = self.status();
        self.write(STATUS, status | bit);
    }

    fn device_features(&mut self) -> u64 {
        self.write(DEVICE_FEATURES_SEL, 1);
        let high = self.read(DEVICE_FEATURES);
        self.write(DEVICE_FEATURES_SEL, 0);
        let low = self.read(DEVICE_FEATURES);
        (u64::from(high) << 32) | u64::from(low)
    }

    fn write_driver_features(&mut self, features: u64) {
        self.write(DRIVER_FEATURES_SEL, 1);
        self.write(DRIVER_FEATURES, (features >> 32) as u32);
        self.write(DRIVER_FEATURES_SEL, 0);
        self.write(DRIVER_FEATURES, features as u32);
    }

    /// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns whether FEATURES_OK stuck.
    fn negotiate(&mut self, features: u64) -> bool {
        self.write(STATUS, 0);
        assert_eq!(self.status(), 0);
        self.add_status(ACKNOWLEDGE);
        self.add_status(DRIVER);
        assert_eq!(self.read(MAGIC_VALUE), MAGIC);
        assert_eq!(self.read(VERSION), 2);
        // Linux reads the offer before writing its subset; the tests choose the subset.
        self.device_features();
        self.write_driver_features(features);
        self.add_status(FEATURES_OK);
        self.status() & FEATURES_OK != 0
    }

    /// Linux's `vm_setup_vq`.
    fn setup_queue(&mut self, index: u32, size: u32) {
        self.write(QUEUE_SEL, index);
        assert_eq!(self.read(QUEUE_READY), 0, "queue {index} already in use");
        let max = self.read(QUEUE_NUM_MAX);
        assert!(max >= size, "queue {index}: size {size} above max {max}");
        self.write(QUEUE_NUM, size);
        let (desc, avail, used) = rings(index);
        self.write(QUEUE_DESC_LOW, desc as u32);
        self.write(QUEUE_DESC_HIGH, (desc >> 32) as u32);
        self.write(QUEUE_DRIVER_LOW, avail as u32);
        self.write(QUEUE_DRIVER_HIGH, (avail >> 32) as u32);
        self.write(QUEUE_DEVICE_LOW, used as u32);
        self.write(QUEUE_DEVICE_HIGH, (used >> 32) as u32);
        self.write(QUEUE_READY, 1);
        assert_eq!(self.read(QUEUE_READY), 1);
    }

    /// The whole Linux probe with every queue at size 16; returns the final status.
    fn bring_up(&mut self, features: u64, queues: u32) -> u32 {
        assert!(self.negotiate(features));
        for index in 0..queues {
            self.setup_queue(index, 16);
        }
        self.add_status(DRIVER_OK);
        self.status()
    }

    fn activated_queues(&self) -> Option<Vec<virtio_queue::QueueState>> {
        let device = self.device.lock().unwrap();
        device
            .activated
            .as_ref()
            .map(|queues| queues.iter().map(|q| q.queue.state()).collect())
    }

    fn refused(&self) -> u64 {
        self.transport.refused_accesses()
    }
}
