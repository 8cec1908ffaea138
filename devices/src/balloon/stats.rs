//! The guest's memory statistics (virtio 1.2, 5.5.6.3): the driver sends a buffer of packed
//! `(le16 tag, le64 value)` pairs on the stats queue.

/// Bytes of one packed statistic: le16 tag + le64 value.
pub const STAT_SIZE: usize = 10;

// Tags, in the spec's numbering (Linux's include/uapi/linux/virtio_balloon.h).
pub const VIRTIO_BALLOON_S_SWAP_IN: u16 = 0;
pub const VIRTIO_BALLOON_S_SWAP_OUT: u16 = 1;
pub const VIRTIO_BALLOON_S_MAJFLT: u16 = 2;
pub const VIRTIO_BALLOON_S_MINFLT: u16 = 3;
pub const VIRTIO_BALLOON_S_MEMFREE: u16 = 4;
pub const VIRTIO_BALLOON_S_MEMTOT: u16 = 5;
pub const VIRTIO_BALLOON_S_AVAIL: u16 = 6;
pub const VIRTIO_BALLOON_S_CACHES: u16 = 7;
pub const VIRTIO_BALLOON_S_HTLB_PGALLOC: u16 = 8;
pub const VIRTIO_BALLOON_S_HTLB_PGFAIL: u16 = 9;
pub const VIRTIO_BALLOON_S_OOM_KILL: u16 = 10;
pub const VIRTIO_BALLOON_S_ALLOC_STALL: u16 = 11;
pub const VIRTIO_BALLOON_S_ASYNC_SCAN: u16 = 12;
pub const VIRTIO_BALLOON_S_DIRECT_SCAN: u16 = 13;
pub const VIRTIO_BALLOON_S_ASYNC_RECLAIM: u16 = 14;
pub const VIRTIO_BALLOON_S_DIRECT_RECLAIM: u16 = 15;

/// The last statistics the guest sent. A tag the guest did not send is `None`. Memory amounts
/// are in bytes, event counts are counts since the guest booted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BalloonStats {
    /// Memory swapped in (bytes).
    pub swap_in: Option<u64>,
    /// Memory swapped out (bytes).
    pub swap_out: Option<u64>,
    /// Major page faults.
    pub major_faults: Option<u64>,
    /// Minor page faults.
    pub minor_faults: Option<u64>,
    /// Memory not used at all (bytes).
    pub free_memory: Option<u64>,
    /// Memory the guest can use (bytes); falls as the balloon grows.
    pub total_memory: Option<u64>,
    /// Memory available for new work without swapping (bytes), the guest's estimate.
    pub available_memory: Option<u64>,
    /// Memory in the page cache and other reclaimable caches (bytes).
    pub disk_caches: Option<u64>,
    /// Successful hugetlb page allocations.
    pub hugetlb_allocations: Option<u64>,
    /// Failed hugetlb page allocations.
    pub hugetlb_failures: Option<u64>,
    /// OOM kills.
    pub oom_kills: Option<u64>,
    /// Allocation stalls (direct reclaim entered).
    pub alloc_stalls: Option<u64>,
    /// Pages scanned by kswapd.
    pub async_scans: Option<u64>,
    /// Pages scanned by direct reclaim.
    pub direct_scans: Option<u64>,
    /// Pages reclaimed by kswapd.
    pub async_reclaims: Option<u64>,
    /// Pages reclaimed by direct reclaim.
    pub direct_reclaims: Option<u64>,
}

impl BalloonStats {
    /// Reads one stats buffer, whose length must be a multiple of `STAT_SIZE` (checked by the
    /// caller; a trailing partial record is ignored). Returns the statistics and how many
    /// records had a tag this device does not know: those are skipped, so a newer guest's
    /// extra tags do not spoil the ones we understand. A tag sent twice keeps its last value.
    pub fn parse(buffer: &[u8]) -> (Self, u64) {
        let mut stats = BalloonStats::default();
        let mut unknown = 0;
        for record in buffer.chunks_exact(STAT_SIZE) {
            let tag = u16::from_le_bytes([record[0], record[1]]);
            let mut value = [0u8; 8];
            value.copy_from_slice(&record[2..STAT_SIZE]);
            match stats.field(tag) {
                Some(field) => *field = Some(u64::from_le_bytes(value)),
                None => unknown += 1,
            }
        }
        (stats, unknown)
    }

    /// The value last sent for `tag`, if the tag is known and was sent.
    pub fn get(&self, tag: u16) -> Option<u64> {
        let by_tag = [
            self.swap_in,
            self.swap_out,
            self.major_faults,
            self.minor_faults,
            self.free_memory,
            self.total_memory,
            self.available_memory,
            self.disk_caches,
            self.hugetlb_allocations,
            self.hugetlb_failures,
            self.oom_kills,
            self.alloc_stalls,
            self.async_scans,
            self.direct_scans,
            self.async_reclaims,
            self.direct_reclaims,
        ];
        by_tag.get(usize::from(tag)).copied().flatten()
    }

    fn field(&mut self, tag: u16) -> Option<&mut Option<u64>> {
        Some(match tag {
            VIRTIO_BALLOON_S_SWAP_IN => &mut self.swap_in,
            VIRTIO_BALLOON_S_SWAP_OUT => &mut self.swap_out,
            VIRTIO_BALLOON_S_MAJFLT => &mut self.major_faults,
            VIRTIO_BALLOON_S_MINFLT => &mut self.minor_faults,
            VIRTIO_BALLOON_S_MEMFREE => &mut self.free_memory,
            VIRTIO_BALLOON_S_MEMTOT => &mut self.total_memory,
            VIRTIO_BALLOON_S_AVAIL => &mut self.available_memory,
            VIRTIO_BALLOON_S_CACHES => &mut self.disk_caches,
            VIRTIO_BALLOON_S_HTLB_PGALLOC => &mut self.hugetlb_allocations,
            VIRTIO_BALLOON_S_HTLB_PGFAIL => &mut self.hugetlb_failures,
            VIRTIO_BALLOON_S_OOM_KILL => &mut self.oom_kills,
            VIRTIO_BALLOON_S_ALLOC_STALL => &mut self.alloc_stalls,
            VIRTIO_BALLOON_S_ASYNC_SCAN => &mut self.async_scans,
            VIRTIO_BALLOON_S_DIRECT_SCAN => &mut self.direct_scans,
            VIRTIO_BALLOON_S_ASYNC_RECLAIM => &mut self.async_reclaims,
            VIRTIO_BALLOON_S_DIRECT_RECLAIM => &mut self.direct_reclaims,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(stats: &[(u16, u64)]) -> Vec<u8> {
        stats
            .iter()
            .flat_map(|(tag, value)| {
                tag.to_le_bytes()
                    .into_iter()
                    .chain(value.to_le_bytes())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn every_spec_tag_is_known() {
        let all: Vec<(u16, u64)> = (0..16).map(|tag| (tag, 1000 + u64::from(tag))).collect();
        let (stats, unknown) = BalloonStats::parse(&encode(&all));
        assert_eq!(unknown, 0);
        for (tag, value) in all {
            assert_eq!(stats.get(tag), Some(value), "tag {tag}");
        }
        assert_eq!(stats.total_memory, Some(1005));
        assert_eq!(stats.direct_reclaims, Some(1015));
    }

    #[test]
    fn unknown_tags_are_counted_and_skipped() {
        let buffer = encode(&[
            (VIRTIO_BALLOON_S_MEMFREE, 4096),
            (16, 7),
            (0xffff, 8),
            (VIRTIO_BALLOON_S_OOM_KILL, 3),
        ]);
        let (stats, unknown) = BalloonStats::parse(&buffer);
        assert_eq!(unknown, 2);
        assert_eq!(stats.free_memory, Some(4096));
        assert_eq!(stats.oom_kills, Some(3));
        assert_eq!(stats.get(16), None);
        assert_eq!(stats.swap_in, None);
    }

    #[test]
    fn an_empty_buffer_gives_empty_stats() {
        assert_eq!(BalloonStats::parse(&[]), (BalloonStats::default(), 0));
    }
}
