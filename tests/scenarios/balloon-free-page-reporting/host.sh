wait_console 'BALLAST-SYNC filled' || exit 1
sleep 1
rss0=$(ballast_rss_kib)
send_guest measured
wait_console 'BALLAST-SYNC freed' || exit 1
# rss_dropped: whether ballast's RSS fell by 96 MiB (the drop is left in $drop).
rss_dropped() {
    drop=$((rss0 - $(ballast_rss_kib)))
    [ "$drop" -ge 98304 ]
}
# Reporting runs about 2 s after pages are freed, in 4 MiB blocks; give it up to 30 s.
t0=$(now_s)
wait_every 0.5 30 rss_dropped
host_result host_rss_drop_kib "$drop"
host_result host_wait_s "$(since_s "$t0")"
host_result host_balloon_actual_mib "$(balloon_actual_mib)"
send_guest done
