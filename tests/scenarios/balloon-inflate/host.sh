# Inflate by 64 MiB once the guest has touched its free memory; measure ballast's RSS.
wait_console 'BALLAST-SYNC filled' || exit 1
sleep 1
rss0=$(ballast_rss_kib)
t0=$(now_s)
balloon_reach 64 || { host_result host_inflate_reached false; exit 1; }
inflate_s=$(since_s "$t0")
rss1=$(ballast_rss_kib)
host_result host_inflate_reached true
host_result host_inflate_s "$inflate_s"
host_result host_rss_before_kib "$rss0"
host_result host_rss_drop_kib $((rss0 - rss1))
send_guest inflated
wait_console 'BALLAST-SYNC measured' || exit 1
balloon_reach 0 || { host_result host_deflate_reached false; exit 1; }
host_result host_deflate_reached true
send_guest deflated
