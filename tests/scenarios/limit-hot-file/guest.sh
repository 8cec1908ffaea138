# The working set is a file the guest keeps re-reading (64 MiB), beside 192 MiB of cache it
# read once. Under a feasible limit the cold cache goes and the re-reads stay cached: the
# disk sees almost no reads while resident sits under the limit. Under a limit below the hot
# file, the state says over_limit.
grep -q ' /mnt ext4 ro' /proc/mounts || { result mounted false; exit 1; }
cat /mnt/cold*.bin /mnt/hot.bin >/dev/null  # all of it cached before the count below
while :; do cat /mnt/hot.bin >/dev/null; done &
reader=$!
sleep 3
result cached_kib "$(meminfo_kib Cached)"
sync_host ready  # the host cut the limit to 192 MiB and waited for resident to settle
r0=$(disk_reads vda)
sleep 10
r1=$(disk_reads vda)
result hot_window_disk_reads $((r1 - r0))
result cached_after_kib "$(meminfo_kib Cached)"
sync_host measured  # the host cut the limit below the hot file and read the state
kill "$reader"
