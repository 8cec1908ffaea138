//! The vsock packet header (`struct virtio_vsock_hdr`, virtio 1.2, 5.10.6) and the protocol's
//! constants. Descriptor chains are parsed by the `virtio-vsock` crate; this file turns what it
//! finds into plain values, so the rest of the device never touches guest memory twice (a guest
//! could change a header between two reads).

use std::fmt;

use virtio_queue::DescriptorChain;
use virtio_vsock::packet::{Error as PacketError, VsockPacket, PKT_HEADER_SIZE};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::Bytes;

use ballast_virtio::GuestMemoryMmap;

use super::MAX_PKT_LEN;

/// The header's size: every packet starts with one.
pub const HEADER_SIZE: usize = PKT_HEADER_SIZE;

pub const TYPE_STREAM: u16 = 1;
#[cfg(test)]
pub const TYPE_SEQPACKET: u16 = 2;

pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// A packet header as plain values.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    /// The header as it sits in guest memory (little endian, packed).
    pub fn to_bytes(self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Self {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap_or_default());
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    fn of<B: BitmapSlice>(pkt: &VsockPacket<'_, B>) -> Self {
        Header {
            src_cid: pkt.src_cid(),
            dst_cid: pkt.dst_cid(),
            src_port: pkt.src_port(),
            dst_port: pkt.dst_port(),
            len: pkt.len(),
            type_: pkt.type_(),
            op: pkt.op(),
            flags: pkt.flags(),
            buf_alloc: pkt.buf_alloc(),
            fwd_cnt: pkt.fwd_cnt(),
        }
    }
}

pub fn op_name(op: u16) -> &'static str {
    match op {
        OP_REQUEST => "REQUEST",
        OP_RESPONSE => "RESPONSE",
        OP_RST => "RST",
        OP_SHUTDOWN => "SHUTDOWN",
        OP_RW => "RW",
        OP_CREDIT_UPDATE => "CREDIT_UPDATE",
        OP_CREDIT_REQUEST => "CREDIT_REQUEST",
        _ => "unknown op",
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}:{} -> {}:{} type {} len {} flags {:#x} buf_alloc {} fwd_cnt {}",
            op_name(self.op),
            self.src_cid,
            self.src_port,
            self.dst_cid,
            self.dst_port,
            self.type_,
            self.len,
            self.flags,
            self.buf_alloc,
            self.fwd_cnt
        )
    }
}

/// A tx chain the device cannot use.
#[derive(Debug)]
pub struct TxRefusal {
    pub error: PacketError,
    /// The header, if the chain's first descriptor holds a readable one: the device then knows
    /// which connection lost data and resets it.
    pub header: Option<Header>,
}

/// Reads the packet a tx chain holds: its header, and its payload into `data[..header.len]`.
/// `data` must hold `MAX_PKT_LEN` bytes.
pub fn read_tx(
    mem: &GuestMemoryMmap,
    mut chain: DescriptorChain<&GuestMemoryMmap>,
    data: &mut [u8],
) -> Result<Header, TxRefusal> {
    let probe = chain.clone();
    let refuse = |error| TxRefusal {
        error,
        header: peek_header(mem, probe.clone()),
    };
    let pkt =
        VsockPacket::from_tx_virtq_chain(mem, &mut chain, MAX_PKT_LEN as u32).map_err(refuse)?;
    let header = Header::of(&pkt);
    if let Some(slice) = pkt.data_slice() {
        let len = slice.len();
        let Some(dst) = data.get_mut(..len) else {
            // The crate bounds the payload by MAX_PKT_LEN; this is a second line.
            return Err(refuse(PacketError::InvalidHeaderLen(header.len)));
        };
        slice
            .read_slice(dst, 0)
            .map_err(|e| refuse(PacketError::InvalidVolatileAccess(e)))?;
    }
    Ok(header)
}

/// The header in a chain's first descriptor, if it is device-readable and big enough.
fn peek_header(
    mem: &GuestMemoryMmap,
    mut chain: DescriptorChain<&GuestMemoryMmap>,
) -> Option<Header> {
    let head = chain.next()?;
    if head.is_write_only() || (head.len() as usize) < HEADER_SIZE {
        return None;
    }
    let mut bytes = [0u8; HEADER_SIZE];
    mem.read_slice(&mut bytes, head.addr()).ok()?;
    Some(Header::from_bytes(&bytes))
}
