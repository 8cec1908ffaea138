//! /proc/meminfo.

use std::io;
use std::path::Path;

use super::{key_number, read_bounded};
use crate::protocol::MemInfo;

/// Reads and parses /proc/meminfo.
pub fn read() -> io::Result<MemInfo> {
    Ok(parse(&read_bounded(Path::new("/proc/meminfo"), 64 * 1024)?))
}

/// Parses the content of /proc/meminfo; fields it lacks stay `None`.
pub fn parse(content: &[u8]) -> MemInfo {
    let mut info = MemInfo::default();
    for line in content.split(|&b| b == b'\n') {
        let Some((key, kib)) = key_number(line) else {
            continue;
        };
        let field = match key {
            b"MemTotal" => &mut info.mem_total_kib,
            b"MemFree" => &mut info.mem_free_kib,
            b"MemAvailable" => &mut info.mem_available_kib,
            b"Buffers" => &mut info.buffers_kib,
            b"Cached" => &mut info.cached_kib,
            b"SwapCached" => &mut info.swap_cached_kib,
            b"Active(anon)" => &mut info.active_anon_kib,
            b"Inactive(anon)" => &mut info.inactive_anon_kib,
            b"Active(file)" => &mut info.active_file_kib,
            b"Inactive(file)" => &mut info.inactive_file_kib,
            b"AnonPages" => &mut info.anon_pages_kib,
            b"Shmem" => &mut info.shmem_kib,
            b"SwapTotal" => &mut info.swap_total_kib,
            b"SwapFree" => &mut info.swap_free_kib,
            b"Dirty" => &mut info.dirty_kib,
            b"Writeback" => &mut info.writeback_kib,
            _ => continue,
        };
        // The first occurrence wins, as in the kernel's own file.
        field.get_or_insert(kib);
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"MemTotal:       24684084 kB
MemFree:        21491048 kB
MemAvailable:   24012308 kB
Buffers:            7176 kB
Cached:          2660140 kB
SwapCached:            0 kB
Active:          1347764 kB
Inactive:        1547720 kB
Active(anon):       1560 kB
Inactive(anon):   235480 kB
Active(file):    1346204 kB
Inactive(file):  1312240 kB
Unevictable:       15244 kB
Mlocked:           14408 kB
SwapTotal:       1048572 kB
SwapFree:         948572 kB
Zswap:                 0 kB
Dirty:               280 kB
Writeback:             4 kB
AnonPages:        243380 kB
Mapped:            41288 kB
Shmem:              8872 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
";

    #[test]
    fn parses_a_real_sample() {
        let info = parse(SAMPLE);
        assert_eq!(info.mem_total_kib, Some(24684084));
        assert_eq!(info.mem_available_kib, Some(24012308));
        assert_eq!(info.cached_kib, Some(2660140));
        assert_eq!(info.active_file_kib, Some(1346204));
        assert_eq!(info.inactive_anon_kib, Some(235480));
        assert_eq!(info.dirty_kib, Some(280));
        assert_eq!(info.writeback_kib, Some(4));
        assert_eq!(info.file_kib(), Some(1346204 + 1312240));
        assert_eq!(info.anon_kib(), Some(1560 + 235480));
        assert_eq!(info.swap_used_kib(), Some(100000));
    }

    #[test]
    fn old_kernels_lack_fields() {
        let info = parse(b"MemTotal: 1000 kB\nMemFree: 10 kB\n");
        assert_eq!(info.mem_total_kib, Some(1000));
        assert_eq!(info.mem_available_kib, None);
        assert_eq!(info.file_kib(), None);
    }

    #[test]
    fn garbage_does_not_panic() {
        for content in [
            &b""[..],
            b"\n\n\n",
            b"MemTotal:",
            b"MemTotal: lots kB",
            b"MemTotal: -5 kB",
            b"MemTotal: 99999999999999999999999 kB",
            b"\xff\xfe\x00MemFree: 1",
            b":::: 1 2 3",
            b"Active(file): 18446744073709551615 kB\nInactive(file): 18446744073709551615 kB",
        ] {
            let info = parse(content);
            let _ = (info.file_kib(), info.anon_kib(), info.swap_used_kib());
        }
        let info = parse(b"Active(file): 18446744073709551615 kB\nInactive(file): 5 kB");
        assert_eq!(info.file_kib(), Some(u64::MAX));
    }

    #[test]
    fn reads_this_machine() {
        let info = read().unwrap();
        assert!(info.mem_total_kib.unwrap() > 0);
        assert!(info.swap_total_kib.is_some());
    }
}
