//! Interrupts, config space, notifications, and registers written out of turn, down to a hostile driver.

use super::*;

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
    assert_eq!(super::super::NOTIFY_REG_OFFSET, 0x50);
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
// Long on purpose: the register list and the fuzz loop belong together.
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
