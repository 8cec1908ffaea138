# 256 MiB of page cache and a process that keeps a 48 MiB anon buffer busy (dd re-reads
# /dev/zero into its 48 MiB buffer over and over: every page of it is dirtied all the time).
grep -q ' /mnt ext4 ro' /proc/mounts || { result mounted false; exit 1; }
cat /mnt/*.bin >/dev/null
dd if=/dev/zero of=/dev/null bs=48M count=2000000000 2>/dev/null &
busy=$!
sleep 2
result cached_kib "$(meminfo_kib Cached)"
result busy_rss_kib_before "$(awk '/^VmRSS:/ { print $2 }' /proc/$busy/status)"
sync_host ready  # the host set the limit and watched resident memory settle
if kill -0 "$busy" 2>/dev/null; then result busy_survived true; else result busy_survived false; fi
result busy_rss_kib_after "$(awk '/^VmRSS:/ { print $2 }' /proc/$busy/status 2>/dev/null || echo 0)"
result cached_after_kib "$(meminfo_kib Cached)"
sync_host measured  # the host raised the limit and saw the balloon deflate
kill "$busy"
