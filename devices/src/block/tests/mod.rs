//! The block device against virtio-queue's mock driver queue and real image files.

mod images;
mod refused;
mod requests;
mod stall;

mod util;

use std::mem::offset_of;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast_virtio::interrupt::VIRTIO_MMIO_INT_CONFIG;
use ballast_virtio::{ActivateError, Activation, VirtioDevice};
use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VRING_USED_F_NO_NOTIFY,
};
use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::tempdir::TempDir;
use vmm_sys_util::tempfile::TempFile;

use super::io::{open_error, serial_for};
use super::*;
use util::*;

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
const S: u64 = SECTOR_SIZE;
const S32: u32 = SECTOR_SIZE as u32;
/// The default test image: 64 sectors.
const IMAGE_SIZE: u64 = 64 * S;

fn bit(feature: u32) -> u64 {
    1 << feature
}

/// The test image's content after writing `bytes` at `offset`.
fn image_with(size: u64, offset: u64, bytes: &[u8]) -> Vec<u8> {
    let mut image = pattern(0, size as usize);
    image[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
    image
}

// --- features, config space ---

#[test]
fn features_offer_ro_only_for_a_read_only_disk() {
    let (rw, _image) = block(false);
    assert_eq!(rw.device_type(), 2);
    assert_eq!(rw.queue_max_sizes(), &[256]);
    let common = bit(VIRTIO_F_VERSION_1)
        | bit(VIRTIO_RING_F_EVENT_IDX)
        | bit(VIRTIO_RING_F_INDIRECT_DESC)
        | bit(VIRTIO_BLK_F_FLUSH)
        | bit(VIRTIO_BLK_F_SEG_MAX)
        | bit(VIRTIO_BLK_F_SIZE_MAX)
        | bit(VIRTIO_BLK_F_BLK_SIZE);
    assert_eq!(rw.avail_features(), common);
    assert!(!rw.is_read_only());

    let (ro, _image) = block(true);
    assert_eq!(ro.avail_features(), common | bit(VIRTIO_BLK_F_RO));
    assert!(ro.is_read_only());

    for absent in [
        VIRTIO_BLK_F_BARRIER,
        VIRTIO_BLK_F_GEOMETRY,
        VIRTIO_BLK_F_SCSI,
        VIRTIO_BLK_F_TOPOLOGY,
        VIRTIO_BLK_F_CONFIG_WCE,
        VIRTIO_BLK_F_MQ,
        VIRTIO_BLK_F_DISCARD,
        VIRTIO_BLK_F_WRITE_ZEROES,
    ] {
        assert_eq!(ro.avail_features() & bit(absent), 0, "feature {absent}");
    }
}

#[test]
fn acked_features_are_limited_to_the_offered_ones() {
    let (mut block, _image) = block(false);
    block.set_acked_features(u64::MAX);
    // The device still activates and works: it only uses what it offered.
    let mut driver = Driver::activate(&mut block, Some(u64::MAX)).unwrap();
    let req = driver.read(0, &[S32]);
    block.run_queue();
    assert_eq!(driver.status(&req), OK);
}

fn config_u32(block: &Block, offset: usize) -> u32 {
    let mut bytes = [0xaa; 4];
    block.read_config(offset as u64, &mut bytes);
    u32::from_le_bytes(bytes)
}

#[test]
fn config_space_is_laid_out_as_virtio_blk_config() {
    // 64 whole sectors and a 100-byte tail, which the guest does not see.
    let (mut block, _image) = block_of_size(IMAGE_SIZE + 100, false);
    assert_eq!(block.capacity_sectors(), 64);

    let mut capacity = [0xaa; 8];
    block.read_config(
        offset_of!(virtio_blk_config, capacity) as u64,
        &mut capacity,
    );
    assert_eq!(u64::from_le_bytes(capacity), 64);
    assert_eq!(
        config_u32(&block, offset_of!(virtio_blk_config, size_max)),
        SIZE_MAX
    );
    assert_eq!(
        config_u32(&block, offset_of!(virtio_blk_config, seg_max)),
        254
    );
    assert_eq!(
        config_u32(&block, offset_of!(virtio_blk_config, geometry)),
        0
    );
    assert_eq!(
        config_u32(&block, offset_of!(virtio_blk_config, blk_size)),
        512
    );

    // Byte-wide reads, and reads straddling fields.
    let mut byte = [0xaa];
    block.read_config(0, &mut byte);
    assert_eq!(byte, [64]);
    let mut straddle = [0xaa; 4];
    block.read_config(6, &mut straddle);
    assert_eq!(straddle, [0, 0, 0x00, 0x00]);
    block.read_config(10, &mut straddle);
    assert_eq!(straddle, [0x10, 0x00, 254, 0]);

    // Fields of features not offered, and anything past the end, read as zero.
    let mut rest = [0xaa; 40];
    block.read_config(24, &mut rest);
    assert_eq!(rest, [0; 40]);
    let mut past = [0xaa; 8];
    block.read_config(u64::MAX - 2, &mut past);
    assert_eq!(past, [0; 8]);

    // Config space is the device's: writes change nothing.
    block.write_config(0, &[0xff; 8]);
    block.write_config(20, &4096u32.to_le_bytes());
    block.read_config(0, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), 64);
    assert_eq!(
        config_u32(&block, offset_of!(virtio_blk_config, blk_size)),
        512
    );
}

// --- reads, writes, flush, GET_ID ---

#[test]
fn an_image_that_shrank_gives_io_errors_not_garbage() {
    let (mut block, mut driver, image) = activated(false);
    image.as_file().set_len(32 * S).unwrap();
    let req = driver.read(40, &[S32]);
    block.run_queue();
    assert_eq!(driver.status(&req), IOERR);
    assert_eq!(driver.used(0).1, 1);
    let metrics = block.metrics().snapshot();
    assert_eq!(metrics.io_errors, 1);
    assert_eq!(metrics.read_count, 0);
}

// --- notifications ---

#[test]
fn event_idx_interrupts_only_when_the_driver_asked() {
    let (mut block, mut driver, _image) = activated(false);
    // The driver wants an interrupt once the used index passes 3.
    driver.set_used_event(3);
    driver.read(0, &[S32]);
    block.run_queue();
    assert_eq!(driver.used_count(), 1);
    assert!(!driver.take_interrupt());
    // The device asks to be kicked for the next available entry.
    assert_eq!(driver.avail_event(), 1);

    driver.read(1, &[S32]);
    driver.read(2, &[S32]);
    block.run_queue();
    assert_eq!(driver.used_count(), 3);
    assert!(!driver.take_interrupt());

    driver.read(3, &[S32]);
    block.run_queue();
    assert_eq!(driver.used_count(), 4);
    assert!(driver.take_interrupt());
    assert_eq!(driver.avail_event(), 4);
}

#[test]
fn without_event_idx_every_batch_interrupts() {
    let (mut block, _image) = block(false);
    let acked = block.avail_features() & !bit(VIRTIO_RING_F_EVENT_IDX);
    let mut driver = Driver::activate(&mut block, Some(acked)).unwrap();
    driver.read(0, &[S32]);
    block.run_queue();
    assert!(driver.take_interrupt());
    // Kicks are wanted again once the device is idle.
    assert_eq!(driver.used_flags() & VRING_USED_F_NO_NOTIFY as u16, 0);
    driver.read(1, &[S32]);
    block.run_queue();
    assert!(driver.take_interrupt());
    assert_eq!(block.metrics().snapshot().interrupts, 2);
}

#[test]
fn a_broken_available_index_makes_the_device_need_a_reset() {
    let (mut block, driver, _image) = activated(false);
    driver.set_avail_idx(QUEUE_SIZE + 1);
    block.run_queue();
    assert!(block.needs_reset());
    assert_eq!(
        driver.interrupt.status() & VIRTIO_MMIO_INT_CONFIG,
        VIRTIO_MMIO_INT_CONFIG
    );
    assert_eq!(block.metrics().snapshot().queue_errors, 1);
    assert_eq!(driver.used_count(), 0);

    assert!(block.reset());
    assert!(!block.needs_reset());
    assert!(!block.is_activated());
    let mut driver = Driver::activate(&mut block, None).unwrap();
    let req = driver.read(0, &[S32]);
    block.run_queue();
    assert_eq!(driver.status(&req), OK);
}

// --- activation ---

#[test]
fn activation_needs_exactly_one_queue_and_no_active_one() {
    let (mut block, _image) = block(false);
    let mem = guest_memory();
    let interrupt = test_interrupt();
    let queue_event = |at: u64| DriverQueue::new(mem, at, QUEUE_SIZE).1;
    assert!(matches!(
        block.activate(Activation::new(mem.clone(), interrupt.clone(), Vec::new())),
        Err(ActivateError::QueueCount { want: 1, got: 0 })
    ));
    assert!(matches!(
        block.activate(Activation::new(
            mem.clone(),
            interrupt.clone(),
            vec![queue_event(0), queue_event(0x10000)]
        )),
        Err(ActivateError::QueueCount { want: 1, got: 2 })
    ));
    assert!(!block.is_activated());

    let _driver = Driver::activate(&mut block, None).unwrap();
    assert!(block.is_activated());
    assert!(matches!(
        block.activate(Activation::new(
            mem.clone(),
            interrupt,
            vec![queue_event(0x10000)]
        )),
        Err(ActivateError::Backend(_))
    ));
}

// --- on the event loop ---

#[test]
fn the_event_loop_serves_the_queue_across_a_reset() {
    let (block, _image) = block(false);
    let block = Arc::new(Mutex::new(block));
    let mut manager = EventManager::<Arc<Mutex<Block>>>::new().unwrap();
    manager.add_subscriber(block.clone());

    // A request queued before the loop has seen the activation is served when it does.
    let mut driver = Driver::activate(&mut block.lock().unwrap(), None).unwrap();
    let early = driver.read(0, &[S32]);
    assert!(run_until(&mut manager, Duration::from_secs(2), || {
        driver.used_count() == 1
    }));
    assert_eq!(driver.status(&early), OK);

    let req = driver.read(1, &[S32]);
    driver.kick.write(1).unwrap();
    assert!(run_until(&mut manager, Duration::from_secs(2), || {
        driver.used_count() == 2
    }));
    assert_eq!(driver.data_bytes(&req), pattern(S, S as usize));

    // Reset and activate again before the loop runs: the old eventfd goes, the new one comes.
    assert!(block.lock().unwrap().reset());
    let mut driver = Driver::activate(&mut block.lock().unwrap(), None).unwrap();
    manager.run_with_timeout(0).unwrap();
    let req = driver.read(2, &[S32]);
    driver.kick.write(1).unwrap();
    assert!(run_until(&mut manager, Duration::from_secs(2), || {
        driver.used_count() == 1
    }));
    assert_eq!(driver.status(&req), OK);
    assert_eq!(block.lock().unwrap().metrics().snapshot().event_errors, 0);
}

// --- opening images ---
