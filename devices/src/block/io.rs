//! The disk image on the host: opening it, and moving data between it and guest memory.
//!
//! Data goes straight between the file and guest RAM through vm-memory's volatile I/O (one
//! `read`/`write` system call per guest memory region a buffer touches, after a seek to the
//! request's offset), which also marks the guest pages the device wrote in vm-memory's dirty
//! bitmap. Only the disk's I/O thread (`worker.rs`) does I/O on the image, so the seek and the
//! transfer cannot be interleaved with another request's.
//!
//! Callers check every range against the disk's capacity and guest memory first; these functions
//! only do what they are told, and fail cleanly (never touching bytes outside the ranges given)
//! if the image shrank underneath the VM.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use log::warn;
use vm_memory::bitmap::{AtomicBitmap, BS};
use vm_memory::{
    GuestAddress, GuestMemoryBackend, ReadVolatile, VolatileMemoryError, VolatileSlice,
    WriteVolatile,
};

use ballast_virtio::GuestMemoryMmap;

use super::{BlockConfig, BlockError, SECTOR_SIZE, VIRTIO_BLK_ID_BYTES};

/// A stretch of guest memory within one region, as vm-memory hands it out.
type GuestSlice<'m> = VolatileSlice<'m, BS<'m, AtomicBitmap>>;

/// One guest buffer of a request's data: `len` bytes of guest memory at `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum DiskIoError {
    /// The host could not read, write or sync the image (or it ended early: it shrank).
    #[error("{0}")]
    Host(#[source] io::Error),
    /// A guest buffer was not in guest memory after all.
    #[error("{0}")]
    Guest(#[source] vm_memory::GuestMemoryError),
}

fn from_volatile(e: VolatileMemoryError) -> DiskIoError {
    match e {
        VolatileMemoryError::IOError(e) => DiskIoError::Host(e),
        other => DiskIoError::Host(io::Error::other(other.to_string())),
    }
}

/// An open raw disk image.
pub(super) struct DiskImage {
    file: File,
    path: PathBuf,
    capacity_sectors: u64,
    read_only: bool,
    serial: [u8; VIRTIO_BLK_ID_BYTES],
}

impl DiskImage {
    /// Opens the image `config` names (read-only if the disk is), takes an advisory lock on it
    /// (exclusive for a writable disk, shared for a read-only one) and measures it.
    ///
    /// An image whose size is not a whole number of sectors is accepted; the guest sees the
    /// whole sectors and the tail is neither read nor written (a warning says how many bytes).
    /// An image smaller than one sector is refused: the guest would get a disk of size zero.
    pub(super) fn open(config: &BlockConfig) -> Result<Self, BlockError> {
        let path = config.path.clone();
        let file = OpenOptions::new()
            .read(true)
            .write(!config.read_only)
            .open(&path)
            .map_err(|source| open_error(&path, config.read_only, source))?;
        let metadata = file.metadata().map_err(|source| BlockError::Open {
            path: path.clone(),
            source,
        })?;
        let file_type = metadata.file_type();
        if !file_type.is_file() && !file_type.is_block_device() {
            return Err(BlockError::NotAnImage { path });
        }
        lock(&file, &path, config.read_only)?;

        // Seeking to the end measures block devices too, whose metadata says 0 bytes.
        let size = (&file)
            .seek(SeekFrom::End(0))
            .map_err(|source| BlockError::Size {
                path: path.clone(),
                source,
            })?;
        let capacity_sectors = size / SECTOR_SIZE;
        if capacity_sectors == 0 {
            return Err(BlockError::TooSmall { path, size });
        }
        let tail = size % SECTOR_SIZE;
        if tail != 0 {
            warn!(
                "virtio-blk {}: the image is {size} bytes, not a whole number of {SECTOR_SIZE}-byte \
                 sectors; the guest sees {capacity_sectors} sectors and the last {tail} bytes are \
                 not part of the disk",
                path.display()
            );
        }
        Ok(DiskImage {
            serial: serial_for(metadata.dev(), metadata.ino()),
            file,
            path,
            capacity_sectors,
            read_only: config.read_only,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The disk's size in 512-byte sectors.
    pub(super) fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    pub(super) fn read_only(&self) -> bool {
        self.read_only
    }

    /// The device ID the guest gets for VIRTIO_BLK_T_GET_ID.
    pub(super) fn serial(&self) -> &[u8; VIRTIO_BLK_ID_BYTES] {
        &self.serial
    }

    /// Reads the image from byte `offset` into the guest buffers, in order, filling each one.
    pub(super) fn read_into(
        &mut self,
        mem: &GuestMemoryMmap,
        offset: u64,
        segments: &[Segment],
    ) -> Result<(), DiskIoError> {
        // Loops over short reads; the end of the file is an error (UnexpectedEof).
        self.each_slice(mem, offset, segments, |file, mut slice| {
            file.read_exact_volatile(&mut slice)
        })
    }

    /// Writes the guest buffers, in order, to the image from byte `offset`.
    pub(super) fn write_from(
        &mut self,
        mem: &GuestMemoryMmap,
        offset: u64,
        segments: &[Segment],
    ) -> Result<(), DiskIoError> {
        self.each_slice(mem, offset, segments, |file, slice| {
            file.write_all_volatile(&slice)
        })
    }

    /// Seeks to byte `offset` of the image and hands `transfer` the guest buffers' memory, in
    /// order, a slice per guest memory region each buffer touches.
    fn each_slice<'m>(
        &mut self,
        mem: &'m GuestMemoryMmap,
        offset: u64,
        segments: &[Segment],
        mut transfer: impl FnMut(&mut File, GuestSlice<'m>) -> Result<(), VolatileMemoryError>,
    ) -> Result<(), DiskIoError> {
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(DiskIoError::Host)?;
        for segment in segments {
            for slice in GuestMemoryBackend::get_slices(mem, segment.addr, segment.len as usize) {
                transfer(&mut self.file, slice.map_err(DiskIoError::Guest)?)
                    .map_err(from_volatile)?;
            }
        }
        Ok(())
    }

    /// Makes everything written so far durable on the host (`fdatasync`).
    pub(super) fn flush(&self) -> Result<(), DiskIoError> {
        self.file.sync_data().map_err(DiskIoError::Host)
    }
}

/// The guest-visible serial number: `blk-` and 16 hex digits of a hash of the image's host
/// device and inode numbers, so the same image file gets the same ID on every run (the guest
/// sees it as `/sys/block/vdX/serial` and `/dev/disk/by-id/virtio-<serial>`) without the guest
/// learning the host's device and inode numbers. 20 bytes, the size of the ID.
pub(super) fn serial_for(dev: u64, ino: u64) -> [u8; VIRTIO_BLK_ID_BYTES] {
    // FNV-1a, 64 bits: stable across runs and builds, unlike std's keyed hashers.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in dev.to_le_bytes().into_iter().chain(ino.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let text = format!("blk-{hash:016x}");
    let mut serial = [0u8; VIRTIO_BLK_ID_BYTES];
    serial.copy_from_slice(text.as_bytes());
    serial
}

pub(super) fn open_error(path: &Path, read_only: bool, source: io::Error) -> BlockError {
    let path = path.to_path_buf();
    match (source.kind(), source.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => BlockError::NotFound { path },
        (io::ErrorKind::PermissionDenied, _) | (_, Some(libc::EROFS)) if !read_only => {
            BlockError::NotWritable { path, source }
        }
        (_, Some(libc::EISDIR)) => BlockError::NotAnImage { path },
        _ => BlockError::Open { path, source },
    }
}

/// Takes an advisory `flock` so that two VMs (or two disks of one VM) cannot write one image at
/// once, which would corrupt the filesystem in it. A filesystem without locking support only gets
/// a warning.
fn lock(file: &File, path: &Path, read_only: bool) -> Result<(), BlockError> {
    let operation = if read_only {
        libc::LOCK_SH
    } else {
        libc::LOCK_EX
    } | libc::LOCK_NB;
    // SAFETY: flock on a descriptor `file` owns; it touches no memory.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.kind() == io::ErrorKind::WouldBlock {
        return Err(BlockError::Locked {
            path: path.to_path_buf(),
            read_only,
        });
    }
    warn!(
        "virtio-blk {}: cannot lock the image ({error}); nothing stops another process from \
         writing it while the VM runs",
        path.display()
    );
    Ok(())
}
