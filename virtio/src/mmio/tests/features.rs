//! Identity registers and feature negotiation.

use super::*;

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
