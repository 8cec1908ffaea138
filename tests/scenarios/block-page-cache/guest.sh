# Reading 200 MiB of files from the disk fills the page cache by about that much:
# the starting state of the agent and memory-manager scenarios.
grep -q ' /mnt ext4 ro' /proc/mounts || { result mounted false; exit 1; }
meminfo() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
now() { cut -d' ' -f1 /proc/uptime; }
result files_kib "$(du -sk /mnt | cut -f1)"
sync
echo 3 >/proc/sys/vm/drop_caches
before=$(meminfo Cached) free_before=$(meminfo MemFree)
t0=$(now)
cat /mnt/*.bin >/dev/null
t1=$(now)
after=$(meminfo Cached) free_after=$(meminfo MemFree)
result cached_before_kib "$before"
result cached_after_kib "$after"
result cached_delta_kib $((after - before))
result memfree_drop_kib $((free_before - free_after))
result read_seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
result read_mib_per_s "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", 200 / (b - a) }')"
# Read again: from the page cache now, no disk I/O.
reads0=$(awk '{ print $1 }' /sys/block/vda/stat)
t0=$(now)
cat /mnt/*.bin >/dev/null
t1=$(now)
result reread_seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
result reread_disk_reads $(($(awk '{ print $1 }' /sys/block/vda/stat) - reads0))
