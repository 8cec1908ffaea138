//! The transport driven the way Linux's virtio_mmio driver drives it, against a fake device
//! that records what the transport told it, plus a hostile driver.

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
    ActivateError, DeviceCore, GuestMemoryMmap, QueueEvent, VirtioDevice, VirtioInterrupt,
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
            core: DeviceCore::new("fake", TYPE, Vec::new(), 0, Vec::new()).unwrap(),
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

    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        _interrupt: Arc<VirtioInterrupt>,
        queues: Vec<QueueEvent>,
    ) -> Result<(), ActivateError> {
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

const LIVE: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;

#[test]
fn identity_registers() {
    let mut h = Harness::new(&[16], FEATURES);
    assert_eq!(h.read(MAGIC_VALUE), 0x7472_6976);
    assert_eq!(h.read(VERSION), 2);
    assert_eq!(h.read(DEVICE_ID), TYPE);
    assert_eq!(h.read(VENDOR_ID), 0x4c4c_4142);
    assert_eq!(h.read(CONFIG_GENERATION), 0);
    assert_eq!(h.read(SHM_LEN_LOW), u32::MAX);
    assert_eq!(h.read(SHM_LEN_HIGH), u32::MAX);
    assert_eq!(h.refused(), 0);
}

#[test]
fn device_features_are_split_by_selector() {
    let features = FEATURES | (1 << 40);
    let mut h = Harness::new(&[16], features);
    assert_eq!(h.device_features(), features);
    h.write(DEVICE_FEATURES_SEL, 0);
    assert_eq!(h.read(DEVICE_FEATURES), features as u32);
    h.write(DEVICE_FEATURES_SEL, 1);
    assert_eq!(h.read(DEVICE_FEATURES), (features >> 32) as u32);
    // Words past the second exist but are empty.
    h.write(DEVICE_FEATURES_SEL, 2);
    assert_eq!(h.read(DEVICE_FEATURES), 0);
    h.write(DEVICE_FEATURES_SEL, u32::MAX);
    assert_eq!(h.read(DEVICE_FEATURES), 0);
    assert_eq!(h.refused(), 0);
}

#[test]
fn linux_init_sequence_activates_with_the_ready_queues() {
    let mut h = Harness::new(&[256, 128], FEATURES);
    let acked = VERSION_1 | DEVICE_BIT;
    assert_eq!(h.bring_up(acked, 2), LIVE);
    assert!(h.transport.is_activated());
    assert_eq!(h.refused(), 0);

    let device = h.device.lock().unwrap();
    assert_eq!(device.acked, Some(acked));
    assert_eq!(device.activations, 1);
    let queues = device.activated.as_ref().unwrap();
    assert_eq!(queues.len(), 2);
    for (index, handed) in queues.iter().enumerate() {
        let q = &handed.queue;
        let (desc, avail, used) = rings(index as u32);
        assert!(q.ready());
        assert_eq!(q.size(), 16);
        assert_eq!(q.max_size(), [256, 128][index]);
        assert_eq!(
            (q.desc_table(), q.avail_ring(), q.used_ring()),
            (desc, avail, used)
        );
        assert!(!q.event_idx_enabled(), "EVENT_IDX was not negotiated");
        // The device's eventfd is the one the VMM registers as the ioeventfd.
        h.transport.queue_events()[index].write(1).unwrap();
        assert_eq!(handed.event.read().unwrap(), 1);
    }
}

#[test]
fn event_idx_is_set_on_the_queues_when_negotiated() {
    let mut h = Harness::new(&[16], FEATURES);
    assert_eq!(h.bring_up(VERSION_1 | EVENT_IDX, 1), LIVE);
    let queues = h.activated_queues().unwrap();
    assert!(queues[0].event_idx_enabled);
}

#[test]
fn only_ready_queues_are_handed_over() {
    // Like a balloon without the stats queue: three queues, the driver uses two.
    let mut h = Harness::new(&[16, 16, 16], FEATURES);
    assert_eq!(h.bring_up(VERSION_1, 2), LIVE);
    let queues = h.activated_queues().unwrap();
    assert_eq!(queues.len(), 2);
    assert_eq!(queues[1].desc_table, rings(1).0);
}

#[test]
fn unoffered_features_are_refused_at_features_ok() {
    let mut h = Harness::new(&[16], VERSION_1);
    assert!(!h.negotiate(VERSION_1 | DEVICE_BIT));
    assert_eq!(h.status(), ACKNOWLEDGE | DRIVER);
    assert_eq!(h.device.lock().unwrap().acked, None);
    // A driver that notices may correct its features and try again.
    h.write_driver_features(VERSION_1);
    h.add_status(FEATURES_OK);
    assert_eq!(h.status(), ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(h.device.lock().unwrap().acked, Some(VERSION_1));
}

#[test]
fn a_legacy_driver_without_version_1_is_refused() {
    let mut h = Harness::new(&[16], FEATURES);
    assert!(!h.negotiate(DEVICE_BIT));
    // It cannot go on to queue setup or DRIVER_OK either.
    h.write(QUEUE_SEL, 0);
    h.write(QUEUE_NUM, 8);
    h.add_status(DRIVER_OK);
    assert_eq!(h.status(), ACKNOWLEDGE | DRIVER);
    assert_eq!(h.device.lock().unwrap().activations, 0);
}

#[test]
fn a_device_without_version_1_can_never_reach_features_ok() {
    let mut h = Harness::new(&[16], DEVICE_BIT);
    assert!(!h.negotiate(VERSION_1 | DEVICE_BIT));
    assert!(!h.negotiate(DEVICE_BIT));
}

#[test]
fn driver_features_are_frozen_outside_negotiation() {
    let mut h = Harness::new(&[16], FEATURES);
    // Before DRIVER.
    h.write(DRIVER_FEATURES, 0xffff_ffff);
    let before = h.refused();
    assert!(before > 0);
    assert!(h.negotiate(VERSION_1));
    // After FEATURES_OK, changing the features is refused and changes nothing.
    h.write(DRIVER_FEATURES_SEL, 0);
    h.write(DRIVER_FEATURES, DEVICE_BIT as u32);
    assert!(h.refused() > before);
    assert_eq!(h.bring_up_rest(1), LIVE);
    assert_eq!(h.device.lock().unwrap().acked, Some(VERSION_1));
}

#[test]
fn acking_a_nonexistent_feature_word_is_refused() {
    let mut h = Harness::new(&[16], FEATURES);
    h.write(STATUS, ACKNOWLEDGE);
    h.write(STATUS, ACKNOWLEDGE | DRIVER);
    h.write(DRIVER_FEATURES_SEL, 2);
    h.write(DRIVER_FEATURES, 0);
    assert_eq!(h.refused(), 0, "zeros in an empty word are harmless");
    h.write(DRIVER_FEATURES, 1);
    assert_eq!(h.refused(), 1);
}

impl Harness {
    /// Queue setup and DRIVER_OK after a successful `negotiate`.
    fn bring_up_rest(&mut self, queues: u32) -> u32 {
        for index in 0..queues {
            self.setup_queue(index, 16);
        }
        self.add_status(DRIVER_OK);
        self.status()
    }
}

#[test]
fn bad_queue_sizes_are_ignored() {
    let mut h = Harness::new(&[64], FEATURES);
    assert!(h.negotiate(VERSION_1));
    h.write(QUEUE_SEL, 0);
    assert_eq!(h.read(QUEUE_NUM_MAX), 64);
    h.write(QUEUE_NUM, 32);
    let mut refused = h.refused();
    for bad in [0, 3, 48, 128, 0x1_0000, u32::MAX] {
        h.write(QUEUE_NUM, bad);
        refused += 1;
        assert_eq!(h.refused(), refused, "size {bad} was accepted");
    }
    // The last good size is still in force.
    let (desc, avail, used) = rings(0);
    h.write(QUEUE_DESC_LOW, desc as u32);
    h.write(QUEUE_DRIVER_LOW, avail as u32);
    h.write(QUEUE_DEVICE_LOW, used as u32);
    h.write(QUEUE_READY, 1);
    h.add_status(DRIVER_OK);
    assert_eq!(h.status(), LIVE);
    assert_eq!(h.activated_queues().unwrap()[0].size, 32);
}

#[test]
fn misaligned_ring_addresses_are_ignored() {
    let mut h = Harness::new(&[16], FEATURES);
    assert!(h.negotiate(VERSION_1));
    h.setup_queue(0, 16);
    h.write(QUEUE_READY, 0);
    let refused = h.refused();
    // Descriptors align to 16, the available ring to 2, the used ring to 4.
    h.write(QUEUE_DESC_LOW, 0x1008);
    h.write(QUEUE_DRIVER_LOW, 0x1401);
    h.write(QUEUE_DEVICE_LOW, 0x1802);
    assert_eq!(h.refused(), refused + 3);
    h.write(QUEUE_READY, 1);
    h.add_status(DRIVER_OK);
    let q = h.activated_queues().unwrap()[0];
    assert_eq!((q.desc_table, q.avail_ring, q.used_ring), rings(0));
}

#[test]
fn rings_outside_guest_memory_fail_activation() {
    let mut h = Harness::new(&[16], FEATURES);
    assert!(h.negotiate(VERSION_1));
    h.setup_queue(0, 16);
    h.write(QUEUE_READY, 0);
    // Aligned, but the used ring lies past the end of guest RAM (and in the high word).
    h.write(QUEUE_DEVICE_HIGH, 1);
    h.write(QUEUE_READY, 1);
    h.add_status(DRIVER_OK);
    assert_eq!(h.status(), LIVE | NEEDS_RESET);
    assert_eq!(h.device.lock().unwrap().activations, 0);
    assert!(!h.transport.is_activated());
    assert_eq!(h.read(INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
    assert_eq!(h.interrupt.irqfd().read().unwrap(), 1);
    // Only a reset gets the device going again.
    h.add_status(FAILED);
    assert_eq!(h.status(), LIVE | NEEDS_RESET | FAILED);
    assert_eq!(h.bring_up(VERSION_1, 1), LIVE);
    assert_eq!(
        h.read(INTERRUPT_STATUS),
        0,
        "the reset cleared the stale interrupt"
    );
}

#[test]
fn rings_straddling_the_end_of_memory_fail_activation() {
    let mut h = Harness::new(&[16], FEATURES);
    assert!(h.negotiate(VERSION_1));
    h.setup_queue(0, 16);
    h.write(QUEUE_READY, 0);
    h.write(QUEUE_DESC_LOW, (MEM_SIZE - 0x80) as u32);
    h.write(QUEUE_READY, 1);
    h.add_status(DRIVER_OK);
    assert_eq!(h.status(), LIVE | NEEDS_RESET);
}

#[test]
fn device_activation_failure_sets_needs_reset() {
    let mut h = Harness::new(&[16], FEATURES);
    h.device.lock().unwrap().fail_activate = true;
    assert_eq!(h.bring_up(VERSION_1, 1), LIVE | NEEDS_RESET);
    assert_eq!(h.device.lock().unwrap().activations, 1);
    assert_eq!(h.read(INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
    // The device never took the queues, so a reset does not bother it.
    h.write(STATUS, 0);
    assert_eq!(h.status(), 0);
    assert_eq!(h.device.lock().unwrap().resets, 0);
}

#[test]
fn a_device_broken_while_running_shows_needs_reset() {
    let mut h = Harness::new(&[16], FEATURES);
    assert_eq!(h.bring_up(VERSION_1, 1), LIVE);
    h.device.lock().unwrap().broken = true;
    assert_eq!(h.status(), LIVE | NEEDS_RESET);
    // The driver's answer is a reset, which brings the device back.
    h.device.lock().unwrap().broken = false;
    h.write(STATUS, 0);
    assert_eq!(h.status(), 0);
    assert_eq!(h.device.lock().unwrap().resets, 1);
}

#[test]
fn reset_after_activation() {
    let mut h = Harness::new(&[16, 16], FEATURES);
    assert_eq!(h.bring_up(VERSION_1 | EVENT_IDX, 2), LIVE);
    h.interrupt.signal_used_queue().unwrap();
    h.write(QUEUE_SEL, 1);

    h.write(STATUS, 0);
    assert_eq!(h.status(), 0);
    assert!(!h.transport.is_activated());
    {
        let device = h.device.lock().unwrap();
        assert_eq!(device.resets, 1);
        assert!(device.activated.is_none());
    }
    assert_eq!(h.read(INTERRUPT_STATUS), 0);
    // QueueSel went back to 0 and every queue is free for the next probe.
    for index in 0..2 {
        h.write(QUEUE_SEL, index);
        assert_eq!(h.read(QUEUE_READY), 0);
        assert_eq!(h.read(QUEUE_NUM_MAX), 16);
    }
    // The next probe negotiates from scratch: no EVENT_IDX left over on the queues.
    assert_eq!(h.bring_up(VERSION_1, 1), LIVE);
    let queues = h.activated_queues().unwrap();
    assert_eq!(queues.len(), 1);
    assert!(!queues[0].event_idx_enabled);
    assert_eq!(queues[0].next_avail, 0);
    assert_eq!(h.device.lock().unwrap().activations, 2);
}

#[test]
fn a_device_that_cannot_reset_needs_reset() {
    let mut h = Harness::new(&[16], FEATURES);
    assert_eq!(h.bring_up(VERSION_1, 1), LIVE);
    h.device.lock().unwrap().refuse_reset = true;
    h.write(STATUS, 0);
    assert_eq!(h.status(), NEEDS_RESET);
    assert!(h.transport.is_activated());
    // Nothing moves until a reset works.
    h.add_status(ACKNOWLEDGE);
    assert_eq!(h.status(), NEEDS_RESET);
    h.device.lock().unwrap().refuse_reset = false;
    h.write(STATUS, 0);
    assert_eq!(h.status(), 0);
    assert_eq!(h.device.lock().unwrap().resets, 2);
    assert_eq!(h.bring_up(VERSION_1, 1), LIVE);
}

#[test]
fn interrupt_status_and_ack() {
    let mut h = Harness::new(&[16], FEATURES);
    assert_eq!(h.bring_up(VERSION_1, 1), LIVE);
    assert_eq!(h.read(INTERRUPT_STATUS), 0);
    h.interrupt.signal_used_queue().unwrap();
    h.interrupt.signal_config_change().unwrap();
    assert_eq!(
        h.read(INTERRUPT_STATUS),
        VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG
    );
    h.write(INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    assert_eq!(h.read(INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
    h.write(INTERRUPT_ACK, u32::MAX);
    assert_eq!(h.read(INTERRUPT_STATUS), 0);
    // InterruptStatus is read-only.
    h.write(INTERRUPT_STATUS, 3);
    assert_eq!(h.read(INTERRUPT_STATUS), 0);
    assert_eq!(h.refused(), 1);
}

#[test]
fn config_space_is_delegated_at_any_width() {
    let mut h = Harness::new(&[16], FEATURES);
    let mut byte = [0u8; 1];
    h.transport.read(CONFIG + 2, &mut byte);
    assert_eq!(&byte, b"c");
    let mut word = [0u8; 2];
    h.transport.read(CONFIG + 6, &mut word);
    assert_eq!(&word, b"gh");
    let mut quad = [0u8; 8];
    h.transport.read(CONFIG, &mut quad);
    assert_eq!(&quad, b"abcdefgh");
    // Past the end of the device's config reads as zero (the device's rule).
    let mut past = [0xffu8; 4];
    h.transport.read(CONFIG + 6, &mut past);
    assert_eq!(&past, b"gh\0\0");
    h.transport.read(u64::MAX, &mut past);
    assert_eq!(past, [0; 4]);

    h.transport.write(CONFIG + 1, b"XY");
    h.transport.write(CONFIG + 7, b"Z");
    assert_eq!(&h.device.lock().unwrap().config, b"aXYdefgZ");
    assert_eq!(h.refused(), 0);
}

#[test]
fn config_generation_counts_bumps() {
    let mut h = Harness::new(&[16], FEATURES);
    h.transport.bump_config_generation();
    h.transport.bump_config_generation();
    assert_eq!(h.read(CONFIG_GENERATION), 2);
    // Read-only to the guest.
    h.write(CONFIG_GENERATION, 0);
    assert_eq!(h.read(CONFIG_GENERATION), 2);
}

#[test]
fn queue_notify_write_falls_back_to_the_eventfd() {
    let mut h = Harness::new(&[16, 16], FEATURES);
    assert_eq!(h.bring_up(VERSION_1, 2), LIVE);
    assert_eq!(MmioTransport::NOTIFY_REG_OFFSET, 0x50);
    assert_eq!(super::NOTIFY_REG_OFFSET, 0x50);
    h.write(QUEUE_NOTIFY, 1);
    h.write(QUEUE_NOTIFY, 1);
    {
        let device = h.device.lock().unwrap();
        let queues = device.activated.as_ref().unwrap();
        assert_eq!(queues[1].event.read().unwrap(), 2);
        assert!(queues[0].event.read().is_err(), "queue 0 was not notified");
    }
    h.write(QUEUE_NOTIFY, 2);
    h.write(QUEUE_NOTIFY, u32::MAX);
    assert_eq!(h.refused(), 2);
    // QueueNotify is write-only.
    assert_eq!(h.read(QUEUE_NOTIFY), 0);
    assert_eq!(h.refused(), 3);
}

#[test]
fn wrong_access_sizes_are_ignored_and_counted() {
    let mut h = Harness::new(&[16], FEATURES);
    let mut short = [0xffu8; 2];
    h.transport.read(MAGIC_VALUE, &mut short);
    assert_eq!(short, [0, 0]);
    let mut long = [0xffu8; 8];
    h.transport.read(MAGIC_VALUE, &mut long);
    assert_eq!(long, [0; 8]);
    h.transport.read(STATUS, &mut []);
    assert_eq!(h.refused(), 3);

    h.transport.write(STATUS, &[ACKNOWLEDGE as u8]);
    h.transport
        .write(STATUS, &u64::from(ACKNOWLEDGE).to_le_bytes());
    h.transport.write(STATUS, &[]);
    assert_eq!(h.status(), 0);
    assert_eq!(h.refused(), 6);
}

#[test]
fn unknown_and_misaligned_registers_are_ignored() {
    let mut h = Harness::new(&[16], FEATURES);
    // Version 1 registers (GuestPageSize, QueueAlign, QueuePFN), a gap, a misaligned offset.
    for offset in [0x28, 0x3c, 0x40, 0x48, 0xc0, 0x71, 0xfd] {
        assert_eq!(h.read(offset), 0);
        h.write(offset, 1);
    }
    assert_eq!(h.refused(), 14);
    assert_eq!(h.status(), 0);
}

#[test]
fn out_of_range_queue_select() {
    let mut h = Harness::new(&[16, 16], FEATURES);
    assert!(h.negotiate(VERSION_1));
    for sel in [2, 1000, u32::MAX] {
        h.write(QUEUE_SEL, sel);
        assert_eq!(h.read(QUEUE_NUM_MAX), 0);
        assert_eq!(h.read(QUEUE_READY), 0);
        let refused = h.refused();
        h.write(QUEUE_NUM, 8);
        h.write(QUEUE_DESC_LOW, 0x1000);
        h.write(QUEUE_READY, 1);
        assert_eq!(h.refused(), refused + 3);
    }
    h.add_status(DRIVER_OK);
    assert_eq!(h.status(), LIVE);
    assert!(h.activated_queues().unwrap().is_empty());
}

#[test]
fn queue_registers_are_writable_only_during_queue_setup() {
    let mut h = Harness::new(&[16], FEATURES);
    // Before FEATURES_OK.
    h.add_status(ACKNOWLEDGE);
    h.write(QUEUE_SEL, 0);
    h.write(QUEUE_NUM, 8);
    h.write(QUEUE_READY, 1);
    assert_eq!(h.read(QUEUE_READY), 0);
    assert_eq!(h.refused(), 2);

    // While the queue is ready, its configuration is frozen; QueueReady = 0 unfreezes it.
    assert!(h.negotiate(VERSION_1));
    h.setup_queue(0, 16);
    let refused = h.refused();
    h.write(QUEUE_NUM, 8);
    h.write(QUEUE_DESC_LOW, 0x2000);
    h.write(QUEUE_READY, 2);
    assert_eq!(h.refused(), refused + 3);
    h.write(QUEUE_READY, 0);
    h.write(QUEUE_NUM, 8);
    h.write(QUEUE_READY, 1);
    assert_eq!(h.refused(), refused + 3);

    // After DRIVER_OK the device owns the queues.
    h.add_status(DRIVER_OK);
    h.write(QUEUE_READY, 0);
    h.write(QUEUE_NUM, 4);
    assert_eq!(h.refused(), refused + 5);
    assert_eq!(h.read(QUEUE_READY), 1);
    assert_eq!(h.activated_queues().unwrap()[0].size, 8);
}

#[test]
fn out_of_order_status_writes_are_refused() {
    let mut h = Harness::new(&[16], FEATURES);
    h.write(STATUS, DRIVER_OK);
    h.write(STATUS, ACKNOWLEDGE | DRIVER);
    assert_eq!(h.status(), 0);
    assert!(h.negotiate(VERSION_1));
    h.setup_queue(0, 16);
    // Clearing bits without a reset.
    h.write(STATUS, ACKNOWLEDGE);
    // The device's own bit.
    h.write(STATUS, NEEDS_RESET);
    assert_eq!(h.status(), ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(h.device.lock().unwrap().activations, 0);
    assert_eq!(h.refused(), 4);
}

#[test]
fn failed_stops_the_driver_until_reset() {
    let mut h = Harness::new(&[16], FEATURES);
    h.add_status(ACKNOWLEDGE);
    h.add_status(FAILED);
    h.add_status(DRIVER);
    assert_eq!(h.status(), ACKNOWLEDGE | FAILED);
    assert_eq!(h.bring_up(VERSION_1, 1), LIVE);
}

#[test]
fn try_new_rejects_a_mismatched_setup() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let interrupt = Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let device = |max_sizes: Vec<u16>| -> Arc<Mutex<dyn VirtioDevice>> {
        Arc::new(Mutex::new(FakeDevice {
            max_sizes,
            ..Default::default()
        }))
    };
    let events = |n: usize| {
        (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect()
    };

    let err = MmioTransport::try_new(
        mem.clone(),
        device(vec![16, 16]),
        interrupt.clone(),
        events(1),
    );
    assert!(matches!(
        err,
        Err(MmioError::QueueEventCount {
            queues: 2,
            events: 1
        })
    ));
    let err = MmioTransport::try_new(
        mem.clone(),
        device(vec![16, 24]),
        interrupt.clone(),
        events(2),
    );
    assert!(matches!(
        err,
        Err(MmioError::QueueMaxSize { index: 1, size: 24 })
    ));
    let err = MmioTransport::try_new(mem, device(vec![0]), interrupt, events(1));
    assert!(matches!(
        err,
        Err(MmioError::QueueMaxSize { index: 0, size: 0 })
    ));
}

/// A driver writing random values of random sizes at random offsets, from every stage of the
/// init sequence: nothing may panic, and the transport must still come up cleanly afterwards.
#[test]
fn hostile_driver_cannot_panic_the_transport() {
    const KNOWN: [u64; 22] = [
        MAGIC_VALUE,
        DEVICE_FEATURES,
        DEVICE_FEATURES_SEL,
        DRIVER_FEATURES,
        DRIVER_FEATURES_SEL,
        QUEUE_SEL,
        QUEUE_NUM_MAX,
        QUEUE_NUM,
        QUEUE_READY,
        QUEUE_NOTIFY,
        INTERRUPT_STATUS,
        INTERRUPT_ACK,
        STATUS,
        QUEUE_DESC_LOW,
        QUEUE_DESC_HIGH,
        QUEUE_DRIVER_LOW,
        QUEUE_DRIVER_HIGH,
        QUEUE_DEVICE_LOW,
        QUEUE_DEVICE_HIGH,
        SHM_SEL,
        CONFIG_GENERATION,
        CONFIG,
    ];
    let mut h = Harness::new(&[16, 16], FEATURES);
    // xorshift64: deterministic, no dependency.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2_000 {
        // Walk a well-behaved driver part of the way, then misbehave.
        let stage = next() % 5;
        if stage >= 1 {
            h.write(STATUS, 0);
            h.add_status(ACKNOWLEDGE);
            h.add_status(DRIVER);
        }
        if stage >= 2 {
            h.write_driver_features(VERSION_1 | EVENT_IDX);
            h.add_status(FEATURES_OK);
        }
        if stage >= 3 {
            h.setup_queue(0, 16);
        }
        if stage >= 4 {
            h.add_status(DRIVER_OK);
        }
        for _ in 0..100 {
            let r = next();
            let offset = match r % 4 {
                0 => (r >> 8) % 0x100,
                1 => 0x100 + (r >> 8) % 0x100,
                _ => KNOWN[(r >> 8) as usize % KNOWN.len()],
            };
            let len = [4, 4, 4, 4, 1, 2, 8, 0][(r >> 4) as usize % 8];
            let value = next();
            // Bias the values towards the small ones that mean something.
            let value = match (r >> 40) % 4 {
                0 => value,
                1 => value % 0x100,
                2 => value % 0x10,
                _ => 0,
            };
            let bytes = value.to_le_bytes();
            if r & (1 << 20) == 0 {
                let mut data = [0u8; 8];
                h.transport.read(offset, &mut data[..len]);
            } else {
                h.transport.write(offset, &bytes[..len]);
            }
        }
    }
    assert!(h.refused() > 0);
    assert!(h.device.lock().unwrap().activations > 0);
    assert_eq!(h.bring_up(VERSION_1, 2), LIVE);
    assert_eq!(h.activated_queues().unwrap().len(), 2);
}
