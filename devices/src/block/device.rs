//! The block device: what it offers, its config space, activation and reset.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use log::info;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_SIZE_MAX,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use ballast_virtio::{
    ActivateError, Activation, DeviceCore, DeviceErrors, GuestMemoryMmap, QueueEvent, VirtioDevice,
    VirtioInterrupt,
};

use super::io::DiskImage;
use super::metrics::BlockMetrics;
use super::queue::CHAINS_PER_RUN;
use super::request::DiskLimits;
use super::worker::{WorkerHandle, WorkerSetup};
use super::{BlockConfig, QUEUE_SIZE, SECTOR_SIZE, SEG_MAX, SIZE_MAX, VIRTIO_BLK_ID_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error(
        "disk image {} does not exist (build one from a folder with \
         resources/build-disk-image.sh DIR OUT.img, or make an empty one with \
         `truncate -s 1G IMAGE`)",
        path.display()
    )]
    NotFound { path: PathBuf },
    #[error(
        "cannot open disk image {} for writing: {source} (add `,readonly=on` to give the guest \
         a read-only disk)",
        path.display()
    )]
    NotWritable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open disk image {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "disk image {} is neither a regular file nor a block device",
        path.display()
    )]
    NotAnImage { path: PathBuf },
    #[error("cannot find the size of disk image {}: {source}", path.display())]
    Size {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "disk image {} is {size} bytes, less than one 512-byte sector, so the guest would get \
         an empty disk (grow it with `truncate -s 1G IMAGE`)",
        path.display()
    )]
    TooSmall { path: PathBuf, size: u64 },
    #[error(
        "disk image {} is in use by another process (ballast locks a writable image \
         exclusively and a read-only one shared{}); two writers would corrupt it",
        path.display(),
        if *read_only { "; some process has it open for writing" } else { "" }
    )]
    Locked { path: PathBuf, read_only: bool },
    #[error("cannot create the block device's eventfd: {0}")]
    EventFd(#[source] io::Error),
    #[error("cannot start the I/O thread of disk image {}: {source}", path.display())]
    Worker {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `virtio_blk_config` up to and including `blk_size` (virtio 1.2, 5.2.4): capacity (le64),
/// size_max (le32), seg_max (le32), geometry (4 bytes, zero: GEOMETRY is not offered), blk_size
/// (le32). The fields after it belong to features that are not offered and read as zero.
pub(super) const CONFIG_SPACE_SIZE: usize = 24;
pub(super) const CAPACITY_OFFSET: usize = 0;
pub(super) const SIZE_MAX_OFFSET: usize = 8;
pub(super) const SEG_MAX_OFFSET: usize = 12;
pub(super) const BLK_SIZE_OFFSET: usize = 20;

fn config_space(capacity_sectors: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; CONFIG_SPACE_SIZE];
    bytes[CAPACITY_OFFSET..CAPACITY_OFFSET + 8].copy_from_slice(&capacity_sectors.to_le_bytes());
    bytes[SIZE_MAX_OFFSET..SIZE_MAX_OFFSET + 4].copy_from_slice(&SIZE_MAX.to_le_bytes());
    bytes[SEG_MAX_OFFSET..SEG_MAX_OFFSET + 4].copy_from_slice(&SEG_MAX.to_le_bytes());
    bytes[BLK_SIZE_OFFSET..BLK_SIZE_OFFSET + 4]
        .copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
    bytes
}

/// What the device owns between `activate` and `reset`.
pub(super) struct ActiveQueue {
    pub(super) mem: GuestMemoryMmap,
    pub(super) interrupt: Arc<VirtioInterrupt>,
    pub(super) queue: QueueEvent,
}

/// What the event loop knows of the image (the I/O thread owns the file).
pub(super) struct DiskInfo {
    pub path: PathBuf,
    pub capacity_sectors: u64,
    pub read_only: bool,
    pub serial: [u8; VIRTIO_BLK_ID_BYTES],
}

/// A virtio-blk device backed by a raw image file.
///
/// The VMM creates it with `Block::new`, wraps it in `Arc<Mutex<_>>`, registers that with the
/// event manager (which calls `init`) and hands it to the virtio-mmio transport. Chains are
/// taken and validated on the event loop, in `process` (see `event_handler.rs`); the image is
/// read and written by the disk's own I/O thread (`worker.rs`).
pub struct Block {
    config: BlockConfig,
    pub(super) disk: DiskInfo,
    pub(super) worker: WorkerHandle,
    /// Requests with the I/O thread, of the current activation.
    pub(super) in_flight: usize,
    /// Chains taken per wake-up (`CHAINS_PER_RUN`; tests make it smaller).
    pub(super) chains_per_run: usize,
    /// Type, queue, features, config space, the broken flag and the activation eventfd; its
    /// label (`virtio-blk <image path>`) names the device in log messages.
    pub(super) core: DeviceCore,
    pub(super) active: Option<ActiveQueue>,
    pub(super) metrics: Arc<BlockMetrics>,
}

impl Block {
    /// Opens the disk image `config` names. Errors say what the user can do about them (missing
    /// file, no write permission, an image in use by another VM, an empty image).
    pub fn new(config: BlockConfig) -> Result<Self, BlockError> {
        Self::with_worker_setup(config, None)
    }

    /// `new`, with `setup` run first on the disk's I/O thread (the VMM installs its seccomp
    /// filter there); its error fails the launch.
    pub fn with_worker_setup(
        config: BlockConfig,
        setup: Option<WorkerSetup>,
    ) -> Result<Self, BlockError> {
        let image = DiskImage::open(&config)?;
        let mut avail_features = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_SIZE_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE);
        if config.read_only {
            avail_features |= 1 << VIRTIO_BLK_F_RO;
        }
        let disk = DiskInfo {
            path: image.path().to_path_buf(),
            capacity_sectors: image.capacity_sectors(),
            read_only: image.read_only(),
            serial: *image.serial(),
        };
        let label = format!("virtio-blk {}", disk.path.display());
        info!(
            "{label}: {} sectors ({} MiB){}",
            disk.capacity_sectors,
            (disk.capacity_sectors * SECTOR_SIZE) >> 20,
            if config.read_only { ", read-only" } else { "" }
        );
        let metrics = Arc::new(BlockMetrics::default());
        let errors = DeviceErrors::sharing(
            &metrics.queue_errors,
            &metrics.interrupt_errors,
            &metrics.event_errors,
        );
        let core = DeviceCore::new(
            label,
            VIRTIO_ID_BLOCK,
            vec![QUEUE_SIZE],
            avail_features,
            config_space(disk.capacity_sectors),
            errors,
        )
        .map_err(BlockError::EventFd)?;
        let worker = WorkerHandle::start(image, metrics.clone(), core.label.clone(), setup)
            .map_err(|source| BlockError::Worker {
                path: disk.path.clone(),
                source,
            })?;
        Ok(Block {
            config,
            disk,
            worker,
            in_flight: 0,
            chains_per_run: CHAINS_PER_RUN,
            core,
            active: None,
            metrics,
        })
    }

    pub fn config(&self) -> &BlockConfig {
        &self.config
    }

    /// The disk's size in 512-byte sectors (the image size rounded down).
    pub fn capacity_sectors(&self) -> u64 {
        self.disk.capacity_sectors
    }

    pub fn is_read_only(&self) -> bool {
        self.disk.read_only
    }

    /// The device ID the guest reads with GET_ID (`/sys/block/vdX/serial`), without its NUL
    /// padding.
    pub fn serial(&self) -> String {
        let serial = &self.disk.serial;
        let len = serial
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(VIRTIO_BLK_ID_BYTES);
        String::from_utf8_lossy(&serial[..len]).into_owned()
    }

    pub fn metrics(&self) -> &Arc<BlockMetrics> {
        &self.metrics
    }

    pub fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    /// The device hit a queue error it cannot recover from: the transport should set
    /// DEVICE_NEEDS_RESET in the status register (a config-change interrupt was raised to tell
    /// the driver). Cleared by `reset`.
    pub fn needs_reset(&self) -> bool {
        self.core.is_broken()
    }

    pub(super) fn limits(&self) -> DiskLimits {
        DiskLimits {
            capacity_sectors: self.disk.capacity_sectors,
            read_only: self.disk.read_only,
        }
    }
}

impl VirtioDevice for Block {
    fn core(&self) -> &DeviceCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut DeviceCore {
        &mut self.core
    }

    // Every config field is the device's (`wce` would be the driver's, but CONFIG_WCE is not
    // offered): the default `write_config` ignores the driver's writes.

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let (mem, interrupt, [queue]) =
            activation.take_queues(&self.core, "block device", ["request"])?;
        self.active = Some(ActiveQueue {
            mem,
            interrupt: interrupt.clone(),
            queue,
        });
        self.core.activated(&interrupt)
    }

    fn reset(&mut self) -> bool {
        // Requests still with the I/O thread are dropped (or, one in progress, not completed).
        self.worker.next_generation();
        self.in_flight = 0;
        let retired = self.active.take().map(|active| active.queue.event);
        self.core.reset(retired, false);
        true
    }
}
