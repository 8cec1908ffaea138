wait_console 'BALLAST-SYNC filled' || exit 1
sleep 1
rss0=$(ballast_rss_kib)
send_guest measured
wait_console 'BALLAST-SYNC freed' || exit 1
# Reporting runs about 2 s after pages are freed, in 4 MiB blocks; give it up to 30 s.
i=0
drop=0
while [ $i -lt 60 ]; do
    sleep 0.5
    drop=$((rss0 - $(ballast_rss_kib)))
    [ "$drop" -ge 98304 ] && break
    i=$((i + 1))
done
host_result host_rss_drop_kib "$drop"
host_result host_wait_s "$(awk -v i="$i" 'BEGIN { print (i + 1) / 2 }')"
host_result host_balloon_actual_mib "$(ballast status --json | sed -n 's/.*"actual_mib": *\([0-9]*\).*/\1/p')"
send_guest done
