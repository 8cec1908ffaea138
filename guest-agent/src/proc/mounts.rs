//! /proc/mounts: which filesystems hold reclaimable page cache.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::read_bounded;

/// One mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub fs_type: String,
}

impl Mount {
    /// Whether the page cache walk visits it: block-device filesystems only. Memory-backed
    /// ones (tmpfs, ramfs, the initramfs rootfs) have no page cache to drop, pseudo ones
    /// (proc, sysfs...) none at all, and network ones (nfs, cifs, virtiofs, 9p) can block a
    /// directory walk for as long as their server is away; their open files are still
    /// candidates through /proc/PID/fd.
    pub fn is_disk_backed(&self) -> bool {
        matches!(
            self.fs_type.as_str(),
            "ext2"
                | "ext3"
                | "ext4"
                | "xfs"
                | "btrfs"
                | "bcachefs"
                | "f2fs"
                | "vfat"
                | "msdos"
                | "exfat"
                | "ntfs"
                | "ntfs3"
                | "hfs"
                | "hfsplus"
                | "jfs"
                | "reiserfs"
                | "nilfs2"
                | "iso9660"
                | "udf"
                | "squashfs"
                | "erofs"
        )
    }
}

/// Reads /proc/mounts.
pub fn read() -> io::Result<Vec<Mount>> {
    Ok(parse(&read_bounded(
        Path::new("/proc/mounts"),
        1024 * 1024,
    )?))
}

/// Parses /proc/mounts content: `device mount_point fs_type options 0 0`, with spaces, tabs,
/// newlines and backslashes in the mount point escaped as octal (`\040`).
pub fn parse(content: &[u8]) -> Vec<Mount> {
    content
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut fields = line
                .split(|b| b.is_ascii_whitespace())
                .filter(|f| !f.is_empty());
            let _device = fields.next()?;
            let mount_point = unescape(fields.next()?);
            let fs_type = std::str::from_utf8(fields.next()?).ok()?.to_string();
            Some(Mount {
                mount_point: PathBuf::from(OsString::from_vec(mount_point)),
                fs_type,
            })
        })
        .collect()
}

fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let digits = &field[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// Where the cgroup v2 hierarchy is mounted (its root is the whole guest).
pub fn cgroup2_root(mounts: &[Mount]) -> Option<&Path> {
    mounts
        .iter()
        .find(|m| m.fs_type == "cgroup2")
        .map(|m| m.mount_point.as_path())
}

/// `statfs` magic numbers of filesystems whose files live in memory: their pages cannot be
/// dropped, only swapped, so they are never page cache candidates. Takes the low 32 bits of
/// `f_type` (whose C type differs between architectures).
pub fn is_memory_backed_magic(magic: u32) -> bool {
    const TMPFS_MAGIC: u32 = 0x0102_1994;
    const RAMFS_MAGIC: u32 = 0x8584_58f6;
    const HUGETLBFS_MAGIC: u32 = 0x9584_58f6;
    matches!(magic, TMPFS_MAGIC | RAMFS_MAGIC | HUGETLBFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"rootfs / rootfs rw 0 0
proc /proc proc rw,relatime 0 0
sysfs /sys sysfs rw,relatime 0 0
devtmpfs /dev devtmpfs rw,relatime,size=12334460k 0 0
tmpfs /dev/shm tmpfs rw,relatime 0 0
/dev/vda / ext4 rw,relatime,discard 0 0
/dev/vdb1 /mnt/my\\040data xfs rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0
server:/export /net nfs4 rw 0 0
";

    #[test]
    fn parses_a_real_sample() {
        let mounts = parse(SAMPLE);
        assert_eq!(mounts.len(), 9);
        let disk: Vec<_> = mounts
            .iter()
            .filter(|m| m.is_disk_backed())
            .map(|m| m.mount_point.clone())
            .collect();
        assert_eq!(
            disk,
            vec![PathBuf::from("/"), PathBuf::from("/mnt/my data")]
        );
        assert_eq!(cgroup2_root(&mounts), Some(Path::new("/sys/fs/cgroup")));
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(b"a\\040b\\011c\\134d"), b"a b\tc\\d".to_vec());
        // Not an escape: left as it is.
        assert_eq!(unescape(b"a\\09b\\"), b"a\\09b\\".to_vec());
        assert_eq!(unescape(b"\\777"), b"\\777".to_vec());
        assert_eq!(unescape(b"\\04"), b"\\04".to_vec());
    }

    #[test]
    fn garbage_does_not_panic() {
        for content in [
            &b""[..],
            b"\n\n",
            b"onlyone",
            b"two fields",
            b"a b \xff\xfe 0 0",
        ] {
            for m in parse(content) {
                let _ = m.is_disk_backed();
            }
        }
        assert!(parse(b"a b \xff\xfe 0 0").is_empty());
    }

    #[test]
    fn memory_backed_magics() {
        assert!(is_memory_backed_magic(0x0102_1994));
        assert!(!is_memory_backed_magic(0xEF53));
    }

    #[test]
    fn reads_this_machine() {
        assert!(!read().unwrap().is_empty());
    }
}
