# Read 100 MiB of files from the disk into the page cache; the host then asks the agent, over
# vsock, to deactivate 96 MiB of file cache: the big files must go first, the small ones stay.
grep -q ' /mnt ext4 ro' /proc/mounts || { result mounted false; exit 1; }
# cached_kib FILES...: how much of FILES is in the page cache (busybox has no fincore).
sync
echo 3 >/proc/sys/vm/drop_caches
cat /mnt/big*.bin /mnt/small/* >/dev/null
cached0=$(meminfo_kib Cached)
result cached_filled_kib "$cached0"
sync_host filled  # the host's deactivate_file is done
cached1=$(meminfo_kib Cached)
result cached_drop_kib $((cached0 - cached1))
# Small files still cached: reading them again does no disk I/O.
reads0=$(disk_reads vda)
cat /mnt/small/* >/dev/null
result small_reread_disk_reads $(($(disk_reads vda) - reads0))
reads0=$(disk_reads vda)
cat /mnt/big1.bin >/dev/null
result big_reread_disk_reads $(($(disk_reads vda) - reads0))
