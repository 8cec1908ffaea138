# A guest that ignores its balloon and has no agent: the balloon driver is unloaded, and a
# process keeps a 128 MiB anon buffer busy (dd re-reads /dev/zero into it over and over).
if rmmod virtio_balloon; then result balloon_driver_removed true; else result balloon_driver_removed false; fi
busy_anon 128
result busy_rss_kib "$(busy_rss_kib)"
sync_host ready  # the host cut the limit, saw memory.high written, and cleared it
if kill -0 "$busy" 2>/dev/null; then result busy_survived true; else result busy_survived false; fi
kill "$busy"
