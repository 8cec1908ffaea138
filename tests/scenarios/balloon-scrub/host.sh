# Counts the guest's pattern in ballast's guest RAM (read through /proc/PID/mem) before and
# after inflating the balloon over nearly all free guest memory, and after deflating it.
pat=BALLAST-SCRUB:0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLM
# pattern_kib: KiB of guest RAM holding the pattern (64-byte lines, one a grep line); null
# when the read of guest RAM falls short (a scan that read nothing must not pass as clean).
pattern_kib() {
    lines=$(dd if="/proc/$BALLAST_PID/mem" bs=1M iflag=skip_bytes skip="$ram_start" \
        count="$ram_mib" 2>/tmp/scrub-dd.err | grep -a -c -F "$pat")
    if grep -q "^$ram_mib+0 records in" /tmp/scrub-dd.err; then
        echo $((lines / 16))
    else
        echo "reading guest RAM failed: $(cat /tmp/scrub-dd.err)" >&2
        echo null
    fi
}
wait_console 'BALLAST-SYNC filled' || exit 1
# Guest RAM: the read-write mapping of exactly --memory (256 MiB) in ballast.
ram_mib=256
ram_start=''
while read -r range perms _ _ inode _; do
    start=$((0x${range%-*})) end=$((0x${range#*-}))
    if [ "$perms" = rw-p ] && [ "$inode" = 0 ] && [ $((end - start)) = $((ram_mib << 20)) ]; then
        ram_start=$start
    fi
done <"/proc/$BALLAST_PID/maps"
[ -n "$ram_start" ] || { echo "no $ram_mib MiB mapping in ballast"; exit 1; }
free_mib=$(console_line 'BALLAST-SYNC filled' | sed -n 's/.*free=\([0-9]*\).*/\1/p')
# All free memory but 16 MiB: the guest keeps a little for itself.
target=$((free_mib - 16))
t0=$(now_s)
host_result host_pattern_before_kib "$(pattern_kib)"
host_result host_scan_s "$(since_s "$t0")"
host_result host_balloon_mib "$target"
rss0=$(ballast_rss_kib)
balloon_reach "$target" || { host_result host_inflate_reached false; exit 1; }
host_result host_inflate_reached true
host_result host_rss_drop_kib $((rss0 - $(ballast_rss_kib)))
host_result host_pattern_inflated_kib "$(pattern_kib)"
send_guest inflated
wait_console 'BALLAST-SYNC measured' || exit 1
balloon_reach 0 || { host_result host_deflate_reached false; exit 1; }
host_result host_deflate_reached true
host_result host_pattern_deflated_kib "$(pattern_kib)"
send_guest deflated
