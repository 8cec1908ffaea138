# A guest that keeps its memory while its agent (hostile-agent) claims to free whatever it is
# asked and reports a page cache that grows at every poll: a process keeps a 256 MiB anon
# buffer busy (dd re-reads /dev/zero into it over and over).
busy_anon 256
result busy_rss_kib "$(busy_rss_kib)"
sync_host ready  # the host cut the limit and watched the state
if kill -0 "$busy" 2>/dev/null; then result busy_survived true; else result busy_survived false; fi
kill "$busy"
