//! Turning a descriptor chain into a validated request.
//!
//! The device expects the layout every virtio-blk driver uses (Linux, FreeBSD, Windows' viostor,
//! SeaBIOS): the 16-byte `virtio_blk_outhdr` alone in the first, device-readable descriptor; the
//! data in the descriptors between (device-writable for a read or GET_ID, device-readable for a
//! write); the status byte in the last, device-writable descriptor. Anything else is refused
//! rather than guessed at; in particular a header descriptor longer than 16 bytes (data merged
//! into it) is refused instead of having its extra bytes silently ignored.
//!
//! Validation is complete before any I/O: a request that is accepted names only sectors inside
//! the disk and only buffers inside guest memory.

use log::debug;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use ballast_virtio::GuestMemoryMmap;

use super::io::Segment;
use super::{SECTOR_SIZE, SEG_MAX, SIZE_MAX};

/// The size of `virtio_blk_outhdr`: le32 type, le32 reserved (ioprio), le64 sector.
pub(super) const HEADER_SIZE: u32 = 16;
/// The longest chain a driver may build: the header, `SEG_MAX` data buffers, the status.
pub(super) const MAX_CHAIN_LEN: usize = SEG_MAX as usize + 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RequestType {
    /// VIRTIO_BLK_T_IN: read sectors into the data buffers.
    In,
    /// VIRTIO_BLK_T_OUT: write the data buffers to sectors.
    Out,
    /// VIRTIO_BLK_T_FLUSH: make earlier writes durable.
    Flush,
    /// VIRTIO_BLK_T_GET_ID: write the 20-byte device ID into the data buffers.
    GetId,
}

impl std::fmt::Display for RequestType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RequestType::In => "read",
            RequestType::Out => "write",
            RequestType::Flush => "flush",
            RequestType::GetId => "get-id",
        })
    }
}

/// A request that passed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Request {
    pub kind: RequestType,
    /// The first sector (reads and writes only; 0 otherwise).
    pub sector: u64,
    /// The data buffers, in order; zero-length ones are dropped.
    pub data: Vec<Segment>,
    /// The data buffers' total length in bytes.
    pub data_len: u64,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// What the device knows about the disk when it judges a request.
#[derive(Clone, Copy, Debug)]
pub(super) struct DiskLimits {
    pub capacity_sectors: u64,
    pub read_only: bool,
}

/// A chain that is not a request the device will carry out.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    /// Where the answer goes, if the chain has a usable status byte.
    pub status: Option<GuestAddress>,
    pub reason: RefusalReason,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum RefusalReason {
    #[error("request type {0:#x} is not supported")]
    Unsupported(u32),
    #[error("{0}")]
    Invalid(#[from] InvalidRequest),
}

impl RefusalReason {
    /// The status byte the driver gets.
    pub(super) fn status(&self) -> u8 {
        match self {
            RefusalReason::Unsupported(_) => VIRTIO_BLK_S_UNSUPP as u8,
            RefusalReason::Invalid(_) => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// The ways a chain can be malformed or ask for something out of bounds.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum InvalidRequest {
    #[error("the chain has no descriptors (its head index or descriptor table is bad)")]
    Empty,
    #[error("the chain has {0} descriptors, more than the {MAX_CHAIN_LEN} a request may use")]
    TooLong(usize),
    #[error("the last descriptor is device-readable, so there is no status byte to answer in")]
    StatusNotWritable,
    #[error("the last descriptor is empty, so there is no status byte to answer in")]
    StatusEmpty,
    #[error("the status byte at {0:#x} is outside guest memory")]
    StatusOutsideMemory(u64),
    #[error("the chain has a single descriptor: no room for both a header and a status byte")]
    NoHeader,
    #[error("the header descriptor is device-writable; it must be device-readable")]
    HeaderWritable,
    #[error("the header descriptor is {0} bytes; it must hold exactly the 16-byte header")]
    HeaderLength(u32),
    #[error("the header at {0:#x} is outside guest memory")]
    HeaderOutsideMemory(u64),
    #[error("a {0} request carries no data buffer")]
    NoData(RequestType),
    #[error(
        "data descriptor {index} of a {kind} request is device-{found}; it must be \
         device-{wanted}"
    )]
    DataDirection {
        kind: RequestType,
        index: usize,
        found: &'static str,
        wanted: &'static str,
    },
    #[error("data descriptor {index} is {len} bytes, more than size_max ({SIZE_MAX})")]
    SegmentTooLarge { index: usize, len: u32 },
    #[error("data buffer {addr:#x}+{len:#x} is not all in guest memory")]
    DataOutsideMemory { addr: u64, len: u32 },
    #[error("a {kind} of {len} bytes is not a whole number of 512-byte sectors")]
    NotWholeSectors { kind: RequestType, len: u64 },
    #[error(
        "a {kind} of {sectors} sectors from sector {sector} goes past the end of the disk \
         ({capacity} sectors)"
    )]
    PastEnd {
        kind: RequestType,
        sector: u64,
        sectors: u64,
        capacity: u64,
    },
    #[error("a write to a read-only disk")]
    ReadOnly,
}

/// Reads a chain and checks it, before any I/O.
// Long on purpose: one walk down the chain, header, data buffers, status byte, each checked
// against the guest's memory and the disk before the next is looked at.
pub(super) fn parse(
    mem: &GuestMemoryMmap,
    chain: impl Iterator<Item = Descriptor>,
    limits: DiskLimits,
) -> Result<Request, Refusal> {
    // Keep at most one chain's worth; past that, only the last descriptor matters (it may still
    // be a status byte to answer in). The chain iterator ends by itself: the queue size bounds
    // a direct chain, and the indirect table's size an indirect one.
    let mut descs: Vec<Descriptor> = Vec::with_capacity(4);
    let mut count = 0usize;
    let mut last = None;
    for desc in chain {
        count += 1;
        if descs.len() < MAX_CHAIN_LEN {
            descs.push(desc);
        }
        last = Some(desc);
    }
    let Some(last) = last else {
        return Err(Refusal {
            status: None,
            reason: InvalidRequest::Empty.into(),
        });
    };

    let status = status_address(mem, &last);
    let answer_at = status.as_ref().ok().copied();
    let refuse = |reason: RefusalReason| Refusal {
        status: answer_at,
        reason,
    };
    let status = status.map_err(|e| refuse(e.into()))?;
    if count > MAX_CHAIN_LEN {
        return Err(refuse(InvalidRequest::TooLong(count).into()));
    }
    // The header, the data buffers, and the status descriptor (`last`).
    let [header, data @ .., _status] = descs.as_slice() else {
        return Err(refuse(InvalidRequest::NoHeader.into()));
    };

    let (request_type, sector) = read_header(mem, header).map_err(|e| refuse(e.into()))?;
    let kind = match request_type {
        VIRTIO_BLK_T_IN => RequestType::In,
        VIRTIO_BLK_T_OUT => RequestType::Out,
        VIRTIO_BLK_T_FLUSH => RequestType::Flush,
        VIRTIO_BLK_T_GET_ID => RequestType::GetId,
        other => return Err(refuse(RefusalReason::Unsupported(other))),
    };

    if kind == RequestType::Flush {
        // A flush has no data and no sector (the spec has the driver set it to 0; the device
        // ignores it). Stray buffers are not read or written either.
        if !data.is_empty() {
            debug!(
                "virtio-blk: a flush came with {} data buffers; ignored",
                data.len()
            );
        }
        return Ok(Request {
            kind,
            sector: 0,
            data: Vec::new(),
            data_len: 0,
            status,
        });
    }

    let (segments, data_len) = check_data(mem, kind, data).map_err(|e| refuse(e.into()))?;
    if kind == RequestType::GetId {
        return Ok(Request {
            kind,
            sector: 0,
            data: segments,
            data_len,
            status,
        });
    }

    check_range(kind, sector, data_len, limits).map_err(|e| refuse(e.into()))?;
    Ok(Request {
        kind,
        sector,
        data: segments,
        data_len,
        status,
    })
}

fn status_address(
    mem: &GuestMemoryMmap,
    desc: &Descriptor,
) -> Result<GuestAddress, InvalidRequest> {
    if !desc.is_write_only() {
        return Err(InvalidRequest::StatusNotWritable);
    }
    if desc.len() == 0 {
        return Err(InvalidRequest::StatusEmpty);
    }
    // Linux's status descriptor is exactly one byte; the answer goes in its first byte.
    if !mem.check_range(desc.addr(), 1) {
        return Err(InvalidRequest::StatusOutsideMemory(desc.addr().raw_value()));
    }
    Ok(desc.addr())
}

/// Returns the header's (type, sector).
fn read_header(mem: &GuestMemoryMmap, desc: &Descriptor) -> Result<(u32, u64), InvalidRequest> {
    if desc.is_write_only() {
        return Err(InvalidRequest::HeaderWritable);
    }
    if desc.len() != HEADER_SIZE {
        return Err(InvalidRequest::HeaderLength(desc.len()));
    }
    let mut header = [0u8; HEADER_SIZE as usize];
    mem.read_slice(&mut header, desc.addr())
        .map_err(|_| InvalidRequest::HeaderOutsideMemory(desc.addr().raw_value()))?;
    let request_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    // header[4..8] is `ioprio` (formerly `reserved`): a hint the device has no use for.
    let mut sector = [0u8; 8];
    sector.copy_from_slice(&header[8..16]);
    Ok((request_type, u64::from_le_bytes(sector)))
}

/// Checks the data descriptors of a read, write or GET_ID; returns the non-empty buffers and
/// their total length.
fn check_data(
    mem: &GuestMemoryMmap,
    kind: RequestType,
    data: &[Descriptor],
) -> Result<(Vec<Segment>, u64), InvalidRequest> {
    if data.is_empty() {
        return Err(InvalidRequest::NoData(kind));
    }
    let device_writes = kind != RequestType::Out;
    let mut segments = Vec::with_capacity(data.len());
    let mut total = 0u64;
    for (index, desc) in data.iter().enumerate() {
        if desc.is_write_only() != device_writes {
            let (found, wanted) = if device_writes {
                ("readable", "writable")
            } else {
                ("writable", "readable")
            };
            return Err(InvalidRequest::DataDirection {
                kind,
                index,
                found,
                wanted,
            });
        }
        let len = desc.len();
        if len > SIZE_MAX {
            return Err(InvalidRequest::SegmentTooLarge { index, len });
        }
        let addr = desc.addr();
        // `check_range` also fails a range that wraps around the top of the address space.
        if !mem.check_range(addr, len as usize) {
            return Err(InvalidRequest::DataOutsideMemory {
                addr: addr.raw_value(),
                len,
            });
        }
        if len > 0 {
            segments.push(Segment { addr, len });
        }
        total += u64::from(len);
    }
    Ok((segments, total))
}

/// Checks that a read or write covers whole sectors, all inside the disk.
fn check_range(
    kind: RequestType,
    sector: u64,
    len: u64,
    limits: DiskLimits,
) -> Result<(), InvalidRequest> {
    if !len.is_multiple_of(SECTOR_SIZE) {
        return Err(InvalidRequest::NotWholeSectors { kind, len });
    }
    let sectors = len / SECTOR_SIZE;
    let past_end = InvalidRequest::PastEnd {
        kind,
        sector,
        sectors,
        capacity: limits.capacity_sectors,
    };
    match sector.checked_add(sectors) {
        Some(end) if end <= limits.capacity_sectors => {}
        _ => return Err(past_end),
    }
    if kind == RequestType::Out && limits.read_only {
        return Err(InvalidRequest::ReadOnly);
    }
    Ok(())
}

/// The byte offset of `sector` in the image; only called for sectors `check_range` accepted, so
/// it cannot overflow (the capacity is a file size divided by 512).
pub(super) fn byte_offset(sector: u64) -> u64 {
    sector * SECTOR_SIZE
}
