//! /proc/vmstat.

use std::io;
use std::path::Path;

use super::{key_number, read_bounded};
use crate::protocol::VmStat;

/// Reads and parses /proc/vmstat.
pub fn read() -> io::Result<VmStat> {
    Ok(parse(&read_bounded(Path::new("/proc/vmstat"), 256 * 1024)?))
}

/// Parses the content of /proc/vmstat; counters it lacks stay `None`.
pub fn parse(content: &[u8]) -> VmStat {
    let mut stat = VmStat::default();
    let mut old_refault = None;
    for line in content.split(|&b| b == b'\n') {
        let Some((key, value)) = key_number(line) else {
            continue;
        };
        let field = match key {
            b"pgscan_kswapd" => &mut stat.pgscan_kswapd,
            b"pgscan_direct" => &mut stat.pgscan_direct,
            b"pgsteal_kswapd" => &mut stat.pgsteal_kswapd,
            b"pgsteal_direct" => &mut stat.pgsteal_direct,
            b"pswpin" => &mut stat.pswpin,
            b"pswpout" => &mut stat.pswpout,
            b"pgmajfault" => &mut stat.pgmajfault,
            b"workingset_refault_anon" => &mut stat.workingset_refault_anon,
            b"workingset_refault_file" => &mut stat.workingset_refault_file,
            b"workingset_activate_anon" => &mut stat.workingset_activate_anon,
            b"workingset_activate_file" => &mut stat.workingset_activate_file,
            b"oom_kill" => &mut stat.oom_kill,
            // Before 5.9 there was one refault counter, for file pages (anon pages had no
            // shadow entries then).
            b"workingset_refault" => &mut old_refault,
            key if key.starts_with(b"allocstall") => {
                // One counter per zone (allocstall_dma32, _normal, ...); or one before 4.12.
                stat.allocstall = Some(stat.allocstall.unwrap_or(0).saturating_add(value));
                continue;
            }
            _ => continue,
        };
        field.get_or_insert(value);
    }
    if stat.workingset_refault_file.is_none() {
        stat.workingset_refault_file = old_refault;
    }
    stat
}

/// What has come into the page cache, as two of the kernel's ever-growing counters: KiB read
/// from block devices (`pgpgin`: file reads, readahead, faults on mapped files) and pages
/// dirtied (`nr_dirtied`: writes). While both stay put, no file on a disk has gained cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheInflow {
    pub pgpgin: u64,
    pub nr_dirtied: u64,
}

/// Reads [`CacheInflow`]; `None` when /proc/vmstat is unreadable or lacks either counter.
pub fn cache_inflow() -> Option<CacheInflow> {
    parse_cache_inflow(&read_bounded(Path::new("/proc/vmstat"), 256 * 1024).ok()?)
}

/// Parses [`CacheInflow`] out of /proc/vmstat content.
pub fn parse_cache_inflow(content: &[u8]) -> Option<CacheInflow> {
    let (mut pgpgin, mut nr_dirtied) = (None, None);
    for line in content.split(|&b| b == b'\n') {
        match key_number(line) {
            Some((b"pgpgin", value)) => pgpgin = pgpgin.or(Some(value)),
            Some((b"nr_dirtied", value)) => nr_dirtied = nr_dirtied.or(Some(value)),
            _ => {}
        }
    }
    Some(CacheInflow {
        pgpgin: pgpgin?,
        nr_dirtied: nr_dirtied?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"nr_free_pages 5372762
workingset_nodes 23857
workingset_refault_anon 3
workingset_refault_file 1038317
workingset_activate_anon 1
workingset_activate_file 374621
pswpin 10
pswpout 20
allocstall_dma 0
allocstall_dma32 1
allocstall_normal 5
allocstall_movable 0
allocstall_device 0
pgmajfault 8909
pgsteal_kswapd 100
pgsteal_direct 7
pgsteal_khugepaged 0
pgscan_kswapd 300
pgscan_direct 9
pgscan_khugepaged 0
oom_kill 2
";

    #[test]
    fn parses_a_real_sample() {
        let stat = parse(SAMPLE);
        assert_eq!(stat.workingset_refault_file, Some(1038317));
        assert_eq!(stat.workingset_refault_anon, Some(3));
        assert_eq!(stat.pswpin, Some(10));
        assert_eq!(stat.pswpout, Some(20));
        assert_eq!(stat.allocstall, Some(6));
        assert_eq!(stat.pgscan_kswapd, Some(300));
        assert_eq!(stat.pgsteal_direct, Some(7));
        assert_eq!(stat.oom_kill, Some(2));
        assert_eq!(stat.pgmajfault, Some(8909));
    }

    #[test]
    fn old_kernel_refault_counter() {
        let stat = parse(b"workingset_refault 77\nallocstall 4\n");
        assert_eq!(stat.workingset_refault_file, Some(77));
        assert_eq!(stat.workingset_refault_anon, None);
        assert_eq!(stat.allocstall, Some(4));
        assert_eq!(stat.oom_kill, None);
    }

    #[test]
    fn garbage_does_not_panic() {
        for content in [
            &b""[..],
            b"pswpin",
            b"pswpin x",
            b"allocstall_a 18446744073709551615\nallocstall_b 18446744073709551615",
            b"\x00\x01\x02 3",
            b"oom_kill -1",
        ] {
            parse(content);
        }
        assert_eq!(
            parse(b"allocstall_a 18446744073709551615\nallocstall_b 5").allocstall,
            Some(u64::MAX)
        );
    }

    #[test]
    fn reads_this_machine() {
        assert!(read().unwrap().pgmajfault.is_some());
        assert!(cache_inflow().is_some());
    }

    #[test]
    fn cache_inflow_needs_both_counters() {
        let both = b"nr_dirtied 29773983\npgpgin 40911677\npgpgout 5\n";
        assert_eq!(
            parse_cache_inflow(both),
            Some(CacheInflow {
                pgpgin: 40911677,
                nr_dirtied: 29773983
            })
        );
        assert_eq!(parse_cache_inflow(b"pgpgin 1\n"), None);
        assert_eq!(parse_cache_inflow(b"nr_dirtied 1\npgpgin x\n"), None);
        assert_eq!(parse_cache_inflow(b""), None);
    }
}
