# Reading 200 MiB of files from the disk fills the page cache by about that much:
# the starting state of the agent and memory-manager scenarios.
grep -q ' /mnt ext4 ro' /proc/mounts || { result mounted false; exit 1; }
result files_kib "$(du -sk /mnt | cut -f1)"
sync
echo 3 >/proc/sys/vm/drop_caches
before=$(meminfo_kib Cached) free_before=$(meminfo_kib MemFree)
t0=$(now_s)
cat /mnt/*.bin >/dev/null
t1=$(now_s)
after=$(meminfo_kib Cached) free_after=$(meminfo_kib MemFree)
result cached_before_kib "$before"
result cached_after_kib "$after"
result cached_delta_kib $((after - before))
result memfree_drop_kib $((free_before - free_after))
result read_seconds "$(seconds_between "$t0" "$t1")"
result read_mib_per_s "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", 200 / (b - a) }')"
# Read again: from the page cache now, no disk I/O.
reads0=$(disk_reads vda)
t0=$(now_s)
cat /mnt/*.bin >/dev/null
t1=$(now_s)
result reread_seconds "$(seconds_between "$t0" "$t1")"
result reread_disk_reads $(($(disk_reads vda) - reads0))
