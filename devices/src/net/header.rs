//! `virtio_net_hdr_v1` (virtio 1.2, 5.1.6): the 12 bytes in front of every frame, in both
//! directions and on the TAP (whose header size the device sets to 12). All fields are
//! little-endian.
//!
//! The guest's header on a tx frame asks the host kernel for work (a checksum, a
//! segmentation); only what the driver negotiated may be asked, and the offsets must lie
//! inside the frame. The host's header on an rx frame is checked against what the driver
//! negotiated too, in case the TAP holds frames from before a reset that changed the
//! offloads.

use std::fmt;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
};

use super::VNET_HDR_LEN;

/// Where `num_buffers` sits in the header.
pub(super) const NUM_BUFFERS_OFFSET: usize = 10;

const NEEDS_CSUM: u8 = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
const DATA_VALID: u8 = VIRTIO_NET_HDR_F_DATA_VALID as u8;
const GSO_NONE: u8 = VIRTIO_NET_HDR_GSO_NONE as u8;
const GSO_TCPV4: u8 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
const GSO_TCPV6: u8 = VIRTIO_NET_HDR_GSO_TCPV6 as u8;

/// A parsed header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHeader {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    pub num_buffers: u16,
}

/// Why a header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Flags other than NEEDS_CSUM (and DATA_VALID from the host).
    Flags(u8),
    /// NEEDS_CSUM without the checksum feature negotiated for that direction.
    ChecksumNotNegotiated,
    /// A segmentation type that is unknown or not negotiated for that direction.
    Gso(u8),
    /// A segmentation without NEEDS_CSUM, or with a segment size of 0.
    GsoWithoutChecksum,
    GsoSizeZero,
    /// The checksum's place (`csum_start + csum_offset`, 2 bytes) outside the frame.
    ChecksumOutside {
        start: u16,
        offset: u16,
        frame_len: usize,
    },
    /// `hdr_len` longer than the frame.
    HdrLenOutside {
        hdr_len: u16,
        frame_len: usize,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Flags(flags) => write!(f, "unknown header flags {flags:#x}"),
            HeaderError::ChecksumNotNegotiated => {
                write!(f, "a partial checksum without checksum offload negotiated")
            }
            HeaderError::Gso(gso) => write!(
                f,
                "segmentation type {gso:#x}, which is unknown or was not negotiated"
            ),
            HeaderError::GsoWithoutChecksum => {
                write!(f, "a segmentation without a partial checksum")
            }
            HeaderError::GsoSizeZero => write!(f, "a segmentation into segments of 0 bytes"),
            HeaderError::ChecksumOutside {
                start,
                offset,
                frame_len,
            } => write!(
                f,
                "a checksum at {start}+{offset}, outside the {frame_len}-byte frame"
            ),
            HeaderError::HdrLenOutside { hdr_len, frame_len } => write!(
                f,
                "a {hdr_len}-byte header length in a {frame_len}-byte frame"
            ),
        }
    }
}

/// Which direction a header travels, and so which features allow what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Guest to host (CSUM, HOST_TSO4/6).
    Tx,
    /// Host to guest (GUEST_CSUM, GUEST_TSO4/6).
    Rx,
}

fn acked(features: u64, bit: u32) -> bool {
    features & (1 << bit) != 0
}

impl VnetHeader {
    pub fn parse(bytes: &[u8; VNET_HDR_LEN]) -> Self {
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        VnetHeader {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(NUM_BUFFERS_OFFSET),
        }
    }

    #[cfg(test)]
    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut bytes = [0u8; VNET_HDR_LEN];
        bytes[0] = self.flags;
        bytes[1] = self.gso_type;
        for (i, value) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
            self.num_buffers,
        ]
        .into_iter()
        .enumerate()
        {
            bytes[2 + 2 * i..4 + 2 * i].copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    /// Checks that the header asks only for what `features` (the driver's acked features)
    /// allow in `direction`, with its offsets inside a frame of `frame_len` bytes (the header
    /// not counted).
    pub fn check(
        &self,
        features: u64,
        direction: Direction,
        frame_len: usize,
    ) -> Result<(), HeaderError> {
        let (csum, tso4, tso6, allowed_flags) = match direction {
            Direction::Tx => (
                VIRTIO_NET_F_CSUM,
                VIRTIO_NET_F_HOST_TSO4,
                VIRTIO_NET_F_HOST_TSO6,
                NEEDS_CSUM,
            ),
            // The host kernel may also say it checked the checksum already.
            Direction::Rx => (
                VIRTIO_NET_F_GUEST_CSUM,
                VIRTIO_NET_F_GUEST_TSO4,
                VIRTIO_NET_F_GUEST_TSO6,
                NEEDS_CSUM | DATA_VALID,
            ),
        };
        if self.flags & !allowed_flags != 0 {
            return Err(HeaderError::Flags(self.flags));
        }
        let needs_csum = self.flags & NEEDS_CSUM != 0;
        if needs_csum && !acked(features, csum) {
            return Err(HeaderError::ChecksumNotNegotiated);
        }
        match self.gso_type {
            GSO_NONE => {}
            GSO_TCPV4 if acked(features, tso4) => {}
            GSO_TCPV6 if acked(features, tso6) => {}
            other => return Err(HeaderError::Gso(other)),
        }
        if self.gso_type != GSO_NONE {
            if !needs_csum {
                return Err(HeaderError::GsoWithoutChecksum);
            }
            if self.gso_size == 0 {
                return Err(HeaderError::GsoSizeZero);
            }
        }
        if needs_csum
            && usize::from(self.csum_start) + usize::from(self.csum_offset) + 2 > frame_len
        {
            return Err(HeaderError::ChecksumOutside {
                start: self.csum_start,
                offset: self.csum_offset,
                frame_len,
            });
        }
        if usize::from(self.hdr_len) > frame_len {
            return Err(HeaderError::HdrLenOutside {
                hdr_len: self.hdr_len,
                frame_len,
            });
        }
        Ok(())
    }
}

/// A TSO frame as Linux hands it over: TCP over IPv4, 1448-byte segments, the checksum left
/// for the host (at the TCP header's checksum field). For the tests here and in `net/tests`.
#[cfg(test)]
pub(super) fn tso4_header() -> VnetHeader {
    VnetHeader {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 66,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u64 = (1 << VIRTIO_NET_F_CSUM)
        | (1 << VIRTIO_NET_F_GUEST_CSUM)
        | (1 << VIRTIO_NET_F_HOST_TSO4)
        | (1 << VIRTIO_NET_F_HOST_TSO6)
        | (1 << VIRTIO_NET_F_GUEST_TSO4)
        | (1 << VIRTIO_NET_F_GUEST_TSO6);

    #[test]
    fn headers_read_back() {
        let header = VnetHeader {
            num_buffers: 3,
            ..tso4_header()
        };
        let bytes = header.to_bytes();
        assert_eq!(bytes, [1, 1, 66, 0, 0xa8, 5, 34, 0, 16, 0, 3, 0]);
        assert_eq!(VnetHeader::parse(&bytes), header);
    }

    #[test]
    fn offloads_need_their_features_in_their_direction() {
        let plain = VnetHeader::default();
        for direction in [Direction::Tx, Direction::Rx] {
            assert_eq!(plain.check(0, direction, 60), Ok(()));
            assert_eq!(tso4_header().check(ALL, direction, 9000), Ok(()));
        }
        let tx_only = (1 << VIRTIO_NET_F_CSUM) | (1 << VIRTIO_NET_F_HOST_TSO4);
        assert_eq!(tso4_header().check(tx_only, Direction::Tx, 9000), Ok(()));
        assert_eq!(
            tso4_header().check(tx_only, Direction::Rx, 9000),
            Err(HeaderError::ChecksumNotNegotiated)
        );
        let csum_only = VnetHeader {
            gso_type: GSO_NONE,
            gso_size: 0,
            ..tso4_header()
        };
        assert_eq!(
            csum_only.check(1 << VIRTIO_NET_F_CSUM, Direction::Tx, 100),
            Ok(())
        );
        let v6 = VnetHeader {
            gso_type: GSO_TCPV6,
            ..tso4_header()
        };
        assert_eq!(
            v6.check(tx_only, Direction::Tx, 9000),
            Err(HeaderError::Gso(GSO_TCPV6))
        );
        let data_valid = VnetHeader {
            flags: DATA_VALID,
            ..VnetHeader::default()
        };
        assert_eq!(data_valid.check(ALL, Direction::Rx, 60), Ok(()));
        assert_eq!(
            data_valid.check(ALL, Direction::Tx, 60),
            Err(HeaderError::Flags(DATA_VALID))
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let check = |h: VnetHeader, len| h.check(ALL, Direction::Tx, len);
        // UDP fragmentation offload, ECN, and an unknown type: none offered.
        for gso in [3, GSO_TCPV4 | 0x80, 9] {
            let h = VnetHeader {
                gso_type: gso,
                ..tso4_header()
            };
            assert_eq!(check(h, 9000), Err(HeaderError::Gso(gso)));
        }
        let h = VnetHeader {
            flags: 0,
            ..tso4_header()
        };
        assert_eq!(check(h, 9000), Err(HeaderError::GsoWithoutChecksum));
        let h = VnetHeader {
            gso_size: 0,
            ..tso4_header()
        };
        assert_eq!(check(h, 9000), Err(HeaderError::GsoSizeZero));
        assert_eq!(
            check(tso4_header(), 51),
            Err(HeaderError::ChecksumOutside {
                start: 34,
                offset: 16,
                frame_len: 51
            })
        );
        assert_eq!(
            check(tso4_header(), 52),
            Err(HeaderError::HdrLenOutside {
                hdr_len: 66,
                frame_len: 52
            })
        );
        let h = VnetHeader {
            flags: 0x80,
            ..VnetHeader::default()
        };
        assert_eq!(check(h, 60), Err(HeaderError::Flags(0x80)));
        assert!(HeaderError::Gso(3).to_string().contains("0x3"));
    }
}
