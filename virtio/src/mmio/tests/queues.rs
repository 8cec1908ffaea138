//! Queue setup, activation and reset.

use super::*;

impl Harness {
    /// Queue setup and DRIVER_OK after a successful `negotiate`.
    pub(super) fn bring_up_rest(&mut self, queues: u32) -> u32 {
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
