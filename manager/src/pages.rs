//! The guest page: the one unit of memory inside ballast. Limits, residency, working sets, agent
//! requests and balloon targets are counted in 4 KiB guest pages; bytes and MiB appear only at the
//! edges (the command line, the REST API, the metrics, log messages), converted here.
//!
//! 4 KiB is the unit of KVM's dirty log, of vm-memory's dirty bitmap as ballast builds it, of
//! `mincore` on x86_64, and of the PFNs the virtio balloon exchanges (which are 4 KiB whatever
//! the guest's own page size).

/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// Bytes in a guest page.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Guest pages in one MiB.
pub const PAGES_PER_MIB: u64 = (1 << 20) >> PAGE_SHIFT;

/// Whole guest pages in `bytes` (rounded down).
pub const fn from_bytes(bytes: u64) -> u64 {
    bytes >> PAGE_SHIFT
}

/// Whole guest pages in `kib` KiB (as /proc/meminfo reports), rounded down.
pub const fn from_kib(kib: u64) -> u64 {
    kib >> (PAGE_SHIFT - 10)
}

/// Bytes in `pages` guest pages (saturating: page counts from the guest are untrusted).
pub const fn to_bytes(pages: u64) -> u64 {
    pages.saturating_mul(PAGE_SIZE)
}

/// Guest pages in `mib` MiB (saturating).
pub const fn from_mib(mib: u64) -> u64 {
    mib.saturating_mul(PAGES_PER_MIB)
}

/// Whole MiB in `pages` guest pages (rounded down).
pub const fn to_mib(pages: u64) -> u64 {
    pages / PAGES_PER_MIB
}

/// A page count for people: "39000 pages (152.3 MiB)", as log messages show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown(pub u64);

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = self.0 as f64 / PAGES_PER_MIB as f64;
        if self.0 == 1 {
            write!(f, "1 page ({mib:.1} MiB)")
        } else {
            write!(f, "{} pages ({mib:.1} MiB)", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_down_and_saturate() {
        assert_eq!(PAGE_SIZE, 4096);
        assert_eq!(PAGES_PER_MIB, 256);
        assert_eq!(from_bytes(4095), 0);
        assert_eq!(from_bytes(512 << 20), 512 * 256);
        assert_eq!(to_bytes(3), 12_288);
        assert_eq!(to_bytes(u64::MAX), u64::MAX);
        assert_eq!(from_mib(192), 49_152);
        assert_eq!(from_mib(u64::MAX), u64::MAX);
        assert_eq!(to_mib(511), 1);
        assert_eq!(from_kib(4095), 1023);
        assert_eq!(from_kib(u64::MAX), u64::MAX / 4);
    }
}
