# Inflate by 64 MiB once the guest has touched its free memory; measure ballast's RSS.
actual_mib() { ballast balloon set "$1" --json | sed -n 's/.*"actual_mib": *\([0-9]*\).*/\1/p'; }
# wait_actual MIB: until the guest's balloon holds MIB (it moves in steps of 256 pages).
wait_actual() {
    i=0
    while [ "$(actual_mib "$1")" != "$1" ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
    [ "$(actual_mib "$1")" = "$1" ]
}
wait_console 'BALLAST-SYNC filled' || exit 1
sleep 1
rss0=$(ballast_rss_kib)
t0=$(cut -d' ' -f1 /proc/uptime)
wait_actual 64 || { host_result host_inflate_reached false; exit 1; }
t1=$(cut -d' ' -f1 /proc/uptime)
rss1=$(ballast_rss_kib)
host_result host_inflate_reached true
host_result host_inflate_s "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
host_result host_rss_before_kib "$rss0"
host_result host_rss_drop_kib $((rss0 - rss1))
send_guest inflated
wait_console 'BALLAST-SYNC measured' || exit 1
wait_actual 0 || { host_result host_deflate_reached false; exit 1; }
host_result host_deflate_reached true
send_guest deflated
