# With zram swap, a process holds 64 MiB of anon memory and idles; the host asks the agent
# to deactivate 32 MiB of anon memory, first with MADV_COLD (nothing need go to swap), then
# urgently (MADV_PAGEOUT: to swap now). The process must live on with its data intact.
swap_used() { echo $(($(meminfo_kib SwapTotal) - $(meminfo_kib SwapFree))); }
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }
result swap_total_kib "$(meminfo_kib SwapTotal)"
# The holder: 64 copies of a 1 MiB string (each its own malloc, so its own anon mmap). It
# blocks opening the FIFO until we write to it, then checks every copy and exits.
mkfifo /tmp/hold
awk -v mib=64 'BEGIN {
    s = "ballast-anon-0123456789abcdef-"
    while (length(s) < 1048576) s = s s
    s = substr(s, 1, 1048576)
    for (i = 0; i < mib; i++) a[i] = s
    getline line <"/tmp/hold"
    ok = 0
    for (i = 0; i < mib; i++) if (a[i] == s) ok++
    print ok >"/tmp/intact"
}' &
holder=$!
holding() { [ "$(status_kib $holder RssAnon)" -ge 65536 ] 2>/dev/null; }
wait_for 60 holding
result holder_anon_kib "$(status_kib $holder RssAnon)"
result swap_used_before_kib "$(swap_used)"
sync_host held  # the host's MADV_COLD request is done
result cold_swap_used_kib "$(swap_used)"
sync_host cold  # the host's MADV_PAGEOUT request is done
result urgent_swap_used_kib "$(swap_used)"
result holder_swap_kib "$(status_kib $holder VmSwap)"
result holder_anon_after_kib "$(status_kib $holder RssAnon)"
if kill -0 "$holder" 2>/dev/null; then result holder_alive true; else result holder_alive false; fi
# Reading its memory back brings the pages in from swap: every copy must be as written.
echo go >/tmp/hold
wait "$holder"
result holder_intact_mib "$(cat /tmp/intact 2>/dev/null || echo 0)"
result pswpin_pages "$(awk '$1 == "pswpin" { print $2 }' /proc/vmstat)"
