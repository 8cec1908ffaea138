# Each round: cut the limit to 192 MiB and wait for resident ≤ 168 MiB (the threshold),
# then clear it and wait for the balloon to empty. On a guest that stops answering, say
# what ballast's threads and the L1 kernel are doing. The waits are bounds, not timings: in
# the nested L1 (both guest vCPUs on one emulated CPU) a round took 19-40 s, over 60 s on a
# loaded machine.
balloon_empty() { [ "$(balloon_target_mib)" = 0 ]; }
diag() {
    echo "[diag] $*"
    for t in /proc/"$BALLAST_PID"/task/*; do
        echo "[diag] $(cat "$t/comm") $(cut -d' ' -f3,14,15 "$t/stat") wchan=$(cat "$t/wchan" 2>/dev/null)"
        sed 's/^/[diag]   /' "$t/stack" 2>/dev/null
    done
    echo l >/proc/sysrq-trigger
    echo w >/proc/sysrq-trigger
    sleep 1
    dmesg | tail -n 200 | sed 's/^/[diag-dmesg] /'
}
reached=0 emptied=0
c=1
while [ $c -le 4 ]; do
    wait_console "BALLAST-SYNC cycle$c" 180 || { ballast_alive && diag "no cycle $c"; break; }
    ballast limit set 192M >/dev/null || exit 1
    wait_every 0.5 150 resident_at_most 168 && reached=$((reached + 1))
    ballast_alive || break
    ballast limit clear >/dev/null || exit 1
    wait_every 0.5 90 balloon_empty && emptied=$((emptied + 1))
    ballast_alive || break
    echo "cycle $c: threshold reached $reached, balloon emptied $emptied"
    send_guest go
    c=$((c + 1))
done
host_result host_threshold_reached "$reached"
host_result host_balloon_emptied "$emptied"
